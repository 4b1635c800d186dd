package operatorenv

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// instance is the fixture with the namespace and the version each step needs.
func instance(t *testing.T, ns, version string) *unstructured.Unstructured {
	t.Helper()
	obj := fixtures.Object(t, "tests/source-kustomize-no-wait-2.7.x")
	obj.SetNamespace(ns)
	require.NoError(t, unstructured.SetNestedField(obj.Object, version, "spec", "distribution", "version"))
	return obj
}

// The real operator, out of cluster: it writes its FluxReport, reconciles a FluxInstance in its
// runtime namespace (any namespace, here not flux-system), lists what it applied in the
// inventory, reports a failing reconcile with its message and log, and stops on request.
func TestOperator(t *testing.T) {
	env := testenv.Start(t)
	// A short reporting interval so that the report shows the installation (default 5m).
	op := Start(t, env, Options{Namespace: "flux-ops", Args: []string{"--reporting-interval=2s"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client(t)

	// Presence without a Deployment: the CRDs and the FluxReport in the runtime namespace.
	report, err := op.WaitReport(ctx)
	require.NoError(t, err)
	assert.Equal(t, strings.TrimPrefix(Version, "v"), nestedString(report, "spec", "operator", "version"))
	assert.Equal(t, "fluxcd.controlplane.io/v1", nestedString(report, "spec", "operator", "apiVersion"))

	require.NoError(t, ApplyInstance(ctx, c, instance(t, "flux-ops", "2.7.x"), "operatorenv-test"))
	fi, err := op.WaitInstanceReady(ctx, op.InstanceKey())
	require.NoError(t, err)
	assert.Equal(t, "v2.7.5", strings.SplitN(nestedString(fi, "status", "lastAppliedRevision"), "@", 2)[0])

	entries, err := InventoryEntries(fi)
	require.NoError(t, err)
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		assert.Equal(t, "v1", e.Version, e.ID)
		ids = append(ids, e.ID)
	}
	for _, want := range []string{
		"_flux-ops__Namespace",
		"_gitrepositories.source.toolkit.fluxcd.io_apiextensions.k8s.io_CustomResourceDefinition",
		"_crd-controller-flux-ops_rbac.authorization.k8s.io_ClusterRole",
		"flux-ops_source-controller__ServiceAccount",
		"flux-ops_source-controller_apps_Deployment",
		"flux-ops_allow-egress_networking.k8s.io_NetworkPolicy",
	} {
		assert.Contains(t, ids, want)
	}
	objs, err := Inventory(ctx, c, fi)
	require.NoError(t, err)
	require.Len(t, objs, len(entries))
	i := slices.Index(ids, "flux-ops_source-controller_apps_Deployment")
	assert.Equal(t, "source-controller", objs[i].GetName())
	assert.Equal(t, FieldManager, objs[i].GetManagedFields()[0].Manager)
	assert.Equal(t, "flux-operator", objs[i].GetLabels()["app.kubernetes.io/managed-by"])

	// The report catches up with the installation.
	var last string
	require.Eventually(t, func() bool {
		report, err = op.WaitReport(ctx)
		require.NoError(t, err)
		last = nestedString(report, "spec", "distribution", "version")
		return last == "v2.7.5"
	}, time.Minute, 500*time.Millisecond, "FluxReport spec.distribution.version, last %q", last)
	b, _ := yaml.Marshal(report.Object)
	t.Logf("FluxReport after the install:\n%s", b)

	// A failing reconcile: WaitInstanceReconciled returns the Ready=False condition, and
	// WaitInstanceReady's timeout names it and shows the operator's log.
	require.NoError(t, ApplyInstance(ctx, c, instance(t, "flux-ops", "1.0.x"), "operatorenv-test"))
	_, cond, err := op.WaitInstanceReconciled(ctx, op.InstanceKey())
	require.NoError(t, err)
	assert.Equal(t, "False", string(cond.Status))
	assert.Contains(t, cond.Message, "1.0.x")
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	_, err = op.WaitInstanceReady(short, op.InstanceKey())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Ready=False")
	assert.Contains(t, err.Error(), cond.Message)
	assert.Contains(t, err.Error(), "last operator log lines")

	// Stop: the process ends, what it applied stays.
	require.True(t, op.Running())
	op.Stop()
	assert.False(t, op.Running())
	op.Stop()
	var cm unstructured.Unstructured
	cm.SetGroupVersionKind(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-ops", Name: "source-controller"}, &cm))
}

func TestParseInventoryEntry(t *testing.T) {
	ref, err := ParseInventoryEntry(InventoryEntry{ID: "flux-system_source-controller_apps_Deployment", Version: "v1"})
	require.NoError(t, err)
	assert.Equal(t, InventoryRef{Namespace: "flux-system", Name: "source-controller", GVK: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}}, ref)

	ref, err = ParseInventoryEntry(InventoryEntry{ID: "_flux-system__Namespace", Version: "v1"})
	require.NoError(t, err)
	assert.Equal(t, InventoryRef{Name: "flux-system", GVK: schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}}, ref)

	// cli-utils writes a ':' in an RBAC name as "__".
	ref, err = ParseInventoryEntry(InventoryEntry{ID: "_system__flux_rbac.authorization.k8s.io_ClusterRole", Version: "v1"})
	require.NoError(t, err)
	assert.Equal(t, "system:flux", ref.Name)

	_, err = ParseInventoryEntry(InventoryEntry{ID: "flux-system_source-controller_apps_Deployment"})
	require.ErrorContains(t, err, "no version")
	_, err = ParseInventoryEntry(InventoryEntry{ID: "nonsense", Version: "v1"})
	require.Error(t, err)
}

func nestedString(obj *unstructured.Unstructured, fields ...string) string {
	s, _, _ := unstructured.NestedString(obj.Object, fields...)
	return s
}
