package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// bootstrapForPlugin simulates `flux bootstrap` with the harness (kustomize-controller's labels
// and field manager on the Flux objects) plus the sync objects and their status.
func bootstrapForPlugin(t *testing.T, env *testenv.Env) []*unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	objs := env.InstallFlux(t, testenv.FluxInstall{Version: "v2.7.5", Bootstrapped: true})
	c := env.Client(t)
	labels := map[string]any{"kustomize.toolkit.fluxcd.io/name": "flux-system", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}
	src := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": "flux-system", "namespace": "flux-system", "labels": labels},
		"spec":     map[string]any{"interval": "1m0s", "ref": map[string]any{"branch": "main"}, "secretRef": map[string]any{"name": "flux-system"}, "url": "https://example.com/fleet.git"},
	}}
	ks := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": "flux-system", "namespace": "flux-system", "labels": labels},
		"spec":     map[string]any{"interval": "10m0s", "path": "./clusters/prod", "prune": true, "sourceRef": map[string]any{"kind": "GitRepository", "name": "flux-system"}},
	}}
	for _, o := range []*unstructured.Unstructured{src, ks} {
		require.NoError(t, c.Patch(ctx, o, client.Apply, client.FieldOwner("kustomize-controller")))
	}
	objs = append(objs, src, ks)
	var entries []any
	for _, o := range objs {
		entries = append(entries, map[string]any{"id": object.UnstructuredToObjMetadata(o).String(), "v": o.GroupVersionKind().Version})
	}
	const rev = "main@sha1:1111111111111111111111111111111111111111"
	ks.Object["status"] = map[string]any{"inventory": map[string]any{"entries": entries}, "lastAppliedRevision": rev, "lastAttemptedRevision": rev}
	require.NoError(t, c.Status().Update(ctx, ks))
	return objs
}

func TestMigrateCommand(t *testing.T) {
	env := testenv.Start(t)
	dist := testenv.DistributionDir(t)
	objs := bootstrapForPlugin(t, env)
	c := env.Client(t)
	kc := "--kubeconfig=" + env.Kubeconfig

	// Flag mistakes exit 2.
	r := runPlugin(t, "", "migrate", kc, "-o", "table")
	assert.Equal(t, 2, r.Code, r.Stderr)

	// Dry run: plan on stderr, the FluxInstance on stdout, nothing changed.
	before := testenv.ResourceVersions(t, c, objs)
	r = runPlugin(t, "", "migrate", kc, "--dry-run", "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "installed by `flux bootstrap` in namespace \"flux-system\"")
	assert.Contains(t, r.Stderr, "image-automation-controller")
	inst, err := fluxinstance.Decode([]byte(r.Stdout), "stdout")
	require.NoError(t, err)
	assert.Equal(t, "v2.7.5", inst.Spec.Distribution.Version)
	assert.Equal(t, "refs/heads/main", inst.Spec.Sync.Ref)
	assert.Equal(t, before, testenv.ResourceVersions(t, c, objs))

	r = runPlugin(t, "", "migrate", kc, "--dry-run", "--distribution", dist, "-o", "json")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.True(t, strings.HasPrefix(strings.TrimSpace(r.Stdout), "{"))

	// No terminal and no --yes: refuses, changes nothing.
	r = runPlugin(t, "", "migrate", kc, "--distribution", dist)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "pass --yes")
	assert.Equal(t, before, testenv.ResourceVersions(t, c, objs))

	// A checkout of the fleet repository with the bootstrap files and a file of the user's.
	repo := t.TempDir()
	dir := filepath.Join(repo, "clusters", "prod", "flux-system")
	writeFile(t, dir, "gotk-components.yaml", "# Flux Version: v2.7.5\n")
	writeFile(t, dir, "gotk-sync.yaml", "---\n")
	writeFile(t, dir, "extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n")
	writeFile(t, dir, "kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- gotk-components.yaml\n- gotk-sync.yaml\n- extra.yaml\npatches:\n- patch: |\n    - op: add\n      path: /spec/template/spec/tolerations\n      value: []\n  target:\n    kind: Deployment\n")

	out := filepath.Join(t.TempDir(), "flux.yaml")
	r = runPlugin(t, "", "migrate", kc, "--distribution", dist, "--yes", "--repo-dir", repo, "--output-file", out)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Verified: kustomize-controller's garbage collection would delete none")
	assert.Contains(t, r.Stderr, "remove clusters/prod/flux-system/ (gotk-components.yaml, gotk-sync.yaml, kustomization.yaml)")
	assert.Contains(t, r.Stderr, " D clusters/prod/flux-system/gotk-components.yaml")
	assert.Contains(t, r.Stderr, "?? clusters/prod/flux-system/flux-instance.yaml")
	_, err = os.Stat(filepath.Join(dir, "gotk-components.yaml"))
	assert.True(t, os.IsNotExist(err))
	kust, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	assert.Contains(t, string(kust), "extra.yaml")
	assert.NotContains(t, string(kust), "gotk-")
	assert.NotContains(t, string(kust), "patches")
	written, err := os.ReadFile(out)
	require.NoError(t, err)
	_, err = fluxinstance.Decode(written, out)
	require.NoError(t, err)
	for _, o := range objs {
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(o.GroupVersionKind())
		require.NoError(t, c.Get(context.Background(), client.ObjectKeyFromObject(o), m))
		assert.NotContains(t, m.GetLabels(), "kustomize.toolkit.fluxcd.io/name", o.GetKind()+"/"+o.GetName())
		assert.Equal(t, "Disabled", m.GetAnnotations()["kustomize.toolkit.fluxcd.io/prune"], o.GetKind()+"/"+o.GetName())
	}

	// Second run: nothing to do.
	mid := testenv.ResourceVersions(t, c, objs)
	r = runPlugin(t, "", "migrate", kc, "--distribution", dist, "--output-file", out)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Nothing to do")
	assert.Equal(t, mid, testenv.ResourceVersions(t, c, objs))

	// Rollback.
	r = runPlugin(t, "", "migrate", kc, "--rollback", "--yes")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Restored bootstrap ownership")
	r = runPlugin(t, "", "migrate", kc, "--rollback", "--yes")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "nothing to roll back")
}

func TestMigrateCheckPermissions(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := env.Client(t)

	r := runPlugin(t, "", "migrate", "--check-permissions", "--kubeconfig", env.Kubeconfig)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "You have every permission migrate needs")

	// A user who may only read Deployments cluster-wide.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "deploy-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "carol-deploy-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "deploy-reader"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "carol", APIGroup: "rbac.authorization.k8s.io"}}}
	require.NoError(t, c.Create(ctx, role))
	require.NoError(t, c.Create(ctx, binding))
	carol := env.UserKubeconfig(t, "carol")

	r = runPlugin(t, "", "migrate", "--check-permissions", "-n", "flux-system", "--kubeconfig", carol)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stdout, "patch deployments.apps in namespace flux-system")
	assert.Contains(t, r.Stdout, "patch customresourcedefinitions.apiextensions.k8s.io cluster-wide")
	assert.NotContains(t, r.Stdout, "list deployments.apps cluster-wide", "carol may list deployments")
	assert.Contains(t, r.Stderr, `permissions missing for migrate in namespace "flux-system"`)

	// The migration itself fails on the first forbidden call and points at --check-permissions.
	r = runPlugin(t, "", "migrate", "--dry-run", "--kubeconfig", carol)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, `User "carol" cannot`)
	assert.Contains(t, r.Stderr, "--check-permissions")
}
