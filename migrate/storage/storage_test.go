package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// kept is what a migration must not change of an object.
type kept struct {
	UID         string
	Generation  int64
	Spec        any
	Status      any
	Labels      map[string]string
	Annotations map[string]string
}

func keptOf(o *unstructured.Unstructured) kept {
	return kept{UID: string(o.GetUID()), Generation: o.GetGeneration(), Spec: o.Object["spec"], Status: o.Object["status"],
		Labels: o.GetLabels(), Annotations: o.GetAnnotations()}
}

// setStatus gives each object the status a controller would have written (observedGeneration and a
// Ready condition), through the status subresource, and returns the objects as stored. Alerts and
// Providers stored at notification v1beta3 have no status: the API server drops it, and the test
// checks that at least the other kinds kept theirs.
func setStatus(t *testing.T, c client.Client, objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	t.Helper()
	out := make([]*unstructured.Unstructured, 0, len(objs))
	withStatus := 0
	for _, o := range objs {
		o = o.DeepCopy()
		o.Object["status"] = map[string]any{
			"observedGeneration": o.GetGeneration(),
			"conditions": []any{map[string]any{
				"type": "Ready", "status": "True", "reason": "Succeeded", "message": "reconciled by " + o.GetName(),
				"lastTransitionTime": "2026-12-01T10:00:00Z", "observedGeneration": o.GetGeneration(),
			}},
		}
		require.NoError(t, c.Status().Update(context.Background(), o), kube.Ref(o))
		if o.Object["status"] != nil {
			withStatus++
		}
		out = append(out, o)
	}
	require.Greater(t, withStatus, len(objs)/2, "most kinds keep a status")
	return out
}

func crds(t *testing.T, version string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.ReadManifests(filepath.Join(testenv.DistributionDir(t), "flux", version))
	require.NoError(t, err)
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			out = append(out, o)
		}
	}
	return out
}

func liveCRD(t *testing.T, c client.Client, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(kube.CRDGVK)
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: name}, u))
	return u
}

