package apply

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ReconcileOptions configures Reconcile.
type ReconcileOptions struct {
	Options
	// Prune deletes what the previous inventory has and the new rendering does not.
	Prune bool
	// Record is stored with the inventory.
	Record inventory.RecordInfo
	// NamespaceCreated says Prepare created the instance Namespace, for Reconcile to report it
	// created rather than unchanged.
	NamespaceCreated bool
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
// run again: before the first change that could create an object (the instance Namespace
// aside, see Prepare) the record is written as Pending with the union of the previous and the
// new entries, so a re-run (even of another rendering) still knows every object either run may
// have created; the final record replaces it only once pruning succeeded. A record that could
// not be written is refused before anything is created. Objects outside the inventory (users'
// Flux objects) are never touched.
//
// Every record write is a compare-and-swap on the version read: run it under the instance's
// lock (package lock), and a write that races another command still fails rather than loses it.
func (m *Manager) Reconcile(ctx context.Context, objects []*unstructured.Unstructured, opts ReconcileOptions) (*ReconcileResult, error) {
	opts.defaults()
	res := &ReconcileResult{}
	prev, err := m.store.Read(ctx)
	if err != nil {
		return nil, err
	}
	res.Previous = prev
	next := inventory.New(objects)

	if opts.DryRun != kube.DryRunNone {
		return m.reconcileDryRun(ctx, objects, opts, prev, res)
	}

	record := opts.Record
	if record.User == "" {
		record.User = kube.WhoAmI(ctx, m.Client)
	}
	pending := pendingRecord(prev, next, record)
	if err := m.store.Fits(pending, opts.FieldManager); err != nil {
		return nil, err
	}
	created, err := m.ensureNamespace(ctx, objects, opts.FieldManager)
	if err != nil {
		return nil, err
	}
	created = created || opts.NamespaceCreated
	if created {
		opts.Options.Progress = m.namespaceCreated(opts.Options.Progress)
	}
	writePending := func(ctx context.Context) error {
		// Skipped when the record already says everything a crash could leave: it lists every
		// object this apply may create, and prune will delete none of what it lists (so an
		// Applied record never names an object an interrupted prune removed).
		if prev != nil && prev.State != inventory.StatePending && prev.Contains(next) && (!opts.Prune || next.Contains(prev)) {
			return nil
		}
		return m.store.Write(ctx, pending, opts.FieldManager)
	}
	cs, fingerprints, err := m.applyWithHook(ctx, objects, opts.Options, writePending, prev)
	if cs != nil && created {
		for i, e := range cs.Entries {
			if m.isInstanceNamespace(e) {
				cs.Entries[i].Action = ssa.CreatedAction
			}
		}
	}
	res.ChangeSet = cs
	if err != nil {
		return res, err
	}
	next.Fingerprints = fingerprints
	next.ResourceVersion = pending.ResourceVersion // the Pending write's, or the one read
	return res, m.pruneAndRecord(ctx, objects, opts, record, prev, next, res)
}

// pruneAndRecord ends a Reconcile once everything is applied: prune what the previous record has
// and the rendering dropped (with opts.Prune), then replace the Pending record with the Applied
// one: next, plus what prune kept (or, without pruning, everything the previous record listed).
func (m *Manager) pruneAndRecord(ctx context.Context, objects []*unstructured.Unstructured, opts ReconcileOptions, record inventory.RecordInfo, prev, next *inventory.Inventory, res *ReconcileResult) error {
	if opts.Prune && prev != nil {
		pr, err := m.Prune(ctx, prev, objects, PruneOptions{DryRun: kube.DryRunNone, FieldManager: opts.FieldManager})
		if pr != nil {
			res.Prune = pr
			res.ChangeSet.Append(pr.ChangeSet.Entries)
		}
		if err != nil {
			return err
		}
		next.Entries = append(next.Entries, pr.Retained...)
	} else if prev != nil {
		// Without pruning, what the previous apply created stays in the cluster and so in the
		// record, for a later apply with pruning.
		union := inventory.Union(prev, next)
		next.Entries = union.Entries
	}
	next.State, next.RecordInfo, next.AppliedAt = inventory.StateApplied, record, time.Now().UTC()
	if err := m.store.Write(ctx, next, opts.FieldManager); err != nil {
		return err
	}
	res.Inventory = next
	return nil
}

// pendingRecord is the record written before anything is applied: every object the previous
// record or the new rendering lists, replacing the version read.
func pendingRecord(prev, next *inventory.Inventory, record inventory.RecordInfo) *inventory.Inventory {
	inv := inventory.Union(prev, next)
	inv.State, inv.RecordInfo = inventory.StatePending, record
	if prev != nil {
		inv.ResourceVersion = prev.ResourceVersion
	}
	return inv
}

// reconcileDryRun is Reconcile in a dry run: what applying and pruning would do.
func (m *Manager) reconcileDryRun(ctx context.Context, objects []*unstructured.Unstructured, opts ReconcileOptions, prev *inventory.Inventory, res *ReconcileResult) (*ReconcileResult, error) {
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

// Prepare does, before the instance is locked (package lock), the one check and the one write
// that the lock needs: it refuses a record that could not be written, and creates the instance
// Namespace alone when it is absent, since the Lease and the record live there. That Namespace
// is the only object ever created before the record lists it; it is never pruned, and the
// apply that follows records it. Reconcile repeats both (no-ops by then).
//
// It returns whether it created the Namespace: pass that on as ReconcileOptions.NamespaceCreated.
func (m *Manager) Prepare(ctx context.Context, objects []*unstructured.Unstructured, opts ReconcileOptions) (namespaceCreated bool, err error) {
	opts.defaults()
	prev, err := m.store.Read(ctx)
	if err != nil {
		return false, err
	}
	if err := m.store.Fits(pendingRecord(prev, inventory.New(objects), opts.Record), opts.FieldManager); err != nil {
		return false, err
	}
	return m.ensureNamespace(ctx, objects, opts.FieldManager)
}

// ensureNamespace applies the rendering's Namespace of the instance when the cluster has none,
// and says whether it did. An existing one is left to the apply (after the Pending record), like
// every other object.
func (m *Manager) ensureNamespace(ctx context.Context, objects []*unstructured.Unstructured, fieldManager string) (bool, error) {
	for _, obj := range objects {
		if !kube.IsNamespace(kube.ID(obj)) || obj.GetName() != m.Namespace {
			continue
		}
		_, state, err := kube.Get(ctx, m.Client, obj)
		if err != nil || state == kube.Found {
			return false, err
		}
		ns := obj.DeepCopy()
		if err := m.Client.Patch(ctx, ns, client.Apply, client.ForceOwnership, client.FieldOwner(fieldManager)); err != nil {
			return false, kube.ObjectError(obj, "creating the instance namespace", err)
		}
		return true, nil
	}
	return false, nil
}

// isInstanceNamespace tells whether e is the instance Namespace's entry.
func (m *Manager) isInstanceNamespace(e ssa.ChangeSetEntry) bool {
	return kube.IsNamespace(e.ObjMetadata) && e.ObjMetadata.Name == m.Namespace
}

// namespaceCreated reports the instance Namespace, created before the stages, as created.
func (m *Manager) namespaceCreated(progress func(ssa.ChangeSetEntry)) func(ssa.ChangeSetEntry) {
	return func(e ssa.ChangeSetEntry) {
		if m.isInstanceNamespace(e) {
			e.Action = ssa.CreatedAction
		}
		if progress != nil {
			progress(e)
		}
	}
}

// applyWithHook is Apply for real with a hook (the Pending record) run after every read, dry
// run and conflict check, right before the first object is applied.
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
	if err := hook(ctx); err != nil {
		return nil, nil, err
	}
	cs, err := m.applyStaged(ctx, objs, f, opts, fp)
	if err != nil || fp == nil {
		return cs, nil, err
	}
	return cs, fp.fingerprints(objs), nil
}
