// Package apply installs and upgrades one FluxInstance's rendering with server-side apply:
// staged applies (CRDs, Namespaces and cluster RBAC; `*Class` kinds; the rest), the takeover of
// objects another installer owned (ownership's rules), the no-op fast path, pruning what a new
// rendering dropped, and the Pending/Applied record around all of it (inventory).
//
// The stages are a deliberate fork of fluxcd/pkg/ssa's ResourceManager.ApplyAllStaged (v0.78.0):
// per stage it does what ssa's ApplyAll does, but from in-cluster copies read once by labelled
// lists instead of one GET per object, with the takeover cleanup folded into the same pass, and it
// skips the dry run of objects the previous record's fingerprints prove unchanged (fastpath.go).
// ssa has no hook for either: a no-op re-apply would cost a dry run per object. What it still
// takes from ssa: the apply order (SortableUnstructureds), the stage predicates
// (IsClusterDefinition, IsClassDefinition), drift normalisation, the managed-fields patches,
// DeleteAll and the stage waits. Follow ssa's ApplyAll when upgrading ssa.
package apply

import (
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
)

// Manager applies and prunes the objects of one FluxInstance. It holds no mutable state beyond
// its configuration: every call reads the cluster afresh.
type Manager struct {
	kube.Instance
	store *inventory.Store
}

// NewManager returns the Manager of the instance.
func NewManager(inst kube.Instance) *Manager {
	return &Manager{Instance: inst, store: inventory.NewStore(inst)}
}

// Store is the instance's inventory record.
func (m *Manager) Store() *inventory.Store { return m.store }

// ResourceManager is ssa's manager for what the fork leaves to it (stage waits, deletes).
func (m *Manager) ResourceManager(fieldManager string, concurrency int) *ssa.ResourceManager {
	poller := polling.NewStatusPoller(m.Client, m.Client.RESTMapper(), polling.Options{})
	rm := ssa.NewResourceManager(m.Client, poller, ssa.Owner{Field: fieldManager, Group: "fluxcd.controlplane.io"})
	rm.SetConcurrency(concurrency)
	return rm
}
