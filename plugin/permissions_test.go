package plugin

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/permissions"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/uninstall"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// grant gives user exactly the permissions for which keep is true: the cluster-wide ones in a
// ClusterRole, the others in a Role of their namespace (which must exist), each bound to user.
func grant(t *testing.T, c client.Client, user string, perms []permissions.Permission, keep func(p permissions.Permission, verb string) bool) {
	t.Helper()
	ctx := context.Background()
	byNamespace := map[string][]rbacv1.PolicyRule{}
	for _, p := range perms {
		var verbs []string
		for _, v := range p.Verbs {
			if keep(p, v) {
				verbs = append(verbs, v)
			}
		}
		if len(verbs) == 0 {
			continue
		}
		resource := p.Resource
		if p.Subresource != "" {
			resource += "/" + p.Subresource
		}
		rule := rbacv1.PolicyRule{APIGroups: []string{p.Group}, Resources: []string{resource}, Verbs: verbs}
		if p.Name != "" {
			rule.ResourceNames = []string{p.Name}
		}
		byNamespace[p.Namespace] = append(byNamespace[p.Namespace], rule)
	}
	subjects := []rbacv1.Subject{{Kind: "User", Name: user, APIGroup: rbacv1.GroupName}}
	for ns, rules := range byNamespace {
		name := "plan-" + user
		if ns == "" {
			require.NoError(t, c.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}))
			require.NoError(t, c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name}, Subjects: subjects,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}}))
			continue
		}
		require.NoError(t, c.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}))
		require.NoError(t, c.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}}))
	}
}

// missingLines is what a refusal must list for the verbs of perms that keep refuses: one line per
// distinct verb and object(s), in the plan's order.
func missingLines(perms []permissions.Permission, granted func(p permissions.Permission, verb string) bool) []string {
	var lines []string
	seen := map[string]bool{}
	for _, p := range perms {
		for _, v := range p.Verbs {
			line := permissions.MissingPermission{Permission: p, Verb: v}.String()
			key := line[:strings.Index(line, " (")]
			if granted(p, v) || seen[key] {
				continue
			}
			seen[key] = true
			lines = append(lines, "  "+key+" (")
		}
	}
	return lines
}

// renderObjects renders file the way apply does (the build command).
func renderObjects(t *testing.T, file, dist string) []*unstructured.Unstructured {
	t.Helper()
	r := runPlugin(t, "", "build", "-f", file, "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	objs, err := testenv.DecodeYAML([]byte(r.Stdout))
	require.NoError(t, err)
	return objs
}

// countingClient counts the SelfSubjectAccessReviews sent through it.
type countingClient struct {
	client.Client
	reviews atomic.Int32
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.reviews.Add(1)
	return c.Client.Create(ctx, obj, opts...)
}

func userClient(t *testing.T, kubeconfig string) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	return testenv.FastClient(t, cfg, 100, 200)
}

