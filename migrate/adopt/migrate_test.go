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
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

const testVersion = "v2.7.5"

// migrateOnce runs detect, plan and takeover with client c.
func migrateOnce(ctx context.Context, c client.Client, ns string, version string, t *testing.T) (*Plan, *TakeoverResult, error) {
	in, err := Detect(ctx, c, ns)
	if err != nil {
		return nil, nil, err
	}
	p, err := BuildPlan(ctx, c, in, release(t, version))
	if err != nil {
		return nil, nil, err
	}
	m := apply.NewManager(kube.Instance{Client: c, Name: "flux", Namespace: in.Namespace})
	res, err := Takeover(ctx, m, p, TakeoverOptions{})
	return p, res, err
}

// podTemplatesEqual compares the pod templates of the live Deployments with the snapshot taken
// before, ignoring nothing: the takeover must not restart a controller.
func deploymentSpecs(t *testing.T, c client.Client, ns string) map[string]any {
	t.Helper()
	var list unstructured.UnstructuredList
	list.SetAPIVersion("apps/v1")
	list.SetKind("DeploymentList")
	require.NoError(t, c.List(context.Background(), &list, client.InNamespace(ns)))
	out := map[string]any{}
	for _, d := range list.Items {
		out[d.GetName()] = d.Object["spec"]
	}
	return out
}

func TestMigrateDefaultBootstrap(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := adminClient(t, env)
	objs := simulateBootstrap(t, env, bootstrap{Version: testVersion, Tolerations: []string{"dedicated/flux"}, LogLevel: "debug",
		ExtraArgs: map[string][]string{"kustomize-controller": {"--concurrent=20"}}, Replicas: map[string]int64{"helm-controller": 2}})
	before := snapshot(t, c, objs)
	specsBefore := deploymentSpecs(t, c, "flux-system")

	in, err := Detect(ctx, c, "")
	require.NoError(t, err)
	assert.Equal(t, "flux-system", in.Namespace)
	assert.Equal(t, testVersion, in.Version)
	assert.Equal(t, []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}, in.Components)
	assert.Equal(t, "ghcr.io/fluxcd", in.Registry)
	assert.Equal(t, "upstream-alpine", in.Variant)
	assert.True(t, in.NetworkPolicy)
	assert.Equal(t, "cluster.local", in.Domain)
	assert.Equal(t, "refs/heads/main", in.Sync.Ref)
	assert.Equal(t, "./clusters/production", in.Sync.Path)
	assert.Equal(t, "1m", in.Sync.Interval)
	assert.Equal(t, "flux-system", in.Sync.PullSecret)
	assert.Equal(t, "ssh://git@github.com/example/fleet", in.Sync.URL)

	// Dry run: plan only, nothing changes.
	p, err := BuildPlan(ctx, c, in, release(t, testVersion))
	require.NoError(t, err)
	assert.Empty(t, p.Unexpressed, "the patched rendering must reproduce the running objects")
	require.NotNil(t, p.Instance.Spec.Kustomize)
	summary := strings.Join(p.Summary(), "\n")
	assert.Contains(t, summary, "--log-level=debug")
	assert.Contains(t, summary, "dedicated/flux")
	assert.Contains(t, summary, "--concurrent=20")
	assert.Contains(t, summary, "spec.replicas")
	assert.Equal(t, before, snapshot(t, c, objs), "planning must not change anything")

	m := apply.NewManager(kube.Instance{Client: c, Name: "flux", Namespace: in.Namespace})
	res, err := Takeover(ctx, m, p, TakeoverOptions{})
	require.NoError(t, err)
	assert.False(t, res.NothingToDo)
	assert.Positive(t, res.Changed())

	// Nothing deleted or recreated, no controller restarted.
	after := snapshot(t, c, objs)
	for k, s := range before {
		assert.Equal(t, s.uid, after[k].uid, "%s was recreated", k)
	}
	assert.Equal(t, specsBefore, deploymentSpecs(t, c, "flux-system"), "Deployment specs (pod templates) must not change")
	require.NoError(t, Verify(ctx, c, p))
	assert.Empty(t, p.Protect, "the rendering covers every bootstrap object")
	for _, o := range objs {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(o), live))
		assert.True(t, ownership.ProtectedFromKustomize(live), "%s is not protected: labels %v annotations %v", kube.Ref(o), live.GetLabels(), live.GetAnnotations())
		for _, mf := range live.GetManagedFields() {
			if mf.Subresource == "" {
				assert.NotEqual(t, "kustomize-controller", mf.Manager, "%s still has a kustomize-controller field manager", kube.Ref(o))
			}
		}
	}
	// The Kustomization keeps its inventory.
	ks := &unstructured.Unstructured{}
	ks.SetGroupVersionKind(kustomizationGVK)
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "flux-system"}, ks))
	entries, found, _ := unstructured.NestedSlice(ks.Object, "status", "inventory", "entries")
	assert.True(t, found)
	assert.Len(t, entries, len(objs))

	// Idempotent: a second run finds nothing to do and writes nothing.
	mid := snapshot(t, c, objs)
	_, res2, err := migrateOnce(ctx, c, "", testVersion, t)
	require.NoError(t, err)
	assert.True(t, res2.NothingToDo)
	assert.Equal(t, mid, snapshot(t, c, objs))

	// Rollback gives everything back to kustomize-controller.
	rb, err := Rollback(ctx, c, "flux-system")
	require.NoError(t, err)
	assert.NotEmpty(t, rb.Restored)
	for _, o := range objs {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(o), live))
		assert.Equal(t, "flux-system", live.GetLabels()[ownership.LabelKustomizeName], kube.Ref(o))
		assert.NotContains(t, live.GetAnnotations(), render.AnnotationKustomizeSSA, kube.Ref(o))
		assert.NotContains(t, live.GetAnnotations(), render.AnnotationKustomizePrune, kube.Ref(o))
		var managers []string
		for _, mf := range live.GetManagedFields() {
			managers = append(managers, mf.Manager)
		}
		assert.NotContains(t, managers, ownership.PluginFieldManager, kube.Ref(o))
		assert.Contains(t, managers, "kustomize-controller", kube.Ref(o))
	}
	// After the rollback it is a bootstrap installation again.
	in, err = Detect(ctx, c, "")
	require.NoError(t, err)
	assert.Nil(t, in.Record)
}

