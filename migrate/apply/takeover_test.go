package apply_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestTakeoverFromBootstrap starts from a cluster as `flux bootstrap` leaves it (fields owned by
// kustomize-controller, its labels) with extra fields of the Flux CLI and of client-side apply,
// then checks that one apply moves everything to the plugin, and that a user without a verb gets
// an error naming it.
func TestTakeoverFromBootstrap(t *testing.T) {
	env := testenv.Start(t)
	const ns = "flux-system"
	m, c := newTestManager(t, env, ns)
	ctx := ctxT(t)
	env.InstallFlux(t, testenv.FluxInstall{Version: testVersion, Bootstrapped: true})

	before, err := installation.DetectInstallation(ctx, c)
	require.NoError(t, err)
	require.Equal(t, installation.ManagedByBootstrap, before.ManagedBy)

	// The Flux CLI ("flux") owns an annotation the rendering does not set; a client-side apply
	// left its last-applied annotation.
	byFlux := &unstructured.Unstructured{}
	byFlux.SetGroupVersionKind(deploymentGVK)
	byFlux.SetNamespace(ns)
	byFlux.SetName("source-controller")
	byFlux.SetAnnotations(map[string]string{"example.com/set-by-flux": "yes"})
	require.NoError(t, c.Patch(ctx, byFlux, client.Apply, client.FieldOwner("flux"), client.ForceOwnership))
	require.NoError(t, c.Patch(ctx, byFlux.DeepCopy(), client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"}}}`)),
		client.FieldOwner("kubectl-client-side-apply")))

	// A FluxInstance object exists: the inventory is mirrored into its status.
	crdObjs, err := testenv.DecodeYAML([]byte(testenv.FluxInstanceStandInCRD))
	require.NoError(t, err)
	require.NoError(t, c.Create(ctx, crdObjs[0]))
	require.Eventually(t, func() bool {
		fi := fixtures.Object(t, "tests/minimal-2.7.x")
		fi.SetNamespace(ns)
		return c.Create(ctx, fi) == nil
	}, 20*time.Second, 100*time.Millisecond)

	objs := renderInstance(t, ns, defaultComponents...)
	res, err := m.Reconcile(ctx, objs, apply.ReconcileOptions{Prune: true})
	require.NoError(t, err, "taking over from kustomize-controller, flux and kubectl must not conflict")
	// Everything existed; the takeover rewrites every object's ownership.
	assert.Equal(t, map[ssa.Action]int{ssa.ConfiguredAction: len(objs)}, countActions(res.ChangeSet))

	for _, ref := range []struct {
		obj  *unstructured.Unstructured
		name string
	}{
		{find(objs, "Deployment", "source-controller"), "source-controller"},
		{find(objs, "CustomResourceDefinition", "gitrepositories.source.toolkit.fluxcd.io"), "gitrepositories"},
		{find(objs, "ClusterRole", "crd-controller"), "crd-controller"},
	} {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(ref.obj.GroupVersionKind())
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(ref.obj), live))
		var owners []string
		for _, mi := range ownership.Managers(live) {
			if mi.Subresource == "" {
				owners = append(owners, mi.Manager+"/"+mi.Operation)
			}
		}
		assert.Equal(t, []string{ownership.PluginFieldManager + "/Apply"}, owners, ref.name)
		for _, k := range []string{ownership.LabelKustomizeName, ownership.LabelKustomizeNamespace} {
			assert.NotContains(t, live.GetLabels(), k, ref.name)
		}
		assert.NotContains(t, live.GetAnnotations(), ownership.AnnotationLastApplied, ref.name)
		assert.Equal(t, "Ignore", live.GetAnnotations()[render.AnnotationKustomizeSSA], ref.name)
		assert.Equal(t, "Disabled", live.GetAnnotations()[render.AnnotationKustomizePrune], ref.name)
		if ref.name == "source-controller" {
			// Owned by "flux" before, moved to the plugin, and so removed by its apply.
			assert.NotContains(t, live.GetAnnotations(), "example.com/set-by-flux")
		}
	}

	after, err := installation.DetectInstallation(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, installation.ManagedByPlugin, after.ManagedBy)

	fi := &unstructured.Unstructured{}
	fi.SetGroupVersionKind(operator.FluxInstanceGVK)
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "flux"}, fi))
	entries, found, err := unstructured.NestedSlice(fi.Object, "status", "inventory", "entries")
	require.NoError(t, err)
	require.True(t, found, "status.inventory.entries mirrored into the FluxInstance")
	assert.Len(t, entries, len(objs))
	assert.Contains(t, entries, map[string]any{"id": "flux-system_source-controller_apps_Deployment", "v": "v1"})

	t.Run("a user without patch on deployments gets an error naming verb, resource and namespace", func(t *testing.T) {
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "limited"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"", "apiextensions.k8s.io", "rbac.authorization.k8s.io", "networking.k8s.io", "authentication.k8s.io", "fluxcd.controlplane.io",
					// Reading the admission configuration lets the no-op fast path consider the
					// objects: the permission check must still send the Deployments to the API
					// server, whose error the user gets.
					"admissionregistration.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"*"}},
				{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch"}},
			},
		}
		require.NoError(t, c.Create(ctx, role))
		require.NoError(t, c.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "limited"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "limited"},
			Subjects:   []rbacv1.Subject{{Kind: "User", Name: "limited"}},
		}))
		cfg, err := clientcmd.BuildConfigFromFlags("", env.UserKubeconfig(t, "limited"))
		require.NoError(t, err)
		lm, _ := newManagerFor(t, cfg, ns)
		_, err = lm.Reconcile(ctx, objs, apply.ReconcileOptions{Prune: true})
		require.Error(t, err)
		msg := err.Error()
		assert.Contains(t, msg, "Deployment/flux-system/")
		assert.Contains(t, msg, `cannot patch resource "deployments"`)
		assert.Contains(t, msg, `in the namespace "flux-system"`)
		assert.Contains(t, msg, `User "limited"`)
	})
}

