package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// The storage migration benchmark of issue 12: HelmReleases and Kustomizations created under
// Flux 2.2.3 at versions Flux 2.8 removes (helm v2beta2, also 2.2.3's storage version, and
// kustomize v1beta2, stored at v1 but named by every object's managedFields), migrated for 2.9.4.
const (
	// storageObjectsEnv overrides how many objects are created (half of each kind), e.g. 1000 for
	// a quick run while developing.
	storageObjectsEnv = "BENCH_STORAGE_OBJECTS"
	// storageDefaultObjects is the scale: 10,000 objects over 1,000 namespaces.
	storageDefaultObjects = 10000
	// storagePerKind is how many HelmReleases and how many Kustomizations each namespace holds.
	storagePerKind = 5
	// storageFrom is the Flux release the objects are created under; storageTo the one upgraded to.
	storageFrom = "2.2.3"
	storageTo   = "2.9.4"
	// storageBridge is the release whose CRDs `flux migrate` runs under: it only rewrites objects
	// to the live CRD's storage version, so upstream's procedure upgrades to a release that still
	// serves the old versions but stores the new ones (2.7 serves helm v2beta2 and kustomize
	// v1beta2, stores v2 and v1), migrates, then upgrades past the removal.
	storageBridge = "v2.7.5"
	// storageRSSLimitMB is the peak RSS target for the plugin.
	storageRSSLimitMB = 300
	// storageRatioTarget is the wall time target: ours ≤ 0.5× flux migrate's.
	storageRatioTarget = 0.5
)

// BenchmarkStorageMigration times the storage migration of BENCH_STORAGE_OBJECTS (default 10,000)
// HelmReleases and Kustomizations in as many namespaces as hold 5 of each (1,000), side by side
// in one run with `flux migrate` of the harness's Flux CLI v2.9.4, once each (at this scale a run
// takes minutes), and prints the wall times, the ratio ours/flux against issue 12's target (≤ 0.5)
// and our peak RSS against ≤ 300 MB.
//
// Each tool gets a fresh API server prepared identically: a FluxInstance of 2.2.3 applied by the
// plugin, then the objects created at helm v2beta2 and kustomize v1beta2 (not measured). Then
// each is run the way its users upgrade to 2.9.4:
//   - flux: the CRDs of the bridge release applied (not measured), then `flux migrate` (measured:
//     the whole process, its default 50 QPS and burst 300). It lists every object of every CRD
//     labelled app.kubernetes.io/part-of=flux at the live storage version and patches them one at
//     a time (a JSON patch moving managedFields to that version, or an empty merge patch), then
//     sets storedVersions to it.
//   - ours: `kubectl fluxinstance apply` of the FluxInstance at 2.9.4 (measured: the whole
//     process, and the migration inside it from its "storage migration done after" line). It
//     makes the new version the storage version, rewrites every object (the same patch, or an
//     update) ten at a time without a client-side rate limit, and sets storedVersions, before it
//     applies the 2.9.4 objects.
//
// The ratio compares the migration phase of ours with the whole of flux's process: both rewrite
// the same 10,000 objects once, and the phase leaves out what only ours does (render, plan, the
// check of dropped fields, applying 2.9.4); the whole apply's ratio is printed too. Afterwards
// both clusters must hold the objects unchanged in number, every one's managedFields at the new
// version, storedVersions the storage version alone, and accept the 2.9.4 CRDs: a tool that
// skipped its work fails the benchmark instead of winning it.
func BenchmarkStorageMigration(b *testing.B) {
	// The harness's clients use controller-runtime, which otherwise prints a stack trace
	// complaining that no logger was set, in the middle of the benchmark's table.
	ctrllog.SetLogger(logr.Discard())
	plugin := parity.PluginBinary(b)
	flux := filepath.Join(fluxenv.BinDir(b, true), fluxenv.FluxCLI)
	testenv.RequireBinDir(b)
	s := newStorageScenario(b, plugin)

	var theirs, ours parity.Result
	var ourMigration time.Duration
	withFreshServer(b, func(env *testenv.Env) {
		s.prepare(b, env)
		if _, err := env.InstallFluxFrom(context.Background(), s.distDir, testenv.FluxInstall{Version: storageBridge, CRDsOnly: true}); err != nil {
			b.Fatalf("applying the CRDs of Flux %s before flux migrate: %v", storageBridge, err)
		}
		// --timeout: 10,000 objects take flux over 3 minutes at its default 50 QPS, and on a
		// loaded machine more than its default timeout of 5; a larger one costs it nothing.
		theirs = parity.Run(context.Background(), s.procEnv, flux, "migrate", "--kubeconfig", env.Kubeconfig, "--timeout", "1h")
		if theirs.Err != nil {
			b.Fatal(theirs.Err)
		}
		s.check(b, env, "flux migrate", true)
	})
	withFreshServer(b, func(env *testenv.Env) {
		s.prepare(b, env)
		ours = s.apply(b, env, storageTo)
		// The line apply prints on stderr after it has migrated the stored objects
		// (plugin/apply.go), with the migration's own duration.
		m := regexp.MustCompile(`storage migration done after (\S+)`).FindSubmatch(ours.Stderr)
		if m == nil {
			b.Fatalf("kubectl fluxinstance apply migrated nothing (no %q line):\n%s", "storage migration done after", testenv.Last(string(ours.Stderr), 2000))
		}
		d, err := time.ParseDuration(string(m[1]))
		if err != nil {
			b.Fatalf("reading the storage migration's duration %q: %v", m[1], err)
		}
		ourMigration = d
		printMigrationLines(ours.Stderr)
		s.check(b, env, "kubectl fluxinstance apply", false)
	})
	s.print(b, theirs, ours, ourMigration)
}

