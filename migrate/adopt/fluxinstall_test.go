package adopt

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestMigrateFluxInstall adopts a `flux install` (the distribution's objects applied by the `flux`
// field manager, no sync objects) and gives it back: detection, a plan without spec.sync and
// without the bootstrap-only checks, a takeover that deletes and restarts nothing, a second run
// with nothing to do, and a rollback to the `flux` manager without kustomize-controller's labels.
// The real `flux install` is adopted end to end in test/e2e/migrate.
func TestMigrateFluxInstall(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := adminClient(t, env)
	objs := env.InstallFlux(t, testenv.FluxInstall{Version: testVersion})
	before := snapshot(t, c, objs)
	specsBefore := deploymentSpecs(t, c, "flux-system")

	in, err := Detect(ctx, c, "")
	require.NoError(t, err)
	assert.Equal(t, installation.ManagedByFluxInstall, in.Installer)
	assert.Equal(t, testVersion, in.Version)
	assert.Nil(t, in.Sync, "no namespace-named Kustomization: no spec.sync")
	assert.Nil(t, in.Kustomization)
	p, err := BuildPlan(ctx, c, in, release(t, testVersion))
	require.NoError(t, err)
	assert.Nil(t, p.Instance.Spec.Sync)
	summary := strings.Join(p.Summary(), "\n")
	assert.Contains(t, summary, "installed by `flux install` in namespace \"flux-system\"")
	assert.Contains(t, summary, "no Kustomization flux-system/flux-system")
	assert.Error(t, CheckRepoDir(in), "--repo-dir has no bootstrap files to replace")

	m := apply.NewManager(kube.Instance{Client: c, Name: "flux", Namespace: in.Namespace})
	_, err = Takeover(ctx, m, p, TakeoverOptions{})
	require.NoError(t, err)
	after := snapshot(t, c, objs)
	for k, s := range before {
		assert.Equal(t, s.uid, after[k].uid, "%s was recreated", k)
	}
	assert.Equal(t, specsBefore, deploymentSpecs(t, c, "flux-system"), "no pod template changed")
	// The harness's objects are the distribution's, whose cluster RBAC and ResourceQuota lack
	// the -<namespace> suffix of `flux install`'s and of the rendering: those are not rendered
	// and keep their owner.
	rendered := map[string]bool{}
	for _, o := range p.Objects {
		rendered[kube.Ref(o)] = true
	}
	kept := 0
	for _, o := range objs {
		want := ownership.PluginFieldManager
		if !rendered[kube.Ref(o)] {
			want, kept = ownership.FluxCLIFieldManager, kept+1
		}
		assert.Equal(t, []string{want}, appliedBy(t, c, o), kube.Ref(o))
	}
	assert.Less(t, kept, 10)
	assert.Contains(t, summary, "kept as they are, not rendered by the FluxInstance")
	assert.Contains(t, summary, "ClusterRole/crd-controller,")
	assert.Contains(t, NextStep(p), "stop running `flux install`")

	_, res, err := migrateOnce(ctx, c, "", testVersion, t)
	require.NoError(t, err)
	assert.True(t, res.NothingToDo)

	rb, err := Rollback(ctx, c, "flux-system")
	require.NoError(t, err)
	assert.Equal(t, installation.ManagedByFluxInstall, rb.Installer)
	for _, o := range objs {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(o), live))
		assert.NotContains(t, live.GetLabels(), ownership.LabelKustomizeName, kube.Ref(o))
		assert.NotContains(t, live.GetLabels(), render.LabelManagedBy, kube.Ref(o))
		assert.NotContains(t, live.GetAnnotations(), render.AnnotationKustomizeSSA, kube.Ref(o))
		assert.Equal(t, []string{ownership.FluxCLIFieldManager}, appliedBy(t, c, o), kube.Ref(o))
	}
	for _, o := range p.Objects {
		assert.Equal(t, []string{ownership.FluxCLIFieldManager}, appliedBy(t, c, o), kube.Ref(o))
	}
	in, err = Detect(ctx, c, "")
	require.NoError(t, err)
	assert.Nil(t, in.Record)
	assert.Equal(t, installation.ManagedByFluxInstall, in.Installer, "after the rollback it is a `flux install` again")
}

// TestMigrateFluxInstallHandWrittenSync: a namespace-named GitRepository and Kustomization
// written by hand become spec.sync; the same objects applied by another Kustomization do not.
func TestMigrateFluxInstallHandWrittenSync(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := adminClient(t, env)
	env.InstallFlux(t, testenv.FluxInstall{Version: testVersion})
	src := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": "flux-system", "namespace": "flux-system"},
		"spec":     map[string]any{"interval": "5m", "url": "https://git.example.com/fleet", "ref": map[string]any{"branch": "prod"}},
	}}
	ks := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": "flux-system", "namespace": "flux-system"},
		"spec": map[string]any{"interval": "10m", "path": "./clusters/prod", "prune": true,
			"sourceRef": map[string]any{"kind": "GitRepository", "name": "flux-system"}},
	}}
	for _, o := range []*unstructured.Unstructured{src, ks} {
		require.NoError(t, c.Create(ctx, o, client.FieldOwner("kubectl-client-side-apply")))
	}
	in, err := Detect(ctx, c, "flux-system")
	require.NoError(t, err)
	require.NotNil(t, in.Sync)
	assert.Equal(t, "https://git.example.com/fleet", in.Sync.URL)
	assert.Equal(t, "refs/heads/prod", in.Sync.Ref)
	assert.Equal(t, "./clusters/prod", in.Sync.Path)
	assert.Equal(t, "5m", in.Sync.Interval)
	assert.NotContains(t, strings.Join(in.Notes, "\n"), "applies Flux's own manifests")

	// A hand-written sync whose path holds the Flux manifests: adopted, and the plan says so.
	setStatus(t, c, ks, map[string]any{"inventory": map[string]any{"entries": []any{
		map[string]any{"id": "flux-system_kustomize-controller_apps_Deployment", "v": "v1"},
	}}})
	in, err = Detect(ctx, c, "flux-system")
	require.NoError(t, err)
	assert.Equal(t, installation.ManagedByFluxInstall, in.Installer)
	assert.Contains(t, strings.Join(in.Notes, "\n"), "applies Flux's own manifests from https://git.example.com/fleet")
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(ks), ks))

	ks.SetLabels(map[string]string{ownership.LabelKustomizeName: "infra", ownership.LabelKustomizeNamespace: "flux-system"})
	require.NoError(t, c.Update(ctx, ks))
	in, err = Detect(ctx, c, "flux-system")
	require.NoError(t, err)
	assert.Nil(t, in.Sync, "a Kustomization applied by another one stays with its Git source")
	assert.Contains(t, strings.Join(in.Notes, "\n"), "is applied by Kustomization flux-system/infra")
}

func appliedBy(t *testing.T, c client.Client, o *unstructured.Unstructured) []string {
	t.Helper()
	live := &metav1.PartialObjectMetadata{}
	live.SetGroupVersionKind(o.GroupVersionKind())
	require.NoError(t, c.Get(context.Background(), client.ObjectKeyFromObject(o), live))
	var out []string
	for _, mf := range live.GetManagedFields() {
		if mf.Operation == metav1.ManagedFieldsOperationApply {
			out = append(out, mf.Manager)
		}
	}
	return out
}