// TestMigrateScenarios migrates bootstrap variants and checks detection, that the plan
// reproduces the running controllers, and that the takeover restarts and deletes nothing.
func TestMigrateScenarios(t *testing.T) {
	cases := []struct {
		name  string
		b     bootstrap
		check func(t *testing.T, in *Install, p *Plan)
	}{
		{name: "other namespace, extra components, custom registry", b: bootstrap{Version: testVersion, Namespace: "gitops",
			Extra:    []string{"image-reflector-controller", "image-automation-controller", "source-watcher"},
			Registry: "registry.example.com/mirror", PullSecret: "regcred", Domain: "example.internal"},
			check: func(t *testing.T, in *Install, p *Plan) {
				assert.Equal(t, "gitops", in.Namespace)
				assert.Equal(t, []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller",
					"image-reflector-controller", "image-automation-controller", "source-watcher"}, in.Components)
				assert.Equal(t, "registry.example.com/mirror", in.Registry)
				assert.Empty(t, in.Variant)
				assert.Equal(t, "regcred", in.ImagePullSecret)
				assert.Equal(t, "example.internal", in.Domain)
				assert.Equal(t, "example.internal", p.Instance.Spec.Cluster.Domain)
			}},
		{name: "network policy off and tag ref", b: bootstrap{Version: "v2.6.4", NoNetPol: true, Tag: "v1.0.0"},
			check: func(t *testing.T, in *Install, p *Plan) {
				assert.False(t, in.NetworkPolicy)
				assert.Equal(t, "refs/tags/v1.0.0", in.Sync.Ref)
				assert.False(t, *p.Instance.Spec.Cluster.NetworkPolicy)
			}},
		{name: "semver ref kept through a patch", b: bootstrap{Version: "v2.8.5", Semver: ">=1.0.0"},
			check: func(t *testing.T, in *Install, p *Plan) {
				found := false
				for _, pt := range p.Instance.Spec.Kustomize.Patches {
					if pt.Target.Kind == "GitRepository" && strings.Contains(pt.Patch, ">=1.0.0") {
						found = true
					}
				}
				assert.True(t, found, "a GitRepository patch keeps the semver ref")
			}},
		{name: "flux 2.2", b: bootstrap{Version: "v2.2.3"}},
		{name: "flux 2.3", b: bootstrap{Version: "v2.3.0", Tolerations: []string{"x"}}},
		{name: "flux 2.4", b: bootstrap{Version: "v2.4.0"}},
		{name: "flux 2.5", b: bootstrap{Version: "v2.5.1", LogLevel: "debug"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := testenv.Start(t)
			ctx := context.Background()
			c := adminClient(t, env)
			objs := simulateBootstrap(t, env, tc.b)
			before := snapshot(t, c, objs)
			ns := tc.b.Namespace
			if ns == "" {
				ns = "flux-system"
			}
			specs := deploymentSpecs(t, c, ns)
			p, _, err := migrateOnce(ctx, c, "", tc.b.Version, t)
			require.NoError(t, err)
			assert.Empty(t, p.Unexpressed)
			if tc.check != nil {
				tc.check(t, p.Install, p)
			}
			after := snapshot(t, c, objs)
			for k, s := range before {
				assert.Equal(t, s.uid, after[k].uid, "%s was recreated", k)
			}
			assert.Equal(t, specs, deploymentSpecs(t, c, ns))
			require.NoError(t, Verify(ctx, c, p))
		})
	}
}

