package cluster

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/fluxcd/pkg/ssa"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PruneOptions configures Prune.
type PruneOptions struct {
	// DryRun other than none lists what would be deleted and changes nothing.
	DryRun DryRun
	// FieldManager labels orphaned CRDs (default DefaultFieldManager).
	FieldManager string
}

// OrphanedCRD is a CRD a new rendering dropped but that still holds custom resources.
type OrphanedCRD struct {
	Name string `json:"name"`
	// Count is how many custom resources it holds, across all namespaces.
	Count int `json:"count"`
}

// PruneResult is what Prune did (or would do).
type PruneResult struct {
	// ChangeSet has a "deleted" entry per deleted object and "skipped" for the Namespace, objects
	// annotated fluxcd.controlplane.io/prune: disabled, objects no longer labelled as this
	// instance's, and orphaned CRDs.
	ChangeSet *ssa.ChangeSet
	// Orphaned CRDs were kept and labelled fluxcd.controlplane.io/orphaned: "true".
	Orphaned []OrphanedCRD
	// Warnings are one line each, for the user.
	Warnings []string
	// Retained are stale entries that stay in the inventory (orphaned CRDs), so that a later
	// apply deletes them once they are empty.
	Retained []InventoryEntry
}

// Prune deletes the objects of the old inventory that newObjects no longer contain. It never
// deletes a Namespace, an object annotated fluxcd.controlplane.io/prune: disabled, an object that
// no longer carries this instance's owner labels, nor a CRD that still has custom resources (that
// one is labelled orphaned and reported with its count).
func (m *Manager) Prune(ctx context.Context, old *Inventory, newObjects []*unstructured.Unstructured, opts PruneOptions) (*PruneResult, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = DefaultFieldManager
	}
	res := &PruneResult{ChangeSet: ssa.NewChangeSet()}
	ids, versions, err := old.Objects()
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, o := range newObjects {
		keep[idOf(o).String()] = true
	}
	var toDelete []*unstructured.Unstructured
	for i, id := range ids {
		if keep[id.String()] {
			continue
		}
		stub := stubFor(id, versions[i])
		if isNamespace(id) {
			res.ChangeSet.Add(entryFor(stub, ssa.SkippedAction))
			continue
		}
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(stub.GroupVersionKind())
		if err := m.client.Get(ctx, client.ObjectKeyFromObject(stub), live); err != nil {
			if apierrors.IsNotFound(err) || isNoMatch(err) {
				continue // already gone
			}
			return nil, m.explain(objectError(stub, "reading before prune", err))
		}
		labels := live.GetLabels()
		if pruneDisabled(live) || labels[LabelOwnerName] != m.Name || labels[LabelOwnerNamespace] != m.Namespace {
			res.ChangeSet.Add(entryFor(stub, ssa.SkippedAction))
			continue
		}
		if isCRD(id) {
			count, err := m.countCustomResources(ctx, id.Name)
			if err != nil {
				return nil, m.explain(err)
			}
			if count > 0 {
				res.Orphaned = append(res.Orphaned, OrphanedCRD{Name: id.Name, Count: count})
				res.Retained = append(res.Retained, InventoryEntry{ID: id.String(), Version: versions[i]})
				res.Warnings = append(res.Warnings, fmt.Sprintf(
					"CustomResourceDefinition/%s is no longer part of the instance but still holds %d custom resource(s): kept and labelled %s=true; delete them and apply again to remove it",
					id.Name, count, LabelOrphaned))
				res.ChangeSet.Add(entryFor(stub, ssa.SkippedAction))
				if opts.DryRun == DryRunNone || opts.DryRun == "" {
					if err := m.labelOrphaned(ctx, stub, opts.FieldManager); err != nil {
						return nil, err
					}
				}
				continue
			}
		}
		toDelete = append(toDelete, stub)
	}
	if len(toDelete) == 0 {
		return res, nil
	}
	if opts.DryRun != DryRunNone && opts.DryRun != "" {
		for _, o := range toDelete {
			res.ChangeSet.Add(entryFor(o, ssa.DeletedAction))
		}
		return res, nil
	}
	rm := m.resourceManager(opts.FieldManager, 1)
	cs, err := rm.DeleteAll(ctx, toDelete, ssa.DefaultDeleteOptions())
	if cs != nil {
		res.ChangeSet.Append(cs.Entries)
	}
	if err != nil {
		return res, m.explain(fmt.Errorf("pruning: %w", err))
	}
	return res, nil
}

func (m *Manager) labelOrphaned(ctx context.Context, crd *unstructured.Unstructured, fieldManager string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{LabelOrphaned: "true"}}})
	if err := m.client.Patch(ctx, crd.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldManager)); err != nil {
		return m.explain(objectError(crd, "labelling as orphaned", err))
	}
	return nil
}

// countCustomResources counts the objects of a CRD in all namespaces (metadata only, paged), using
// the storage version. An error is returned rather than a guess: a CRD is deleted only on zero.
func (m *Manager) countCustomResources(ctx context.Context, crdName string) (int, error) {
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(crdGVK)
	if err := m.client.Get(ctx, client.ObjectKey{Name: crdName}, crd); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("CustomResourceDefinition/%s: reading: %w", crdName, err)
	}
	gvk, err := crdListKind(crd)
	if err != nil {
		return 0, err
	}
	count := 0
	cont := ""
	for {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk)
		opts := []client.ListOption{client.Limit(500)}
		if cont != "" {
			opts = append(opts, client.Continue(cont))
		}
		if err := m.client.List(ctx, list, opts...); err != nil {
			if isNoMatch(err) {
				return 0, nil // not served: nothing can exist
			}
			return 0, fmt.Errorf("CustomResourceDefinition/%s: listing its custom resources: %w", crdName, err)
		}
		count += len(list.Items)
		cont = list.GetContinue()
		if cont == "" {
			return count, nil
		}
	}
}

// crdListKind returns the list kind of a CRD's served storage version.
func crdListKind(crd *unstructured.Unstructured) (schema.GroupVersionKind, error) {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	version := ""
	for _, v := range versions {
		vm, ok := v.(map[string]any)
		if !ok {
			continue
		}
		name, _ := vm["name"].(string)
		served, _ := vm["served"].(bool)
		storage, _ := vm["storage"].(bool)
		if served && (version == "" || storage) {
			version = name
		}
	}
	if group == "" || kind == "" || version == "" {
		return schema.GroupVersionKind{}, fmt.Errorf("CustomResourceDefinition/%s: no served version", crd.GetName())
	}
	return schema.GroupVersionKind{Group: group, Version: version, Kind: kind + "List"}, nil
}
