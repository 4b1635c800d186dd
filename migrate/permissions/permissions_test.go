package permissions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/uninstall"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// reviews lists what Check would send for perms, one "verb resource[/sub][:name] namespace" each.
func reviews(perms []Permission) []string {
	var out []string
	for _, r := range merge(perms) {
		a := r.attrs
		res := a.Resource
		if a.Group != "" {
			res += "." + a.Group
		}
		if a.Subresource != "" {
			res += "/" + a.Subresource
		}
		if a.Name != "" {
			res += ":" + a.Name
		}
		out = append(out, strings.TrimSpace(a.Verb+" "+res+" "+a.Namespace))
	}
	return out
}

func obj(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	for k, v := range fields {
		u.Object[k] = v
	}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// mapper serves the built-in kinds the tests use, and none of the custom ones.
func mapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, k := range []struct {
		gvk   schema.GroupVersionKind
		scope meta.RESTScope
	}{
		{schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"}, meta.RESTScopeRoot},
		{kube.CRDGVK, meta.RESTScopeRoot},
	} {
		m.Add(k.gvk, k.scope)
	}
	return m
}

// rendering is a small instance: a CRD whose plural no rule could guess, one of its objects
// (not served before the apply creates the CRD), the namespace, two controllers and cluster RBAC.
func rendering() []*unstructured.Unstructured {
	return []*unstructured.Unstructured{
		obj("apps/v1", "Deployment", "flux-system", "source-controller", nil),
		obj("example.com/v1", "Octopus", "flux-system", "paul", nil),
		obj("apps/v1", "Deployment", "flux-system", "kustomize-controller", nil),
		obj("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", "cluster-reconciler-flux-system", map[string]any{
			"roleRef": map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}}),
		obj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "crd-controller-flux-system", nil),
		obj("v1", "Namespace", "", "flux-system", nil),
		obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "octopodes.example.com", map[string]any{
			"spec": map[string]any{"group": "example.com", "scope": "Namespaced",
				"names": map[string]any{"kind": "Octopus", "plural": "octopodes"}}}),
	}
}