// flakyProxy forwards to the API server with the admin's credentials. After dropAfter requests
// it fails every request, alternately with a 503 and by cutting the connection without an answer:
// a network drop in the middle of an apply.
type flakyProxy struct {
	mu        sync.Mutex
	count     int
	dropAfter int
	failed    int
}

// fate lets the first dropAfter requests through and then fails each, alternately with a 503
// and by cutting the connection.
func (p *flakyProxy) fate(*http.Request) faultproxy.Fate {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count++
	if p.dropAfter < 0 || p.count <= p.dropAfter {
		return faultproxy.Pass
	}
	p.failed++
	if p.failed%2 == 0 {
		return faultproxy.Cut
	}
	return faultproxy.Fail
}

func (p *flakyProxy) reset(dropAfter int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count, p.dropAfter = 0, dropAfter
}

func startFlakyProxy(t *testing.T, env *testenv.Env) (*flakyProxy, *rest.Config) {
	t.Helper()
	p := &flakyProxy{dropAfter: -1}
	return p, &rest.Config{Host: faultproxy.Serve(t, env, p.fate), QPS: 100, Burst: 200}
}

// TestInterruptedApplyCompletes applies a new rendering through a proxy that fails requests
// until one attempt gets through, then checks that a re-run completes the apply and that nothing
// of the users' was deleted along the way.
func TestInterruptedApplyCompletes(t *testing.T) {
	env := testenv.Start(t)
	const ns = "flux-system"
	m, c := newTestManager(t, env, ns)
	ctx := ctxT(t)

	_, err := m.Reconcile(ctx, renderInstance(t, ns, defaultComponents...), apply.ReconcileOptions{Prune: true})
	require.NoError(t, err)
	env.CreateNamespace(t, "apps")
	createCR(t, c, gitRepoGVK, "apps", "podinfo", map[string]any{"interval": "1m", "url": "https://github.com/stefanprodan/podinfo"})
	createCR(t, c, helmRelGVK, "apps", "podinfo", map[string]any{
		"interval": "5m",
		"chart":    map[string]any{"spec": map[string]any{"chart": "podinfo", "sourceRef": map[string]any{"kind": "HelmRepository", "name": "podinfo"}}},
	})
	userCM := &unstructured.Unstructured{}
	userCM.SetAPIVersion("v1")
	userCM.SetKind("ConfigMap")
	userCM.SetNamespace(ns)
	userCM.SetName("users-own-config")
	require.NoError(t, c.Create(ctx, userCM))

	// The new rendering drops helm-controller and adds the image automation controllers.
	next := renderInstance(t, ns, "source-controller", "kustomize-controller", "notification-controller",
		"image-reflector-controller", "image-automation-controller")

	proxy, proxyCfg := startFlakyProxy(t, env)
	pm, _ := newManagerFor(t, proxyCfg, ns)
	failures := 0
	// Each attempt gets further before the connection drops, so the interruptions land in every
	// phase: reads, the first stage, the pending record, the rest, prune, the final record. (The
	// objects the previous apply left unchanged cost no request: the steps are small.) A short
	// stage timeout keeps an interrupted wait for the CRDs from taking a minute.
	for dropAfter := 10; ; dropAfter += 5 {
		proxy.reset(dropAfter)
		_, err := pm.Reconcile(ctx, next, apply.ReconcileOptions{Prune: true, Options: apply.Options{StageTimeout: 5 * time.Second}})
		if err == nil {
			break
		}
		failures++
		require.Less(t, failures, 40, "never completed through the proxy: %v", err)
		t.Logf("interrupted after %d requests: %v", dropAfter, err)
		// Users' objects survive every interruption.
		require.True(t, exists(t, c, gitRepoGVK, "apps", "podinfo"))
		require.True(t, exists(t, c, helmRelGVK, "apps", "podinfo"))
		require.True(t, exists(t, c, userCM.GroupVersionKind(), ns, "users-own-config"))
		require.True(t, exists(t, c, crdGVKTest, "", "helmreleases.helm.toolkit.fluxcd.io"))
	}
	require.Greater(t, failures, 3)

	// The re-run (direct) completes, and one more finds nothing to do.
	res, err := m.Reconcile(ctx, next, apply.ReconcileOptions{Prune: true})
	require.NoError(t, err)
	res, err = m.Reconcile(ctx, next, apply.ReconcileOptions{Prune: true})
	require.NoError(t, err)
	for _, e := range res.ChangeSet.Entries {
		if e.Action != ssa.UnchangedAction {
			assert.Equal(t, "CustomResourceDefinition/helmreleases.helm.toolkit.fluxcd.io", e.Subject, "%s %s", e.Subject, e.Action)
		}
	}
	for _, o := range next {
		assert.True(t, exists(t, c, o.GroupVersionKind(), o.GetNamespace(), o.GetName()), kube.Ref(o))
	}
	assert.False(t, exists(t, c, deploymentGVK, ns, "helm-controller"))
	assert.True(t, exists(t, c, crdGVKTest, "", "helmreleases.helm.toolkit.fluxcd.io"), "a CRD with custom resources is never deleted")
	assert.True(t, exists(t, c, gitRepoGVK, "apps", "podinfo"))
	assert.True(t, exists(t, c, helmRelGVK, "apps", "podinfo"))
	assert.True(t, exists(t, c, userCM.GroupVersionKind(), ns, "users-own-config"))
	inv, err := m.Store().Read(ctx)
	require.NoError(t, err)
	assert.Equal(t, inventory.StateApplied, inv.State)
	assert.Len(t, inv.Entries, len(next)+1, "the new objects plus the orphaned HelmRelease CRD")
	assert.NotContains(t, strings.Join(entryIDs(inv), ","), "helm-controller_apps_Deployment")
}
