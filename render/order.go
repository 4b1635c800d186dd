package render

import (
	"sort"

	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// SortObjects sorts objects in place the operator's way: the order in which
// fluxcd/pkg/ssa, and so the Flux Operator and the apply path, reconcile
// them (ssa.ReconcileOrder: CRDs and Namespaces first, webhook configurations
// last, every kind not listed in between), then by group, kind, namespace and
// name.
//
// The sort is stable: objects of the same group, kind, namespace and name
// keep the order Build produced them in (ssa's sort.Sort gives no such
// promise). An object whose apiVersion does not parse (more than one "/",
// only possible through a user's patch) has no group and kind for ssa and
// sorts with the unlisted kinds, as ssa orders it when applying.
func SortObjects(objs []*unstructured.Unstructured) {
	sort.Stable(ssa.SortableUnstructureds(objs))
}