// Before its first write, apply asks for every permission its plan needs: a user who lacks any
// gets all of them listed at once and the cluster is left as it was. The plan is computed here
// from the same rendering, so the refusals and the grant are exactly the plan's.
func TestApplyChecksPermissionsFirst(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	file := writeFile(t, t.TempDir(), "flux.yaml", fixtures.Instance(t, "minimal-all-components-2.9.4"))
	objs := renderObjects(t, file, dist)
	perms, err := permissions.ForApply(c.RESTMapper(), permissions.ApplyPlan{Name: "flux", Namespace: "flux-system", Objects: objs, Prune: true})
	require.NoError(t, err)
	apply := func(kubeconfig string) result {
		return runPlugin(t, "", "apply", "-f", file, "--distribution", dist, "--wait=false", "--kubeconfig", kubeconfig)
	}
	nothingChanged := func(t *testing.T) {
		t.Helper()
		crds := &metav1.PartialObjectMetadataList{}
		crds.SetGroupVersionKind(kube.CRDGVK.GroupVersion().WithKind("CustomResourceDefinitionList"))
		require.NoError(t, c.List(ctx, crds))
		for _, crd := range crds.Items {
			assert.NotContains(t, crd.Name, "fluxcd.io", "no Flux CRD was created")
		}
		err := c.Get(ctx, client.ObjectKey{Name: "flux-system"}, &corev1.Namespace{})
		assert.True(t, apierrors.IsNotFound(err), "no namespace was created: %v", err)
		err = c.Get(ctx, client.ObjectKey{Name: "crd-controller-flux-system"}, &rbacv1.ClusterRole{})
		assert.True(t, apierrors.IsNotFound(err), "no ClusterRole was created: %v", err)
		err = c.Get(ctx, client.ObjectKey{Name: "cluster-reconciler-flux-system"}, &rbacv1.ClusterRoleBinding{})
		assert.True(t, apierrors.IsNotFound(err), "no ClusterRoleBinding was created: %v", err)
	}
	// Before the check, apply reads the record; a user who may not is refused by that read.
	readRecord := func(p permissions.Permission, verb string) bool {
		return p.Resource == "configmaps" && p.Name == inventory.ConfigMapName && verb == "get"
	}

	t.Run("cluster-wide rights but no namespaced ones: every missing one listed, nothing changed", func(t *testing.T) {
		granted := func(p permissions.Permission, verb string) bool { return p.Namespace == "" || readRecord(p, verb) }
		var clusterWide []permissions.Permission
		for _, p := range perms {
			if p.Resource == "configmaps" && p.Name == inventory.ConfigMapName {
				// The namespace does not exist yet, nor can a Role in it: the read is granted
				// cluster-wide (of that name only).
				p.Namespace, p.Verbs = "", []string{"get"}
			}
			if p.Namespace == "" {
				clusterWide = append(clusterWide, p)
			}
		}
		grant(t, c, "ann", clusterWide, func(permissions.Permission, string) bool { return true })
		want := missingLines(perms, granted)
		require.Greater(t, len(want), permissions.MaxListed, "the plan needs more namespaced permissions than a refusal lists")

		r := apply(env.UserKubeconfig(t, "ann"))
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, fmt.Sprintf("error: you lack %d permissions this apply needs (nothing was changed):\n", len(want)))
		for _, line := range want[:permissions.MaxListed] {
			assert.Contains(t, r.Stderr, line)
		}
		// Several verbs of one resource, each on its own line.
		for _, verb := range []string{"get", "create", "patch"} {
			assert.Contains(t, r.Stderr, "  "+verb+" deployments.apps in namespace flux-system (applying 6 Deployment objects)\n")
		}
		assert.Contains(t, r.Stderr, fmt.Sprintf("  and %d more\n", len(want)-permissions.MaxListed))
		assert.NotContains(t, r.Stderr, "customresourcedefinitions", "ann may apply the CRDs")
		nothingChanged(t)
	})

	t.Run("everything but writing the record: two lines, nothing changed", func(t *testing.T) {
		writesRecord := func(p permissions.Permission, verb string) bool {
			return p.Resource == "configmaps" && verb != "get"
		}
		// The namespaced permissions are granted cluster-wide: the namespace does not exist yet.
		var wide []permissions.Permission
		for _, p := range perms {
			p.Namespace = ""
			wide = append(wide, p)
		}
		grant(t, c, "ben", wide, func(p permissions.Permission, verb string) bool { return !writesRecord(p, verb) })

		r := apply(env.UserKubeconfig(t, "ben"))
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Equal(t, "error: you lack 2 permissions this apply needs (nothing was changed):\n"+
			"  update configmaps named kubectl-fluxinstance-inventory in namespace flux-system (the inventory record of what was applied)\n"+
			"  create configmaps in namespace flux-system (the inventory record of what was applied)\n", r.Stderr)
		nothingChanged(t)
	})

	t.Run("exactly the plan's permissions are enough", func(t *testing.T) {
		// The namespace exists (an admin made it, with the Role in it): apply patches it.
		env.CreateNamespace(t, "flux-system")
		grant(t, c, "cat", perms, func(permissions.Permission, string) bool { return true })
		cat := env.UserKubeconfig(t, "cat")

		// How many reviews the check sends, and how long it takes, for a user who is not a
		// cluster admin (who would need one).
		counting := &countingClient{Client: userClient(t, cat)}
		start := time.Now()
		missing, err := permissions.Check(ctx, counting, perms)
		elapsed := time.Since(start)
		require.NoError(t, err)
		assert.Empty(t, missing)
		t.Logf("the check of a 6-component apply: %d SelfSubjectAccessReviews in %s", counting.reviews.Load(), elapsed)

		r := apply(cat)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "deployment.apps/source-controller created")
		require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: inventory.ConfigMapName}, &corev1.ConfigMap{}), "the record is written")

		admin := &countingClient{Client: c}
		start = time.Now()
		missing, err = permissions.Check(ctx, admin, perms)
		require.NoError(t, err)
		assert.Empty(t, missing)
		assert.Equal(t, int32(1), admin.reviews.Load(), "a cluster admin is done with one review")
		t.Logf("the same check for a cluster admin: %d review in %s", admin.reviews.Load(), time.Since(start))
	})

	t.Run("a check the API server will not answer does not block", func(t *testing.T) {
		// Every authenticated user may ask about themselves through this binding; without it
		// the reviews are forbidden, and apply says so and goes on.
		require.NoError(t, c.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "system:basic-user"}}))
		r := apply(env.UserKubeconfig(t, "cat"))
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "Warning: could not check your permissions before the apply (")
		assert.Contains(t, r.Stderr, `User "cat" cannot create resource "selfsubjectaccessreviews"`)
	})
}

