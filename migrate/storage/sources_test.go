package storage_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// sourcesTestRendering decodes every manifest of one Flux version of the distribution data.
func sourcesTestRendering(t *testing.T, version string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.ReadManifests(filepath.Join(testenv.DistributionDir(t), "flux", version))
	require.NoError(t, err)
	return objs
}

// sourcesTestKustomization creates a Kustomization at apiVersion with spec and gives it the
// inventory entries (id, v pairs) as kustomize-controller would.
func sourcesTestKustomization(ctx context.Context, t *testing.T, c client.Client, apiVersion, ns, name string, spec map[string]any, entries ...[2]string) *unstructured.Unstructured {
	t.Helper()
	ks := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": "Kustomization",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     spec,
	}}
	require.NoError(t, c.Create(ctx, ks))
	if len(entries) > 0 {
		list := make([]any, 0, len(entries))
		for _, e := range entries {
			list = append(list, map[string]any{"id": e[0], "v": e[1]})
		}
		require.NoError(t, testenv.SetStatus(ctx, c, ks, map[string]any{"inventory": map[string]any{"entries": list}}))
	}
	return ks
}

func sourcesTestSpec() map[string]any {
	return map[string]any{
		"interval": "10m", "path": "./apps", "prune": true,
		"sourceRef": map[string]any{"kind": "GitRepository", "name": "fleet"},
	}
}