// The objects users created under Flux 2.2.3, at the versions it served, survive a migration to
// the storage versions of 2.9.4 unchanged but for where they are stored, after which the 2.9.4
// CRDs (which drop those versions) apply cleanly and nothing is left to plan.
func TestMigrateFrom223To294(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.2.3", CRDsOnly: true})
	objs := setStatus(t, c, testenv.CreateOldFluxObjects(t, c, "apps-0", "apps-1", "apps-2"))
	before := map[string]kept{}
	for _, o := range objs {
		before[kube.Ref(o)] = keptOf(o)
	}
	target := crds(t, "v2.9.4")
	storageOf := map[schema.GroupKind]string{}
	for _, crd := range target {
		for _, v := range crd.Object["spec"].(map[string]any)["versions"].([]any) {
			if v.(map[string]any)["storage"] == true {
				storageOf[kube.CRDNames(crd)] = v.(map[string]any)["name"].(string)
			}
		}
	}

	crdVersions := func() map[string]string {
		return testenv.ListResourceVersions(t, c, schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"})
	}
	unchanged := crdVersions()
	plan, err := storage.NewPlan(ctx, c, target)
	require.NoError(t, err)
	assert.Equal(t, unchanged, crdVersions(), "planning changes nothing")
	byCRD := map[string]storage.Migration{}
	for _, m := range plan.Migrations {
		byCRD[m.CRD] = m
	}
	t.Logf("plan:\n%s", strings.Join(plan.Describe(), "\n"))
	hr := byCRD["helmreleases.helm.toolkit.fluxcd.io"]
	assert.Equal(t, []string{"v2beta2"}, hr.StoredVersions)
	assert.Equal(t, "v2", hr.Version)
	assert.Equal(t, 3, hr.Objects)
	assert.Equal(t, []string{"v2beta2"}, hr.Removed)
	assert.Equal(t, "v1", byCRD["imagerepositories.image.toolkit.fluxcd.io"].Version)
	assert.Equal(t, 3, byCRD["helmrepositories.source.toolkit.fluxcd.io"].Objects)
	// Stored at v1 already, but created at v1beta2: their managedFields name a version 2.9.4 drops.
	assert.Equal(t, []string{"v1beta2"}, byCRD["kustomizations.kustomize.toolkit.fluxcd.io"].ManagedFieldsAt)
	assert.Equal(t, []string{"v1beta2"}, byCRD["gitrepositories.source.toolkit.fluxcd.io"].ManagedFieldsAt)
	assert.NotContains(t, byCRD, "receivers.notification.toolkit.fluxcd.io", "no object, no stale storage")

	// Before the migration, the API server refuses the 2.9.4 CRDs.
	_, err = env.InstallFluxFrom(ctx, testenv.DistributionDir(t), testenv.FluxInstall{Version: "v2.9.4", CRDsOnly: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "must remain in spec.versions")

	var lines []string
	start := time.Now()
	require.NoError(t, storage.Migrate(ctx, c, plan, storage.Options{Progress: func(s string) {
		lines = append(lines, s)
		t.Logf("%s %s", time.Since(start).Round(time.Millisecond), s)
	}}))
	t.Logf("migrated %d objects of %d kinds in %s", len(objs), len(plan.Migrations), time.Since(start))
	assert.Contains(t, lines, "migrating 3 helmreleases.helm.toolkit.fluxcd.io to v2: 3/3")

	for _, m := range plan.Migrations {
		stored, _, _ := unstructured.NestedStringSlice(liveCRD(t, c, m.CRD).Object, "status", "storedVersions")
		assert.Equal(t, []string{m.Version}, stored, m.CRD)
	}
	again, err := storage.NewPlan(ctx, c, target)
	require.NoError(t, err)
	assert.True(t, again.Empty(), "a second plan is empty: %v", again.Describe())

	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.9.4", CRDsOnly: true})
	again, err = storage.NewPlan(ctx, c, target)
	require.NoError(t, err)
	assert.True(t, again.Empty(), "nothing to plan after the 2.9.4 CRDs: %v", again.Describe())

	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(gk.WithVersion(storageOf[gk]))
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(o), live))
		assert.Equal(t, before[kube.Ref(o)], keptOf(live), kube.Ref(o))
		for _, e := range live.GetManagedFields() {
			assert.Equal(t, live.GetAPIVersion(), e.APIVersion, "%s: managedFields of %s", kube.Ref(o), e.Manager)
		}
		// The object can still be written (a managedFields entry at a removed version would fail it).
		live.SetLabels(map[string]string{"team": "apps", "tier": live.GetLabels()["tier"], "touched": "yes"})
		require.NoError(t, c.Update(ctx, live), kube.Ref(o))
	}
	// Every kind that had objects at an old version was planned.
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		found := slices.ContainsFunc(plan.Migrations, func(m storage.Migration) bool { return m.Group == gk.Group && m.Kind == gk.Kind })
		assert.True(t, found, "%s planned", gk)
	}
}

