package cluster

import (
	"context"
	"fmt"
	"strings"

	"github.com/fluxcd/pkg/ssa"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DeleteOptions configures Delete.
type DeleteOptions struct {
	// WithCRDs deletes the CRDs too, and with them every Flux object of every user. Off by
	// default; the command asks for an explicit confirmation flag.
	WithCRDs bool
	// RemoveFinalizers clears finalizers of the Flux objects being deleted (the sync objects and,
	// WithCRDs, every custom resource of the deleted CRDs), for when the controllers are gone and
	// nobody would ever clear them.
	RemoveFinalizers bool
	// DryRun lists what would be deleted.
	DryRun bool
	// FieldManager of the suspend/finalizer patches (default DefaultFieldManager).
	FieldManager string
}

const (
	suspendPatch    = `{"spec":{"suspend":true}}`
	finalizersPatch = `{"metadata":{"finalizers":null}}`
)

// Delete removes what the inventory lists, except Namespaces (always kept) and CRDs (kept unless
// WithCRDs, so users' Flux objects survive). Only objects still labelled as this instance's are
// deleted. Flux custom resources of the inventory (the sync GitRepository and Kustomization) are
// suspended first, so that a kustomize-controller still running finalizes them without
// garbage-collecting the users' workloads they applied. The record is rewritten with what was
// kept (state Deleted).
func (m *Manager) Delete(ctx context.Context, inv *Inventory, opts DeleteOptions) (*ssa.ChangeSet, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = DefaultFieldManager
	}
	cs := ssa.NewChangeSet()
	if inv == nil {
		return cs, nil
	}
	ids, versions, err := inv.Objects()
	if err != nil {
		return nil, err
	}
	kept := &Inventory{}
	var fluxObjects, others, crds []*unstructured.Unstructured
	for i, id := range ids {
		stub := stubFor(id, versions[i])
		if isNamespace(id) || (isCRD(id) && !opts.WithCRDs) {
			cs.Add(entryFor(stub, ssa.SkippedAction))
			kept.add(id, versions[i])
			continue
		}
		live, found, err := m.getLive(ctx, stub)
		if err != nil {
			return cs, m.explain(err)
		}
		if !found {
			continue
		}
		labels := live.GetLabels()
		if labels[LabelOwnerName] != m.Name || labels[LabelOwnerNamespace] != m.Namespace {
			cs.Add(entryFor(stub, ssa.SkippedAction))
			continue
		}
		switch {
		case isCRD(id):
			crds = append(crds, live)
		case strings.HasSuffix(id.GroupKind.Group, ".toolkit.fluxcd.io"):
			fluxObjects = append(fluxObjects, live)
		default:
			others = append(others, live)
		}
	}
	if opts.DryRun {
		for _, group := range [][]*unstructured.Unstructured{fluxObjects, others, crds} {
			for _, o := range group {
				cs.Add(entryFor(o, ssa.DeletedAction))
			}
		}
		return cs, nil
	}

	for _, o := range fluxObjects {
		if err := m.patch(ctx, o, suspendPatch, opts.FieldManager); err != nil {
			return cs, err
		}
		if opts.RemoveFinalizers && len(o.GetFinalizers()) > 0 {
			if err := m.patch(ctx, o, finalizersPatch, opts.FieldManager); err != nil {
				return cs, err
			}
		}
	}
	rm := m.resourceManager(opts.FieldManager, 1)
	delOpts := ssa.DefaultDeleteOptions()
	delOpts.Inclusions = map[string]string{LabelOwnerName: m.Name, LabelOwnerNamespace: m.Namespace}
	for _, group := range [][]*unstructured.Unstructured{fluxObjects, others} {
		if len(group) == 0 {
			continue
		}
		res, err := rm.DeleteAll(ctx, group, delOpts)
		if res != nil {
			cs.Append(res.Entries)
		}
		if err != nil {
			return cs, m.explain(err)
		}
	}
	if len(crds) > 0 {
		if opts.RemoveFinalizers {
			for _, crd := range crds {
				if err := m.removeCustomResourceFinalizers(ctx, crd, opts.FieldManager); err != nil {
					return cs, err
				}
			}
		}
		res, err := rm.DeleteAll(ctx, crds, delOpts)
		if res != nil {
			cs.Append(res.Entries)
		}
		if err != nil {
			return cs, m.explain(err)
		}
	}
	kept.State, kept.RecordInfo = StateDeleted, inv.RecordInfo
	if err := m.WriteInventory(ctx, kept, opts.FieldManager); err != nil {
		// The namespace may be gone (someone deleted it meanwhile): nothing left to record.
		if !apierrors.IsNotFound(err) {
			return cs, err
		}
	}
	return cs, nil
}

func (m *Manager) patch(ctx context.Context, obj *unstructured.Unstructured, patch, fieldManager string) error {
	err := m.client.Patch(ctx, obj.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)), client.FieldOwner(fieldManager))
	if err != nil && !apierrors.IsNotFound(err) {
		return m.explain(objectError(obj, "patching "+patch, err))
	}
	return nil
}

// removeCustomResourceFinalizers clears the finalizers of every custom resource of a CRD about
// to be deleted: without controllers the CRD deletion would otherwise hang forever.
func (m *Manager) removeCustomResourceFinalizers(ctx context.Context, crd *unstructured.Unstructured, fieldManager string) error {
	gvk, err := crdListKind(crd)
	if err != nil {
		return err
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk)
	if err := m.client.List(ctx, list); err != nil {
		if isNoMatch(err) {
			return nil
		}
		return m.explain(fmt.Errorf("CustomResourceDefinition/%s: listing its custom resources: %w", crd.GetName(), err))
	}
	for i := range list.Items {
		item := &list.Items[i]
		if len(item.Finalizers) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk.GroupVersion().WithKind(strings.TrimSuffix(gvk.Kind, "List")))
		u.SetName(item.Name)
		u.SetNamespace(item.Namespace)
		if err := m.patch(ctx, u, finalizersPatch, fieldManager); err != nil {
			return err
		}
	}
	return nil
}

// InventoryCRDs lists the CRDs an inventory holds (for the --with-crds confirmation).
func InventoryCRDs(inv *Inventory) ([]string, error) {
	ids, _, err := inv.Objects()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		if isCRD(id) {
			out = append(out, id.Name)
		}
	}
	return out, nil
}
