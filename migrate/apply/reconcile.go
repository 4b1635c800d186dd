package apply

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ReconcileOptions configures Reconcile.
type ReconcileOptions struct {
	Options
	// Prune deletes what the previous inventory has and the new rendering does not.
	Prune bool
	// Record is stored with the inventory.
	Record inventory.RecordInfo
}

// ReconcileResult is what Reconcile did (or would do, in a dry run).
type ReconcileResult struct {
	// ChangeSet has the apply entries followed by the prune entries.
	ChangeSet *ssa.ChangeSet
	// Prune is nil when pruning was off or there was no previous inventory.
	Prune *PruneResult
	// Previous is the inventory found before applying (nil on a first apply).
	Previous *inventory.Inventory
	// Inventory is the record written (nil in a dry run).
	Inventory *inventory.Inventory
}

// Warnings returns the lines the user must see (orphaned CRDs).
func (r *ReconcileResult) Warnings() []string {
	if r == nil || r.Prune == nil {
		return nil
	}
	return r.Prune.Warnings
}

// Reconcile is what `apply` and `migrate` run: read the previous inventory, apply, prune what the
// new rendering dropped, and record the new inventory. It is safe to interrupt at any point and
// run again: before the first change that could create an object the record is written as
// Pending with the union of the previous and the new entries, so a re-run (even of another
// rendering) still knows every object either run may have created; the final record replaces it
// only once pruning succeeded. Objects outside the inventory (users' Flux objects) are never
// touched.
func (m *Manager) Reconcile(ctx context.Context, objects []*unstructured.Unstructured, opts ReconcileOptions) (*ReconcileResult, error) {
	opts.defaults()
	res := &ReconcileResult{}
	prev, err := m.store.Read(ctx)
	if err != nil {
		return nil, err
	}
	res.Previous = prev
	next := inventory.New(objects)
	dry := opts.DryRun != kube.DryRunNone

	if dry {
		cs, err := m.Apply(ctx, objects, opts.Options)
		res.ChangeSet = cs
		if err != nil {
			return res, err
		}
		if opts.Prune && prev != nil {
			pr, err := m.Prune(ctx, prev, objects, PruneOptions{DryRun: opts.DryRun, FieldManager: opts.FieldManager})
			if err != nil {
				return res, err
			}
			res.Prune = pr
			res.ChangeSet.Append(pr.ChangeSet.Entries)
		}
		return res, nil
	}

	record := opts.Record
	if record.User == "" {
		record.User = kube.WhoAmI(ctx, m.Client)
	}
	pending := func(ctx context.Context) error {
		if prev != nil && prev.Contains(next) && prev.State != inventory.StatePending {
			return nil // nothing new can be created that the record does not list
		}
		inv := inventory.Union(prev, next)
		inv.State, inv.RecordInfo = inventory.StatePending, record
		return m.store.Write(ctx, inv, opts.FieldManager)
	}
	cs, fingerprints, err := m.applyWithHook(ctx, objects, opts.Options, pending, prev)
	res.ChangeSet = cs
	if err != nil {
		return res, err
	}
	if opts.Prune && prev != nil {
		pr, err := m.Prune(ctx, prev, objects, PruneOptions{DryRun: kube.DryRunNone, FieldManager: opts.FieldManager})
		if pr != nil {
			res.Prune = pr
			res.ChangeSet.Append(pr.ChangeSet.Entries)
		}
		if err != nil {
			return res, err
		}
		for _, e := range pr.Retained {
			next.Entries = append(next.Entries, e)
		}
	} else if prev != nil {
		// Without pruning, what the previous apply created stays in the cluster and so in the
		// record, for a later apply with pruning.
		next = inventory.Union(prev, next)
	}
	next.State, next.RecordInfo, next.AppliedAt = inventory.StateApplied, record, time.Now().UTC()
	next.Fingerprints = fingerprints
	if err := m.store.Write(ctx, next, opts.FieldManager); err != nil {
		return res, err
	}
	res.Inventory = next
	return res, nil
}

// applyWithHook is Apply for real with a hook run after the first stage (CRDs, Namespaces,
// ClusterRoles): the instance namespace exists from then on, so the pending record can be
// written there before any namespaced object is created.
//
// The previous record's fingerprints (prev may be nil) let it skip the objects they prove
// unchanged; it returns the fingerprints of this apply for the next record (nil when unknown).
func (m *Manager) applyWithHook(ctx context.Context, objects []*unstructured.Unstructured, opts Options, hook func(context.Context) error, prev *inventory.Inventory) (*ssa.ChangeSet, map[string]inventory.Fingerprint, error) {
	opts.defaults()
	if opts.DryRun != kube.DryRunNone {
		return nil, nil, fmt.Errorf("internal error: applyWithHook called with dry-run %q", opts.DryRun)
	}
	objs := copyObjects(objects)
	sortObjects(objs)
	// The admission configuration is read while the objects are.
	var admission string
	var admissionErr error
	admissionDone := make(chan struct{})
	go func() {
		defer close(admissionDone)
		admission, admissionErr = m.admissionFingerprint(ctx)
	}()
	f, err := m.prefetchState(ctx, objs, opts.Concurrency)
	<-admissionDone
	if err != nil {
		return nil, nil, err
	}
	var fp *fastPath
	if admissionErr == nil {
		// Otherwise nothing is recorded nor proven: the fast path is only an optimisation, and a
		// user who may not read the admission configuration gets the normal path.
		fp, err = m.planFastPath(ctx, objs, f, prev, admission, opts)
	}
	if err != nil {
		return nil, nil, err
	}
	if !opts.ForceConflicts {
		var skip []bool
		if fp != nil {
			skip = fp.unchanged
		}
		if err := m.checkConflicts(ctx, objs, f.lives, opts.FieldManager, opts.Concurrency, skip); err != nil {
			return nil, nil, err
		}
	}
	cs, err := m.applyStaged(ctx, objs, f, opts, hook, fp)
	if err != nil || fp == nil {
		return cs, nil, err
	}
	return cs, fp.fingerprints(objs), nil
}
