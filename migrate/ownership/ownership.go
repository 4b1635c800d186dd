// Package ownership is every rule about who owns a Flux object: the field managers of the tools
// that install Flux (and so are taken over), the labels and annotations added, removed or honoured
// when taking over, how an installation's owner is recognised, and whether an object counts as
// this plugin's. The keys the renderer writes (owner labels, kustomize-controller's ssa/prune
// annotations, managed-by) are defined once, in render; the ones below exist only on the cluster.
package ownership

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/fluxcd/pkg/ssa"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/render"
)

// Field managers: the plugin's own and those of the tools whose objects it takes over.
const (
	// PluginName names the plugin where the cluster records who did something: its default field
	// manager and the app.kubernetes.io/managed-by value of its own record.
	PluginName = "kubectl-fluxinstance"
	// PluginFieldManager is the field manager the plugin applies with by default.
	PluginFieldManager = PluginName
	// OperatorFieldManager is the field manager the Flux Operator applies with.
	OperatorFieldManager = "flux-operator"
	// KustomizeControllerFieldManager applies what `flux bootstrap` committed to Git.
	KustomizeControllerFieldManager = "kustomize-controller"
	// FluxCLIFieldManager is the field manager of `flux install` and `flux bootstrap`'s first apply.
	FluxCLIFieldManager = "flux"
	// HelmFieldManager is Helm's: v3 writes with updates, v4 applies.
	HelmFieldManager = "helm"
	// HelmControllerFieldManager is Helm's manager when helm-controller runs it for a HelmRelease.
	HelmControllerFieldManager = "helm-controller"
	// ManagedByHelmValue is the app.kubernetes.io/managed-by value of objects Helm installed.
	ManagedByHelmValue = "Helm"
)

// Labels and annotations that exist only on the cluster (the renderer never writes them).
const (
	// LabelOrphaned marks a CRD that a new rendering dropped but that still holds custom resources:
	// it is kept (deleting it would delete them) until it is empty.
	LabelOrphaned = "fluxcd.controlplane.io/orphaned"
	// LabelKustomizeName and LabelKustomizeNamespace are kustomize-controller's owner labels: the
	// Kustomization that applied an object (so `flux bootstrap` installed it).
	LabelKustomizeName      = "kustomize.toolkit.fluxcd.io/name"
	LabelKustomizeNamespace = "kustomize.toolkit.fluxcd.io/namespace"
	// AnnotationLastApplied is client-side apply's copy of the object; it would let a later
	// `kubectl apply` delete fields this plugin owns.
	AnnotationLastApplied = "kubectl.kubernetes.io/last-applied-configuration"
	// AnnotationHelmReleaseName and AnnotationHelmReleaseNamespace are Helm's record of the
	// release that owns an object.
	AnnotationHelmReleaseName      = "meta.helm.sh/release-name"
	AnnotationHelmReleaseNamespace = "meta.helm.sh/release-namespace"
	// LabelHelmName and LabelHelmNamespace are helm-controller's owner labels: the Flux HelmRelease
	// whose release installed an object.
	LabelHelmName      = "helm.toolkit.fluxcd.io/name"
	LabelHelmNamespace = "helm.toolkit.fluxcd.io/namespace"
)

