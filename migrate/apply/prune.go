package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PruneOptions configures Prune.
type PruneOptions struct {
	// DryRun other than none lists what would be deleted and changes nothing.
	DryRun kube.DryRun
	// FieldManager labels orphaned CRDs (default ownership.PluginFieldManager).
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
	Retained []inventory.Entry
}

// Prune deletes the objects of the old inventory that newObjects no longer contain. It never
// deletes a Namespace, an object annotated fluxcd.controlplane.io/prune: disabled, an object that
// no longer carries this instance's owner labels, nor a CRD that still has custom resources (that
// one is labelled orphaned and reported with its count).
func (m *Manager) Prune(ctx context.Context, old *inventory.Inventory, newObjects []*unstructured.Unstructured, opts PruneOptions) (*PruneResult, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = ownership.PluginFieldManager
	}
	res := &PruneResult{ChangeSet: ssa.NewChangeSet()}
	ids, versions, err := old.Objects()
	if err != nil {
		return nil, err
	}
	keep := object.UnstructuredSetToObjMetadataSet(newObjects)
	var toDelete []*unstructured.Unstructured
	for i, id := range ids {
		if keep.Contains(id) {
			continue
		}
		stub := kube.Stub(id, versions[i])
		if kube.IsNamespace(id) {
			res.ChangeSet.Add(Entry(stub, ssa.SkippedAction))
			continue
		}
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(stub.GroupVersionKind())
		if err := m.Client.Get(ctx, client.ObjectKeyFromObject(stub), live); err != nil {
			if apierrors.IsNotFound(err) || kube.IsNoMatch(err) {
				continue // already gone
			}
			return nil, kube.ObjectError(stub, "reading before prune", err)
		}
		if ownership.PruneDisabled(live) {
			res.ChangeSet.Add(Entry(stub, ssa.SkippedAction))
			continue
		}
		if ok, why := m.Deletable(id, live, old, opts.FieldManager); !ok {
			res.ChangeSet.Add(Entry(stub, ssa.SkippedAction))
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s is listed in %s but was not pruned: %s", kube.RefMeta(id), old.Source, why))
			continue
		}
		if kube.IsCRD(id) {
			count, err := m.countCustomResources(ctx, id.Name)
			if err != nil {
				return nil, err
			}
			if count > 0 {
				res.Orphaned = append(res.Orphaned, OrphanedCRD{Name: id.Name, Count: count})
				res.Retained = append(res.Retained, inventory.Entry{ID: id.String(), Version: versions[i]})
				res.Warnings = append(res.Warnings, fmt.Sprintf(
					"CustomResourceDefinition/%s is no longer part of the instance but still holds %d custom resource(s): kept and labelled %s=true; delete them and apply again to remove it",
					id.Name, count, ownership.LabelOrphaned))
				res.ChangeSet.Add(Entry(stub, ssa.SkippedAction))
				if opts.DryRun == kube.DryRunNone || opts.DryRun == "" {
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
	if opts.DryRun != kube.DryRunNone && opts.DryRun != "" {
		for _, o := range toDelete {
			res.ChangeSet.Add(Entry(o, ssa.DeletedAction))
		}
		return res, nil
	}
	rm := m.ResourceManager(opts.FieldManager, 1)
	cs, err := rm.DeleteAll(ctx, toDelete, ssa.DefaultDeleteOptions())
	if cs != nil {
		res.ChangeSet.Append(cs.Entries)
	}
	if err != nil {
		return res, fmt.Errorf("pruning: %w", err)
	}
	return res, nil
}

// Deletable applies ownership's rule to an object a record lists (for Prune and for uninstall),
// with the field managers that record says applied it: the record's own, this command's, and the
// operator's for a FluxInstance's status.inventory. The records themselves are never deleted.
func (m *Manager) Deletable(id object.ObjMetadata, live metav1.Object, rec *inventory.Inventory, fieldManager string) (bool, string) {
	if inventory.IsRecord(id) {
		return false, "it is the plugin's own record"
	}
	appliedBy := []string{fieldManager, ownership.PluginFieldManager}
	if rec.FieldManager != "" {
		appliedBy = append(appliedBy, rec.FieldManager)
	}
	if strings.HasPrefix(rec.Source, "FluxInstance/") {
		appliedBy = append(appliedBy, ownership.OperatorFieldManager)
	}
	return ownership.Deletable(id, live, m.Name, m.Namespace, appliedBy...)
}

func (m *Manager) labelOrphaned(ctx context.Context, crd *unstructured.Unstructured, fieldManager string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{ownership.LabelOrphaned: "true"}}})
	if err := m.Client.Patch(ctx, crd.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldManager)); err != nil {
		return kube.ObjectError(crd, "labelling as orphaned", err)
	}
	return nil
}

// countCustomResources counts the objects of a CRD in all namespaces (metadata only, paged), using
// the storage version. An error is returned rather than a guess: a CRD is deleted only on zero.
func (m *Manager) countCustomResources(ctx context.Context, crdName string) (int, error) {
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(kube.CRDGVK)
	if err := m.Client.Get(ctx, client.ObjectKey{Name: crdName}, crd); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("CustomResourceDefinition/%s: reading: %w", crdName, err)
	}
	gvk, err := kube.CRDListKind(crd)
	if err != nil {
		return 0, err
	}
	count := 0
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk)
	err = kube.ListPages(ctx, m.Client, list, func() error {
		count += len(list.Items)
		return nil
	})
	switch {
	case kube.IsNoMatch(err):
		return 0, nil // not served: nothing can exist
	case err != nil:
		return 0, fmt.Errorf("CustomResourceDefinition/%s: listing its custom resources: %w", crdName, err)
	}
	return count, nil
}

// PruneCandidates returns what Prune would delete: the dry-run entries marked deleted.
func (m *Manager) PruneCandidates(ctx context.Context, old *inventory.Inventory, newObjects []*unstructured.Unstructured) ([]object.ObjMetadata, *PruneResult, error) {
	if old == nil {
		return nil, &PruneResult{ChangeSet: ssa.NewChangeSet()}, nil
	}
	res, err := m.Prune(ctx, old, newObjects, PruneOptions{DryRun: kube.DryRunServer})
	if err != nil {
		return nil, nil, err
	}
	var ids []object.ObjMetadata
	for _, e := range res.ChangeSet.Entries {
		if e.Action == ssa.DeletedAction {
			ids = append(ids, e.ObjMetadata)
		}
	}
	return ids, res, nil
}