// TestMigrateRefusals covers every refusal with its message.
func TestMigrateRefusals(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := adminClient(t, env)

	_, err := Detect(ctx, c, "")
	var refusal *RefusalError
	require.ErrorAs(t, err, &refusal)
	assert.Contains(t, err.Error(), "no Flux installation made by `flux bootstrap`, `flux install` or Helm was found")

	simulateBootstrap(t, env, bootstrap{Version: testVersion, Namespace: "a"})
	// A second installation: only its Deployments matter for detection.
	simulateBootstrap(t, env, bootstrap{Version: testVersion, Namespace: "b"})
	_, err = Detect(ctx, c, "")
	require.ErrorAs(t, err, &refusal)
	assert.Contains(t, err.Error(), "pass -n NAMESPACE")
	_, err = Detect(ctx, c, "nowhere")
	require.ErrorAs(t, err, &refusal)
	assert.Contains(t, err.Error(), `in namespace "nowhere"`)
	in, err := Detect(ctx, c, "a")
	require.NoError(t, err)
	assert.Equal(t, "a", in.Namespace)

	patchKS := func(ns string, status map[string]any) {
		ks := &unstructured.Unstructured{}
		ks.SetGroupVersionKind(kustomizationGVK)
		ks.SetNamespace(ns)
		ks.SetName(ns)
		setStatus(t, c, ks, status)
	}
	// Prune pending: the inventory lost the Flux objects.
	patchKS("a", map[string]any{"inventory": map[string]any{"entries": []any{}}, "lastAppliedRevision": revision, "lastAttemptedRevision": revision})
	_, err = Detect(ctx, c, "a")
	require.ErrorAs(t, err, &refusal)
	assert.Contains(t, err.Error(), "already removed and a prune is pending")
	// A newer revision not applied yet.
	entries := []any{
		map[string]any{"id": "b_kustomize-controller_apps_Deployment", "v": "v1"},
		map[string]any{"id": "_gitrepositories.source.toolkit.fluxcd.io_apiextensions.k8s.io_CustomResourceDefinition", "v": "v1"},
	}
	patchKS("b", map[string]any{"inventory": map[string]any{"entries": entries}, "lastAppliedRevision": "main@sha1:old", "lastAttemptedRevision": "main@sha1:old"})
	_, err = Detect(ctx, c, "b")
	require.ErrorAs(t, err, &refusal)
	assert.Contains(t, err.Error(), "a reconciliation is pending")
	patchKS("b", map[string]any{"inventory": map[string]any{"entries": entries}, "lastAppliedRevision": revision, "lastAttemptedRevision": "main@sha1:new"})
	_, err = Detect(ctx, c, "b")
	require.ErrorAs(t, err, &refusal)
	assert.Contains(t, err.Error(), "failing or in progress")
}

