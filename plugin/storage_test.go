package plugin

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/permissions"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/test/distribution/distdata"
	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func storageInstance(version, extra string) string {
	return fmt.Sprintf(`apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "%s"
    registry: ghcr.io/fluxcd
  components: [source-controller, kustomize-controller, helm-controller, notification-controller, image-reflector-controller]
%s`, version, extra)
}

// clusterAt223 is an API server where the plugin applied storageInstance at Flux 2.2.3 and users
// created objects at that release's API versions (testenv.CreateOldFluxObjects).
type clusterAt223 struct {
	env       *testenv.Env
	c         client.Client
	dist, dir string
	objs      []*unstructured.Unstructured
	// plugin runs the plugin against the server with the test distribution.
	plugin func(args ...string) result
}

func startAt223(t *testing.T, namespaces ...string) *clusterAt223 {
	t.Helper()
	k := &clusterAt223{dist: testenv.DistributionDir(t), env: testenv.Start(t), dir: t.TempDir()}
	k.c = k.env.Client(t)
	k.plugin = func(args ...string) result {
		return runPlugin(t, "", append(args, "--kubeconfig", k.env.Kubeconfig, "--distribution", k.dist)...)
	}
	r := k.plugin("apply", "-f", writeFile(t, k.dir, "old.yaml", storageInstance("2.2.3", "")), "--wait=false")
	require.Equal(t, 0, r.Code, r.Stderr)
	k.objs = testenv.CreateOldFluxObjects(t, k.c, namespaces...)
	return k
}