// TestStaleSources runs against one API server: first without Flux, then with the CRDs of Flux
// 2.7.5 (the last release serving helm v2beta2 and source v1beta2) checked against 2.9.4's.
func TestStaleSources(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	served := storage.ServedVersions(sourcesTestRendering(t, "v2.9.4"))

	t.Run("no Kustomization CRD: nothing stale, no error", func(t *testing.T) {
		stale, err := storage.StaleSources(ctx, c, served)
		require.NoError(t, err)
		assert.NotNil(t, stale)
		assert.Empty(t, stale)
	})

	env.InstallFlux(t, testenv.FluxInstall{Version: "v2.7.5", CRDsOnly: true})
	for _, ns := range []string{"team-a", "team-b", "team-c", "team-d"} {
		env.CreateNamespace(t, ns)
	}

	t.Run("exactly the Flux objects applied at versions the target does not serve", func(t *testing.T) {
		// The entries out of order on purpose: the result is sorted by object, not inventory order.
		sourcesTestKustomization(ctx, t, c, "kustomize.toolkit.fluxcd.io/v1", "team-a", "apps", sourcesTestSpec(),
			[2]string{"team-a_podinfo_helm.toolkit.fluxcd.io_HelmRelease", "v2beta2"},
			[2]string{"team-a_podinfo_source.toolkit.fluxcd.io_HelmRepository", "v1"},
			[2]string{"team-a_podinfo_apps_Deployment", "v1"},
			[2]string{"team-a_fleet_source.toolkit.fluxcd.io_GitRepository", "v1beta2"},
			[2]string{"_podinfo-reader_rbac.authorization.k8s.io_ClusterRole", "v1"},
		)
		// Written at v1beta2 (served by 2.7.5): the version a Kustomization is read at does not matter.
		sourcesTestKustomization(ctx, t, c, "kustomize.toolkit.fluxcd.io/v1beta2", "team-b", "infra", sourcesTestSpec(),
			[2]string{"team-b_redis_helm.toolkit.fluxcd.io_HelmRelease", "v2"},
			[2]string{"team-b_charts_source.toolkit.fluxcd.io_OCIRepository", "v1beta2"},
			[2]string{"team-b_app_image.toolkit.fluxcd.io_ImagePolicy", "v1beta2"},
			[2]string{"team-b_slack_notification.toolkit.fluxcd.io_Alert", "v1beta3"},
		)
		// A Kustomization without an inventory yet (never reconciled) has nothing stale.
		sourcesTestKustomization(ctx, t, c, "kustomize.toolkit.fluxcd.io/v1", "team-c", "new", sourcesTestSpec())

		stale, err := storage.StaleSources(ctx, c, served)
		require.NoError(t, err)
		assert.Equal(t, []storage.StaleSource{
			{Kustomization: "team-a/apps", Object: "GitRepository team-a/fleet", APIVersion: "source.toolkit.fluxcd.io/v1beta2", RemovedIn: "Flux 2.8"},
			{Kustomization: "team-a/apps", Object: "HelmRelease team-a/podinfo", APIVersion: "helm.toolkit.fluxcd.io/v2beta2", RemovedIn: "Flux 2.8"},
			{Kustomization: "team-b/infra", Object: "ImagePolicy team-b/app", APIVersion: "image.toolkit.fluxcd.io/v1beta2", RemovedIn: "Flux 2.9"},
			{Kustomization: "team-b/infra", Object: "OCIRepository team-b/charts", APIVersion: "source.toolkit.fluxcd.io/v1beta2", RemovedIn: "Flux 2.8"},
		}, stale)
		messages := make([]string, 0, len(stale))
		for _, s := range stale {
			messages = append(messages, s.String())
		}
		assert.Equal(t, []string{
			"Kustomization team-a/apps applies GitRepository team-a/fleet as source.toolkit.fluxcd.io/v1beta2, which the target removes (removed in Flux 2.8)",
			"Kustomization team-a/apps applies HelmRelease team-a/podinfo as helm.toolkit.fluxcd.io/v2beta2, which the target removes (removed in Flux 2.8)",
			"Kustomization team-b/infra applies ImagePolicy team-b/app as image.toolkit.fluxcd.io/v1beta2, which the target removes (removed in Flux 2.9)",
			"Kustomization team-b/infra applies OCIRepository team-b/charts as source.toolkit.fluxcd.io/v1beta2, which the target removes (removed in Flux 2.8)",
		}, messages)

		// The same cluster checked against 2.7.5 itself: everything it applies is still served.
		stale, err = storage.StaleSources(ctx, c, storage.ServedVersions(sourcesTestRendering(t, "v2.7.5")))
		require.NoError(t, err)
		assert.Empty(t, stale)
	})

	t.Run("an inventory entry that does not parse is an error naming the Kustomization", func(t *testing.T) {
		broken := sourcesTestKustomization(ctx, t, c, "kustomize.toolkit.fluxcd.io/v1", "team-d", "broken", sourcesTestSpec(),
			[2]string{"team-d_podinfo_helm.toolkit.fluxcd.io_HelmRelease", "v2"},
			[2]string{"not-an-id", "v1"},
		)
		_, err := storage.StaleSources(ctx, c, served)
		assert.EqualError(t, err, "Kustomization team-d/broken: status.inventory.entries[1]: unable to parse stored object metadata: not-an-id")

		require.NoError(t, testenv.SetStatus(ctx, c, broken, map[string]any{"inventory": map[string]any{"entries": []any{
			map[string]any{"id": "team-d_podinfo_helm.toolkit.fluxcd.io_HelmRelease", "v": ""},
		}}}))
		_, err = storage.StaleSources(ctx, c, served)
		assert.EqualError(t, err, "Kustomization team-d/broken: status.inventory.entries[0] (team-d_podinfo_helm.toolkit.fluxcd.io_HelmRelease) has no version")
		require.NoError(t, c.Delete(ctx, broken))
	})

	t.Run("DroppedFields agrees with the API server", func(t *testing.T) {
		// 2.7.5 stores Kustomizations at v1 and HelmReleases at v2, with conversion None: an
		// object sent at v1beta2 or v2beta2 is pruned by the storage version's schema on its way
		// to etcd, which is the drop DroppedFields predicts for that version.
		kustomization := droppedTestObject(t, kustomizationV1beta2)
		helmRelease := droppedTestObject(t, `
apiVersion: helm.toolkit.fluxcd.io/v2beta2
kind: HelmRelease
metadata: {name: podinfo, namespace: team-c}
spec:
  interval: 5m
  chart:
    spec:
      chart: podinfo
      valuesFile: values-prod.yaml
      sourceRef: {kind: HelmRepository, name: podinfo}
  values: {replicaCount: 2, nested: {free: [form]}}
  valuesFrom: [{kind: ConfigMap, name: extra, foo: bar}]
  postRenderers:
  - kustomize:
      patches: [{patch: "[]", target: {kind: Deployment}}]
      patchesStrategicMerge: [{apiVersion: apps/v1, kind: Deployment, metadata: {name: podinfo}}]
      patchesJson6902: [{target: {kind: Deployment, name: podinfo}, patch: [{op: remove, path: /spec/replicas}]}]
`)
		for _, tc := range []struct {
			sent    *unstructured.Unstructured
			storage string
			want    []string
		}{
			{kustomization, "v1", []string{"spec.patchesJson6902", "spec.patchesStrategicMerge", "spec.validation"}},
			{helmRelease, "v2", []string{
				"spec.chart.spec.valuesFile",
				"spec.postRenderers[0].kustomize.patchesJson6902",
				"spec.postRenderers[0].kustomize.patchesStrategicMerge",
				"spec.valuesFrom[0].foo",
			}},
		} {
			sent := tc.sent
			sent.SetNamespace("team-c")
			unstructured.RemoveNestedField(sent.Object, "status")
			predicted, err := storage.DroppedFields(sent, droppedTestCRD(t, "v2.7.5", sent.GetKind()), tc.storage)
			require.NoError(t, err)
			require.Equal(t, tc.want, predicted, sent.GetKind())

			require.NoError(t, c.Create(ctx, sent.DeepCopy()))
			back := &unstructured.Unstructured{}
			back.SetGroupVersionKind(sent.GroupVersionKind())
			require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(sent), back))
			assert.Equal(t, predicted, sourcesTestMissing(sent.Object["spec"], back.Object["spec"], "spec"),
				"%s: the fields the server dropped are the ones predicted", sent.GetKind())
		}
	})
}