// TakeoverManagers are the field managers of the tools that install Flux. Their fields move to
// this plugin's manager before every apply, so that applying never conflicts with them and later
// removals of a field by this plugin really remove it. Other managers (a user's `kubectl edit`
// aside, which is an Update by a `kubectl` prefix) are conflicts that need --force-conflicts.
func TakeoverManagers() []ssa.FieldManager {
	return []ssa.FieldManager{
		{Name: KustomizeControllerFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		{Name: KustomizeControllerFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
		{Name: FluxCLIFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		{Name: FluxCLIFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
		{Name: "kubectl", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		// Prefix: kubectl-client-side-apply, kubectl-edit, kubectl-patch, kubectl-label...
		{Name: "kubectl", ExactMatch: false, OperationType: metav1.ManagedFieldsOperationUpdate},
		{Name: "before-first-apply", ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
		// Helm 3 writes with updates; Helm 4 applies (and a rolled-back adoption gives Helm's
		// objects back as applies).
		{Name: HelmFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		{Name: HelmFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
		// helm-controller runs Helm under its own name (a Flux HelmRelease installing the chart).
		{Name: HelmControllerFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		{Name: HelmControllerFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
		{Name: OperatorFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		{Name: OperatorFieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
	}
}

// RemoveLabels are removed from every applied object: kustomize-controller garbage-collects
// objects that carry its labels once the bootstrap files leave Git, and helm-controller's name
// the HelmRelease that would otherwise still count them as its own.
var removeLabels = []string{LabelKustomizeName, LabelKustomizeNamespace, LabelHelmName, LabelHelmNamespace}

// removeAnnotations are removed from every applied object: client-side apply's and Helm's records
// of a previous owner.
var removeAnnotations = []string{AnnotationLastApplied, AnnotationHelmReleaseName, AnnotationHelmReleaseNamespace}

// CleanupOptions is what an apply by fieldManager removes from an object it takes over: the
// previous owners' labels and annotations, and their field managers (which move to fieldManager).
// The plugin's own Update entries (orphan label, suspend patches) join its Apply entry too, so
// that an apply owns, and removes when not rendered, what those patches wrote.
func CleanupOptions(fieldManager string) ssa.ApplyCleanupOptions {
	return ssa.ApplyCleanupOptions{
		Annotations: append([]string{}, removeAnnotations...),
		Labels:      append([]string{}, removeLabels...),
		FieldManagers: append(TakeoverManagers(),
			ssa.FieldManager{Name: fieldManager, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate}),
	}
}

// MoveOptions is the cleanup that gives every field of manager `from` to another manager and
// changes nothing else: the hand-off of an instance from one owner to another.
func MoveOptions(from string) ssa.ApplyCleanupOptions {
	return ssa.ApplyCleanupOptions{FieldManagers: []ssa.FieldManager{
		{Name: from, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		{Name: from, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
	}}
}

// Cleanup removes what opts names from live with one JSON patch and moves the matching field
// managers to fieldManager, as ssa does before an apply; live is updated with the result. It
// reports whether anything was patched. Nothing but metadata changes, so no controller sees a new
// generation.
func Cleanup(ctx context.Context, c client.Client, live *unstructured.Unstructured, opts ssa.ApplyCleanupOptions, fieldManager string) (bool, error) {
	var patches []ssa.JSONPatch
	patches = append(patches, ssa.PatchRemoveAnnotations(live, opts.Annotations)...)
	patches = append(patches, ssa.PatchRemoveLabels(live, opts.Labels)...)
	managers, err := ssa.PatchReplaceFieldsManagers(live, opts.FieldManagers, fieldManager)
	if err != nil {
		return false, err
	}
	patches = append(patches, managers...)
	if len(patches) == 0 {
		return false, nil
	}
	raw, err := json.Marshal(patches)
	if err != nil {
		return false, err
	}
	return true, c.Patch(ctx, live, client.RawPatch(types.JSONPatchType, raw), client.FieldOwner(fieldManager))
}

// StripCleanup removes from obj, in place, the labels and annotations a takeover removes: what
// the object will look like once applied.
func StripCleanup(obj *unstructured.Unstructured) {
	if labels := obj.GetLabels(); labels != nil {
		for _, k := range removeLabels {
			delete(labels, k)
		}
		obj.SetLabels(labels)
	}
	if annotations := obj.GetAnnotations(); annotations != nil {
		for _, k := range removeAnnotations {
			delete(annotations, k)
		}
		obj.SetAnnotations(annotations)
	}
}

// kustomizeHandover are what rendered objects carry (the renderer sets them) so that a
// kustomize-controller still reconciling the bootstrap files leaves them alone.
var kustomizeHandover = map[string]string{
	render.AnnotationKustomizeSSA:   render.SSAIgnore,
	render.AnnotationKustomizePrune: render.PruneDisabledKustomize,
}

// SetOwnershipMetadata adds the annotations that make kustomize-controller skip and never
// garbage-collect an object, and removes kustomize-controller's owner labels, in place: for
// callers (migrate) that build objects outside the renderer.
func SetOwnershipMetadata(objects []*unstructured.Unstructured) {
	for _, obj := range objects {
		annotations := obj.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		for k, v := range kustomizeHandover {
			annotations[k] = v
		}
		obj.SetAnnotations(annotations)
		if labels := obj.GetLabels(); labels != nil {
			for _, k := range removeLabels {
				delete(labels, k)
			}
			obj.SetLabels(labels)
		}
	}
}

// HeldByHelm tells whether an object still carries Helm's ownership: the release annotations
// that `helm upgrade` requires to adopt it, the managed-by=Helm label, or helm-controller's
// labels. A Helm takeover is verified by none of its objects being held.
func HeldByHelm(obj metav1.Object) bool {
	l, a := obj.GetLabels(), obj.GetAnnotations()
	_, name := a[AnnotationHelmReleaseName]
	_, ns := a[AnnotationHelmReleaseNamespace]
	_, hr := l[LabelHelmName]
	return name || ns || hr || l[render.LabelManagedBy] == ManagedByHelmValue
}

// ProtectedFromKustomize is the rule that proves a takeover from `flux bootstrap` safe:
// kustomize-controller's garbage collection deletes an object only while it carries both owner
// labels and is not annotated prune: disabled, and its apply skips objects annotated ssa: Ignore.
// A protected object has no owner labels, prune disabled and ssa ignored (values compare
// case-insensitively, like kustomize-controller's).
func ProtectedFromKustomize(obj metav1.Object) bool {
	l, a := obj.GetLabels(), obj.GetAnnotations()
	_, hasName := l[LabelKustomizeName]
	_, hasNS := l[LabelKustomizeNamespace]
	return !hasName && !hasNS &&
		strings.EqualFold(a[render.AnnotationKustomizePrune], render.PruneDisabledKustomize) &&
		strings.EqualFold(a[render.AnnotationKustomizeSSA], render.SSAIgnore)
}

// KustomizeHandoverPatch is the JSON merge patch that protects an object the rendering does not
// cover (ProtectedFromKustomize): kustomize-controller's owner labels removed, the ssa and prune
// annotations set.
func KustomizeHandoverPatch() []byte {
	labels := map[string]any{}
	for _, k := range removeLabels {
		labels[k] = nil
	}
	annotations := map[string]any{}
	for k, v := range kustomizeHandover {
		annotations[k] = v
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels, "annotations": annotations}})
	return patch
}

// OwnedBy tells whether obj carries the owner labels of the FluxInstance name/namespace.
func OwnedBy(obj metav1.Object, name, namespace string) bool {
	labels := obj.GetLabels()
	return labels[render.LabelOwnerName] == name && labels[render.LabelOwnerNamespace] == namespace
}

// PruneDisabled tells whether an object opted out of pruning with the operator's annotation
// (values compare case-insensitively, like kustomize-controller's).
func PruneDisabled(obj metav1.Object) bool {
	return strings.EqualFold(obj.GetAnnotations()[render.AnnotationOperatorPrune], render.PruneDisabledOperator)
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
			Takeover:    IsTakeover(e),
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Manager < out[j].Manager })
	return out
}

// IsTakeover mirrors ssa's matching of ApplyCleanupOptions.FieldManagers (subresource entries
// such as status are never moved).
func IsTakeover(e metav1.ManagedFieldsEntry) bool {
	if e.Subresource != "" {
		return false
	}
	for _, m := range TakeoverManagers() {
		if e.Operation != m.OperationType {
			continue
		}
		if (m.ExactMatch && e.Manager == m.Name) || (!m.ExactMatch && strings.HasPrefix(e.Manager, m.Name)) {
			return true
		}
	}
	return false
}

// NeedsCleanup tells whether an apply would rewrite an object's metadata even when its content is
// unchanged: a previous owner's manager, label or annotation is still there.
func NeedsCleanup(live metav1.Object, fieldManager string) bool {
	for _, e := range live.GetManagedFields() {
		if e.Manager == fieldManager && e.Operation == metav1.ManagedFieldsOperationApply {
			continue
		}
		if IsTakeover(e) || (e.Manager == fieldManager && e.Subresource == "") {
			return true
		}
	}
	for _, k := range removeLabels {
		if _, ok := live.GetLabels()[k]; ok {
			return true
		}
	}
	for _, k := range removeAnnotations {
		if _, ok := live.GetAnnotations()[k]; ok {
			return true
		}
	}
	return false
}

// ForeignManagers are the managers of the main resource that apply does not take over and that
// are not the plugin itself: only they can cause a conflict.
func ForeignManagers(live metav1.Object, fieldManager string) map[string]bool {
	out := map[string]bool{}
	for _, e := range live.GetManagedFields() {
		if e.Subresource != "" || IsTakeover(e) {
			continue
		}
		if e.Manager == fieldManager {
			continue
		}
		out[e.Manager] = true
	}
	return out
}
