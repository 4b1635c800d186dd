package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"golang.org/x/sync/errgroup"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options configures Migrate.
type Options struct {
	// Concurrency is how many objects are rewritten at once (default kube.DefaultConcurrency).
	Concurrency int
	// Progress, if set, receives a line per CRD when it starts, at most one a second while its
	// objects are rewritten, and one when they are done, e.g. "migrating 5,000
	// helmreleases.helm.toolkit.fluxcd.io to v2: 1,250/5,000".
	Progress func(string)
	// FieldManager names the writer (default ownership.PluginFieldManager). The writes change no
	// field, so it owns nothing afterwards.
	FieldManager string
	// EstablishTimeout bounds the wait for a CRD to serve the target version (default one minute).
	EstablishTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Concurrency < 1 {
		o.Concurrency = kube.DefaultConcurrency
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	if o.FieldManager == "" {
		o.FieldManager = ownership.PluginFieldManager
	}
	if o.EstablishTimeout <= 0 {
		o.EstablishTimeout = time.Minute
	}
}

// maxConflicts bounds the retries of one write that keeps meeting a newer copy (a controller
// writing the same object as fast as it is re-read).
const maxConflicts = 10

// Migrate carries out the plan, one CRD after another: the live CRD serves the target version as
// storage (keeping every version objects may be stored at), every object is rewritten at the
// target version, then status.storedVersions is set to the target alone. Only that last write
// makes the plan shorter, so a run stopped anywhere is finished by planning and migrating again.
func Migrate(ctx context.Context, c client.Client, plan *Plan, opts Options) error {
	opts.defaults()
	if plan.Empty() {
		return nil
	}
	for _, m := range plan.Migrations {
		if err := serveTarget(ctx, c, m, opts); err != nil {
			return err
		}
		if err := rewriteObjects(ctx, c, m, opts); err != nil {
			return err
		}
		if err := setStoredVersions(ctx, c, m, opts.FieldManager); err != nil {
			return err
		}
	}
	return nil
}

// serveTarget updates the live CRD so that the target version, with the rendered schema, is the
// storage version, and every version still stored or served stays served: objects stored at an
// old version stay readable and the API server accepts the change (it refuses dropping a stored
// version). The update carries the resourceVersion read; a conflict re-reads.
func serveTarget(ctx context.Context, c client.Client, m Migration, opts Options) error {
	for attempt := 0; ; attempt++ {
		live, state, err := kube.Get(ctx, c, crdStub(m.CRD))
		if err != nil {
			return fmt.Errorf("storage migration: %w", err)
		}
		if state != kube.Found {
			return fmt.Errorf("CustomResourceDefinition/%s: making %s its storage version: the CRD is gone", m.CRD, m.Version)
		}
		versions := desiredVersions(live, m)
		current, _, _ := unstructured.NestedSlice(live.Object, "spec", "versions")
		if apiequality.Semantic.DeepEqual(current, versions) {
			break
		}
		if err := unstructured.SetNestedSlice(live.Object, versions, "spec", "versions"); err != nil {
			return fmt.Errorf("CustomResourceDefinition/%s: making %s its storage version: %w", m.CRD, m.Version, err)
		}
		err = c.Update(ctx, live, client.FieldOwner(opts.FieldManager))
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) || attempt >= maxConflicts {
			return fmt.Errorf("CustomResourceDefinition/%s: making %s its storage version: %w", m.CRD, m.Version, err)
		}
	}
	return waitServed(ctx, c, m, opts.EstablishTimeout)
}

// desiredVersions is the target version (rendered entry, served, storage) followed by each live
// version other than the target that objects may be stored at or clients may use (live entry,
// served, not storage).
func desiredVersions(live *unstructured.Unstructured, m Migration) []any {
	target := runtime.DeepCopyJSONValue(m.target).(map[string]any)
	target["served"], target["storage"] = true, true
	versions := []any{target}
	stored := map[string]bool{}
	for _, v := range m.StoredVersions {
		stored[v] = true
	}
	liveStored, _, _ := unstructured.NestedStringSlice(live.Object, "status", "storedVersions")
	for _, v := range liveStored {
		stored[v] = true
	}
	current, _, _ := unstructured.NestedSlice(live.Object, "spec", "versions")
	for _, v := range current {
		vm, ok := v.(map[string]any)
		if !ok {
			continue
		}
		name, _ := vm["name"].(string)
		served, _ := vm["served"].(bool)
		if name == m.Version || (!served && !stored[name]) {
			continue
		}
		keep := runtime.DeepCopyJSONValue(vm).(map[string]any)
		keep["served"], keep["storage"] = true, false
		versions = append(versions, keep)
	}
	return versions
}

