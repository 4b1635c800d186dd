package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/fluxcd/pkg/ssa"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The cluster side of handing an instance from one manager to another (this plugin to the Flux
// Operator): reading the objects an inventory lists, moving their field ownership and moving the
// inventory record itself.

// LiveObjects reads every object the inventory lists, keyed by inventory id; objects that do not
// exist are left out.
func (m *Manager) LiveObjects(ctx context.Context, inv *Inventory) (map[string]*unstructured.Unstructured, error) {
	ids, versions, err := inv.Objects()
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	out := map[string]*unstructured.Unstructured{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(DefaultConcurrency)
	for i, id := range ids {
		g.Go(func() error {
			live, found, err := m.getLive(gctx, stubFor(id, versions[i]))
			if err != nil || !found {
				return err
			}
			mu.Lock()
			out[id.String()] = live
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, m.explain(err)
	}
	return out, nil
}

// MoveFieldManager gives the fields that manager `from` owns on every inventory object to manager
// `to`, as an apply by `to` (ssa's manager replacement, one JSON patch per object that needs it).
// Nothing but managedFields changes, so no controller sees a new generation. It returns how many
// objects were patched.
func (m *Manager) MoveFieldManager(ctx context.Context, inv *Inventory, from, to string) (int, error) {
	live, err := m.LiveObjects(ctx, inv)
	if err != nil {
		return 0, err
	}
	managers := ssa.ApplyCleanupOptions{FieldManagers: []ssa.FieldManager{
		{Name: from, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationApply},
		{Name: from, ExactMatch: true, OperationType: metav1.ManagedFieldsOperationUpdate},
	}}
	var mu sync.Mutex
	moved := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(DefaultConcurrency)
	for _, obj := range live {
		g.Go(func() error {
			patched, err := m.cleanupMetadata(gctx, obj, managers, to)
			if err != nil {
				return objectError(obj, "moving field ownership to "+to, err)
			}
			if patched {
				mu.Lock()
				moved++
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return moved, m.explain(err)
	}
	return moved, nil
}

// ReadFluxInstanceInventory returns the FluxInstance's status.inventory, nil when the object or
// its inventory does not exist.
func (m *Manager) ReadFluxInstanceInventory(ctx context.Context) (*Inventory, error) {
	fi, err := m.getFluxInstance(ctx)
	if err != nil || fi == nil {
		return nil, err
	}
	entries, found, err := unstructured.NestedSlice(fi.Object, "status", "inventory", "entries")
	if err != nil || !found {
		return nil, nil
	}
	inv := &Inventory{Source: "FluxInstance/" + m.Namespace + "/" + m.Name}
	raw, _ := json.Marshal(entries)
	if err := json.Unmarshal(raw, &inv.Entries); err != nil {
		return nil, fmt.Errorf("FluxInstance/%s/%s: status.inventory: %w", m.Namespace, m.Name, err)
	}
	return inv, nil
}

// WriteFluxInstanceInventory sets the FluxInstance's status.inventory to entries, so that the
// operator garbage-collects what the plugin applied. It fails when the object does not exist.
func (m *Manager) WriteFluxInstanceInventory(ctx context.Context, entries []InventoryEntry, fieldManager string) error {
	fi, err := m.getFluxInstance(ctx)
	if err != nil {
		return err
	}
	if fi == nil {
		return fmt.Errorf("FluxInstance/%s/%s: not found: cannot write its status.inventory", m.Namespace, m.Name)
	}
	if entries == nil {
		entries = []InventoryEntry{}
	}
	return m.mirrorToFluxInstance(ctx, entries, fieldManager)
}

// DeleteInventoryRecord removes the plugin's inventory ConfigMap, once another manager's record
// (the FluxInstance's status.inventory) replaces it.
func (m *Manager) DeleteInventoryRecord(ctx context.Context) error { return m.deleteInventory(ctx) }