func TestForApply(t *testing.T) {
	objs := rendering()
	plan := ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: objs}
	perms, err := ForApply(mapper(), plan)
	require.NoError(t, err)
	got := reviews(perms)
	assert.Equal(t, []string{
		// In apply order: the CRD, the namespace and the cluster role first, listed as the stage
		// waits for them.
		"get customresourcedefinitions.apiextensions.k8s.io", "create customresourcedefinitions.apiextensions.k8s.io",
		"patch customresourcedefinitions.apiextensions.k8s.io", "list customresourcedefinitions.apiextensions.k8s.io",
		"get namespaces", "create namespaces", "patch namespaces", "list namespaces",
		"get clusterroles.rbac.authorization.k8s.io", "create clusterroles.rbac.authorization.k8s.io",
		"patch clusterroles.rbac.authorization.k8s.io", "list clusterroles.rbac.authorization.k8s.io",
		"get clusterrolebindings.rbac.authorization.k8s.io", "create clusterrolebindings.rbac.authorization.k8s.io",
		"patch clusterrolebindings.rbac.authorization.k8s.io",
		// Both Deployments in one review per verb.
		"get deployments.apps flux-system", "create deployments.apps flux-system", "patch deployments.apps flux-system",
		// The plural comes from the rendered CRD: the cluster does not serve the kind yet.
		"get octopodes.example.com flux-system", "create octopodes.example.com flux-system", "patch octopodes.example.com flux-system",
		"escalate clusterroles.rbac.authorization.k8s.io",
		"bind clusterroles.rbac.authorization.k8s.io:cluster-admin",
		// The record is read and updated by name, created by a POST (no name to match).
		"get configmaps:kubectl-fluxinstance-inventory flux-system", "update configmaps:kubectl-fluxinstance-inventory flux-system",
		"create configmaps flux-system",
		"get leases.coordination.k8s.io:kubectl-fluxinstance-lock flux-system",
		"update leases.coordination.k8s.io:kubectl-fluxinstance-lock flux-system",
		"delete leases.coordination.k8s.io:kubectl-fluxinstance-lock flux-system",
		"create leases.coordination.k8s.io flux-system",
	}, got)

	t.Run("wait lists every kind where it is, and what Deployments are ready by", func(t *testing.T) {
		plan := plan
		plan.Wait = true
		perms, err := ForApply(mapper(), plan)
		require.NoError(t, err)
		got := reviews(perms)
		for _, want := range []string{"list deployments.apps flux-system", "list replicasets.apps flux-system", "list pods flux-system",
			"list octopodes.example.com flux-system", "list clusterrolebindings.rbac.authorization.k8s.io"} {
			assert.Contains(t, got, want)
		}
		assert.Len(t, got, len(reviews(forApply(t, ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: objs})))+5,
			"one list per rendered resource the stage wait does not list already (clusterrolebindings, deployments, octopodes), replicasets and pods")
	})

	t.Run("prune deletes what the previous record has and the rendering dropped", func(t *testing.T) {
		prev := inventory.New(append(rendering(),
			obj("v1", "ServiceAccount", "flux-system", "image-reflector-controller", nil),
			obj("v1", "ConfigMap", "flux-system", "kubectl-fluxinstance-inventory", nil), // an edited record listing itself
			obj("v1", "Namespace", "", "old-namespace", nil),
			obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "imagepolicies.image.toolkit.fluxcd.io", nil),
			obj("example.org/v1", "Gone", "flux-system", "x", nil), // its kind is no longer served
		))
		prev.Source = "ConfigMap/flux-system/kubectl-fluxinstance-inventory"
		plan := plan
		plan.Previous, plan.Prune = prev, true
		perms, err := ForApply(mapper(), plan)
		require.NoError(t, err)
		got := reviews(perms)
		for _, want := range []string{
			"get serviceaccounts flux-system", "delete serviceaccounts flux-system",
			"delete customresourcedefinitions.apiextensions.k8s.io",
			"list imagepolicies.image.toolkit.fluxcd.io", // counted before the CRD goes
		} {
			assert.Contains(t, got, want)
		}
		for _, never := range []string{"delete namespaces", "delete configmaps:kubectl-fluxinstance-inventory flux-system", "delete configmaps flux-system",
			"delete deployments.apps flux-system", "get gones.example.org flux-system"} {
			assert.NotContains(t, got, never)
		}

		plan.Prune = false
		perms, err = ForApply(mapper(), plan)
		require.NoError(t, err)
		assert.NotContains(t, reviews(perms), "delete serviceaccounts flux-system", "without --prune nothing is deleted")
	})

	t.Run("the FluxInstance's status when it exists, the namespace when not rendered", func(t *testing.T) {
		var noNamespace []*unstructured.Unstructured
		for _, o := range objs {
			if o.GetKind() != "Namespace" {
				noNamespace = append(noNamespace, o)
			}
		}
		perms, err := ForApply(mapper(), ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: noNamespace, FluxInstance: true})
		require.NoError(t, err)
		got := reviews(perms)
		assert.Contains(t, got, "patch fluxinstances.fluxcd.controlplane.io/status:flux flux-system")
		assert.Contains(t, got, "create namespaces:flux-system")
		assert.NotContains(t, got, "create namespaces")
	})

	t.Run("a kind neither served nor rendered is an error", func(t *testing.T) {
		_, err := ForApply(mapper(), ApplyPlan{Namespace: "flux-system", Objects: []*unstructured.Unstructured{obj("example.org/v1", "Squid", "flux-system", "x", nil)}})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Squid")
	})
}

func forApply(t *testing.T, plan ApplyPlan) []Permission {
	t.Helper()
	perms, err := ForApply(mapper(), plan)
	require.NoError(t, err)
	return perms
}