// sourcesTestMissing returns the paths of sent (at path) that back lacks, sorted; a missing
// object or list is one path, as DroppedFields reports it. Fields the server added (defaults)
// are not looked at.
func sourcesTestMissing(sent, back any, path string) []string {
	var missing []string
	switch s := sent.(type) {
	case map[string]any:
		b, _ := back.(map[string]any)
		for k, v := range s {
			bv, ok := b[k]
			if !ok {
				missing = append(missing, path+"."+k)
				continue
			}
			missing = append(missing, sourcesTestMissing(v, bv, path+"."+k)...)
		}
	case []any:
		b, _ := back.([]any)
		for i, v := range s {
			if i >= len(b) {
				missing = append(missing, fmt.Sprintf("%s[%d]", path, i))
				continue
			}
			missing = append(missing, sourcesTestMissing(v, b[i], fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	sort.Strings(missing)
	return missing
}

func TestServedVersions(t *testing.T) {
	helm := schema.GroupKind{Group: "helm.toolkit.fluxcd.io", Kind: "HelmRelease"}
	kustomize := schema.GroupKind{Group: "kustomize.toolkit.fluxcd.io", Kind: "Kustomization"}
	alert := schema.GroupKind{Group: "notification.toolkit.fluxcd.io", Kind: "Alert"}

	v275 := storage.ServedVersions(sourcesTestRendering(t, "v2.7.5"))
	assert.ElementsMatch(t, []string{"v2", "v2beta2"}, v275[helm])
	assert.ElementsMatch(t, []string{"v1", "v1beta2"}, v275[kustomize])
	v294 := storage.ServedVersions(sourcesTestRendering(t, "v2.9.4"))
	assert.Equal(t, []string{"v2"}, v294[helm])
	assert.Equal(t, []string{"v1beta3"}, v294[alert])
	for gk := range v294 {
		assert.NotEmpty(t, gk.Kind, "only CRDs make entries")
	}

	// A version that is defined but not served does not count; objects other than CRDs are ignored.
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.example.com"},
		"spec": map[string]any{
			"group": "example.com", "names": map[string]any{"kind": "Widget"},
			"versions": []any{
				map[string]any{"name": "v1", "served": true, "storage": true},
				map[string]any{"name": "v1beta1", "served": false},
			},
		},
	}}
	deployment := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "x"},
		"spec": map[string]any{"versions": []any{map[string]any{"name": "v1", "served": true}}},
	}}
	assert.Equal(t, map[schema.GroupKind][]string{{Group: "example.com", Kind: "Widget"}: {"v1"}},
		storage.ServedVersions([]*unstructured.Unstructured{crd, deployment}))
}

