// Package uninstall removes what the plugin applied for an instance (`delete`): everything the
// record lists and still carries the instance's owner labels, except the Namespace and, unless
// asked, the CRDs (and so users' Flux objects); Flux objects are suspended first so that their
// controllers garbage-collect nothing of the users' workloads.
package uninstall

import (
	"context"
	"fmt"
	"strings"

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
func Run(ctx context.Context, m *apply.Manager, inv *inventory.Inventory, opts Options) (*ssa.ChangeSet, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = ownership.PluginFieldManager
	}
	cs := ssa.NewChangeSet()
	if inv == nil {
		return cs, nil
	}
	ids, versions, err := inv.Objects()
	if err != nil {
		return nil, err
	}
	kept := &inventory.Inventory{}
	var fluxObjects, others, crds []*unstructured.Unstructured
	for i, id := range ids {
		stub := kube.Stub(id, versions[i])
		if kube.IsNamespace(id) || (kube.IsCRD(id) && !opts.WithCRDs) {
			cs.Add(apply.Entry(stub, ssa.SkippedAction))
			kept.Add(id, versions[i])
			continue
		}
		live, state, err := kube.Get(ctx, m.Client, stub)
		if err != nil {
			return cs, err
		}
		if state != kube.Found {
			continue
		}
		if !ownership.OwnedBy(live, m.Name, m.Namespace) {
			cs.Add(apply.Entry(stub, ssa.SkippedAction))
			continue
		}
		switch {
		case kube.IsCRD(id):
			crds = append(crds, live)
		case strings.HasSuffix(id.GroupKind.Group, ".toolkit.fluxcd.io"):
			fluxObjects = append(fluxObjects, live)
		default:
			others = append(others, live)
		}
	}
	if !opts.DryRun.Changes() {
		for _, group := range [][]*unstructured.Unstructured{fluxObjects, others, crds} {
			for _, o := range group {
				if opts.DryRun == kube.DryRunServer {
					if err := m.Client.Delete(ctx, o.DeepCopy(), client.DryRunAll); err != nil && !apierrors.IsNotFound(err) {
						return cs, kube.ObjectError(o, "server-side dry-run delete", err)
					}
				}
				cs.Add(apply.Entry(o, ssa.DeletedAction))
			}
		}
		return cs, nil
	}

	for _, o := range fluxObjects {
		if err := patch(ctx, m.Client, o, suspendPatch, opts.FieldManager); err != nil {
			return cs, err
		}
		if opts.RemoveFinalizers && len(o.GetFinalizers()) > 0 {
			if err := patch(ctx, m.Client, o, finalizersPatch, opts.FieldManager); err != nil {
				return cs, err
			}
		}
	}
	rm := m.ResourceManager(opts.FieldManager, 1)
	delOpts := ssa.DefaultDeleteOptions()
	delOpts.Inclusions = map[string]string{render.LabelOwnerName: m.Name, render.LabelOwnerNamespace: m.Namespace}
	for _, group := range [][]*unstructured.Unstructured{fluxObjects, others} {
		if len(group) == 0 {
			continue
		}
		res, err := rm.DeleteAll(ctx, group, delOpts)
		if res != nil {
			cs.Append(res.Entries)
		}
		if err != nil {
			return cs, err
		}
	}
	if len(crds) > 0 {
		if opts.RemoveFinalizers {
			for _, crd := range crds {
				if err := removeCustomResourceFinalizers(ctx, m.Client, crd, opts.FieldManager); err != nil {
					return cs, err
				}
			}
		}
		res, err := rm.DeleteAll(ctx, crds, delOpts)
		if res != nil {
			cs.Append(res.Entries)
		}
		if err != nil {
			return cs, err
		}
	}
	kept.State, kept.RecordInfo = inventory.StateDeleted, inv.RecordInfo
	if err := m.Store().Write(ctx, kept, opts.FieldManager); err != nil {
		// The namespace may be gone (someone deleted it meanwhile): nothing left to record.
		if !apierrors.IsNotFound(err) {
			return cs, err
		}
	}
	return cs, nil
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