// Upgrading an instance applied at Flux 2.2.3, with users' objects at that release's versions,
// straight to 2.9.4 (which removes them) works in one apply: the stored objects are migrated
// before the CRDs are applied (#12). A dry run shows the migration and changes nothing;
// spec.migrateResources: false refuses it and changes nothing.
func TestApplyAcrossRemovedVersions(t *testing.T) {
	k := startAt223(t, "team-a", "team-b")
	env, c, dist, dir, objs, plugin := k.env, k.c, k.dist, k.dir, k.objs, k.plugin
	ctx := context.Background()

	t.Run("status warns of stored versions a later Flux removes", func(t *testing.T) {
		r := runPlugin(t, "", "status", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Regexp(t, `Upgrade Warning:\s+helmreleases.helm.toolkit.fluxcd.io stores objects at v2beta2, which Flux 2.8 removes: an apply of 2.8 or later migrates them first\n`, r.Stdout)
		assert.Regexp(t, `Upgrade Warning:\s+imagerepositories.image.toolkit.fluxcd.io stores objects at v1beta2, which Flux 2.9 removes`, r.Stdout)
	})

	snapshot := func() map[string]string {
		return testenv.ListResourceVersions(t, c,
			schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"},
			schema.GroupVersionKind{Group: "helm.toolkit.fluxcd.io", Version: "v2beta1", Kind: "HelmReleaseList"},
			schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1beta2", Kind: "HelmRepositoryList"},
			schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "KustomizationList"},
			schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DeploymentList"})
	}
	newFile := writeFile(t, dir, "new.yaml", storageInstance("2.9.4", ""))

	t.Run("a dry run shows the migration and changes nothing", func(t *testing.T) {
		before := snapshot()
		for _, mode := range []string{"server", "client"} {
			r := plugin("apply", "-f", newFile, "--dry-run="+mode)
			require.Equal(t, 0, r.Code, r.Stderr)
			assert.Contains(t, r.Stderr, "helmreleases.helm.toolkit.fluxcd.io: 2 objects from v2beta2 to v2 (storedVersions [v2beta2] -> [v2])")
			assert.Contains(t, r.Stderr, "kustomizations.kustomize.toolkit.fluxcd.io: 2 objects from v1beta2 to v1 (storedVersions [v1] -> [v1])")
		}
		assert.Equal(t, before, snapshot())
	})

	t.Run("diff shows the migration, exits 1 and changes nothing", func(t *testing.T) {
		before := snapshot()
		r := plugin("diff", "-f", newFile)
		require.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "storage migration: apply would migrate the stored objects of")
		assert.Contains(t, r.Stderr, "helmreleases.helm.toolkit.fluxcd.io: 2 objects from v2beta2 to v2 (storedVersions [v2beta2] -> [v2])")
		assert.True(t, strings.Contains(r.Stdout, "+++ merged/CustomResourceDefinition/helmreleases.helm.toolkit.fluxcd.io"), "the new CRDs are diffed")
		assert.True(t, regexp.MustCompile(`\n\+\s+image: ghcr.io/fluxcd/helm-controller:v1\.`).MatchString(r.Stdout), "the controllers' new images are diffed")
		assert.Equal(t, before, snapshot())
		off := writeFile(t, dir, "off-diff.yaml", storageInstance("2.9.4", "  migrateResources: false\n"))
		r = plugin("diff", "-f", off)
		assert.Equal(t, 2, r.Code, "the apply would refuse: diff cannot tell\n"+r.Stderr)
		assert.Contains(t, r.Stderr, "migrateResources")
	})

	t.Run("migrateResources false refuses and changes nothing", func(t *testing.T) {
		before := snapshot()
		off := writeFile(t, dir, "off.yaml", storageInstance("2.9.4", "  migrateResources: false\n"))
		r := plugin("apply", "-f", off, "--wait=false")
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "migrateResources")
		assert.Contains(t, r.Stderr, "helmreleases.helm.toolkit.fluxcd.io stores v2beta2")
		assert.Equal(t, before, snapshot())
	})

	// The permissions apply asks for, with the migration's or without.
	newObjects := renderObjects(t, newFile, dist)
	permsFor := func(t *testing.T, withMigration bool) []permissions.Permission {
		t.Helper()
		record, err := apply.NewManager(kube.Instance{Client: c, Name: "flux", Namespace: "flux-system"}).Store().Read(ctx)
		require.NoError(t, err)
		var migration *storage.Plan
		if withMigration {
			migration, err = storage.NewPlan(ctx, c, newObjects)
			require.NoError(t, err)
			require.False(t, migration.Empty())
		}
		perms, err := permissions.ForApply(c.RESTMapper(), permissions.ApplyPlan{
			Name: "flux", Namespace: "flux-system", Objects: newObjects, Previous: record, Prune: true, Storage: migration})
		require.NoError(t, err)
		return perms
	}
	all := func(permissions.Permission, string) bool { return true }

	t.Run("a user who may apply but not migrate is refused before any change", func(t *testing.T) {
		before := snapshot()
		grant(t, c, "dora", permsFor(t, false), all)
		r := runPlugin(t, "", "apply", "-f", newFile, "--wait=false", "--distribution", dist, "--kubeconfig", env.UserKubeconfig(t, "dora"))
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "permissions this apply needs (nothing was changed)")
		assert.Contains(t, r.Stderr, "  update customresourcedefinitions.apiextensions.k8s.io/status named helmreleases.helm.toolkit.fluxcd.io cluster-wide (migrating the stored helmreleases.helm.toolkit.fluxcd.io to v2 before the CRD is upgraded)")
		assert.Equal(t, before, snapshot())
	})

	t.Run("what the upgrade would lose is said first: a dry run lists it, an apply refuses unless --force", func(t *testing.T) {
		// A HelmRelease stored at v2beta2 holding a field the v2 schema drops, and a
		// Kustomization whose inventory says it applies a HelmRelease at a version 2.9.4 no longer
		// serves. (A Kustomization created at v1beta2 here is stored at v1 already, pruned then.)
		env.CreateNamespace(t, "team-c")
		lossy := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "helm.toolkit.fluxcd.io/v2beta2", "kind": "HelmRelease",
			"metadata": map[string]any{"name": "lossy", "namespace": "team-c"},
			"spec": map[string]any{"interval": "5m", "chart": map[string]any{"spec": map[string]any{
				"chart": "podinfo", "valuesFile": "values-prod.yaml",
				"sourceRef": map[string]any{"kind": "HelmRepository", "name": "charts"}}}},
		}}
		require.NoError(t, c.Create(ctx, lossy))
		stale := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kustomize.toolkit.fluxcd.io/v1beta2", "kind": "Kustomization",
			"metadata": map[string]any{"name": "apps", "namespace": "team-c"},
			"spec": map[string]any{"interval": "10m", "path": "./apps", "prune": true,
				"sourceRef": map[string]any{"kind": "GitRepository", "name": "app"}},
		}}
		require.NoError(t, c.Create(ctx, stale))
		require.NoError(t, testenv.SetStatus(ctx, c, stale, map[string]any{"inventory": map[string]any{"entries": []any{
			map[string]any{"id": "team-c_podinfo_helm.toolkit.fluxcd.io_HelmRelease", "v": "v2beta2"},
		}}}))
		t.Cleanup(func() {
			for _, o := range []*unstructured.Unstructured{lossy, stale} {
				_ = c.Delete(ctx, o)
			}
		})
		droppedLine := "HelmRelease/team-c/lossy: spec.chart.spec.valuesFile would be dropped at helm.toolkit.fluxcd.io/v2"
		staleLine := "Kustomization team-c/apps applies HelmRelease team-c/podinfo as helm.toolkit.fluxcd.io/v2beta2"

		before := snapshot()
		r := plugin("apply", "-f", newFile, "--dry-run=server")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: the upgrade loses: "+droppedLine)
		assert.Contains(t, r.Stderr, "Warning: the upgrade loses: "+staleLine)
		assert.Contains(t, r.Stderr, "Warning: to fix the sources: `kubectl fluxinstance upgrade-repo -f FILE --repo-dir DIR`")

		r = plugin("apply", "-f", newFile, "--wait=false")
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "error: the upgrade would lose what these lines name (nothing was changed):\n  "+droppedLine)
		assert.Contains(t, r.Stderr, "  "+staleLine)
		assert.Contains(t, r.Stderr, "fix the objects and sources first: `kubectl fluxinstance upgrade-repo -f FILE --repo-dir DIR`")
		assert.Contains(t, r.Stderr, "re-run with --force to upgrade anyway")
		assert.Equal(t, before, snapshot())
	})

	t.Run("apply migrates and upgrades in one command", func(t *testing.T) {
		// With exactly the permissions of the plan, the migration's included.
		grant(t, c, "eve", permsFor(t, true), all)
		r := runPlugin(t, "", "apply", "-f", newFile, "--wait=false", "--distribution", dist, "--kubeconfig", env.UserKubeconfig(t, "eve"))
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "migrating 2 helmreleases.helm.toolkit.fluxcd.io to v2: 2/2")
		c := env.Client(t) // a fresh REST mapper: the versions the first one cached are gone
		for _, o := range objs {
			gk := o.GroupVersionKind().GroupKind()
			live, _, err := kube.GetByID(ctx, c, kube.ID(o))
			require.NoError(t, err)
			require.NotNil(t, live, kube.Ref(o))
			assert.Equal(t, o.GetUID(), live.GetUID(), kube.Ref(o))
			assert.Equal(t, o.GetGeneration(), live.GetGeneration(), kube.Ref(o))
			assert.Equal(t, o.Object["spec"], live.Object["spec"], kube.Ref(o))
			assert.Equal(t, o.GetLabels(), live.GetLabels(), kube.Ref(o))
			for _, e := range live.GetManagedFields() {
				assert.Equal(t, live.GetAPIVersion(), e.APIVersion, "%s %s", gk, e.Manager)
			}
		}
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(kube.CRDGVK)
		require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "helmreleases.helm.toolkit.fluxcd.io"}, crd))
		stored, _, _ := unstructured.NestedStringSlice(crd.Object, "status", "storedVersions")
		assert.Equal(t, []string{"v2"}, stored)
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		assert.Len(t, versions, 1, "the CRD is the target's")

		again := plugin("apply", "-f", newFile, "--wait=false", "--dry-run=server")
		require.Equal(t, 0, again.Code, again.Stderr)
		status := runPlugin(t, "", "status", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, status.Code, status.Stderr)
		assert.NotContains(t, status.Stdout, "Upgrade Warning", "nothing is stored at a removed version any more")
		assert.NotContains(t, again.Stderr, "storage migration")
		assert.False(t, strings.Contains(again.Stderr, "migrating "), again.Stderr)
	})
}

