package operator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
)

func decodeInstance(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatal(err)
	}
	// JSON numbers decode as float64 through sigs.k8s.io/yaml; the API server's answers carry int64.
	obj.SetGeneration(3)
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m := c.(map[string]any)
		if g, ok := m["observedGeneration"].(float64); ok {
			m["observedGeneration"] = int64(g)
		}
	}
	_ = unstructured.SetNestedSlice(obj.Object, conds, "status", "conditions")
	return obj
}

func TestStateFollowsTheOperator(t *testing.T) {
	obj := decodeInstance(t, fixtures.Instance(t, "tests/operator-mid-upgrade"))
	s := fluxInstanceState(obj)
	assert.True(t, s.Reconciled, "the finalizer shows the operator acted")
	assert.False(t, s.Disabled)
	assert.Equal(t, 2, s.Inventory)
	assert.Equal(t, int64(2), s.ObservedGeneration, "taken from the Ready condition")
	assert.False(t, s.Current(""), "generation 3 is not observed yet")
	assert.False(t, s.Settled(), "the revision applied is not the one attempted yet")
	assert.False(t, s.Failed(""))
	assert.Equal(t, "Ready=Unknown Progressing: Reconciliation in progress (lastAttemptedRevision v2.8.8@sha256:bbb, lastAppliedRevision v2.7.5@sha256:aaa, 2 objects in its inventory)", s.Summary())

	// The operator observed generation 3 and failed: the wait must stop, whatever the token.
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	conds[0] = map[string]any{"type": "Ready", "status": "False", "reason": "ReconciliationFailed", "message": "boom", "observedGeneration": int64(3)}
	_ = unstructured.SetNestedSlice(obj.Object, conds, "status", "conditions")
	s = fluxInstanceState(obj)
	assert.True(t, s.Current(""))
	assert.True(t, s.Failed(""))
	assert.False(t, s.Current("1800000000"), "a newer reconcile request is not handled yet")
	assert.False(t, s.Failed("1800000000"))
	assert.Equal(t, []string{"Ready: ReconciliationFailed: boom"}, s.Failing)

	// Ready for the current generation counts only once the revisions and the inventory are written.
	conds[0] = map[string]any{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "observedGeneration": int64(3)}
	_ = unstructured.SetNestedSlice(obj.Object, conds, "status", "conditions")
	assert.False(t, fluxInstanceState(obj).Settled())
	_ = unstructured.SetNestedField(obj.Object, "v2.8.8@sha256:bbb", "status", "lastAppliedRevision")
	assert.True(t, fluxInstanceState(obj).Settled())
	unstructured.RemoveNestedField(obj.Object, "status", "inventory")
	assert.False(t, fluxInstanceState(obj).Settled(), "no inventory yet")
	_ = unstructured.SetNestedField(obj.Object, "v2.8.8@sha256:bbb", "status", "lastAppliedRevision")

	// Retrying is progress, not failure.
	conds[0] = map[string]any{"type": "Ready", "status": "False", "reason": "ProgressingWithRetry", "observedGeneration": int64(3)}
	_ = unstructured.SetNestedSlice(obj.Object, conds, "status", "conditions")
	assert.False(t, fluxInstanceState(obj).Failed(""))

	obj.SetAnnotations(map[string]string{AnnotationReconcile: "disabled"})
	assert.True(t, fluxInstanceState(obj).Disabled)
}

func TestStateOfAFreshObject(t *testing.T) {
	obj := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "flux", "generation": int64(1)}}}
	s := fluxInstanceState(obj)
	assert.False(t, s.Reconciled)
	assert.Equal(t, "Unknown", s.Ready)
	assert.False(t, s.Current(""))
	assert.Contains(t, (&OperatorNotReadyError{Instance: "FluxInstance/flux-system/flux", Timeout: time.Minute, State: s}).Error(),
		"timed out after 1m0s waiting for the Flux Operator to reconcile FluxInstance/flux-system/flux: Ready=Unknown (lastAttemptedRevision none, lastAppliedRevision none, 0 objects in its inventory)")
}

func TestLastWriteIsTheNewestManagedFieldsTime(t *testing.T) {
	created := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	obj := &metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}
	assert.Equal(t, created, lastWrite(obj))
	later, latest := metav1.NewTime(created.Add(time.Hour)), metav1.NewTime(created.Add(2*time.Hour))
	obj.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "flux-operator", Time: &latest}, {Manager: "flux-operator", Subresource: "status", Time: &later}, {Manager: "x"}}
	assert.Equal(t, latest.Time, lastWrite(obj))
}
