package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// The scale of issue 5's benchmark: users' Flux objects spread over many namespaces.
const (
	scaleNamespaces = 1000
	// Per namespace: 4 GitRepositories, 3 Kustomizations and 3 HelmReleases (10,000 in all).
	scaleGitRepositories = 4
	scaleKustomizations  = 3
	scaleHelmReleases    = 3
	// scaleWorkers create objects in parallel: the API server, not the generator, is the limit.
	scaleWorkers = 16
	// migrateBootstrapVersion is the Flux version of the simulated `flux bootstrap`.
	migrateBootstrapVersion = "v2.7.5"
)

// BenchmarkMigrateScale times `kubectl fluxinstance migrate --dry-run` (detection and plan of a
// `flux bootstrap` install) on a cluster that also holds 10,000 users' Flux objects in 1,000
// namespaces, side by side with the harness's `kubectl get kustomizations,helmreleases,
// gitrepositories -A -o json` in the same run (alternating, `runs` times each, after one unmeasured
// warm-up of each so that kubectl's discovery cache is warm as it is for a user), and prints the
// medians and issue 5's targets: wall time ≤ 1.5× kubectl's, peak RSS ≤ 300 MB.
func BenchmarkMigrateScale(b *testing.B) {
	// The harness's clients use controller-runtime, which otherwise prints a stack trace
	// complaining that no logger was set, in the middle of the benchmark's table.
	ctrllog.SetLogger(logr.Discard())
	plugin := parity.PluginBinary(b)
	distDir := testenv.DistributionDir(b)
	env := testenv.Start(b)
	ctx := context.Background()
	dir := b.TempDir()

	start := time.Now()
	if _, err := env.SimulateBootstrapFrom(ctx, distDir, testenv.Bootstrap{Version: migrateBootstrapVersion}); err != nil {
		b.Fatalf("simulating flux bootstrap: %v", err)
	}
	bootstrapTime := time.Since(start)
	start = time.Now()
	created, err := generateFluxObjects(ctx, env.Config, scaleNamespaces, scaleTenant().objects)
	if err != nil {
		b.Fatalf("generating the users' Flux objects: %v", err)
	}
	generateTime := time.Since(start)
	fmt.Printf("\nsimulated flux bootstrap %s in %s; created %d namespaces and %d Flux objects in %s (%.0f objects/s)\n",
		migrateBootstrapVersion, bootstrapTime.Round(time.Millisecond), scaleNamespaces, created,
		generateTime.Round(time.Millisecond), float64(created+scaleNamespaces)/generateTime.Seconds())

	distArgs, distLabel := parity.DistributionArgs(b, distDir)
	procEnv := append(parity.Env(b, filepath.Join(dir, "cache")), "KUBECACHEDIR="+filepath.Join(dir, "kube-cache"))
	kubectl := filepath.Join(env.BinDir, "kubectl")
	oursArgs := append([]string{"migrate", "--dry-run", "--kubeconfig", env.Kubeconfig}, distArgs...)
	kubectlArgs := []string{"get", "kustomizations,helmreleases,gitrepositories", "-A", "-o", "json", "--kubeconfig", env.Kubeconfig}
	runOurs := func() parity.Result { return parity.Run(ctx, procEnv, plugin, oursArgs...) }
	runKubectl := func() parity.Result { return parity.Run(ctx, procEnv, kubectl, kubectlArgs...) }

	// Warm-up, and the checks that both commands do what is measured; the warm-up of ours also
	// counts its API requests.
	var oursRequests requestCounts
	ours := runCounted(b, env, true, &oursRequests, runOurs)
	if ours.Err != nil {
		b.Fatal(ours.Err)
	}
	if !strings.Contains(string(ours.Stdout), "kind: FluxInstance") {
		b.Fatalf("migrate --dry-run printed no FluxInstance:\n%s", ours.Stdout)
	}
	theirs := runKubectl()
	if theirs.Err != nil {
		b.Fatal(theirs.Err)
	}
	if n := strings.Count(string(theirs.Stdout), `"kind": "Kustomization"`) +
		strings.Count(string(theirs.Stdout), `"kind": "HelmRelease"`) +
		strings.Count(string(theirs.Stdout), `"kind": "GitRepository"`); n < created {
		b.Fatalf("kubectl get listed %d Flux objects, want at least %d", n, created)
	}

	var oursRuns, kubectlRuns []parity.Result
	for i := range runs {
		for _, m := range []struct {
			run func() parity.Result
			out *[]parity.Result
		}{{runOurs, &oursRuns}, {runKubectl, &kubectlRuns}} {
			res := m.run()
			if res.Err != nil {
				b.Fatalf("run %d: %v", i+1, res.Err)
			}
			*m.out = append(*m.out, res)
		}
	}
	oursStats, kubectlStats := resultStats(oursRuns), resultStats(kubectlRuns)
	b.Run("ours-migrate-dry-run", func(b *testing.B) { report(b, oursStats) })
	b.Run("kubectl-get-json", func(b *testing.B) { report(b, kubectlStats) })

	fmt.Printf("kubectl get -o json output: %.1f MB; %s\n", float64(len(theirs.Stdout))/(1<<20), distLabel)
	instance := fmt.Sprintf("%dns/%dk", scaleNamespaces, created/1000)
	printTable(os.Stdout, "kubectl fluxinstance migrate --dry-run vs kubectl get kustomizations,helmreleases,gitrepositories -A -o json", []row{
		{instance, "ours migrate --dry-run", oursStats},
		{instance, "kubectl get -A -o json", kubectlStats},
	})
	fmt.Println("\nAPI requests of migrate --dry-run (apiserver_request_total, by verb and resource; dry runs included):")
	printRequests("migrate --dry-run", oursRequests)
	fmt.Println("\nratio (ours / kubectl wall time, lower is better) and peak RSS:")
	r := ratio(os.Stdout, "migrate --dry-run wall time", seconds(oursStats.Wall), seconds(kubectlStats.Wall), 1.5)
	rssMB := rssTarget(os.Stdout, "migrate --dry-run peak RSS", oursStats.RSS, 300)
	b.Logf("migrate --dry-run: wall ratio %.3f (target ≤ 1.5), peak RSS %.1f MB (target ≤ 300 MB)", r, rssMB)
}

