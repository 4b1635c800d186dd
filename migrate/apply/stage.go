package apply

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	ssaerrors "github.com/fluxcd/pkg/ssa/errors"
	"github.com/fluxcd/pkg/ssa/utils"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// applyStaged applies for real, stage by stage (CRDs, Namespaces and cluster RBAC; `*Class`
// kinds; the rest), from the in-cluster copies the prefetch read.
//
// Per stage it does what ssa's ApplyAll does, without reading each object again: an object the
// prefetch found absent is created with one apply (no dry run can say more than "created");
// an existing one is dry-run applied (forced), its previous owners' metadata is cleaned up
// (ownership.CleanupOptions), and it is applied only when the dry run
// differs from the in-cluster copy or the cleanup changed it. Every dry run and cleanup of a
// stage happens before its first apply; the applies go kind by kind in apply order, the objects
// of one kind concurrently.
//
// With fp, the objects fp proves unchanged are neither dry-run nor applied, and fp.recorded
// receives every other object's fingerprint as the apply leaves it.
func (m *Manager) applyStaged(ctx context.Context, objs []*unstructured.Unstructured, f *fetched, opts Options, fp *fastPath) (*ssa.ChangeSet, error) {
	cleanup := ownership.CleanupOptions(opts.FieldManager)

	var stages [3][]int
	for i, o := range objs {
		switch {
		case utils.IsClusterDefinition(o):
			stages[0] = append(stages[0], i)
		case utils.IsClassDefinition(o):
			stages[1] = append(stages[1], i)
		default:
			stages[2] = append(stages[2], i)
		}
	}
	total := ssa.NewChangeSet()
	for s, stage := range stages {
		if len(stage) == 0 {
			continue
		}
		entries, err := m.applyStage(ctx, objs, stage, f, opts.FieldManager, opts.Concurrency, cleanup, fp)
		if err != nil {
			return total, err
		}
		for _, e := range entries {
			total.Add(e)
			if opts.Progress != nil {
				opts.Progress(e)
			}
		}
		if s == 2 {
			break
		}
		// Later stages need the CRDs served and the namespaces active. Objects that did not
		// change are already there; waiting only for the others saves a poll per stage, and a
		// stage where nothing changed is not waited for at all.
		var changed object.ObjMetadataSet
		for _, e := range entries {
			if e.Action == ssa.CreatedAction || e.Action == ssa.ConfiguredAction {
				changed = append(changed, e.ObjMetadata)
			}
		}
		if len(changed) == 0 {
			continue
		}
		rm := m.ResourceManager(opts.FieldManager, opts.Concurrency)
		if err := rm.WaitForSetWithContext(ctx, changed, ssa.WaitOptions{Interval: 250 * time.Millisecond, Timeout: opts.StageTimeout}); err != nil {
			return total, fmt.Errorf("waiting for CRDs and namespaces to be ready before applying the rest: %w", err)
		}
	}
	return total, nil
}

// applyConcurrency bounds the concurrent applies of one kind: enough to overlap the API server's
// work on a few objects, few enough not to starve it.
const applyConcurrency = 5

// applyStage applies the objects objs[i] for i in stage (in apply order) and returns their
// change-set entries in that order; nothing on error, like ssa's ApplyAll. It is ssa's ApplyAll
// in two passes: decide (every dry run and cleanup), then apply what changed, kind by kind.
func (m *Manager) applyStage(ctx context.Context, objs []*unstructured.Unstructured, stage []int, f *fetched, fieldManager string, concurrency int, cleanup ssa.ApplyCleanupOptions, fp *fastPath) ([]ssa.ChangeSetEntry, error) {
	r := &stageRun{
		Manager: m, objs: objs, stage: stage, f: f, fieldManager: fieldManager,
		concurrency: concurrency, cleanup: cleanup, fp: fp,
		entries: make([]ssa.ChangeSetEntry, len(stage)), toApply: make([]bool, len(stage)),
	}
	if err := r.decide(ctx); err != nil {
		return nil, err
	}
	if err := r.applyByKind(ctx); err != nil {
		return nil, err
	}
	return r.entries, nil
}

// stageRun is one applyStage. entries[n] and toApply[n] belong to objs[stage[n]]: the first
// pass fills them (each goroutine its own n), the second applies where toApply is set.
type stageRun struct {
	*Manager
	objs         []*unstructured.Unstructured
	stage        []int
	f            *fetched
	fieldManager string
	concurrency  int
	cleanup      ssa.ApplyCleanupOptions
	fp           *fastPath
	entries      []ssa.ChangeSetEntry
	toApply      []bool
}

