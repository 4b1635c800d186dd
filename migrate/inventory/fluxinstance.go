package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The record's other home: a FluxInstance's status.inventory, which the Flux Operator reads to
// know what to garbage-collect, and the objects a record lists.

// LiveObjects reads every object the inventory lists, keyed by inventory id; objects that do not
// exist are left out.
func (s *Store) LiveObjects(ctx context.Context, inv *Inventory) (map[string]*unstructured.Unstructured, error) {
	ids, versions, err := inv.Objects()
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	out := map[string]*unstructured.Unstructured{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(kube.DefaultConcurrency)
	for i, id := range ids {
		g.Go(func() error {
			live, state, err := kube.Get(gctx, s.Client, kube.Stub(id, versions[i]))
			if err != nil || state != kube.Found {
				return err
			}
			mu.Lock()
			out[id.String()] = live
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// ReadFluxInstance returns the FluxInstance's status.inventory, nil when the object or
// its inventory does not exist.
func (s *Store) ReadFluxInstance(ctx context.Context) (*Inventory, error) {
	fi, err := operator.GetFluxInstance(ctx, s.Instance)
	if err != nil || fi == nil {
		return nil, err
	}
	entries, found, err := unstructured.NestedSlice(fi.Object, "status", "inventory", "entries")
	if err != nil || !found {
		return nil, nil
	}
	inv := &Inventory{Source: "FluxInstance/" + s.Namespace + "/" + s.Name}
	raw, _ := json.Marshal(entries)
	if err := json.Unmarshal(raw, &inv.Entries); err != nil {
		return nil, fmt.Errorf("FluxInstance/%s/%s: status.inventory: %w", s.Namespace, s.Name, err)
	}
	return inv, nil
}

// WriteFluxInstance sets the FluxInstance's status.inventory to entries, so that the
// operator garbage-collects what the plugin applied. It fails when the object does not exist.
func (s *Store) WriteFluxInstance(ctx context.Context, entries []Entry, fieldManager string) error {
	fi, err := operator.GetFluxInstance(ctx, s.Instance)
	if err != nil {
		return err
	}
	if fi == nil {
		return fmt.Errorf("FluxInstance/%s/%s: not found: cannot write its status.inventory", s.Namespace, s.Name)
	}
	if entries == nil {
		entries = []Entry{}
	}
	return s.patchStatus(ctx, fi, entries, fieldManager)
}

// mirror writes status.inventory of an existing FluxInstance, so that a Flux Operator taking over
// later knows what to garbage-collect.
func (s *Store) mirror(ctx context.Context, entries []Entry, fieldManager string) error {
	fi, err := operator.GetFluxInstance(ctx, s.Instance)
	if err != nil || fi == nil {
		return err
	}
	return s.patchStatus(ctx, fi, entries, fieldManager)
}

func (s *Store) patchStatus(ctx context.Context, fi *unstructured.Unstructured, entries []Entry, fieldManager string) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"inventory": map[string]any{"entries": entries}}})
	if err != nil {
		return err
	}
	if err := s.Client.Status().Patch(ctx, fi, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldManager)); err != nil {
		return fmt.Errorf("FluxInstance/%s/%s: writing status.inventory: %w", s.Namespace, s.Name, err)
	}
	return nil
}
