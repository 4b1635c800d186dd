package apply

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/normalize"
	"github.com/fluxcd/pkg/ssa/utils"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"golang.org/x/sync/errgroup"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options configures Apply.
type Options struct {
	// FieldManager owns the applied fields (default ownership.PluginFieldManager).
	FieldManager string
	// DryRun defaults to kube.DryRunNone.
	DryRun kube.DryRun
	// ForceConflicts takes fields that another (non-takeover) manager owns instead of failing.
	ForceConflicts bool
	// Concurrency of reads and dry-runs (default kube.DefaultConcurrency).
	Concurrency int
	// Progress, if set, is called once per object as its stage completes, in apply order.
	Progress func(ssa.ChangeSetEntry)
	// StageTimeout bounds the wait for CRDs to be Established and Namespaces Active between the
	// stages (default one minute).
	StageTimeout time.Duration
}

func (o *Options) defaults() {
	if o.FieldManager == "" {
		o.FieldManager = ownership.PluginFieldManager
	}
	if o.DryRun == "" {
		o.DryRun = kube.DryRunNone
	}
	if o.Concurrency < 1 {
		o.Concurrency = kube.DefaultConcurrency
	}
	if o.StageTimeout <= 0 {
		o.StageTimeout = time.Minute
	}
}

// Apply server-side applies the rendered objects in the operator's stages: CRDs, Namespaces and
// ClusterRoles first (then waits until the CRDs are Established), `*Class` kinds next, then the
// rest. Before applying an existing object it renames the TakeoverManagers' field managers to
// opts.FieldManager and removes RemoveLabels and RemoveAnnotations. Unless ForceConflicts is set,
// fields owned by any other manager with a different value make Apply fail with a *ConflictError
// before anything is changed. Dry runs change nothing and report what an apply would do.
//
// Apply does not record an inventory nor prune: Reconcile does both around it.
func (m *Manager) Apply(ctx context.Context, objects []*unstructured.Unstructured, opts Options) (*ssa.ChangeSet, error) {
	opts.defaults()
	objs := copyObjects(objects)
	sortObjects(objs)

	f, err := m.prefetchState(ctx, objs, opts.Concurrency)
	if err != nil {
		return nil, err
	}
	if !opts.ForceConflicts {
		if err := m.checkConflicts(ctx, objs, f.lives, opts.FieldManager, opts.Concurrency, nil); err != nil {
			return nil, err
		}
	}

	switch opts.DryRun {
	case kube.DryRunClient, kube.DryRunServer:
		plans, err := m.plan(ctx, objs, f.lives, opts.FieldManager, opts.Concurrency, opts.DryRun == kube.DryRunServer)
		if err != nil {
			return nil, err
		}
		cs := ssa.NewChangeSet()
		for _, p := range plans {
			e := Entry(p.Object, p.Action)
			cs.Add(e)
			if opts.Progress != nil {
				opts.Progress(e)
			}
		}
		return cs, nil
	case kube.DryRunNone:
	default:
		return nil, fmt.Errorf("invalid dry-run mode %q", opts.DryRun)
	}
	cs, err := m.applyStaged(ctx, objs, f, opts, nil)
	return cs, err
}

// Preview tells, in apply order, what applying the objects would do to each, from a forced
// server-side dry-run apply compared the way an apply compares. Nothing is changed.
func (m *Manager) Preview(ctx context.Context, objects []*unstructured.Unstructured, fieldManager string, concurrency int) ([]Planned, error) {
	return m.PreviewRecorded(ctx, objects, fieldManager, concurrency, nil)
}

// PreviewRecorded is Preview for objects applied before with fieldManager and recorded in prev
// (nil: none): the objects prev's fingerprints prove unchanged (the apply's fast path,
// fastpath.go) are reported unchanged without a dry run, which is most of what a drift check of
// an untouched installation costs the API server. Anything not proven is dry-run as Preview does.
func (m *Manager) PreviewRecorded(ctx context.Context, objects []*unstructured.Unstructured, fieldManager string, concurrency int, prev *inventory.Inventory) ([]Planned, error) {
	o := Options{FieldManager: fieldManager, Concurrency: concurrency}
	o.defaults()
	objs := copyObjects(objects)
	sortObjects(objs)
	f, err := m.prefetchState(ctx, objs, o.Concurrency)
	if err != nil {
		return nil, err
	}
	unchanged := make([]bool, len(objs))
	// Without a record, or for a user who may not read the admission configuration, every
	// object is dry-run, as with apply.
	if admission, err := m.fastPathAdmission(ctx, prev); err == nil {
		fp, err := m.planFastPath(ctx, objs, f, prev, admission, o)
		if err != nil {
			return nil, err
		}
		unchanged = fp.unchanged
	}
	var rest, restLives []*unstructured.Unstructured
	for i, obj := range objs {
		if !unchanged[i] {
			rest, restLives = append(rest, obj), append(restLives, f.lives[i])
		}
	}
	planned, err := m.plan(ctx, rest, restLives, o.FieldManager, o.Concurrency, true)
	if err != nil {
		return nil, err
	}
	out := make([]Planned, 0, len(objs))
	for i, obj := range objs {
		if unchanged[i] {
			out = append(out, Planned{Object: obj, Live: f.lives[i], Merged: f.lives[i], Action: ssa.UnchangedAction})
			continue
		}
		out, planned = append(out, planned[0]), planned[1:]
	}
	return out, nil
}