// A migration killed after its Nth API call, for N spread over the whole run (each run starting
// where the killed one left off), loses nothing: every object stays readable at the version it
// was created at with its UID and spec, and the run that is not killed finishes; then nothing is
// left to plan and the 2.9.4 CRDs apply, ending exactly the target's.
func TestInterruptedMigrationConverges(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.2.3", CRDsOnly: true})
	objs := testenv.CreateOldFluxObjects(t, c, "n-0", "n-1", "n-2", "n-3")
	before := map[string]kept{}
	for _, o := range objs {
		before[kube.Ref(o)] = keptOf(o)
	}
	target := crds(t, "v2.9.4")
	proxy, kubeconfig := faultproxy.Start(t, env)
	proxied := func() client.Client {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		require.NoError(t, err)
		pc, err := client.New(cfg, client.Options{})
		require.NoError(t, err)
		return pc
	}
	run := func() error {
		pc := proxied() // a fresh REST mapper, as a new process has
		plan, err := storage.NewPlan(ctx, pc, target)
		if err != nil {
			return err
		}
		return storage.Migrate(ctx, pc, plan, storage.Options{EstablishTimeout: 5 * time.Second})
	}

	kills := 0
	for killAt := 1; ; killAt += 3 {
		proxy.Reset(killAt)
		err := run()
		if err == nil {
			break
		}
		kills++
		require.Less(t, kills, 100, "never finished: %v", err)
		t.Logf("killed at call %d: %v", killAt, err)
		// Nothing is lost: each object reads at the version it was created at, as it was.
		dc := env.Client(t)
		for _, o := range objs {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(o.GroupVersionKind())
			require.NoError(t, dc.Get(ctx, client.ObjectKeyFromObject(o), live), "after a kill at %d", killAt)
			require.Equal(t, before[kube.Ref(o)], keptOf(live), "%s after a kill at %d", kube.Ref(o), killAt)
		}
	}
	t.Logf("killed %d times before a run finished", kills)
	require.Greater(t, kills, 15)

	proxy.Reset(-1)
	require.NoError(t, run(), "a run after the finished one")
	again, err := storage.NewPlan(ctx, env.Client(t), target)
	require.NoError(t, err)
	assert.True(t, again.Empty(), "nothing left to plan: %v", again.Describe())
	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.9.4", CRDsOnly: true})
	dc := env.Client(t)
	for _, crd := range target {
		live := liveCRD(t, dc, crd.GetName())
		assert.JSONEq(t, jsonOf(t, crd.Object["spec"].(map[string]any)["versions"]), jsonOf(t, live.Object["spec"].(map[string]any)["versions"]), crd.GetName())
		stored, _, _ := unstructured.NestedStringSlice(live.Object, "status", "storedVersions")
		want, _ := storageVersionOf(crd)
		assert.Equal(t, []string{want}, stored, crd.GetName())
	}
	for _, o := range objs {
		gk := o.GroupVersionKind().GroupKind()
		live, state, err := kube.GetByID(ctx, dc, kube.ID(o))
		require.NoError(t, err)
		require.Equal(t, kube.Found, state, "%s", gk)
		assert.Equal(t, before[kube.Ref(o)], keptOf(live), kube.Ref(o))
		for _, e := range live.GetManagedFields() {
			assert.Equal(t, live.GetAPIVersion(), e.APIVersion, "%s: managedFields of %s", kube.Ref(o), e.Manager)
		}
	}
}

func storageVersionOf(crd *unstructured.Unstructured) (string, bool) {
	for _, v := range crd.Object["spec"].(map[string]any)["versions"].([]any) {
		if v.(map[string]any)["storage"] == true {
			return v.(map[string]any)["name"].(string), true
		}
	}
	return "", false
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	return string(data)
}

// The migration of more objects than one list page holds (500): HelmReleases created at v2beta1
// under Flux 2.2.3, migrated to v2 for 2.9.4, with the progress lines rate-limited and the last
// one complete; the 2.9.4 CRDs then apply. STORAGE_MIGRATION_OBJECTS sets how many (600 by
// default), for timing by hand; speed targets belong to `make bench`.
func TestMigrationOfManyObjects(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("STORAGE_MIGRATION_OBJECTS"))
	if n <= 0 {
		n = 600
	}
	env := testenv.Start(t)
	c := testenv.FastClient(t, env.Config, 400, 800)
	ctx := context.Background()
	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.2.3", CRDsOnly: true})
	env.CreateNamespace(t, "many")
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(20)
	for i := range n {
		g.Go(func() error {
			hr := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "helm.toolkit.fluxcd.io/v2beta1", "kind": "HelmRelease",
				"metadata": map[string]any{"name": fmt.Sprintf("app-%05d", i), "namespace": "many"},
				"spec": map[string]any{"interval": "5m", "chart": map[string]any{"spec": map[string]any{
					"chart": "podinfo", "sourceRef": map[string]any{"kind": "HelmRepository", "name": "charts"}}}},
			}}
			return c.Create(gctx, hr)
		})
	}
	require.NoError(t, g.Wait())
	target := crds(t, "v2.9.4")
	c = testenv.FastClient(t, env.Config, 100, 200) // the plugin's rate limit (kube.Connect)
	start := time.Now()
	plan, err := storage.NewPlan(ctx, c, target)
	require.NoError(t, err)
	planned := time.Since(start)
	var lines []string
	require.NoError(t, storage.Migrate(ctx, c, plan, storage.Options{Progress: func(s string) { lines = append(lines, s) }}))
	t.Logf("%d HelmReleases: planned in %s, migrated (12 CRDs) in %s", n, planned.Round(time.Millisecond), (time.Since(start) - planned).Round(time.Millisecond))
	hrLines := 0
	for _, l := range lines {
		if strings.Contains(l, "helmreleases") {
			hrLines++
			t.Log(l)
		}
	}
	// A line to start, at most one a second, one to end.
	assert.LessOrEqual(t, hrLines, int(time.Since(start).Seconds())+2)
	assert.Equal(t, fmt.Sprintf("migrating %s helmreleases.helm.toolkit.fluxcd.io to v2: %s/%s", thousand(n), thousand(n), thousand(n)), lastWith(lines, "helmreleases"))
	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.9.4", CRDsOnly: true})
}

