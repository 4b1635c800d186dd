package bootstrap

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Operator metadata that rollback removes (kustomize-controller would remove it anyway on its
// next apply, once it owns the fields again).
var operatorLabels = []string{render.LabelOwnerName, render.LabelOwnerNamespace, render.LabelManagedBy}

// TakeoverOptions configures Takeover.
type TakeoverOptions struct {
	// Record is stored with the plugin's inventory (plugin version, distribution).
	Record inventory.RecordInfo
	// Progress, if set, is called once per applied object.
	Progress func(ssa.ChangeSetEntry)
}

// TakeoverResult is what Takeover did.
type TakeoverResult struct {
	ChangeSet *ssa.ChangeSet
	// Protected are the objects outside the rendering that were marked.
	Protected []string
	// NothingToDo is true when a completed migration was found unchanged.
	NothingToDo bool
}

// Changed counts the objects created or configured.
func (r *TakeoverResult) Changed() int {
	n := len(r.Protected)
	if r.ChangeSet != nil {
		for _, e := range r.ChangeSet.Entries {
			if e.Action == ssa.CreatedAction || e.Action == ssa.ConfiguredAction {
				n++
			}
		}
	}
	return n
}

// NotProtectedError lists Flux objects that kustomize-controller's garbage collection could still
// delete.
type NotProtectedError struct{ Objects []string }

func (e *NotProtectedError) Error() string {
	return fmt.Sprintf("verification failed: kustomize-controller could still garbage-collect %d Flux object(s) once the bootstrap files leave Git: %s; do NOT remove the files from Git, run migrate again",
		len(e.Objects), strings.Join(e.Objects, ", "))
}

// UpToDate tells, without changing anything, whether a completed migration's objects are all as
// the takeover leaves them (a server-side dry-run apply reports every object unchanged and the
// verification passes).
func UpToDate(ctx context.Context, m *apply.Manager, p *Plan) (bool, error) {
	rec := p.Install.Record
	if rec == nil || rec.State != StateCompleted {
		return false, nil
	}
	objs, err := applyObjects(ctx, m.Client, p)
	if err != nil {
		return false, err
	}
	cs, err := m.Apply(ctx, objs, apply.Options{DryRun: kube.DryRunServer})
	if err != nil {
		return false, err
	}
	for _, e := range cs.Entries {
		if e.Action != ssa.UnchangedAction && e.Action != ssa.SkippedAction {
			return false, nil
		}
	}
	if err := Verify(ctx, m.Client, p); err != nil {
		return false, nil
	}
	return true, nil
}

// Takeover moves the ownership of every Flux object from kustomize-controller to this plugin:
// it records the migration, applies the rendering (with the takeover of field managers and
// the removal of kustomize-controller's owner labels that migrate/cluster performs; rendered
// objects carry the ssa: Ignore and prune: Disabled annotations), marks the Flux objects the
// rendering does not cover, and verifies. It never deletes anything, and every step is safe to
// repeat: an interrupted run is finished by running it again.
func Takeover(ctx context.Context, m *apply.Manager, p *Plan, opts TakeoverOptions) (*TakeoverResult, error) {
	c := m.Client
	res := &TakeoverResult{}
	if ok, err := UpToDate(ctx, m, p); err != nil {
		return nil, err
	} else if ok {
		res.NothingToDo = true
		return res, nil
	}
	rec := &Record{
		Namespace: p.Install.Namespace, State: StateInProgress, StartedAt: now(),
		Installer: p.Install.Installer, Instance: p.Instance,
	}
	if p.Install.Installer == installation.ManagedByBootstrap {
		rec.Kustomization = p.Install.Namespace + "/" + p.Install.Namespace
	}
	if old := p.Install.Record; old != nil && old.StartedAt != "" {
		rec.StartedAt = old.StartedAt
	}
	for _, id := range p.FluxObjects {
		rec.Objects = append(rec.Objects, RecordEntry{ID: id.String(), Version: p.Versions[id]})
	}
	if err := writeRecord(ctx, c, rec); err != nil {
		return nil, err
	}
	objs, err := applyObjects(ctx, c, p)
	if err != nil {
		return nil, err
	}
	rr, err := m.Reconcile(ctx, objs, apply.ReconcileOptions{
		Options: apply.Options{Progress: opts.Progress},
		Prune:   false,
		Record:  opts.Record,
	})
	if rr != nil {
		res.ChangeSet = rr.ChangeSet
	}
	if err != nil {
		return res, fmt.Errorf("taking over the Flux objects (nothing was deleted; run migrate again to finish): %w", err)
	}
	for _, id := range p.Protect {
		changed, err := protect(ctx, c, id, p.Versions[id])
		if err != nil {
			return res, err
		}
		if changed {
			res.Protected = append(res.Protected, kube.RefMeta(id))
		}
	}
	if err := Verify(ctx, c, p); err != nil {
		return res, err
	}
	rec.State = StateCompleted
	if err := writeRecord(ctx, c, rec); err != nil {
		return res, err
	}
	return res, nil
}

// applyObjects is the rendering to apply: the sync objects keep the finalizers their
// controllers added (the takeover moves kustomize-controller's fields to the plugin, and an
// apply without them would remove them).
func applyObjects(ctx context.Context, c client.Client, p *Plan) ([]*unstructured.Unstructured, error) {
	out := make([]*unstructured.Unstructured, 0, len(p.Objects))
	for _, o := range p.Objects {
		o = o.DeepCopy()
		if patchable(o, p.Install.Namespace) && o.GetKind() != "Deployment" {
			live, _, err := kube.Get(ctx, c, o)
			if err != nil {
				return nil, err
			}
			if live != nil && len(live.GetFinalizers()) > 0 {
				o.SetFinalizers(live.GetFinalizers())
			}
		}
		out = append(out, o)
	}
	return out, nil
}

// protect marks an object the rendering does not cover so that kustomize-controller neither
// applies nor deletes it. It reports whether it changed anything.
func protect(ctx context.Context, c client.Client, id object.ObjMetadata, version string) (bool, error) {
	live := &metav1.PartialObjectMetadata{}
	live.SetGroupVersionKind(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: version, Kind: id.GroupKind.Kind})
	if err := c.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Name}, live); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("reading %s: %w", kube.RefMeta(id), err)
	}
	if ownership.ProtectedFromKustomize(live) {
		return false, nil
	}
	patch := ownership.KustomizeHandoverPatch()
	if err := c.Patch(ctx, live, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(ownership.PluginFieldManager)); err != nil {
		return false, fmt.Errorf("%s: marking it ssa: Ignore and prune: Disabled: %w", kube.RefMeta(id), err)
	}
	return true, nil
}