// decide sets each object's action without changing anything but the previous owners'
// metadata: unchanged by the fingerprints, created when the prefetch found it absent (no dry
// run can say more), otherwise what a dry run against the in-cluster copy says.
func (r *stageRun) decide(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.concurrency)
	for n, i := range r.stage {
		obj := r.objs[i]
		utils.RemoveCABundleFromCRD(obj)
		if r.fp != nil && r.fp.unchanged[i] {
			r.entries[n] = Entry(obj, ssa.UnchangedAction)
			r.fp.recorded[i] = r.fp.stored[kube.ID(obj).String()]
			continue
		}
		if r.f.lives[i] == nil && r.f.absent[i] {
			r.entries[n], r.toApply[n] = Entry(obj, ssa.CreatedAction), true
			continue
		}
		g.Go(func() error { return r.dryRun(gctx, n, i) })
	}
	return g.Wait()
}

// dryRun decides one existing object (or one whose kind was not served at prefetch): a forced
// dry-run apply, the cleanup of its previous owners' metadata, then created, configured (the
// dry run drifted from the live copy, or the cleanup changed it) or unchanged.
func (r *stageRun) dryRun(ctx context.Context, n, i int) error {
	obj, live := r.objs[i], r.f.lives[i]
	if live == nil {
		// Its kind was not served when the prefetch ran: a CRD of an earlier stage serves it now.
		l, state, err := kube.Get(ctx, r.Client, obj)
		if err != nil {
			return err
		}
		if state == kube.Absent {
			r.entries[n], r.toApply[n] = Entry(obj, ssa.CreatedAction), true
			return nil
		}
		live = l
	}
	dryRun := obj.DeepCopy()
	if err := r.Client.Patch(ctx, dryRun, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner(r.fieldManager)); err != nil {
		return ssaerrors.NewDryRunErr(err, dryRun)
	}
	patched := false
	if live != nil {
		var err error
		if patched, err = ownership.Cleanup(ctx, r.Client, live, r.cleanup, r.fieldManager); err != nil {
			return fmt.Errorf("%s metadata.managedFields cleanup failed: %w", utils.FmtUnstructured(live), err)
		}
	}
	switch {
	case live == nil || dryRun.GetResourceVersion() == "":
		r.entries[n], r.toApply[n] = Entry(dryRun, ssa.CreatedAction), true
	case patched || drifted(live, dryRun):
		r.entries[n], r.toApply[n] = Entry(dryRun, ssa.ConfiguredAction), true
	default:
		r.entries[n] = Entry(dryRun, ssa.UnchangedAction)
		r.record(i, live)
	}
	return nil
}

// applyByKind applies what decide marked, kind by kind in apply order (a ResourceQuota and the
// ServiceAccounts before the Deployments, as ssa orders them), the objects of one kind
// concurrently: on a small API server, creating fifteen CRDs one at a time is most of a first
// apply's time.
func (r *stageRun) applyByKind(ctx context.Context) error {
	for start := 0; start < len(r.stage); {
		end := start + 1
		for end < len(r.stage) && r.objs[r.stage[end]].GroupVersionKind().GroupKind() == r.objs[r.stage[start]].GroupVersionKind().GroupKind() {
			end++
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(min(r.concurrency, applyConcurrency))
		for n := start; n < end; n++ {
			if r.toApply[n] {
				g.Go(func() error { return r.apply(gctx, n, r.stage[n]) })
			}
		}
		if err := g.Wait(); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// apply applies one object for real.
func (r *stageRun) apply(ctx context.Context, n, i int) error {
	applied := r.objs[i].DeepCopy()
	if err := r.Client.Patch(ctx, applied, client.Apply, client.ForceOwnership, client.FieldOwner(r.fieldManager)); err != nil {
		return fmt.Errorf("%s apply failed: %w", utils.FmtUnstructured(applied), err)
	}
	// The response is the object as applied. A later apply of the same object to it changes
	// nothing (server-side apply is idempotent) unless the server stored a value differently
	// from how it was sent: then no fingerprint is recorded, and the next apply dry-runs it
	// (and records it once that dry run finds it unchanged).
	if contains(r.objs[i].Object, applied.Object) {
		r.record(i, applied)
	}
	if r.entries[n].Action == ssa.CreatedAction {
		// Named as the API server stored it, like the dry run names the others.
		r.entries[n] = Entry(applied, ssa.CreatedAction)
	}
	return nil
}

// record keeps the fingerprint of objs[i] as live now is, for the next apply's fast path.
func (r *stageRun) record(i int, live *unstructured.Unstructured) {
	if r.fp != nil && live != nil {
		r.fp.recorded[i] = inventory.Fingerprint{Desired: r.fp.desired[i], Live: liveFingerprint(live)}
	}
}