func TestMigrateRefusalsInstallKinds(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, env *testenv.Env, c client.Client)
		want    string
	}{
		{name: "operator", prepare: func(t *testing.T, env *testenv.Env, c client.Client) {
			env.InstallFlux(t, testenv.FluxInstall{Version: testVersion, ManagedBy: "flux-operator", FieldManager: "flux-operator"})
		}, want: "already managed by the Flux Operator"},
		{name: "plugin", prepare: func(t *testing.T, env *testenv.Env, c client.Client) {
			env.InstallFlux(t, testenv.FluxInstall{Version: testVersion, ManagedBy: "flux-operator", FieldManager: ownership.PluginFieldManager})
		}, want: "already managed by this plugin"},
		{name: "helm", prepare: func(t *testing.T, env *testenv.Env, c client.Client) {
			env.InstallFlux(t, testenv.FluxInstall{Version: testVersion, ManagedBy: "Helm", FieldManager: "helm"})
		}, want: "labelled app.kubernetes.io/managed-by=Helm but has no meta.helm.sh/release-name annotation: cannot tell which Helm release"},
		{name: "old flux", prepare: func(t *testing.T, env *testenv.Env, c client.Client) {
			simulateBootstrap(t, env, bootstrap{Version: "v2.2.3"})
			setDeploymentLabel(t, c, "kustomize-controller", render.LabelVersion, "v2.1.2")
		}, want: "older than v2.2.0"},
		{name: "old kustomize-controller", prepare: func(t *testing.T, env *testenv.Env, c client.Client) {
			simulateBootstrap(t, env, bootstrap{Version: "v2.2.3"})
			setImage(t, c, "kustomize-controller", "ghcr.io/fluxcd/kustomize-controller:v1.0.1")
		}, want: "older than v1.1.0"},
		{name: "source not namespace-named", prepare: func(t *testing.T, env *testenv.Env, c client.Client) {
			simulateBootstrap(t, env, bootstrap{Version: testVersion})
			ks := &unstructured.Unstructured{}
			ks.SetGroupVersionKind(kustomizationGVK)
			require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: "flux-system"}, ks))
			require.NoError(t, unstructured.SetNestedField(ks.Object, "fleet", "spec", "sourceRef", "name"))
			require.NoError(t, c.Update(context.Background(), ks))
		}, want: "named after the namespace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := testenv.Start(t)
			c := adminClient(t, env)
			tc.prepare(t, env, c)
			_, err := Detect(context.Background(), c, "")
			var refusal *RefusalError
			require.ErrorAs(t, err, &refusal)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func setDeploymentLabel(t *testing.T, c client.Client, name, key, value string) {
	t.Helper()
	d := &unstructured.Unstructured{}
	d.SetAPIVersion("apps/v1")
	d.SetKind("Deployment")
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: name}, d))
	l := d.GetLabels()
	l[key] = value
	d.SetLabels(l)
	require.NoError(t, c.Update(context.Background(), d))
}

func setImage(t *testing.T, c client.Client, name, image string) {
	t.Helper()
	d := &unstructured.Unstructured{}
	d.SetAPIVersion("apps/v1")
	d.SetKind("Deployment")
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: name}, d))
	ctrs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	ctrs[0].(map[string]any)["image"] = image
	require.NoError(t, unstructured.SetNestedSlice(d.Object, ctrs, "spec", "template", "spec", "containers"))
	require.NoError(t, c.Update(context.Background(), d))
}

// TestMigrateInterrupted fails the takeover after the Nth write, for every N, and checks that
// a re-run converges with no deletion and no controller change.
func TestMigrateInterrupted(t *testing.T) {
	env := testenv.Start(t)
	ctx := context.Background()
	c := adminClient(t, env)
	objs := simulateBootstrap(t, env, bootstrap{Version: testVersion, Tolerations: []string{"t"}})
	before := snapshot(t, c, objs)
	specs := deploymentSpecs(t, c, "flux-system")

	// Count the writes of a full run on a throwaway copy? The count is the same on every run of
	// a fresh install: measure it by interrupting at growing N until a run succeeds.
	for n := int64(0); ; n++ {
		fc := &faultyClient{Client: c, n: n}
		_, _, err := migrateOnce(ctx, fc, "", testVersion, t)
		assert.Zero(t, fc.deletes.Load(), "run interrupted after %d writes deleted something", n)
		if err == nil {
			t.Logf("converged after %d interrupted runs", n)
			break
		}
		require.ErrorIs(t, err, errInjected, "n=%d", n)
		require.Less(t, n, int64(300), "never converged")
		after := snapshot(t, c, objs)
		for k, s := range before {
			require.Equal(t, s.uid, after[k].uid, "%s was recreated (n=%d)", k, n)
		}
		assert.Equal(t, specs, deploymentSpecs(t, c, "flux-system"), "n=%d", n)
	}
	// Each interrupted run left a state a clean run finishes.
	_, res, err := migrateOnce(ctx, c, "", testVersion, t)
	require.NoError(t, err)
	assert.True(t, res.NothingToDo)
	in, err := Detect(ctx, c, "")
	require.NoError(t, err)
	p, err := BuildPlan(ctx, c, in, release(t, testVersion))
	require.NoError(t, err)
	require.NoError(t, Verify(ctx, c, p))
	assert.Equal(t, specs, deploymentSpecs(t, c, "flux-system"))
}

func TestSameRevision(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"main@sha1:abc", "main@sha1:abc", true},
		{"main@sha1:abc", "refs/heads/main@sha1:abc", true},
		{"refs/tags/v1@sha1:abc", "v1@sha1:abc", true},
		{"main@sha1:abc", "main@sha1:abd", false},
		{"main@sha1:abc", "main@sha256:abc", false},
		{"abc", "main@sha1:abc", false},
	} {
		assert.Equal(t, tc.same, sameRevision(tc.a, tc.b), "%s vs %s", tc.a, tc.b)
	}
}