// Verify reads every Flux object of the plan back from the cluster and fails unless
// kustomize-controller's garbage collection would delete none of them.
func Verify(ctx context.Context, c client.Client, p *Plan) error {
	var bad []string
	for _, id := range p.FluxObjects {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: p.Versions[id], Kind: id.GroupKind.Kind})
		if err := c.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Name}, live); err != nil {
			if apierrors.IsNotFound(err) {
				bad = append(bad, kube.RefMeta(id)+" (missing)")
				continue
			}
			return fmt.Errorf("verifying %s: %w", kube.RefMeta(id), err)
		}
		if !ownership.ProtectedFromKustomize(live) {
			bad = append(bad, kube.RefMeta(id))
		}
	}
	if len(bad) > 0 {
		return &NotProtectedError{Objects: bad}
	}
	return nil
}

// NextStep is what the user does once the takeover is verified.
func NextStep(p *Plan) string {
	if p.Install.Installer == installation.ManagedByFluxInstall {
		return "Next step: keep the FluxInstance (commit it where you keep your cluster's configuration) and manage Flux with `kubectl fluxinstance apply -f` from now on; " +
			"stop running `flux install` (or `kubectl apply` of its manifests) on this cluster: it would take the fields back. `migrate --rollback` gives them back to the `flux` field manager."
	}
	path := "<path>"
	if p.Install.Sync != nil && p.Install.Sync.Path != "" {
		path = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(p.Install.Sync.Path, "./"), "."), "/")
	}
	dir := p.Install.Namespace
	if path != "" {
		dir = path + "/" + dir
	}
	return fmt.Sprintf("Next step: in the Git repository, remove %s/ (gotk-components.yaml, gotk-sync.yaml, kustomization.yaml) and commit the FluxInstance instead (or run migrate with --repo-dir to do it in a checkout). kustomize-controller will then prune nothing of Flux.", dir)
}

// RollbackResult is what Rollback did.
type RollbackResult struct {
	// Installer is whom the objects were given back to (installation.ManagedBy*).
	Installer string
	Restored  []string
}