// waitServed waits until the CRD is Established and names accepted, and a list at the target
// version answers: writes at the target version then reach the new storage.
func waitServed(ctx context.Context, c client.Client, m Migration, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		last = servedNow(ctx, c, m)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CustomResourceDefinition/%s: waiting for it to serve %s: %w (last: %v)", m.CRD, m.Version, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func servedNow(ctx context.Context, c client.Client, m Migration) error {
	live, state, err := kube.Get(ctx, c, crdStub(m.CRD))
	if err != nil {
		return err
	}
	if state != kube.Found {
		return fmt.Errorf("not found")
	}
	for _, cond := range []string{"Established", "NamesAccepted"} {
		if !conditionTrue(live, cond) {
			return fmt.Errorf("condition %s is not True", cond)
		}
	}
	if storage, _ := storageVersion(live); storage != m.Version {
		return fmt.Errorf("storage version is %s", storage)
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(m.GVK())
	list.SetKind(m.Kind + "List")
	return c.List(ctx, list, client.Limit(1))
}

func conditionTrue(obj *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, cnd := range conds {
		cm, ok := cnd.(map[string]any)
		if ok && cm["type"] == typ {
			return cm["status"] == "True"
		}
	}
	return false
}

// rewriteObjects writes every object of the kind at the target version, page by page, a bounded
// number at a time.
func rewriteObjects(ctx context.Context, c client.Client, m Migration, opts Options) error {
	progress := newProgress(m, opts.Progress)
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(m.GVK())
	list.SetKind(m.Kind + "List")
	err := kube.ListPages(ctx, c, list, func() error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(opts.Concurrency)
		for i := range list.Items {
			obj := &list.Items[i]
			g.Go(func() error {
				if err := rewrite(gctx, c, m, obj, opts.FieldManager); err != nil {
					return err
				}
				progress.done()
				return nil
			})
		}
		return g.Wait()
	})
	if err != nil {
		return fmt.Errorf("migrating the %s objects to %s: %w", m.CRD, m.Version, err)
	}
	progress.finish()
	return nil
}

// rewrite makes the API server store obj at the target version. Its managedFields entries that
// name another version move to the target (they would make every later write fail once that
// version is gone); when there are none to move the object is written back as read. Both writes
// carry the resourceVersion read, so that nothing written meanwhile is lost: a conflict re-reads.
func rewrite(ctx context.Context, c client.Client, m Migration, obj *unstructured.Unstructured, manager string) error {
	apiVersion := m.GVK().GroupVersion().String()
	for attempt := 0; ; attempt++ {
		patch, err := ssa.PatchMigrateToVersion(obj, apiVersion)
		if err != nil {
			return kube.ObjectError(obj, "computing the managedFields migration to "+apiVersion, err)
		}
		if len(patch) > 0 {
			ops := []any{map[string]any{"op": "replace", "path": "/metadata/resourceVersion", "value": obj.GetResourceVersion()}}
			for _, p := range patch {
				ops = append(ops, p)
			}
			data, merr := json.Marshal(ops)
			if merr != nil {
				return kube.ObjectError(obj, "encoding the managedFields migration", merr)
			}
			err = c.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, data), client.FieldOwner(manager))
		} else {
			err = c.Update(ctx, obj, client.FieldOwner(manager))
		}
		switch {
		case err == nil, apierrors.IsNotFound(err):
			return nil // a deleted object stores nothing
		case !apierrors.IsConflict(err) || attempt >= maxConflicts:
			return kube.ObjectError(obj, "rewriting it at "+apiVersion, err)
		}
		fresh, state, gerr := kube.Get(ctx, c, obj)
		if gerr != nil {
			return gerr
		}
		if state != kube.Found {
			return nil
		}
		obj = fresh
	}
}

// setStoredVersions records that every object is stored at the target version: the API server
// then accepts a CRD without the old versions. A status update with the resourceVersion read,
// by manager (left unnamed, the status entry in managedFields would name the binary).
func setStoredVersions(ctx context.Context, c client.Client, m Migration, manager string) error {
	for attempt := 0; ; attempt++ {
		live, state, err := kube.Get(ctx, c, crdStub(m.CRD))
		if err != nil {
			return fmt.Errorf("storage migration: %w", err)
		}
		if state != kube.Found {
			return fmt.Errorf("CustomResourceDefinition/%s: setting status.storedVersions: the CRD is gone", m.CRD)
		}
		stored, _, _ := unstructured.NestedStringSlice(live.Object, "status", "storedVersions")
		if len(stored) == 1 && stored[0] == m.Version {
			return nil
		}
		if err := unstructured.SetNestedStringSlice(live.Object, []string{m.Version}, "status", "storedVersions"); err != nil {
			return fmt.Errorf("CustomResourceDefinition/%s: setting status.storedVersions: %w", m.CRD, err)
		}
		err = c.Status().Update(ctx, live, client.FieldOwner(manager))
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= maxConflicts {
			return fmt.Errorf("CustomResourceDefinition/%s: setting status.storedVersions to [%s]: %w", m.CRD, m.Version, err)
		}
	}
}

// progress reports how many objects of a kind are done: a line when the kind starts, at most one
// a second while it runs (a tenth of 5,000 objects takes longer than that at the client's rate
// limit), and one when it ends.
type progress struct {
	mu         sync.Mutex
	m          Migration
	report     func(string)
	n          int
	last       time.Time
	reportedAt int
}

func newProgress(m Migration, report func(string)) *progress {
	p := &progress{m: m, report: report}
	if m.Objects != 0 { // a kind with no objects says nothing, unless some appear meanwhile
		p.line()
	}
	return p
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if time.Since(p.last) >= time.Second {
		p.line()
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reportedAt != p.n {
		p.line()
	}
}

func (p *progress) line() {
	total := max(p.m.Objects, p.n) // objects created since the plan count too
	p.report(fmt.Sprintf("migrating %s %s to %s: %s/%s", thousands(total), p.m.CRD, p.m.Version, thousands(p.n), thousands(total)))
	p.last, p.reportedAt = time.Now(), p.n
}