func TestForDelete(t *testing.T) {
	record := inventory.New(append(rendering(),
		obj("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system", nil),
		obj("example.org/v1", "Gone", "flux-system", "x", nil),
	))
	record.Source = "ConfigMap/flux-system/kubectl-fluxinstance-inventory"
	m := mapper().(*meta.DefaultRESTMapper)
	m.Add(schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Octopus"}, meta.RESTScopeNamespace)

	perms, err := ForDelete(m, DeletePlan{Name: "flux", Namespace: "flux-system", Record: record})
	require.NoError(t, err)
	got := reviews(perms)
	for _, want := range []string{
		"get deployments.apps flux-system", "delete deployments.apps flux-system",
		"delete clusterroles.rbac.authorization.k8s.io", "delete clusterrolebindings.rbac.authorization.k8s.io",
		"patch gitrepositories.source.toolkit.fluxcd.io flux-system", // suspended first
		"delete gitrepositories.source.toolkit.fluxcd.io flux-system",
		"update configmaps:kubectl-fluxinstance-inventory flux-system",
		"create leases.coordination.k8s.io flux-system",
	} {
		assert.Contains(t, got, want)
	}
	for _, never := range []string{
		"delete namespaces", "get namespaces", // kept without reading
		"delete customresourcedefinitions.apiextensions.k8s.io", "get customresourcedefinitions.apiextensions.k8s.io", // kept without --with-crds
		"patch deployments.apps flux-system",                           // only Flux objects are suspended
		"create configmaps:kubectl-fluxinstance-inventory flux-system", // the record exists
		"list octopodes.example.com",
	} {
		assert.NotContains(t, got, never)
	}

	perms, err = ForDelete(m, DeletePlan{Name: "flux", Namespace: "flux-system", Record: record,
		Options: uninstall.Options{WithCRDs: true, RemoveFinalizers: true}, FluxInstance: true})
	require.NoError(t, err)
	got = reviews(perms)
	for _, want := range []string{
		"get customresourcedefinitions.apiextensions.k8s.io", "delete customresourcedefinitions.apiextensions.k8s.io",
		"list octopodes.example.com", "patch octopodes.example.com", // finalizers cleared in every namespace
		"patch fluxinstances.fluxcd.controlplane.io/status:flux flux-system",
	} {
		assert.Contains(t, got, want)
	}
	assert.NotContains(t, got, "delete namespaces")
}

// ssarClient answers SelfSubjectAccessReviews with allow, counting them and the most sent at once.
type ssarClient struct {
	client.Client
	sent, inFlight, maxInFlight atomic.Int32
	mu                          sync.Mutex
	asked                       []string
}

func newSSARClient(t *testing.T, allow func(a authorizationv1.ResourceAttributes) (bool, error)) *ssarClient {
	s := &ssarClient{}
	s.Client = fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			r, ok := obj.(*authorizationv1.SelfSubjectAccessReview)
			if !ok {
				t.Errorf("unexpected create of %T", obj)
				return nil
			}
			s.sent.Add(1)
			n := s.inFlight.Add(1)
			defer s.inFlight.Add(-1)
			for {
				m := s.maxInFlight.Load()
				if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			a := *r.Spec.ResourceAttributes
			s.mu.Lock()
			s.asked = append(s.asked, a.Verb+" "+a.Resource)
			s.mu.Unlock()
			time.Sleep(5 * time.Millisecond) // long enough for the others to overlap
			ok, err := allow(a)
			r.Status.Allowed = ok
			return err
		},
	}).Build()
	return s
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	perms := forApply(t, ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: rendering(), Wait: true})
	want := len(merge(perms))

	t.Run("a cluster admin needs one review", func(t *testing.T) {
		c := newSSARClient(t, func(a authorizationv1.ResourceAttributes) (bool, error) { return a.Verb == "*", nil })
		missing, err := Check(ctx, c, perms)
		require.NoError(t, err)
		assert.Empty(t, missing)
		assert.Equal(t, int32(1), c.sent.Load())
	})

	t.Run("otherwise one review per verb and resource, concurrently and bounded", func(t *testing.T) {
		// Everything but writing ConfigMaps (the record) and creating in flux-system.
		c := newSSARClient(t, func(a authorizationv1.ResourceAttributes) (bool, error) {
			return a.Verb != "*" && !(a.Resource == "configmaps" && a.Verb != "get") && !(a.Verb == "create" && a.Namespace == "flux-system"), nil
		})
		missing, err := Check(ctx, c, append(perms, perms...)) // duplicates are merged
		require.NoError(t, err)
		assert.Equal(t, int32(want+1), c.sent.Load())
		assert.LessOrEqual(t, c.maxInFlight.Load(), int32(kube.DefaultConcurrency))
		assert.Greater(t, c.maxInFlight.Load(), int32(1), "sent concurrently")

		var lines []string
		for _, m := range missing {
			lines = append(lines, m.String())
		}
		assert.Equal(t, []string{
			"create deployments.apps in namespace flux-system (applying 2 Deployment objects)",
			"create octopodes.example.com in namespace flux-system (applying Octopus paul)",
			"update configmaps named kubectl-fluxinstance-inventory in namespace flux-system (the inventory record of what was applied)",
			"create configmaps in namespace flux-system (the inventory record of what was applied)",
			"create leases.coordination.k8s.io in namespace flux-system (the lock that keeps another apply or delete off the instance meanwhile)",
		}, lines)
	})

	t.Run("reasons of merged duplicates are joined", func(t *testing.T) {
		c := newSSARClient(t, func(authorizationv1.ResourceAttributes) (bool, error) { return false, nil })
		missing, err := Check(ctx, c, []Permission{
			{Verbs: []string{"get", "delete"}, Resource: "services", Namespace: "a", Why: "one"},
			{Verbs: []string{"get"}, Resource: "services", Namespace: "a", Why: "two"},
			{Verbs: []string{"get"}, Resource: "services", Namespace: "a", Why: "one"},
		})
		require.NoError(t, err)
		require.Len(t, missing, 2)
		assert.Equal(t, "get services in namespace a (one; two)", missing[0].String())
		assert.Equal(t, "delete services in namespace a (one)", missing[1].String())
	})

	t.Run("refused reviews leave the permissions unchecked", func(t *testing.T) {
		c := newSSARClient(t, func(authorizationv1.ResourceAttributes) (bool, error) {
			return false, apierrors.NewForbidden(schema.GroupResource{Group: "authorization.k8s.io", Resource: "selfsubjectaccessreviews"}, "", fmt.Errorf("no"))
		})
		_, err := Check(ctx, c, perms)
		var unchecked *UncheckedError
		require.ErrorAs(t, err, &unchecked)
		assert.True(t, apierrors.IsForbidden(err), "the API server's error is kept")

		c = newSSARClient(t, func(authorizationv1.ResourceAttributes) (bool, error) { return false, fmt.Errorf("connection refused") })
		_, err = Check(ctx, c, perms)
		require.Error(t, err)
		assert.False(t, errors.As(err, &unchecked), "a transport failure is not a refusal to answer")
	})
}