// Rollback gives the Flux objects back to their installer. For `flux bootstrap`,
// kustomize-controller's owner labels return and this plugin's field managers are renamed to
// kustomize-controller, so that its next reconcile of the bootstrap files (still in Git) applies
// over them without conflicts; for `flux install`, the fields go back to the Flux CLI's `flux`
// manager, so that a later `flux install` applies over them. Either way the ssa/prune
// annotations and the operator's labels go. The migration record and the plugin's inventory
// record are deleted last; no Flux object is deleted.
func Rollback(ctx context.Context, c client.Client, namespace string) (*RollbackResult, error) {
	rec, err := readRecord(ctx, c, namespace)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, refuse("no migration record (ConfigMap %s/%s) in namespace %q: there is nothing to roll back", namespace, RecordConfigMap, namespace)
	}
	res := &RollbackResult{Installer: rec.installer()}
	owner := rollbackOwner{manager: ownership.FluxCLIFieldManager}
	if res.Installer == installation.ManagedByBootstrap {
		owner = rollbackOwner{manager: ownership.KustomizeControllerFieldManager, ksNamespace: namespace, ksName: namespace}
		if ksNS, ksName, _ := strings.Cut(rec.Kustomization, "/"); ksName != "" {
			owner.ksNamespace, owner.ksName = ksNS, ksName
		}
	}
	for _, e := range rec.Objects {
		id, err := object.ParseObjMetadata(e.ID)
		if err != nil {
			return res, fmt.Errorf("migration record: %w", err)
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: e.Version, Kind: id.GroupKind.Kind})
		if err := c.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Name}, live); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return res, fmt.Errorf("reading %s: %w", kube.RefMeta(id), err)
		}
		patch, err := rollbackPatch(live, owner)
		if err != nil {
			return res, fmt.Errorf("%s: %w", kube.RefMeta(id), err)
		}
		if patch == nil {
			continue
		}
		if err := c.Patch(ctx, live, client.RawPatch(types.JSONPatchType, patch), client.FieldOwner(owner.manager)); err != nil {
			return res, fmt.Errorf("%s: restoring %s ownership: %w", kube.RefMeta(id), res.Installer, err)
		}
		res.Restored = append(res.Restored, kube.RefMeta(id))
	}
	for _, name := range []string{inventory.ConfigMapName, RecordConfigMap} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		if err := c.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
			return res, fmt.Errorf("ConfigMap/%s/%s: deleting: %w", namespace, name, err)
		}
	}
	return res, nil
}

type jsonOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// rollbackOwner is whom rollback gives the fields back to: kustomize-controller with the
// bootstrap Kustomization's owner labels, or the Flux CLI's `flux` manager (no labels).
type rollbackOwner struct {
	manager             string
	ksNamespace, ksName string
}

// rollbackPatch builds one JSON patch: managers back to the previous owner, labels and
// annotations as its installer leaves them. nil when there is nothing to change.
func rollbackPatch(live *unstructured.Unstructured, owner rollbackOwner) ([]byte, error) {
	var ops []any
	labels := live.GetLabels()
	if labels == nil && owner.ksName != "" {
		ops = append(ops, jsonOp{Op: "add", Path: "/metadata/labels", Value: map[string]any{}})
	}
	for _, k := range operatorLabels {
		if _, ok := labels[k]; ok {
			ops = append(ops, jsonOp{Op: "remove", Path: "/metadata/labels/" + escapePointer(k)})
		}
	}
	for k, v := range map[string]string{ownership.LabelKustomizeName: owner.ksName, ownership.LabelKustomizeNamespace: owner.ksNamespace} {
		if owner.ksName != "" && labels[k] != v {
			ops = append(ops, jsonOp{Op: "add", Path: "/metadata/labels/" + escapePointer(k), Value: v})
		}
	}
	for _, p := range ssa.PatchRemoveAnnotations(live, []string{render.AnnotationKustomizeSSA, render.AnnotationKustomizePrune}) {
		ops = append(ops, p)
	}
	mf, err := ssa.PatchReplaceFieldsManagers(live, ownership.MoveOptions(ownership.PluginFieldManager).FieldManagers, owner.manager)
	if err != nil {
		return nil, err
	}
	for _, p := range mf {
		ops = append(ops, p)
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}
