// Package uninstall removes what the plugin applied for an instance (`delete`): everything the
// record lists and still carries the instance's owner labels, except the Namespace and, unless
// asked, the CRDs (and so users' Flux objects); Flux objects are suspended first so that their
// controllers garbage-collect nothing of the users' workloads.
package uninstall

import (
	"context"
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options configures Run.
type Options struct {
	// WithCRDs deletes the CRDs too, and with them every Flux object of every user. Off by
	// default; the command asks for an explicit confirmation flag.
	WithCRDs bool
	// RemoveFinalizers clears finalizers of the Flux objects being deleted (the sync objects and,
	// WithCRDs, every custom resource of the deleted CRDs), for when the controllers are gone and
	// nobody would ever clear them.
	RemoveFinalizers bool
	// DryRun other than none lists what would be deleted; server also sends each delete as a
	// server-side dry run (so that the API server checks permissions and admission).
	DryRun kube.DryRun
	// FieldManager of the suspend/finalizer patches (default the plugin's).
	FieldManager string
}

const (
	suspendPatch    = `{"spec":{"suspend":true}}`
	finalizersPatch = `{"metadata":{"finalizers":null}}`
)

// Run removes what the inventory lists, except Namespaces (always kept) and CRDs (kept unless
// WithCRDs, so users' Flux objects survive). Only objects still labelled as this instance's are
// deleted. Flux custom resources of the inventory (the sync GitRepository and Kustomization) are
// suspended first, so that a kustomize-controller still running finalizes them without
// garbage-collecting the users' workloads they applied. The record is rewritten with what was
// kept (state Deleted).
func Run(ctx context.Context, m *apply.Manager, inv *inventory.Inventory, opts Options) (*Result, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = ownership.PluginFieldManager
	}
	res := &Result{ChangeSet: ssa.NewChangeSet()}
	if inv == nil {
		return res, nil
	}
	ids, versions, err := inv.Objects()
	if err != nil {
		return nil, err
	}
	t, err := collect(ctx, m, inv, ids, versions, opts, res)
	if err != nil {
		return res, err
	}
	if !opts.DryRun.Changes() {
		return res, t.dryRun(ctx, m.Client, opts.DryRun, res.ChangeSet)
	}
	// Pending while it deletes: an interrupted delete leaves a record that lists at least what
	// exists (every entry, as before), never an Applied one naming objects that are gone.
	if inv.State != inventory.StatePending {
		pending := *inv
		pending.State = inventory.StatePending
		if err := m.Store().Write(ctx, &pending, opts.FieldManager); err != nil {
			return res, err
		}
		inv.ResourceVersion = pending.ResourceVersion
	}
	if err := t.suspend(ctx, m.Client, opts); err != nil {
		return res, err
	}
	if err := t.delete(ctx, m, opts, res.ChangeSet); err != nil {
		return res, err
	}
	t.kept.State, t.kept.RecordInfo, t.kept.ResourceVersion = inventory.StateDeleted, inv.RecordInfo, inv.ResourceVersion
	if err := m.Store().Write(ctx, t.kept, opts.FieldManager); err != nil {
		// The namespace may be gone (someone deleted it meanwhile): nothing left to record.
		if !apierrors.IsNotFound(err) {
			return res, err
		}
	}
	return res, nil
}

// Result is what Run did (or would do).
type Result struct {
	ChangeSet *ssa.ChangeSet
	// Warnings name each listed object that was kept because its provenance is in doubt.
	Warnings []string
}

// targets sorts the inventory for Run: what it keeps, and what it deletes in three groups, in
// the order they go: the Flux objects (suspended first, so their controllers garbage-collect
// nothing), the other objects, then the CRDs (after everything that their controllers ran).
type targets struct {
	kept                      *inventory.Inventory
	fluxObjects, others, crds []*unstructured.Unstructured
}

// collect reads each inventory object and sorts it. Namespaces and (without WithCRDs) CRDs are
// kept and reported skipped, like objects that ownership's rule does not let the plugin delete
// (each with a warning); objects already gone are left out.
func collect(ctx context.Context, m *apply.Manager, inv *inventory.Inventory, ids []object.ObjMetadata, versions []string, opts Options, res *Result) (*targets, error) {
	t := &targets{kept: &inventory.Inventory{}}
	cs := res.ChangeSet
	for i, id := range ids {
		stub := kube.Stub(id, versions[i])
		if Keeps(id, opts) {
			// What is gone (a CRD an interrupted prune removed) leaves the record; what cannot be
			// read stays in it, since the permission check asks for nothing about these.
			if _, state, err := kube.Get(ctx, m.Client, stub); err == nil && state != kube.Found {
				continue
			}
			cs.Add(apply.Entry(stub, ssa.SkippedAction))
			t.kept.Add(id, versions[i])
			continue
		}
		live, state, err := kube.Get(ctx, m.Client, stub)
		if err != nil {
			return nil, err
		}
		if state != kube.Found {
			continue
		}
		if ok, why := m.Deletable(id, live, inv, opts.FieldManager); !ok {
			cs.Add(apply.Entry(stub, ssa.SkippedAction))
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is listed in %s but was not deleted: %s", kube.RefMeta(id), inv.Source, why))
			continue
		}
		switch {
		case kube.IsCRD(id):
			t.crds = append(t.crds, live)
		case IsFluxObject(id):
			t.fluxObjects = append(t.fluxObjects, live)
		default:
			t.others = append(t.others, live)
		}
	}
	return t, nil
}

