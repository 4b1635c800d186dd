package apply_test

import (
	"context"
	"strings"
	"testing"

	"github.com/fluxcd/pkg/ssa"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestRecordBeforeEveryWrite checks that no object is created or changed before the record lists
// it (the instance Namespace aside), and that every record write is a compare-and-swap.
func TestRecordBeforeEveryWrite(t *testing.T) {
	env := testenv.Start(t)
	_, c := newTestManager(t, env, "flux-system")
	objs := renderInstance(t, "flux-system", defaultComponents...)
	crd := find(objs, "CustomResourceDefinition", "gitrepositories.source.toolkit.fluxcd.io")
	require.NotNil(t, crd)

	t.Run("a record that cannot fit is refused before anything is created", func(t *testing.T) {
		m, _ := newTestManager(t, env, "flux-system")
		huge := "metadata:\n  annotations:\n    note: " + strings.Repeat("x", inventory.MaxRecordBytes) + "\n"
		_, err := m.Reconcile(ctxT(t), objs, apply.ReconcileOptions{Prune: true, Record: inventory.RecordInfo{Instance: huge}})
		var tooLarge *inventory.TooLargeError
		require.ErrorAs(t, err, &tooLarge)
		assert.Contains(t, err.Error(), "ConfigMap/flux-system/kubectl-fluxinstance-inventory: the inventory record would be 1.")
		assert.Contains(t, err.Error(), "its largest part is the FluxInstance (data.instance)")
		assert.True(t, gone(t, c, corev1.SchemeGroupVersion.WithKind("Namespace"), "", "flux-system"), "not even the namespace")
		assert.True(t, gone(t, c, crdGVKTest, "", crd.GetName()))
		_, err = m.Prepare(ctxT(t), objs, apply.ReconcileOptions{Record: inventory.RecordInfo{Instance: huge}})
		require.ErrorAs(t, err, &tooLarge, "Prepare, which runs before the lock, refuses it the same way")
	})

	t.Run("without the right to write the record, nothing but the namespace is created", func(t *testing.T) {
		// May read ConfigMaps (the previous record) and write everything else an apply writes.
		grant(t, c, "no-configmap-writes", []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"namespaces", "serviceaccounts", "services", "resourcequotas", "secrets"}, Verbs: []string{"*"}},
			{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: []string{"*"}},
			{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"*"}},
			{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"*"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"*"}},
		})
		cfg, err := clientcmd.BuildConfigFromFlags("", env.UserKubeconfig(t, "no-configmap-writes"))
		require.NoError(t, err)
		m, _ := newManagerFor(t, cfg, "flux-system")
		_, err = m.Reconcile(ctxT(t), objs, apply.ReconcileOptions{Prune: true})
		require.Error(t, err)
		assert.True(t, apierrors.IsForbidden(err), "%v", err)
		assert.Contains(t, err.Error(), "configmaps")
		assert.False(t, gone(t, c, corev1.SchemeGroupVersion.WithKind("Namespace"), "", "flux-system"), "the namespace that holds the record comes first")
		assert.True(t, gone(t, c, crdGVKTest, "", crd.GetName()), "no CRD before the record")
		assert.True(t, gone(t, c, deploymentGVK, "flux-system", "source-controller"))
	})

	t.Run("the Pending record lists every object before the first is applied", func(t *testing.T) {
		m, _ := newTestManager(t, env, "flux-system")
		var seen *inventory.Inventory
		_, err := m.Reconcile(ctxT(t), objs, apply.ReconcileOptions{Prune: true, Options: apply.Options{
			Progress: func(ssa.ChangeSetEntry) {
				if seen == nil { // the first stage has just been applied
					inv, err := m.Store().Read(context.Background())
					require.NoError(t, err)
					seen = inv
				}
			},
		}})
		require.NoError(t, err)
		require.NotNil(t, seen)
		assert.Equal(t, inventory.StatePending, seen.State)
		assert.True(t, seen.Contains(inventory.New(objs)), "the Pending record lists the whole rendering")
	})

	t.Run("every record write is a compare-and-swap", func(t *testing.T) {
		m, _ := newTestManager(t, env, "flux-system")
		store := m.Store()
		first, err := store.Read(ctxT(t))
		require.NoError(t, err)
		second, err := store.Read(ctxT(t))
		require.NoError(t, err)
		require.NotEmpty(t, first.ResourceVersion)

		second.PluginVersion = "v9.9.9-other"
		require.NoError(t, store.Write(ctxT(t), second, ""))
		first.PluginVersion = "v0.0.0-stale"
		err = store.Write(ctxT(t), first, "")
		require.Error(t, err, "a write based on a stale read fails")
		assert.Contains(t, err.Error(), "another command wrote the inventory since this one read it")
		err = store.Delete(ctxT(t), first)
		require.Error(t, err, "so does a delete")

		fresh := &inventory.Inventory{Entries: first.Entries}
		err = store.Write(ctxT(t), fresh, "")
		require.Error(t, err, "a first write (no version) fails when a record appeared meanwhile")

		now, err := store.Read(ctxT(t))
		require.NoError(t, err)
		assert.Equal(t, "v9.9.9-other", now.PluginVersion, "the other command's write is kept")
		require.NoError(t, store.Delete(ctxT(t), now), "a delete of the version read succeeds")
	})
}

// grant gives user the rules cluster-wide.
func grant(t *testing.T, c client.Client, user string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, c.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}))
	require.NoError(t, c.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	}))
}
