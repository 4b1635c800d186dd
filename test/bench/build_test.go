package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
)

// BenchmarkBuild measures `kubectl fluxinstance build` as a separate process (wall time, user+sys
// CPU time and peak RSS from the child's rusage) for a minimal and an all-fields FluxInstance:
// warm from the embedded distribution, warm from an already cached OCI pull, and cold (an empty
// cache, so the artifact is pulled from a loopback registry); side by side with the Flux Operator
// CLI's `build instance`, which pulls the same artifact on every run. It prints a table and the
// ratios of issue 3 (warm CPU ≤ 0.25× and warm peak RSS ≤ 0.5× the reference's).
func BenchmarkBuild(b *testing.B) {
	plugin := parity.PluginBinary(b)
	oci := parity.ServeDistribution(b)
	embedded := parity.HasEmbeddedDistribution(b)
	cli, haveCLI := parity.FindReferenceCLI(b)
	ctx := context.Background()

	instances := []struct{ name, file string }{
		{"minimal", "testdata/minimal.yaml"},
		{"all-fields", "testdata/all-fields.yaml"},
	}
	var rows []row
	results := map[string]stats{}
	for _, inst := range instances {
		file, err := filepath.Abs(inst.file)
		if err != nil {
			b.Fatal(err)
		}
		warmEnv := parity.Env(b, b.TempDir())
		// Fill the warm cache: every measured warm OCI run then finds the artifact cached.
		if res := parity.Run(ctx, warmEnv, plugin, parity.PluginArgs(file, oci)...); res.Err != nil {
			b.Fatal(res.Err)
		}
		type mode struct {
			name string
			skip string
			run  func(i int) parity.Result
		}
		modes := []mode{
			{name: "ours-warm-embedded", skip: unless(embedded, "no embedded distribution (run `make embed` or `make bench`)"),
				run: func(int) parity.Result { return parity.Run(ctx, warmEnv, plugin, parity.PluginArgs(file, "")...) }},
			{name: "ours-warm-oci-cached",
				run: func(int) parity.Result { return parity.Run(ctx, warmEnv, plugin, parity.PluginArgs(file, oci)...) }},
			{name: "ours-cold-oci-pull",
				run: func(int) parity.Result {
					return parity.Run(ctx, parity.Env(b, b.TempDir()), plugin, parity.PluginArgs(file, oci)...)
				}},
			{name: "reference-oci-pull", skip: unless(haveCLI, "the reference CLI is not built: "+parity.ReferenceCLIHint),
				run: func(int) parity.Result { return parity.Run(ctx, warmEnv, cli, parity.ReferenceArgs(file, oci)...) }},
		}
		for _, m := range modes {
			key := inst.name + "/" + m.name
			if m.skip != "" {
				fmt.Printf("%s: not measured: %s\n", key, m.skip)
				continue
			}
			b.Run(key, func(b *testing.B) {
				s := measure(b, m.run)
				report(b, s)
				results[key] = s
				// The ratios as metrics of the reference's line, against our warm embedded
				// build (or the cached OCI one when the binary embeds no distribution).
				if m.name == "reference-oci-pull" {
					ours, ok := results[inst.name+"/ours-warm-embedded"]
					if !ok {
						ours = results[inst.name+"/ours-warm-oci-cached"]
					}
					b.ReportMetric(seconds(ours.CPU)/seconds(s.CPU), "warm-cpu-ratio")
					b.ReportMetric(float64(ours.RSS)/float64(s.RSS), "warm-rss-ratio")
				}
			})
			rows = append(rows, row{inst.name, m.name, results[key]})
		}
	}

	printTable(os.Stdout, "kubectl fluxinstance build vs flux-operator build instance", rows)
	if !haveCLI {
		fmt.Printf("\nno ratios: the reference CLI is not built; %s\n", parity.ReferenceCLIHint)
		return
	}
	fmt.Println("\nratios (ours / reference, lower is better):")
	for _, inst := range instances {
		ref := results[inst.name+"/reference-oci-pull"]
		for _, warm := range []string{"ours-warm-embedded", "ours-warm-oci-cached"} {
			ours, ok := results[inst.name+"/"+warm]
			if !ok {
				continue
			}
			cpu := ratio(os.Stdout, fmt.Sprintf("%s %s CPU", inst.name, warm), seconds(ours.CPU), seconds(ref.CPU), 0.25)
			rss := ratio(os.Stdout, fmt.Sprintf("%s %s peak RSS", inst.name, warm), float64(ours.RSS), float64(ref.RSS), 0.5)
			b.Logf("%s %s: CPU ratio %.3f (target ≤ 0.25), peak RSS ratio %.3f (target ≤ 0.5)", inst.name, warm, cpu, rss)
		}
	}
}

// unless returns why when the condition does not hold.
func unless(ok bool, why string) string {
	if ok {
		return ""
	}
	return why
}

func seconds(d time.Duration) float64 { return d.Seconds() }
