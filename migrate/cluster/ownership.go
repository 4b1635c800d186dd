package cluster

import (
	"sort"
	"strings"

	"github.com/fluxcd/pkg/ssa"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Ownership metadata written, removed or honoured by apply, prune and migrate.
const (
	// LabelOwnerName and LabelOwnerNamespace are the Flux Operator's owner labels; every rendered
	// object carries them and prune deletes only objects that still do.
	LabelOwnerName      = "fluxcd.controlplane.io/name"
	LabelOwnerNamespace = "fluxcd.controlplane.io/namespace"
	// LabelOrphaned marks a CRD that a new rendering dropped but that still holds custom resources:
	// it is kept (deleting it would delete them) until it is empty.
	LabelOrphaned = "fluxcd.controlplane.io/orphaned"
	// AnnotationPrune set to "disabled" keeps an object when a new rendering drops it (the
	// operator's annotation, honoured the same way).
	AnnotationPrune = "fluxcd.controlplane.io/prune"
	// AnnotationKustomizeSSA and AnnotationKustomizePrune make kustomize-controller skip and never
	// garbage-collect an object: the handover from `flux bootstrap`.
	AnnotationKustomizeSSA   = "kustomize.toolkit.fluxcd.io/ssa"
	AnnotationKustomizePrune = "kustomize.toolkit.fluxcd.io/prune"
	// AnnotationLastApplied is client-side apply's copy of the object; it would let a later
	// `kubectl apply` delete fields this plugin owns.
	AnnotationLastApplied = "kubectl.kubernetes.io/last-applied-configuration"
)

// TakeoverManagers are the field managers of the tools that install Flux. Their fields move to
// this plugin's manager before every apply, so that applying never conflicts with them and later
// removals of a field by this plugin really remove it. Other managers (a user's `kubectl edit`
// aside, which is an Update by a `kubectl` prefix) are conflicts that need --force-conflicts.
var TakeoverManagers = []ssa.FieldManager{
	{Name: "kustomize-controller", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
	{Name: "kustomize-controller", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
	{Name: "flux", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
	{Name: "flux", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
	{Name: "kubectl", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
	// Prefix: kubectl-client-side-apply, kubectl-edit, kubectl-patch, kubectl-label...
	{Name: "kubectl", ExactMatch: false, OperationType: metav1.ManagedFieldsOperationUpdate},
	{Name: "before-first-apply", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
	{Name: "helm", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
	{Name: "flux-operator", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
	{Name: "flux-operator", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
}

// RemoveLabels are removed from every applied object: kustomize-controller garbage-collects
// objects that carry them once the bootstrap files leave Git.
var RemoveLabels = []string{LabelKustomizeName, LabelKustomizeNS}

// RemoveAnnotations are removed from every applied object: client-side apply's and Helm's records
// of a previous owner.
var RemoveAnnotations = []string{
	AnnotationLastApplied,
	"meta.helm.sh/release-name",
	"meta.helm.sh/release-namespace",
}

// OwnershipAnnotations are what rendered objects carry (the renderer sets them) so that a
// kustomize-controller still reconciling the bootstrap files leaves them alone.
var OwnershipAnnotations = map[string]string{
	AnnotationKustomizeSSA:   "Ignore",
	AnnotationKustomizePrune: "Disabled",
}

// SetOwnershipMetadata adds OwnershipAnnotations and removes RemoveLabels from the given objects
// in place, for callers (migrate) that build objects outside the renderer.
func SetOwnershipMetadata(objects []*unstructured.Unstructured) {
	for _, obj := range objects {
		annotations := obj.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		for k, v := range OwnershipAnnotations {
			annotations[k] = v
		}
		obj.SetAnnotations(annotations)
		if labels := obj.GetLabels(); labels != nil {
			for _, k := range RemoveLabels {
				delete(labels, k)
			}
			obj.SetLabels(labels)
		}
	}
}

// ManagerInfo is one field manager of an object, as `status` and migrate report it.
type ManagerInfo struct {
	Manager     string `json:"manager"`
	Operation   string `json:"operation"`
	Subresource string `json:"subresource,omitempty"`
	// Takeover is true when apply will move this manager's fields to the plugin.
	Takeover bool `json:"takeover"`
}

// Managers reports the field managers of an object, sorted by name.
func Managers(obj metav1.Object) []ManagerInfo {
	var out []ManagerInfo
	for _, e := range obj.GetManagedFields() {
		out = append(out, ManagerInfo{
			Manager:     e.Manager,
			Operation:   string(e.Operation),
			Subresource: e.Subresource,
			Takeover:    isTakeover(e),
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Manager < out[j].Manager })
	return out
}

// isTakeover mirrors ssa's matching of ApplyCleanupOptions.FieldManagers (subresource entries
// such as status are never moved).
func isTakeover(e metav1.ManagedFieldsEntry) bool {
	if e.Subresource != "" {
		return false
	}
	for _, m := range TakeoverManagers {
		if e.Operation != m.OperationType {
			continue
		}
		if (m.ExactMatch && e.Manager == m.Name) || (!m.ExactMatch && strings.HasPrefix(e.Manager, m.Name)) {
			return true
		}
	}
	return false
}

// needsCleanup tells whether an apply would rewrite an object's metadata even when its content is
// unchanged: a previous owner's manager, label or annotation is still there.
func needsCleanup(live metav1.Object, fieldManager string) bool {
	for _, e := range live.GetManagedFields() {
		if e.Manager == fieldManager && e.Operation == metav1.ManagedFieldsOperationApply {
			continue
		}
		if isTakeover(e) || (e.Manager == fieldManager && e.Subresource == "") {
			return true
		}
	}
	for _, k := range RemoveLabels {
		if _, ok := live.GetLabels()[k]; ok {
			return true
		}
	}
	for _, k := range RemoveAnnotations {
		if _, ok := live.GetAnnotations()[k]; ok {
			return true
		}
	}
	return false
}

// foreignManagers are the managers of the main resource that apply does not take over and that
// are not the plugin itself: only they can cause a conflict.
func foreignManagers(live metav1.Object, fieldManager string) map[string]bool {
	out := map[string]bool{}
	for _, e := range live.GetManagedFields() {
		if e.Subresource != "" || isTakeover(e) {
			continue
		}
		if e.Manager == fieldManager {
			continue
		}
		out[e.Manager] = true
	}
	return out
}