func TestMissingErrorListsAtMostMaxListed(t *testing.T) {
	var missing []MissingPermission
	for i := range MaxListed + 3 {
		missing = append(missing, MissingPermission{Permission: Permission{Resource: fmt.Sprintf("r%d", i), Why: "w"}, Verb: "get"})
	}
	msg := (&MissingError{Command: "delete", Missing: missing}).Error()
	lines := strings.Split(msg, "\n")
	assert.Equal(t, "you lack 23 permissions this delete needs (nothing was changed):", lines[0])
	assert.Len(t, lines, 1+MaxListed+1)
	assert.Equal(t, "  get r0 cluster-wide (w)", lines[1])
	assert.Equal(t, "  and 3 more", lines[len(lines)-1])

	msg = (&MissingError{Command: "apply", Missing: missing[:1]}).Error()
	assert.Equal(t, "you lack 1 permission this apply needs (nothing was changed):\n  get r0 cluster-wide (w)", msg)
}

// A storage migration adds what storage.Migrate does: update of the CRD and its status (by name),
// list, patch and update of its objects in every namespace; without one, nothing is added.
func TestForApplyWithStorageMigration(t *testing.T) {
	objs := rendering()
	base, err := ForApply(mapper(), ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: objs, Storage: &storage.Plan{}})
	require.NoError(t, err)
	migration := &storage.Plan{Migrations: []storage.Migration{{
		CRD: "helmreleases.helm.toolkit.fluxcd.io", Group: "helm.toolkit.fluxcd.io", Kind: "HelmRelease", Resource: "helmreleases",
		Namespaced: true, StoredVersions: []string{"v2beta2"}, Version: "v2", Removed: []string{"v2beta2"},
	}}}
	perms, err := ForApply(mapper(), ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: objs, Storage: migration})
	require.NoError(t, err)
	got := reviews(perms)
	assert.Equal(t, reviews(base), got[:len(reviews(base))])
	assert.Equal(t, []string{
		"get customresourcedefinitions.apiextensions.k8s.io:helmreleases.helm.toolkit.fluxcd.io",
		"update customresourcedefinitions.apiextensions.k8s.io:helmreleases.helm.toolkit.fluxcd.io",
		"update customresourcedefinitions.apiextensions.k8s.io/status:helmreleases.helm.toolkit.fluxcd.io",
		"list helmreleases.helm.toolkit.fluxcd.io", "patch helmreleases.helm.toolkit.fluxcd.io", "update helmreleases.helm.toolkit.fluxcd.io",
	}, got[len(reviews(base)):])
}

