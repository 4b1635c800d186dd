package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// fleetClusters is the fleet of issue 16's benchmark.
const fleetClusters = 8

// BenchmarkStatusFleet measures `status --all-contexts` over eight API servers, each with Flux
// applied by the plugin (the heaviest status: the drift check renders the recorded instance and
// dry-runs it), against `status` of one of them, in the same run and interleaved so that both
// see the same load, and prints the ratio of the medians against issue 16's target (≤ 1.5×).
// The eight API servers run on this machine too: on a small machine the ratio measures how well
// the plugin overlaps their answers, not network latency as with real clusters.
func BenchmarkStatusFleet(b *testing.B) {
	plugin := parity.PluginBinary(b)
	distDir := testenv.DistributionDir(b)
	distArgs, _ := parity.DistributionArgs(b, distDir)
	envs := testenv.StartMany(b, fleetClusters)
	procEnv := parity.Env(b, filepath.Join(b.TempDir(), "cache"))
	ctx := context.Background()
	instance := fixtures.Path(b, "tests/all-components-no-sync-2.9.x")
	applyAll(b, ctx, procEnv, plugin, instance, distArgs, envs)

	files := map[string]string{}
	for i, env := range envs {
		files[fmt.Sprintf("cluster-%d", i+1)] = env.Kubeconfig
	}
	kubeconfig := testenv.Kubeconfigs(b, b.TempDir(), files, nil)
	var single, fleet []parity.Result
	var singleServers, fleetServers []time.Duration
	for range runs {
		r, cpu := withServerCPU(b, envs[:1], func() parity.Result {
			return parity.Run(ctx, procEnv, plugin, "status", "--kubeconfig", envs[0].Kubeconfig)
		})
		single, singleServers = append(single, r), append(singleServers, cpu)
		r, cpu = withServerCPU(b, envs, func() parity.Result {
			return parity.Run(ctx, procEnv, plugin, "status", "--all-contexts", "--kubeconfig", kubeconfig)
		})
		fleet, fleetServers = append(fleet, r), append(fleetServers, cpu)
	}
	for _, r := range append(append([]parity.Result(nil), single...), fleet...) {
		if r.Err != nil {
			b.Fatalf("status: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
		}
	}
	fmt.Printf("\n%s", fleet[0].Stdout)
	one, all := resultStats(single), resultStats(fleet)
	printTable(os.Stdout, "status of one cluster vs status --all-contexts of eight", []row{
		{"1 × 2.9", "kubectl fluxinstance status", one},
		{"8 × 2.9", "kubectl fluxinstance status --all-contexts", all},
	})
	r := ratio(os.Stdout, "status --all-contexts (8) / status (1), wall", seconds(all.Wall), seconds(one.Wall), 1.5)
	// The API servers run here too: when the plugin's and their CPU time, divided among this
	// machine's cores, exceeds the target, no runner can meet it on this machine; the floor says
	// how close to it the fleet run came.
	floor := (all.CPU + median(fleetServers)) / time.Duration(runtime.NumCPU())
	fmt.Printf("  API servers' CPU per run: %s for one status, %s for the fleet; the fleet's CPU floor on %d cores: %s (wall / floor %.2f)\n",
		median(singleServers).Round(time.Millisecond), median(fleetServers).Round(time.Millisecond), runtime.NumCPU(), floor.Round(time.Millisecond), seconds(all.Wall)/seconds(floor))
	b.ReportMetric(r, "fleet/single-wall")
	b.ReportMetric(seconds(all.Wall)/seconds(floor), "fleet-wall/cpu-floor")
	b.ReportMetric(float64(all.Wall.Nanoseconds()), "ns/op")
}

// withServerCPU runs f and returns its result with the CPU time the API servers of envs used
// meanwhile.
func withServerCPU(b *testing.B, envs []*testenv.Env, f func() parity.Result) (parity.Result, time.Duration) {
	b.Helper()
	total := func() time.Duration {
		var sum time.Duration
		for _, env := range envs {
			d, err := env.CPUTime()
			if err != nil {
				b.Fatal(err)
			}
			sum += d
		}
		return sum
	}
	before := total()
	r := f()
	return r, total() - before
}

// applyAll applies the instance to every cluster, two at a time (the machine's API servers and
// the plugin share its cores).
func applyAll(b *testing.B, ctx context.Context, procEnv []string, plugin, instance string, distArgs []string, envs []*testenv.Env) {
	b.Helper()
	start := time.Now()
	errs := make([]error, len(envs))
	slots := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i, env := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			args := append([]string{"apply", "-f", instance, "--wait=false", "--kubeconfig", env.Kubeconfig}, distArgs...)
			if r := parity.Run(ctx, procEnv, plugin, args...); r.Err != nil {
				errs[i] = fmt.Errorf("apply on cluster %d: %w\n%s", i+1, r.Err, r.Stderr)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	fmt.Printf("applied Flux 2.9 to %d clusters in %s\n", len(envs), time.Since(start).Round(time.Second))
}