// An apply killed in the middle of the migration (its first PUT, the first CRD's update, cut in
// flight; then, on the re-run, its first PATCH, an object's rewrite) is finished by running it
// again: the CRDs end exactly the rendered ones, nothing is lost, and one more apply plans nothing.
func TestInterruptedApplyMigrationConverges(t *testing.T) {
	k := startAt223(t, "team-a", "team-b")
	env, dist, dir, objs := k.env, k.dist, k.dir, k.objs
	ctx := context.Background()
	newFile := writeFile(t, dir, "new.yaml", storageInstance("2.9.4", ""))
	proxy, proxyConfig := faultproxy.Start(t, env)
	// A killed run leaves its Lease behind: the next waits until the claim expires.
	applyThroughProxy := func() result {
		return runPlugin(t, "", "apply", "-f", newFile, "--wait=false", "--wait-lock=2m", "--distribution", dist, "--kubeconfig", proxyConfig)
	}

	for _, method := range []string{http.MethodPut, http.MethodPatch} {
		proxy.KillAtFirst(method)
		r := applyThroughProxy()
		require.Equal(t, 1, r.Code, "killed at the first %s: %s", method, r.Stderr)
		t.Logf("killed at the first %s: %s", method, lastLine(r.Stderr))
		require.Contains(t, r.Stderr, "storage migration: migrating", "the kill landed in the migration")
	}
	proxy.Reset(-1)
	r := applyThroughProxy()
	require.Equal(t, 0, r.Code, r.Stderr)

	dc := env.Client(t)
	for _, crd := range renderObjects(t, newFile, dist) {
		if crd.GetKind() != "CustomResourceDefinition" {
			continue
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(kube.CRDGVK)
		require.NoError(t, dc.Get(ctx, client.ObjectKey{Name: crd.GetName()}, live))
		want, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		got, _, _ := unstructured.NestedSlice(live.Object, "spec", "versions")
		require.Len(t, got, len(want), crd.GetName())
		for i := range want {
			assert.Equal(t, want[i].(map[string]any)["name"], got[i].(map[string]any)["name"], crd.GetName())
		}
		stored, _, _ := unstructured.NestedStringSlice(live.Object, "status", "storedVersions")
		assert.Len(t, stored, 1, crd.GetName())
	}
	for _, o := range objs {
		live, state, err := kube.GetByID(ctx, dc, kube.ID(o))
		require.NoError(t, err)
		require.Equal(t, kube.Found, state, kube.Ref(o))
		assert.Equal(t, o.GetUID(), live.GetUID(), kube.Ref(o))
		assert.Equal(t, o.GetGeneration(), live.GetGeneration(), kube.Ref(o))
		assert.Equal(t, o.Object["spec"], live.Object["spec"], kube.Ref(o))
	}
	again := runPlugin(t, "", "apply", "-f", newFile, "--wait=false", "--distribution", dist, "--kubeconfig", env.Kubeconfig)
	require.Equal(t, 0, again.Code, again.Stderr)
	assert.NotContains(t, again.Stderr, "storage migration")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Operator mode migrates as direct mode does before it applies the FluxInstance, with the same
// refusals, here with the operator's traces only (its CRD and a FluxInstance carrying its
// finalizer): the real operator's reconcile after the migration is proven in test/e2e/operator.
func TestOperatorApplyMigratesFirst(t *testing.T) {
	k := startAt223(t, "team-a")
	env, c, dist, dir, plugin := k.env, k.c, k.dist, k.dir, k.plugin
	ctx := context.Background()
	crd, err := testenv.DecodeYAML([]byte(testenv.FluxInstanceStandInCRD))
	require.NoError(t, err)
	require.NoError(t, c.Create(ctx, crd[0]))
	fi, err := testenv.DecodeYAML([]byte(storageInstance("2.2.3", "")))
	require.NoError(t, err)
	fi[0].SetFinalizers([]string{"fluxcd.controlplane.io/finalizer"})
	require.Eventually(t, func() bool { return env.Client(t).Create(ctx, fi[0].DeepCopy()) == nil }, 20*time.Second, 200*time.Millisecond)
	snapshot := func() map[string]string {
		return testenv.ListResourceVersions(t, c,
			schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"},
			schema.GroupVersionKind{Group: "helm.toolkit.fluxcd.io", Version: "v2beta1", Kind: "HelmReleaseList"},
			schema.GroupVersionKind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxInstanceList"})
	}
	newFile := writeFile(t, dir, "new.yaml", storageInstance("2.9.4", ""))
	before := snapshot()

	// A version the operator may resolve to another minor than the plugin's distribution does:
	// the plan is said, not carried out.
	rangeFile := writeFile(t, dir, "range.yaml", storageInstance("2.x", ""))
	r := plugin("apply", "-f", rangeFile, "--mode=operator", "--dry-run=server")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, `Note: Flux v2.9.4 would need a storage migration of `)
	assert.Contains(t, r.Stderr, `spec.distribution.version "2.x" admits other minor releases`)
	assert.NotContains(t, r.Stderr, "storage migration: would migrate")

	assertMigratesForTheOperatorsVersion(t, k, rangeFile, snapshot)
	before = snapshot()

	off := writeFile(t, dir, "off.yaml", storageInstance("2.9.4", "  migrateResources: false\n"))
	r = plugin("apply", "-f", off, "--mode=operator", "--wait=false")
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "helmreleases.helm.toolkit.fluxcd.io stores v2beta2")
	assert.Equal(t, before, snapshot(), "migrateResources: false refuses and changes nothing")

	r = plugin("apply", "-f", newFile, "--mode=operator", "--dry-run=server")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "storage migration: would migrate (server dry run)")
	assert.Contains(t, r.Stderr, "helmreleases.helm.toolkit.fluxcd.io: 1 object from v2beta2 to v2")
	assert.Equal(t, "fluxinstance.fluxcd.controlplane.io/flux configured (server dry run)\n", r.Stdout)
	assert.Equal(t, before, snapshot(), "a dry run changes nothing")

	// A user who may read everything and apply the FluxInstance, but not migrate.
	viewer := []permissions.Permission{{Verbs: []string{"get", "list"}, Group: "*", Resource: "*"}}
	grant(t, c, "fred", append(viewer, permissions.ForOperatorApply(permissions.OperatorApplyPlan{Name: "flux", Namespace: "flux-system"})...),
		func(permissions.Permission, string) bool { return true })
	r = runPlugin(t, "", "apply", "-f", newFile, "--mode=operator", "--wait=false", "--distribution", dist, "--kubeconfig", env.UserKubeconfig(t, "fred"))
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "permissions this apply needs (nothing was changed)")
	assert.Contains(t, r.Stderr, "  update customresourcedefinitions.apiextensions.k8s.io/status named helmreleases.helm.toolkit.fluxcd.io cluster-wide")
	assert.Equal(t, before, snapshot())

	// A HelmRelease holding a field the v2 schema drops: refused unless --force, which in
	// operator mode means only that.
	env.CreateNamespace(t, "team-c")
	require.NoError(t, c.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "helm.toolkit.fluxcd.io/v2beta2", "kind": "HelmRelease",
		"metadata": map[string]any{"name": "lossy", "namespace": "team-c"},
		"spec": map[string]any{"interval": "5m", "chart": map[string]any{"spec": map[string]any{
			"chart": "podinfo", "valuesFile": "values-prod.yaml",
			"sourceRef": map[string]any{"kind": "HelmRepository", "name": "charts"}}}},
	}}))
	dropped := "HelmRelease/team-c/lossy: spec.chart.spec.valuesFile would be dropped at helm.toolkit.fluxcd.io/v2"
	before = snapshot()
	r = plugin("apply", "-f", newFile, "--mode=operator", "--wait=false")
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "  "+dropped)
	assert.Contains(t, r.Stderr, "re-run with --force to upgrade anyway")
	assert.Equal(t, before, snapshot())

	r = plugin("apply", "-f", newFile, "--mode=operator", "--force", "--wait=false")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Warning: the upgrade loses: "+dropped)
	assert.Contains(t, r.Stderr, "migrating 2 helmreleases.helm.toolkit.fluxcd.io to v2: 2/2")
	assert.Equal(t, "fluxinstance.fluxcd.controlplane.io/flux configured\n", r.Stdout)
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "helmreleases.helm.toolkit.fluxcd.io"}, live))
	stored, _, _ := unstructured.NestedStringSlice(live.Object, "status", "storedVersions")
	assert.Equal(t, []string{"v2"}, stored, "migrated, though no operator runs to apply the new CRDs")
	live.SetGroupVersionKind(schema.GroupVersionKind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxInstance"})
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "flux"}, live))
	version, _, _ := unstructured.NestedString(live.Object, "spec", "distribution", "version")
	assert.Equal(t, "2.9.4", version)
	assert.NotEmpty(t, live.GetAnnotations()["reconcile.fluxcd.io/requestedAt"], "the operator is asked to reconcile now")
}