// printMigrationLines prints what the plugin said of the storage migration on stderr: the plan,
// one line per CRD, and the duration; not the progress lines.
func printMigrationLines(stderr []byte) {
	fmt.Println()
	for _, l := range strings.Split(string(stderr), "\n") {
		if strings.HasPrefix(l, "storage migration") || strings.HasPrefix(l, "  ") && strings.Contains(l, " objects from ") {
			fmt.Println(l)
		}
	}
}

// storageScenario is what both clusters of the benchmark share.
type storageScenario struct {
	plugin, distDir string
	distArgs        []string
	distLabel       string
	procEnv         []string
	objects         int
	// files are the FluxInstance files by Flux version.
	files map[string]string
}

func newStorageScenario(b *testing.B, plugin string) *storageScenario {
	b.Helper()
	s := &storageScenario{plugin: plugin, distDir: testenv.DistributionDir(b), objects: storageObjects(b), files: map[string]string{}}
	dir := b.TempDir()
	s.distArgs, s.distLabel = parity.DistributionArgs(b, s.distDir)
	s.procEnv = append(parity.Env(b, filepath.Join(dir, "cache")), "KUBECACHEDIR="+filepath.Join(dir, "kube-cache"))
	for _, v := range []string{storageFrom, storageTo} {
		f := filepath.Join(dir, "flux-"+v+".yaml")
		instance := fmt.Sprintf("apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata:\n  name: flux\n  namespace: flux-system\n"+
			"spec:\n  distribution:\n    version: %q\n    registry: ghcr.io/fluxcd\n", v)
		if err := os.WriteFile(f, []byte(instance), 0o644); err != nil {
			b.Fatal(err)
		}
		s.files[v] = f
	}
	return s
}