// fastPathAdmission is the admission fingerprint the fast path needs; without a record to compare
// with there is no fast path, and nothing is read.
func (m *Manager) fastPathAdmission(ctx context.Context, prev *inventory.Inventory) (string, error) {
	if prev == nil {
		return "", errors.New("no record")
	}
	return m.admissionFingerprint(ctx)
}

// Conflict is one field owned by a manager that apply does not take over.
type Conflict struct {
	// Object is Kind/namespace/name.
	Object    string `json:"object"`
	Manager   string `json:"manager"`
	Operation string `json:"operation"`
	Field     string `json:"field"`
}

// ConflictError lists field-manager conflicts; --force-conflicts resolves them.
type ConflictError struct {
	Conflicts []Conflict
}

func (e *ConflictError) Error() string {
	var b strings.Builder
	byObject := map[string][]Conflict{}
	var order []string
	for _, c := range e.Conflicts {
		if _, ok := byObject[c.Object]; !ok {
			order = append(order, c.Object)
		}
		byObject[c.Object] = append(byObject[c.Object], c)
	}
	b.WriteString("field manager conflicts: ")
	for i, obj := range order {
		if i > 0 {
			b.WriteString("; ")
		}
		var parts []string
		for _, c := range byObject[obj] {
			parts = append(parts, fmt.Sprintf("%s is managed by %q (%s)", c.Field, c.Manager, c.Operation))
		}
		fmt.Fprintf(&b, "%s: %s", obj, strings.Join(parts, ", "))
	}
	b.WriteString("; rerun with --force-conflicts to take ownership of these fields")
	return b.String()
}