// setOperatorAttempt stands in for the Flux Operator's reconcile of the FluxInstance at
// constraint: spec.distribution.version set, then a status of the current generation whose
// lastAttemptedRevision is attempted (what the operator writes, also when the API server refused
// the CRDs of that version).
func setOperatorAttempt(t *testing.T, c client.Client, constraint, attempted string) {
	t.Helper()
	ctx := context.Background()
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(schema.GroupVersionKind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxInstance"})
	key := client.ObjectKey{Namespace: "flux-system", Name: "flux"}
	require.NoError(t, c.Get(ctx, key, live))
	require.NoError(t, unstructured.SetNestedField(live.Object, constraint, "spec", "distribution", "version"))
	require.NoError(t, c.Update(ctx, live))
	require.NoError(t, unstructured.SetNestedMap(live.Object, map[string]any{
		"observedGeneration":    live.GetGeneration(),
		"lastAttemptedRevision": attempted,
		"lastAppliedRevision":   "v2.2.3@sha256:" + strings.Repeat("1", 64),
	}, "status"))
	require.NoError(t, c.Status().Update(ctx, live))
}

// assertMigratesForTheOperatorsVersion checks the storage migration apply --mode=operator plans
// (in dry runs, changing nothing) for rangeFile's "2.x" over the 2.2.3 instance of k, by what the
// operator last attempted, and from an artifact the operator pulls too. It leaves the stand-in
// FluxInstance at 2.2.3 again.
func assertMigratesForTheOperatorsVersion(t *testing.T, k *clusterAt223, rangeFile string, snapshot func() map[string]string) {
	t.Helper()
	env, c, dist, dir, plugin := k.env, k.c, k.dist, k.dir, k.plugin
	// The operator already reconciled "2.x" (an operator upgraded with a newer distribution
	// tries the newer Flux on its own, and the API server refuses its CRDs): the version it
	// resolved, in status.lastAttemptedRevision, is the one apply migrates for.
	for _, tc := range []struct {
		attempted     string
		want, notWant []string
	}{
		{"v2.9.4", []string{`storage migration: the Flux Operator resolves "2.x" to v2.9.4 (its status.lastAttemptedRevision)`,
			"storage migration: would migrate (server dry run)", "helmreleases.helm.toolkit.fluxcd.io: 1 object from v2beta2 to v2",
			"alerts.notification.toolkit.fluxcd.io: 1 object from v1beta2 to v1beta3"}, nil},
		// 2.8 still serves notification v1beta2, which 2.9 removes: nothing to move there.
		{"v2.8.8", []string{`storage migration: the Flux Operator resolves "2.x" to v2.8.8 (its status.lastAttemptedRevision), not v2.9.4: migrating for v2.8.8`,
			"storage migration: would migrate (server dry run)", "helmreleases.helm.toolkit.fluxcd.io: 1 object from v2beta2 to v2"},
			[]string{"alerts.notification.toolkit.fluxcd.io"}},
		{"v2.99.0", []string{`Note: Flux v2.9.4 would need a storage migration`,
			`the Flux Operator resolves "2.x" to v2.99.0 (its status.lastAttemptedRevision), which the plugin's distribution (dir ` + dist + `) lacks`},
			[]string{"storage migration: would migrate"}},
	} {
		setOperatorAttempt(t, c, "2.x", tc.attempted+"@sha256:"+strings.Repeat("0", 64))
		before := snapshot()
		r := plugin("apply", "-f", rangeFile, "--mode=operator", "--dry-run=server")
		require.Equal(t, 0, r.Code, r.Stderr)
		t.Logf("the operator attempted %s:\n%s", tc.attempted, r.Stderr)
		for _, want := range tc.want {
			assert.Contains(t, r.Stderr, want, "attempted %s", tc.attempted)
		}
		for _, notWant := range tc.notWant {
			assert.NotContains(t, r.Stderr, notWant, "attempted %s", tc.attempted)
		}
		assert.Equal(t, before, snapshot(), "a dry run changes nothing")
	}
	// Rendered from spec.distribution.artifact, which the operator pulls too: the plugin's
	// resolution is the operator's.
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{})
	artifact := "oci://" + reg.Host + "/flux/distribution:latest"
	distdata.PushArtifact(t, reg.Host+"/flux/distribution:latest", distdata.TarGz(t, dist, "v2.2.3", "v2.9.4"), distdata.ConfigMediaType, distdata.ContentMediaType, false)
	fromArtifact := writeFile(t, dir, "artifact.yaml", strings.Replace(storageInstance("2.x", ""),
		"    registry: ghcr.io/fluxcd\n", "    registry: ghcr.io/fluxcd\n    artifact: "+artifact+"\n", 1))
	before := snapshot()
	r := runPlugin(t, "", "apply", "-f", fromArtifact, "--mode=operator", "--dry-run=server", "--kubeconfig", env.Kubeconfig)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, `storage migration: the Flux Operator resolves "2.x" from `+artifact+` too`)
	assert.Contains(t, r.Stderr, "helmreleases.helm.toolkit.fluxcd.io: 1 object from v2beta2 to v2")
	assert.Equal(t, before, snapshot(), "a dry run changes nothing")

	// An attempt of another constraint says nothing of this one.
	setOperatorAttempt(t, c, "2.8.x", "v2.8.8@sha256:"+strings.Repeat("0", 64))
	r = plugin("apply", "-f", rangeFile, "--mode=operator", "--dry-run=server")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, `spec.distribution.version "2.x" admits other minor releases`)
	assert.Contains(t, r.Stderr, "run this apply again: the operator's attempt names the version it resolves \"2.x\" to")
	assert.NotContains(t, r.Stderr, "storage migration: would migrate")
	setOperatorAttempt(t, c, "2.2.3", "v2.2.3@sha256:"+strings.Repeat("0", 64))
}
