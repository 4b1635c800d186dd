package adopt

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
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
	// SetAside are the Helm release records moved where Helm no longer finds them.
	SetAside []string
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
	if p.Install.Helm != nil {
		return releaseSetAside(ctx, m.Client, p.Install.Helm)
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
	rec := newRecord(p)
	if err := writeRecord(ctx, c, rec); err != nil {
		return nil, err
	}
	if rec.Helm != nil {
		if err := suspendHelmRelease(ctx, c, rec, p.Install.Helm); err != nil {
			return nil, err
		}
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
	if rec.Helm != nil {
		if res.SetAside, err = releaseHelm(ctx, c, p, rec.Helm); err != nil {
			return res, err
		}
	}
	rec.State = StateCompleted
	if err := writeRecord(ctx, c, rec); err != nil {
		return res, err
	}
	return res, nil
}

// newRecord is the migration record of the plan, in progress; a resumed migration keeps when it
// started and the HelmRelease it suspended.
func newRecord(p *Plan) *Record {
	in := p.Install
	rec := &Record{Namespace: in.Namespace, State: StateInProgress, StartedAt: now(), Installer: in.Installer, Instance: p.Instance}
	if in.Installer == installation.ManagedByBootstrap {
		rec.Kustomization = in.Namespace + "/" + in.Namespace
	}
	old := in.Record
	if old != nil && old.StartedAt != "" {
		rec.StartedAt = old.StartedAt
	}
	if in.Helm != nil {
		rec.Helm = newRecordedHelm(in.Helm)
		if old != nil && old.Helm != nil {
			rec.Helm.SuspendedHelmRelease = old.Helm.SuspendedHelmRelease
		}
	}
	for _, id := range p.FluxObjects {
		rec.Objects = append(rec.Objects, RecordEntry{ID: id.String(), Version: p.Versions[id]})
	}
	return rec
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
	err := readFluxObjects(ctx, c, p, func(id object.ObjMetadata, live *metav1.PartialObjectMetadata) {
		switch {
		case live == nil:
			bad = append(bad, kube.RefMeta(id)+" (missing)")
		case !ownership.ProtectedFromKustomize(live):
			bad = append(bad, kube.RefMeta(id))
		}
	})
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return &NotProtectedError{Objects: bad}
	}
	return nil
}

// readFluxObjects reads the metadata of every Flux object of the plan and calls each with it (nil
// when the object does not exist).
func readFluxObjects(ctx context.Context, c client.Client, p *Plan, each func(object.ObjMetadata, *metav1.PartialObjectMetadata)) error {
	for _, id := range p.FluxObjects {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: p.Versions[id], Kind: id.GroupKind.Kind})
		err := c.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Name}, live)
		switch {
		case apierrors.IsNotFound(err):
			live = nil
		case err != nil:
			return fmt.Errorf("verifying %s: %w", kube.RefMeta(id), err)
		}
		each(id, live)
	}
	return nil
}

// NextStep is what the user does once the takeover is verified.
func NextStep(p *Plan) string {
	if p.Install.Installer == installation.ManagedByHelm {
		return helmNextStep(p)
	}
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
	// HelmRecords are the Helm release records put back; Resumed the HelmRelease resumed.
	HelmRecords []string
	Resumed     string
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
	ownerOf, err := rollbackOwners(ctx, c, rec, res)
	if err != nil {
		return res, err
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
		patch, err := rollbackPatch(live, ownerOf(id))
		if err != nil {
			return res, fmt.Errorf("%s: %w", kube.RefMeta(id), err)
		}
		if patch == nil {
			continue
		}
		if err := c.Patch(ctx, live, client.RawPatch(types.JSONPatchType, patch), client.FieldOwner(ownerOf(id).manager)); err != nil {
			return res, fmt.Errorf("%s: restoring %s ownership: %w", kube.RefMeta(id), res.Installer, err)
		}
		res.Restored = append(res.Restored, kube.RefMeta(id))
	}
	if h := rec.Helm; h != nil && h.SuspendedHelmRelease != "" {
		ns, name, _ := strings.Cut(h.SuspendedHelmRelease, "/")
		if err := setSuspend(ctx, c, ns, name, false); err != nil {
			return res, err
		}
		res.Resumed = h.SuspendedHelmRelease
	}
	for _, name := range []string{inventory.ConfigMapName, RecordConfigMap} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		if err := c.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
			return res, fmt.Errorf("ConfigMap/%s/%s: deleting: %w", namespace, name, err)
		}
	}
	return res, nil
}

// addAll are the JSON patch operations that set every key of want in the map at path (live is
// its current content), in key order.
func addAll(path string, live, want map[string]string) []any {
	var ops []any
	if live == nil && len(want) > 0 {
		ops = append(ops, jsonOp{Op: "add", Path: path, Value: map[string]any{}})
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if v, ok := live[k]; !ok || v != want[k] {
			ops = append(ops, jsonOp{Op: "add", Path: path + "/" + escapePointer(k), Value: want[k]})
		}
	}
	return ops
}

type jsonOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// rollbackOwner is whom rollback gives an object back to: the field manager, and the labels and
// annotations its installer puts on it (kustomize-controller's owner labels for `flux
// bootstrap`, none for `flux install`, Helm's for a Helm release).
type rollbackOwner struct {
	manager     string
	labels      map[string]string
	annotations map[string]string
}

// rollbackOwners tells, per object, whom rollback gives it back to; for Helm it first restores
// the release records (so res tells them).
func rollbackOwners(ctx context.Context, c client.Client, rec *Record, res *RollbackResult) (func(object.ObjMetadata) rollbackOwner, error) {
	switch res.Installer {
	case installation.ManagedByBootstrap:
		ksNS, ksName := rec.Namespace, rec.Namespace
		if ns, name, _ := strings.Cut(rec.Kustomization, "/"); name != "" {
			ksNS, ksName = ns, name
		}
		owner := rollbackOwner{manager: ownership.KustomizeControllerFieldManager,
			labels: map[string]string{ownership.LabelKustomizeName: ksName, ownership.LabelKustomizeNamespace: ksNS}}
		return func(object.ObjMetadata) rollbackOwner { return owner }, nil
	case installation.ManagedByHelm:
		if rec.Helm == nil {
			return nil, fmt.Errorf("ConfigMap/%s/%s: the migration record of a Helm installation names no release (data.helm)", rec.Namespace, RecordConfigMap)
		}
		ownerOf, restored, err := helmRollbackOwners(ctx, c, rec)
		res.HelmRecords = restored
		return ownerOf, err
	}
	owner := rollbackOwner{manager: ownership.FluxCLIFieldManager}
	return func(object.ObjMetadata) rollbackOwner { return owner }, nil
}

// rollbackPatch builds one JSON patch: managers back to the previous owner, labels and
// annotations as its installer leaves them. nil when there is nothing to change.
func rollbackPatch(live *unstructured.Unstructured, owner rollbackOwner) ([]byte, error) {
	var ops []any
	labels := live.GetLabels()
	for _, k := range operatorLabels {
		if _, ok := labels[k]; ok && owner.labels[k] == "" {
			ops = append(ops, jsonOp{Op: "remove", Path: "/metadata/labels/" + escapePointer(k)})
		}
	}
	ops = append(ops, addAll("/metadata/labels", labels, owner.labels)...)
	for _, p := range ssa.PatchRemoveAnnotations(live, []string{render.AnnotationKustomizeSSA, render.AnnotationKustomizePrune}) {
		ops = append(ops, p)
	}
	ops = append(ops, addAll("/metadata/annotations", live.GetAnnotations(), owner.annotations)...)
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