// checkConflicts sends a server-side dry-run apply without force for each existing object that
// has a manager apply will not take over; objects without such a manager cannot conflict.
// Objects skip[i] (proven unchanged: an apply that changes nothing cannot conflict) are not
// checked; skip may be nil.
func (m *Manager) checkConflicts(ctx context.Context, objs, lives []*unstructured.Unstructured, fieldManager string, concurrency int, skip []bool) error {
	results := make([][]Conflict, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i, obj := range objs {
		live := lives[i]
		if live == nil || (skip != nil && skip[i]) {
			continue
		}
		foreign := ownership.ForeignManagers(live, fieldManager)
		if len(foreign) == 0 {
			continue
		}
		g.Go(func() error {
			probe := obj.DeepCopy()
			err := m.Client.Patch(gctx, probe, client.Apply, client.DryRunAll, client.FieldOwner(fieldManager))
			if err == nil {
				return nil
			}
			if !apierrors.IsConflict(err) {
				return kube.ObjectError(obj, "server-side dry-run apply", err)
			}
			results[i] = parseConflicts(kube.Ref(obj), err, foreign)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var all []Conflict
	for _, r := range results {
		all = append(all, r...)
	}
	if len(all) > 0 {
		return &ConflictError{Conflicts: all}
	}
	return nil
}

// parseConflicts reads the API server's conflict causes ("conflict with \"mgr\"" for Apply,
// "... using v1 at <time>" for Update) and keeps those of the foreign managers: the others are
// takeover managers whose fields apply renames first.
func parseConflicts(ref string, err error, foreign map[string]bool) []Conflict {
	status, ok := err.(apierrors.APIStatus)
	if !ok || status.Status().Details == nil {
		return []Conflict{{Object: ref, Manager: "unknown", Operation: "unknown", Field: err.Error()}}
	}
	var out []Conflict
	for _, cause := range status.Status().Details.Causes {
		if cause.Type != metav1.CauseTypeFieldManagerConflict {
			continue
		}
		rest := strings.TrimPrefix(cause.Message, "conflict with ")
		name, err := strconv.QuotedPrefix(rest)
		if err != nil {
			continue
		}
		manager, _ := strconv.Unquote(name)
		if !foreign[manager] {
			continue
		}
		op := string(metav1.ManagedFieldsOperationApply)
		if strings.Contains(rest[len(name):], " using ") {
			op = string(metav1.ManagedFieldsOperationUpdate)
		}
		out = append(out, Conflict{Object: ref, Manager: manager, Operation: op, Field: cause.Field})
	}
	return out
}

// Planned is what an apply would do to one object.
type Planned struct {
	Object *unstructured.Unstructured
	// Live is the in-cluster copy, nil when absent.
	Live *unstructured.Unstructured
	// Merged is the server dry-run result (the object itself when it cannot be dry-run).
	Merged *unstructured.Unstructured
	Action ssa.Action
}

// plan computes the action for every object without changing anything: with server, by a forced
// server-side dry-run apply compared the way ssa's drift detection compares; otherwise locally.
// Objects whose namespace or CRD is itself about to be created cannot be dry-run and are
// reported as created.
func (m *Manager) plan(ctx context.Context, objs, lives []*unstructured.Unstructured, fieldManager string, concurrency int, server bool) ([]Planned, error) {
	pendingNS := map[string]bool{}
	pendingKinds := map[schema.GroupKind]bool{}
	for i, obj := range objs {
		if lives[i] != nil {
			continue
		}
		id := kube.ID(obj)
		switch {
		case kube.IsNamespace(id):
			pendingNS[obj.GetName()] = true
		case kube.IsCRD(id):
			pendingKinds[kube.CRDNames(obj)] = true
		}
	}
	out := make([]Planned, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i, obj := range objs {
		live := lives[i]
		p := &out[i]
		p.Object, p.Live = obj, live
		pending := live == nil && (pendingNS[obj.GetNamespace()] || pendingKinds[obj.GroupVersionKind().GroupKind()])
		switch {
		case pending, live == nil && !server:
			p.Action, p.Merged = ssa.CreatedAction, obj.DeepCopy()
			continue
		case !server:
			p.Action = ssa.UnchangedAction
			if ownership.NeedsCleanup(live, fieldManager) || !contains(obj.Object, live.Object) {
				p.Action = ssa.ConfiguredAction
			}
			continue
		}
		g.Go(func() error {
			merged := obj.DeepCopy()
			utils.RemoveCABundleFromCRD(merged)
			err := m.Client.Patch(gctx, merged, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner(fieldManager))
			if err != nil {
				return kube.ObjectError(obj, "server-side dry-run apply", err)
			}
			p.Merged = merged
			switch {
			case live == nil || merged.GetResourceVersion() == "":
				p.Action = ssa.CreatedAction
			case ownership.NeedsCleanup(live, fieldManager):
				// The takeover would strip these from the live object.
				ownership.StripCleanup(merged)
				p.Action = ssa.ConfiguredAction
			case drifted(live, merged):
				p.Action = ssa.ConfiguredAction
			default:
				p.Action = ssa.UnchangedAction
			}
			return nil
		})
	}
	return out, g.Wait()
}

// drifted compares like ssa's apply does (labels, annotations, and everything but metadata and
// status), so that a dry run and Diff say "unchanged" exactly when Apply would.
func drifted(live, merged *unstructured.Unstructured) bool {
	if merged.GetResourceVersion() == "" {
		return true
	}
	if !apiequality.Semantic.DeepEqual(live.GetLabels(), merged.GetLabels()) ||
		!apiequality.Semantic.DeepEqual(live.GetAnnotations(), merged.GetAnnotations()) {
		return true
	}
	strip := func(u *unstructured.Unstructured) map[string]any {
		c := u.DeepCopy()
		unstructured.RemoveNestedField(c.Object, "metadata")
		unstructured.RemoveNestedField(c.Object, "status")
		if err := normalize.DryRunUnstructured(c); err != nil {
			return u.Object // as ssa does
		}
		return c.Object
	}
	return !apiequality.Semantic.DeepEqual(strip(live), strip(merged))
}

// contains reports whether every field set in desired has the same value in live (lists must
// have the same length): the client-side approximation of "the apply changes nothing". It cannot
// see server defaulting of values the object sets differently, so it may say configured where
// the server would not; never the reverse for fields the object sets.
func contains(desired, live any) bool {
	switch d := desired.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range d {
			if k == "status" || k == "creationTimestamp" {
				continue
			}
			lv, ok := l[k]
			if !ok {
				if v == nil {
					continue
				}
				return false
			}
			if !contains(v, lv) {
				return false
			}
		}
		return true
	case []any:
		l, ok := live.([]any)
		if !ok || len(l) != len(d) {
			return false
		}
		for i := range d {
			if !contains(d[i], l[i]) {
				return false
			}
		}
		return true
	}
	if df, ok := number(desired); ok {
		lf, ok := number(live)
		return ok && df == lf
	}
	if reflect.DeepEqual(desired, live) {
		return true
	}
	// The API server canonicalises quantities ("1000m" is stored as "1").
	ds, ok1 := desired.(string)
	ls, ok2 := live.(string)
	if ok1 && ok2 {
		dq, err1 := resource.ParseQuantity(ds)
		lq, err2 := resource.ParseQuantity(ls)
		return err1 == nil && err2 == nil && dq.Cmp(lq) == 0
	}
	return false
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// Entry is the change-set entry of an action on obj, named as ssa names it.
func Entry(obj *unstructured.Unstructured, action ssa.Action) ssa.ChangeSetEntry {
	return ssa.ChangeSetEntry{
		ObjMetadata:  kube.ID(obj),
		GroupVersion: obj.GroupVersionKind().Version,
		Subject:      kube.Ref(obj),
		Action:       action,
	}
}

// sortObjects puts objects in ssa's apply order (CRDs, Namespaces, cluster RBAC, ...).
func sortObjects(objs []*unstructured.Unstructured) {
	sort.Sort(ssa.SortableUnstructureds(objs))
}

func copyObjects(in []*unstructured.Unstructured) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(in))
	for i, o := range in {
		out[i] = o.DeepCopy()
	}
	return out
}