// Keeps tells whether Run keeps a recorded object (and so needs no right to delete it):
// Namespaces always, CRDs unless opts.WithCRDs. Run only reads it, to drop from the record what
// is gone, and tolerates a refused read; the permission check of `delete` asks for nothing about
// these.
func Keeps(id object.ObjMetadata, opts Options) bool {
	return kube.IsNamespace(id) || (kube.IsCRD(id) && !opts.WithCRDs)
}

// IsFluxObject tells whether Run suspends a recorded object (and, with RemoveFinalizers, clears
// its finalizers) before deleting it: a Flux custom resource, whose controller would otherwise
// garbage-collect what it applied.
func IsFluxObject(id object.ObjMetadata) bool {
	return strings.HasSuffix(id.GroupKind.Group, ".toolkit.fluxcd.io")
}

// dryRun reports every deletion; with the server dry-run it also sends each delete as one, so
// that the API server checks permissions and admission.
func (t *targets) dryRun(ctx context.Context, c client.Client, dryRun kube.DryRun, cs *ssa.ChangeSet) error {
	for _, group := range [][]*unstructured.Unstructured{t.fluxObjects, t.others, t.crds} {
		for _, o := range group {
			if dryRun == kube.DryRunServer {
				if err := c.Delete(ctx, o.DeepCopy(), client.DryRunAll); err != nil && !apierrors.IsNotFound(err) {
					return kube.ObjectError(o, "server-side dry-run delete", err)
				}
			}
			cs.Add(apply.Entry(o, ssa.DeletedAction))
		}
	}
	return nil
}

// suspend stops the controllers of the Flux objects about to go from acting on them (and, when
// asked, clears their finalizers for controllers that are gone).
func (t *targets) suspend(ctx context.Context, c client.Client, opts Options) error {
	for _, o := range t.fluxObjects {
		if err := patch(ctx, c, o, suspendPatch, opts.FieldManager); err != nil {
			return err
		}
		if opts.RemoveFinalizers && len(o.GetFinalizers()) > 0 {
			if err := patch(ctx, c, o, finalizersPatch, opts.FieldManager); err != nil {
				return err
			}
		}
	}
	return nil
}

// delete deletes the groups in order with ssa's DeleteAll, only objects still carrying the
// instance's owner labels. CRDs go last, after their custom resources' finalizers are cleared
// when asked (without controllers the CRD deletion would hang).
func (t *targets) delete(ctx context.Context, m *apply.Manager, opts Options, cs *ssa.ChangeSet) error {
	rm := m.ResourceManager(opts.FieldManager, 1)
	delOpts := ssa.DefaultDeleteOptions()
	delOpts.Inclusions = map[string]string{render.LabelOwnerName: m.Name, render.LabelOwnerNamespace: m.Namespace}
	if err := deleteAll(ctx, rm, delOpts, cs, t.fluxObjects, t.others); err != nil {
		return err
	}
	if opts.RemoveFinalizers {
		for _, crd := range t.crds {
			if err := removeCustomResourceFinalizers(ctx, m.Client, crd, opts.FieldManager); err != nil {
				return err
			}
		}
	}
	return deleteAll(ctx, rm, delOpts, cs, t.crds)
}

// deleteAll deletes each group in turn, recording what was deleted even when a group fails.
func deleteAll(ctx context.Context, rm *ssa.ResourceManager, opts ssa.DeleteOptions, cs *ssa.ChangeSet, groups ...[]*unstructured.Unstructured) error {
	for _, group := range groups {
		if len(group) == 0 {
			continue
		}
		res, err := rm.DeleteAll(ctx, group, opts)
		if res != nil {
			cs.Append(res.Entries)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func patch(ctx context.Context, c client.Client, obj *unstructured.Unstructured, patch, fieldManager string) error {
	err := c.Patch(ctx, obj.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)), client.FieldOwner(fieldManager))
	if err != nil && !apierrors.IsNotFound(err) {
		return kube.ObjectError(obj, "patching "+patch, err)
	}
	return nil
}

// removeCustomResourceFinalizers clears the finalizers of every custom resource of a CRD about
// to be deleted: without controllers the CRD deletion would otherwise hang forever.
func removeCustomResourceFinalizers(ctx context.Context, c client.Client, crd *unstructured.Unstructured, fieldManager string) error {
	gvk, err := kube.CRDListKind(crd)
	if err != nil {
		return err
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk)
	err = kube.ListPages(ctx, c, list, func() error {
		for i := range list.Items {
			item := &list.Items[i]
			if len(item.Finalizers) == 0 {
				continue
			}
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk.GroupVersion().WithKind(strings.TrimSuffix(gvk.Kind, "List")))
			u.SetName(item.Name)
			u.SetNamespace(item.Namespace)
			if err := patch(ctx, c, u, finalizersPatch, fieldManager); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !kube.IsNoMatch(err) {
		return fmt.Errorf("CustomResourceDefinition/%s: listing its custom resources: %w", crd.GetName(), err)
	}
	return nil
}

// CRDs lists the CRDs an inventory holds (for the --with-crds confirmation).
func CRDs(inv *inventory.Inventory) ([]string, error) {
	ids, _, err := inv.Objects()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		if kube.IsCRD(id) {
			out = append(out, id.Name)
		}
	}
	return out, nil
}