// generateFluxObjects creates namespaces tenant-0000, tenant-0001, ... with the users' Flux
// objects of each (objects(ns)), from scaleWorkers goroutines, and returns how many Flux objects
// it created. The objects are what users write (spec, labels); their controllers' status is left
// out, which keeps kubectl's output, and so its time, at the low end.
func generateFluxObjects(ctx context.Context, cfg *rest.Config, namespaceCount int, objects func(ns string) []*unstructured.Unstructured) (int, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit: the API server's priority and fairness is the limit
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()

	namespaces := make(chan int)
	var created atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	fail := func(err error) {
		once.Do(func() { firstErr = err; cancel() })
	}
	for range scaleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range namespaces {
				ns := fmt.Sprintf("tenant-%04d", i)
				if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
					fail(fmt.Errorf("creating namespace %s: %w", ns, err))
					return
				}
				for _, obj := range objects(ns) {
					if err := c.Create(ctx, obj); err != nil {
						fail(fmt.Errorf("creating %s %s/%s: %w", obj.GetKind(), ns, obj.GetName(), err))
						return
					}
					created.Add(1)
				}
			}
		}()
	}
feed:
	for i := range namespaceCount {
		select {
		case namespaces <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(namespaces)
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return int(created.Load()), ctx.Err()
}

// tenant is the shape of one namespace's Flux objects: how many of each kind, and the API versions
// the Kustomizations and HelmReleases are created at.
type tenant struct {
	gitRepositories, kustomizations, helmReleases int
	kustomizeVersion, helmVersion                 string
}

// scaleTenant is issue 5's namespace: 4 GitRepositories, 3 Kustomizations and 3 HelmReleases at
// today's versions.
func scaleTenant() tenant {
	return tenant{
		gitRepositories: scaleGitRepositories, kustomizations: scaleKustomizations, helmReleases: scaleHelmReleases,
		kustomizeVersion: "v1", helmVersion: "v2",
	}
}

// objects are one namespace's Flux objects: Git sources, Kustomizations applying them and
// HelmReleases from a HelmRepository, shaped like a tenant's fleet repository. Every field is
// served by kustomize v1beta2 and v1 and helm v2beta2 and v2 alike, so that a migration between
// them drops nothing.
func (t tenant) objects(ns string) []*unstructured.Unstructured {
	labels := map[string]any{"app.kubernetes.io/part-of": "tenant-apps", "toolkit.fluxcd.io/tenant": ns}
	obj := func(apiVersion, kind, name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": apiVersion, "kind": kind,
			"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels},
			"spec":     spec,
		}}
	}
	var objs []*unstructured.Unstructured
	for i := range t.gitRepositories {
		objs = append(objs, obj("source.toolkit.fluxcd.io/v1", "GitRepository", fmt.Sprintf("repo-%d", i), map[string]any{
			"interval":  "5m0s",
			"url":       fmt.Sprintf("https://git.example.com/%s/app-%d.git", ns, i),
			"ref":       map[string]any{"branch": "main"},
			"secretRef": map[string]any{"name": "git-credentials"},
			"timeout":   "60s",
		}))
	}
	for i := range t.kustomizations {
		objs = append(objs, obj("kustomize.toolkit.fluxcd.io/"+t.kustomizeVersion, "Kustomization", fmt.Sprintf("app-%d", i), map[string]any{
			"interval":           "10m0s",
			"path":               fmt.Sprintf("./deploy/overlays/app-%d", i),
			"prune":              true,
			"wait":               true,
			"timeout":            "5m",
			"targetNamespace":    ns,
			"serviceAccountName": "tenant",
			"sourceRef":          map[string]any{"kind": "GitRepository", "name": fmt.Sprintf("repo-%d", i)},
		}))
	}
	for i := range t.helmReleases {
		objs = append(objs, obj("helm.toolkit.fluxcd.io/"+t.helmVersion, "HelmRelease", fmt.Sprintf("release-%d", i), map[string]any{
			"interval":           "30m",
			"releaseName":        fmt.Sprintf("release-%d", i),
			"serviceAccountName": "tenant",
			"chart": map[string]any{"spec": map[string]any{
				"chart":     fmt.Sprintf("chart-%d", i),
				"version":   "1.x",
				"sourceRef": map[string]any{"kind": "HelmRepository", "name": "charts"},
			}},
			"install": map[string]any{"remediation": map[string]any{"retries": int64(3)}},
			"values":  map[string]any{"replicaCount": int64(2), "image": map[string]any{"tag": "1.0.0"}},
		}))
	}
	return objs
}
