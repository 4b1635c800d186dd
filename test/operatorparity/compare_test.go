package operatorparity

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fluxinstance/kubectl-fluxinstance/test/operatorenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func decode(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.DecodeYAML([]byte(doc))
	require.NoError(t, err)
	return objs[0]
}

func diff(ours, theirs *unstructured.Unstructured) []string {
	var diffs []string
	parity.DiffValues("x ", serverNormalise(ours).Object, serverNormalise(theirs).Object, &diffs)
	return diffs
}

const service = `apiVersion: v1
kind: Service
metadata:
  name: source-controller
  namespace: flux-system
  uid: %s
  resourceVersion: "%s"
  creationTimestamp: "2026-11-25T08:00:00Z"
  labels: {app.kubernetes.io/managed-by: %s}
  managedFields: [{manager: %s}]
spec:
  clusterIP: %s
  clusterIPs: [%s]
  selector: {app: source-controller}
status: {loadBalancer: {}}
`

// What the API servers stamp differently is ignored; labels and the rest of the object are not.
func TestCompareIgnoresOnlyServerFields(t *testing.T) {
	ours := decode(t, fmt.Sprintf(service, "a", "1", "flux-operator", "kubectl-fluxinstance", "10.0.0.7", "10.0.0.7"))
	theirs := decode(t, fmt.Sprintf(service, "b", "9", "flux-operator", "flux-operator", "10.0.0.12", "10.0.0.12"))
	assert.Empty(t, diff(ours, theirs))

	other := decode(t, fmt.Sprintf(service, "b", "9", "kubectl-fluxinstance", "flux-operator", "10.0.0.12", "10.0.0.12"))
	assert.Equal(t, []string{"x .metadata.labels.app.kubernetes.io/managed-by: ours=flux-operator theirs=kubectl-fluxinstance"}, diff(ours, other))

	require.NoError(t, unstructured.SetNestedField(other.Object, "flux-operator", "metadata", "labels", "app.kubernetes.io/managed-by"))
	require.NoError(t, unstructured.SetNestedField(other.Object, "source-controller-a", "spec", "selector", "app"))
	assert.Equal(t, []string{"x .spec.selector.app: ours=source-controller theirs=source-controller-a"}, diff(ours, other))
}

func TestCompareInventories(t *testing.T) {
	ours := []operatorenv.InventoryEntry{{ID: "flux-system_a__ConfigMap", Version: "v1"}, {ID: "flux-system_b_apps_Deployment", Version: "v1"}}
	theirs := []operatorenv.InventoryEntry{{ID: "flux-system_b_apps_Deployment", Version: "v1beta1"}, {ID: "flux-system_c__Service", Version: "v1"}}
	assert.Equal(t, []string{
		"flux-system_a__ConfigMap: only the plugin applies it",
		"flux-system_b_apps_Deployment: applied as v1 by the plugin, v1beta1 by the operator",
		"flux-system_c__Service: only the operator applies it",
	}, compareInventories(ours, theirs))
	assert.Empty(t, compareInventories(ours, ours))
}