func thousand(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func lastWith(lines []string, sub string) string {
	last := ""
	for _, l := range lines {
		if strings.Contains(l, sub) {
			last = l
		}
	}
	return last
}

// A controller writing an object while it is migrated loses nothing: the rewrite carries the
// resourceVersion it read, and a conflict re-reads. Here every object's first rewrite (a JSON patch
// or an update) meets a write made just before it, a label change at the old version.
func TestMigrationConflictsReread(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.2.3", CRDsOnly: true})
	objs := testenv.CreateOldFluxObjects(t, c, "busy")
	var mu sync.Mutex
	interfered := map[string]bool{}
	url := faultproxy.Serve(t, env, func(r *http.Request) faultproxy.Fate {
		if r.Method != http.MethodPatch && r.Method != http.MethodPut {
			return faultproxy.Pass
		}
		// /apis/GROUP/VERSION/namespaces/busy/RESOURCE/NAME
		parts := strings.Split(r.URL.Path, "/")
		if len(parts) != 8 || parts[4] != "namespaces" {
			return faultproxy.Pass
		}
		mu.Lock()
		defer mu.Unlock()
		key := parts[6] + "/" + parts[7]
		if interfered[key] {
			return faultproxy.Pass
		}
		for _, o := range objs {
			resource := strings.ToLower(o.GetKind()) + "s"
			if strings.HasSuffix(resource, "ys") {
				resource = strings.TrimSuffix(resource, "ys") + "ies"
			}
			if resource == parts[6] && o.GetName() == parts[7] {
				interfered[key] = true
				live := &unstructured.Unstructured{}
				live.SetGroupVersionKind(o.GroupVersionKind())
				if err := c.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
					t.Errorf("interfering with %s: %v", key, err)
					return faultproxy.Pass
				}
				labels := live.GetLabels()
				labels["written-during-migration"] = "yes"
				live.SetLabels(labels)
				if err := c.Update(ctx, live); err != nil {
					t.Errorf("interfering with %s: %v", key, err)
				}
			}
		}
		return faultproxy.Pass
	})
	cfg, err := clientcmd.BuildConfigFromFlags("", faultproxy.Kubeconfig(t, url))
	require.NoError(t, err)
	pc, err := client.New(cfg, client.Options{})
	require.NoError(t, err)

	target := crds(t, "v2.9.4")
	plan, err := storage.NewPlan(ctx, pc, target)
	require.NoError(t, err)
	require.NoError(t, storage.Migrate(ctx, pc, plan, storage.Options{}))
	assert.Len(t, interfered, len(objs), "every object's first rewrite met a conflict")

	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.9.4", CRDsOnly: true})
	dc := env.Client(t)
	for _, o := range objs {
		live, state, err := kube.GetByID(ctx, dc, kube.ID(o))
		require.NoError(t, err)
		require.Equal(t, kube.Found, state)
		assert.Equal(t, "yes", live.GetLabels()["written-during-migration"], "%s: the concurrent write is kept", kube.Ref(o))
		assert.Equal(t, o.GetUID(), live.GetUID())
		for _, e := range live.GetManagedFields() {
			assert.Equal(t, live.GetAPIVersion(), e.APIVersion, "%s: managedFields of %s", kube.Ref(o), e.Manager)
		}
	}
}