// storageObjects is the number of objects to create: BENCH_STORAGE_OBJECTS or the 10,000,
// a multiple of the 10 objects of a namespace.
func storageObjects(b *testing.B) int {
	b.Helper()
	v := os.Getenv(storageObjectsEnv)
	if v == "" {
		return storageDefaultObjects
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n%(2*storagePerKind) != 0 {
		b.Fatalf("%s=%q: want a positive multiple of %d (each namespace holds %d HelmReleases and %d Kustomizations)",
			storageObjectsEnv, v, 2*storagePerKind, storagePerKind, storagePerKind)
	}
	return n
}

// apply runs `kubectl fluxinstance apply` of the FluxInstance at version, without waiting for
// the controllers (none run here), and fails the benchmark if it fails.
func (s *storageScenario) apply(b *testing.B, env *testenv.Env, version string) parity.Result {
	b.Helper()
	args := append([]string{"apply", "-f", s.files[version], "--wait=false", "--kubeconfig", env.Kubeconfig}, s.distArgs...)
	res := parity.Run(context.Background(), s.procEnv, s.plugin, args...)
	if res.Err != nil {
		b.Fatalf("applying the FluxInstance at %s: %v", version, res.Err)
	}
	return res
}

// prepare makes a fresh API server the cluster both tools start from: Flux 2.2.3 applied by the
// plugin, then the objects created concurrently at helm v2beta2 and kustomize v1beta2.
func (s *storageScenario) prepare(b *testing.B, env *testenv.Env) {
	b.Helper()
	start := time.Now()
	s.apply(b, env, storageFrom)
	applied := time.Since(start)
	start = time.Now()
	old := tenant{kustomizations: storagePerKind, helmReleases: storagePerKind, kustomizeVersion: "v1beta2", helmVersion: "v2beta2"}
	created, err := generateFluxObjects(context.Background(), env.Config, s.objects/(2*storagePerKind), old.objects)
	if err != nil {
		b.Fatalf("creating the objects at the old versions: %v", err)
	}
	if created != s.objects {
		b.Fatalf("created %d objects, want %d", created, s.objects)
	}
	took := time.Since(start)
	fmt.Printf("\nprepared a cluster (not measured): Flux %s applied in %s; %d namespaces and %d objects created in %s (%.0f objects/s)\n",
		storageFrom, applied.Round(time.Millisecond), s.objects/(2*storagePerKind), created, took.Round(time.Millisecond),
		float64(created)/took.Seconds())
}

// storageKinds are the migrated kinds and the storage version 2.9.4 keeps for each.
func storageKinds() map[string]schema.GroupVersionKind {
	return map[string]schema.GroupVersionKind{
		"helmreleases.helm.toolkit.fluxcd.io":        {Group: "helm.toolkit.fluxcd.io", Version: "v2", Kind: "HelmRelease"},
		"kustomizations.kustomize.toolkit.fluxcd.io": {Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"},
	}
}

// check fails the benchmark unless tool's migration is complete: storedVersions is the storage
// version alone, every object is still there with managedFields at the storage version only, and
// (when applyCRDs; the plugin's apply already did it) the API server accepts the 2.9.4 CRDs,
// which it refuses while a removed version is stored.
func (s *storageScenario) check(b *testing.B, env *testenv.Env, tool string, applyCRDs bool) {
	b.Helper()
	ctx := context.Background()
	if applyCRDs {
		if _, err := env.InstallFluxFrom(ctx, s.distDir, testenv.FluxInstall{Version: "v" + storageTo, CRDsOnly: true}); err != nil {
			b.Fatalf("after %s, the API server refuses the %s CRDs: %v", tool, storageTo, err)
		}
	}
	c := testenv.FastClient(b, env.Config, -1, 0)
	for name, gvk := range storageKinds() {
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(kube.CRDGVK)
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			b.Fatalf("after %s: reading CustomResourceDefinition/%s: %v", tool, name, err)
		}
		stored, _, _ := unstructured.NestedStringSlice(crd.Object, "status", "storedVersions")
		if len(stored) != 1 || stored[0] != gvk.Version {
			b.Fatalf("after %s: %s storedVersions %v, want [%s]", tool, name, stored, gvk.Version)
		}
		n, err := countMigrated(ctx, c, gvk)
		if err != nil {
			b.Fatalf("after %s: %s: %v", tool, name, err)
		}
		if n != s.objects/2 {
			b.Fatalf("after %s: %d %s objects, want %d", tool, n, name, s.objects/2)
		}
	}
}

// countMigrated lists the objects of gvk page by page and counts them; an object whose
// managedFields name another version was not migrated.
func countMigrated(ctx context.Context, c client.Client, gvk schema.GroupVersionKind) (int, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	want := gvk.GroupVersion().String()
	n := 0
	err := kube.ListPages(ctx, c, list, func() error {
		for i := range list.Items {
			for _, mf := range list.Items[i].GetManagedFields() {
				if mf.APIVersion != want {
					return fmt.Errorf("%s: managedFields of %s at %s, want %s", kube.Ref(&list.Items[i]), mf.Manager, mf.APIVersion, want)
				}
			}
		}
		n += len(list.Items)
		return nil
	})
	return n, err
}

// print reports the figures: metrics, a table, the ratios and the peak RSS against the targets.
func (s *storageScenario) print(b *testing.B, theirs, ours parity.Result, ourMigration time.Duration) {
	theirStats, ourStats := resultStats([]parity.Result{theirs}), resultStats([]parity.Result{ours})
	b.Run("flux-migrate", func(b *testing.B) { report(b, theirStats) })
	b.Run("ours-apply", func(b *testing.B) {
		report(b, ourStats)
		b.ReportMetric(float64(ourMigration.Nanoseconds()), "migration-ns/op")
	})

	fmt.Printf("\n%d objects (%d HelmReleases helm v2beta2, %d Kustomizations kustomize v1beta2) in %d namespaces, Flux %s to %s; %s\n",
		s.objects, s.objects/2, s.objects/2, s.objects/(2*storagePerKind), storageFrom, storageTo, s.distLabel)
	instance := fmt.Sprintf("%dk objects", s.objects/1000)
	if s.objects < 1000 {
		instance = fmt.Sprintf("%d objects", s.objects)
	}
	printTableOf(os.Stdout, "kubectl fluxinstance apply (2.2.3 → 2.9.4) vs flux migrate (Flux CLI "+fluxenv.FluxVersion+", CRDs of "+storageBridge+")", 1, []row{
		{instance, "flux migrate", theirStats},
		{instance, "ours apply (whole process)", ourStats},
		{instance, "ours storage migration (phase of apply)", stats{Wall: ourMigration}},
	})
	fmt.Println("\nratios (ours / flux migrate wall time, lower is better) and peak RSS:")
	r := ratio(os.Stdout, "storage migration wall time", seconds(ourMigration), seconds(theirs.Wall), storageRatioTarget)
	whole := ratio(os.Stdout, "whole apply (render, plan, migrate, apply 2.9.4)", seconds(ours.Wall), seconds(theirs.Wall), storageRatioTarget)
	rssMB := rssTarget(os.Stdout, "apply peak RSS", ours.MaxRSS, storageRSSLimitMB)
	fmt.Printf("  %-52s %6.1f MB\n", "flux migrate peak RSS", float64(theirs.MaxRSS)/(1<<20))
	b.Logf("storage migration: wall ratio %.3f (target ≤ %.1f; whole apply %.3f), peak RSS %.1f MB (target ≤ %d MB)",
		r, storageRatioTarget, whole, rssMB, storageRSSLimitMB)
}