// Operator mode asks for the migration's permissions as direct mode does, the lock, and the
// FluxInstance by name; none of the rendered objects, which the operator applies.
func TestForOperatorApply(t *testing.T) {
	migration := &storage.Plan{Migrations: []storage.Migration{{
		CRD: "helmreleases.helm.toolkit.fluxcd.io", Group: "helm.toolkit.fluxcd.io", Kind: "HelmRelease", Resource: "helmreleases",
		Namespaced: true, StoredVersions: []string{"v2beta2"}, Version: "v2", Removed: []string{"v2beta2"},
	}}}
	got := reviews(ForOperatorApply(OperatorApplyPlan{Name: "flux", Namespace: "flux-system", Storage: migration}))
	direct, err := ForApply(mapper(), ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: rendering(), Storage: migration})
	require.NoError(t, err)
	assert.Subset(t, reviews(direct), got[:6], "the migration's permissions are direct mode's")
	assert.Equal(t, []string{
		"get customresourcedefinitions.apiextensions.k8s.io:helmreleases.helm.toolkit.fluxcd.io",
		"update customresourcedefinitions.apiextensions.k8s.io:helmreleases.helm.toolkit.fluxcd.io",
		"update customresourcedefinitions.apiextensions.k8s.io/status:helmreleases.helm.toolkit.fluxcd.io",
		"list helmreleases.helm.toolkit.fluxcd.io", "patch helmreleases.helm.toolkit.fluxcd.io", "update helmreleases.helm.toolkit.fluxcd.io",
		"get leases.coordination.k8s.io:" + lock.LeaseName + " flux-system",
		"update leases.coordination.k8s.io:" + lock.LeaseName + " flux-system",
		"delete leases.coordination.k8s.io:" + lock.LeaseName + " flux-system",
		"create leases.coordination.k8s.io flux-system",
		"get fluxinstances.fluxcd.controlplane.io:flux flux-system",
		"create fluxinstances.fluxcd.controlplane.io:flux flux-system",
		"patch fluxinstances.fluxcd.controlplane.io:flux flux-system",
	}, got)
}