// The reproduction: a user who may read everything and delete Flux's cluster RBAC, but
// not its namespaced objects. delete used to remove the ClusterRoles and ClusterRoleBindings, then
// fail on the Deployments, which ran on without RBAC. Now it refuses first and deletes nothing.
func TestDeleteChecksPermissionsFirst(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	file := writeFile(t, t.TempDir(), "flux.yaml", fixtures.Instance(t, "minimal-all-components-2.9.4"))
	r := runPlugin(t, "", "apply", "-f", file, "--distribution", dist, "--wait=false", "--kubeconfig", env.Kubeconfig)
	require.Equal(t, 0, r.Code, r.Stderr)

	store := inventory.NewStore(kube.Instance{Client: c, Name: "flux", Namespace: "flux-system"})
	record, err := store.Read(ctx)
	require.NoError(t, err)
	ids, versions, err := record.Objects()
	require.NoError(t, err)
	uids := func() map[string]types.UID {
		out := map[string]types.UID{}
		for i, id := range ids {
			live, state, err := kube.Get(ctx, c, kube.Stub(id, versions[i]))
			require.NoError(t, err)
			if state == kube.Found {
				out[id.String()] = live.GetUID()
			}
		}
		return out
	}
	before := uids()
	require.Len(t, before, len(ids), "every recorded object exists")
	recordVersion := func() string {
		cm := &corev1.ConfigMap{}
		require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: inventory.ConfigMapName}, cm))
		return cm.ResourceVersion
	}
	recordBefore := recordVersion()

	perms, err := permissions.ForDelete(c.RESTMapper(), permissions.DeletePlan{Name: "flux", Namespace: "flux-system", Record: record})
	require.NoError(t, err)

	t.Run("reads and cluster RBAC rights only: refused, every object still there", func(t *testing.T) {
		granted := func(p permissions.Permission, verb string) bool { return p.Namespace == "" || verb == "get" }
		grant(t, c, "dan", perms, granted)
		want := missingLines(perms, granted)

		r := runPlugin(t, "", "delete", "--kubeconfig", env.UserKubeconfig(t, "dan"))
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, fmt.Sprintf("error: you lack %d permissions this delete needs (nothing was changed):\n", len(want)))
		require.LessOrEqual(t, len(want), permissions.MaxListed)
		for _, line := range want {
			assert.Contains(t, r.Stderr, line)
		}
		// Several verbs, each on its own line.
		assert.Contains(t, r.Stderr, "  delete deployments.apps in namespace flux-system (deleting 6 Deployment objects)\n")
		assert.Contains(t, r.Stderr, "  update configmaps named kubectl-fluxinstance-inventory in namespace flux-system (rewriting the inventory record with what was kept)\n")
		assert.Contains(t, r.Stderr, "  create leases.coordination.k8s.io in namespace flux-system (")
		assert.NotContains(t, r.Stderr, "clusterroles", "dan may delete the cluster RBAC")
		assert.NotContains(t, r.Stderr, "  get ", "dan may read everything")
		assert.Equal(t, before, uids(), "every recorded object still exists, with its UID")
		assert.Equal(t, recordBefore, recordVersion(), "the record is untouched")
	})

	t.Run("exactly the plan's permissions are enough", func(t *testing.T) {
		grant(t, c, "eve", perms, func(permissions.Permission, string) bool { return true })
		r := runPlugin(t, "", "delete", "--kubeconfig", env.UserKubeconfig(t, "eve"))
		require.Equal(t, 0, r.Code, r.Stderr)
		after := uids()
		for _, id := range ids {
			_, kept := after[id.String()]
			assert.Equal(t, uninstall.Keeps(id, uninstall.Options{}), kept, "%s", id)
		}
	})
}