func TestStaleSourceString(t *testing.T) {
	s := storage.StaleSource{Kustomization: "team-a/apps", Object: "HelmRelease team-a/podinfo", APIVersion: "helm.toolkit.fluxcd.io/v2beta2"}
	assert.Equal(t, "Kustomization team-a/apps applies HelmRelease team-a/podinfo as helm.toolkit.fluxcd.io/v2beta2, which the target removes", s.String())
	s.RemovedIn = "Flux 2.8"
	assert.Equal(t, "Kustomization team-a/apps applies HelmRelease team-a/podinfo as helm.toolkit.fluxcd.io/v2beta2, which the target removes (removed in Flux 2.8)", s.String())
}

// TestRemovedInMatchesDistribution checks the package's table of removals against the CRDs of
// every Flux release in the distribution data: a group/version served by some release and by no
// later one must be named with the first minor that dropped it, and everything else (still
// served, or never seen) must be unknown.
func TestRemovedInMatchesDistribution(t *testing.T) {
	root := filepath.Join(testenv.DistributionDir(t), "flux")
	dirs, err := os.ReadDir(root)
	require.NoError(t, err)
	type release struct {
		name                string
		major, minor, patch int
	}
	var releases []release
	for _, d := range dirs {
		var r release
		if _, err := fmt.Sscanf(d.Name(), "v%d.%d.%d", &r.major, &r.minor, &r.patch); err != nil || !d.IsDir() {
			continue
		}
		r.name = d.Name()
		releases = append(releases, r)
	}
	sort.Slice(releases, func(i, j int) bool {
		a, b := releases[i], releases[j]
		if a.major != b.major {
			return a.major < b.major
		}
		if a.minor != b.minor {
			return a.minor < b.minor
		}
		return a.patch < b.patch
	})
	require.GreaterOrEqual(t, len(releases), 4, "the distribution data spans the removals")

	// For each group/version: the index of the last release serving it.
	lastServed := map[schema.GroupVersion]int{}
	groups := map[string]bool{}
	for i, r := range releases {
		for gk, versions := range storage.ServedVersions(sourcesTestRendering(t, r.name)) {
			groups[gk.Group] = true
			for _, v := range versions {
				lastServed[schema.GroupVersion{Group: gk.Group, Version: v}] = i
			}
		}
	}
	removals := 0
	for gv, last := range lastServed {
		want := ""
		if last < len(releases)-1 {
			next := releases[last+1]
			want = fmt.Sprintf("Flux %d.%d", next.major, next.minor)
			removals++
		}
		assert.Equal(t, want, storage.RemovedIn(gv), "%s", gv)
	}
	assert.Equal(t, 10, removals, "the facts name 10 removed group/versions")
	// No row for a version the data never shows.
	for g := range groups {
		for _, v := range []string{"v1alpha1", "v1alpha2", "v1beta1", "v1beta2", "v1beta3", "v2alpha1", "v2beta1", "v2beta2", "v2beta3", "v3"} {
			gv := schema.GroupVersion{Group: g, Version: v}
			if _, seen := lastServed[gv]; !seen {
				assert.Empty(t, storage.RemovedIn(gv), "%s is in no release", gv)
			}
		}
	}
}
