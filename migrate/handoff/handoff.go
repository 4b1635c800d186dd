// Package handoff hands an instance applied by this plugin to the Flux Operator without restarting
// or deleting anything: the FluxInstance object is created with reconciliation disabled, given the
// plugin's inventory as its status.inventory (so the operator garbage-collects exactly what the
// plugin would have), every object's fields move from the plugin's field manager to the operator's,
// and only then is the operator let in. Its first reconcile is checked against the plan: nothing
// created, deleted, recreated or restarted beyond what the plan listed.
//
// Each step is idempotent and the FluxInstance object itself records how far a hand-off got
// (absent, disabled, enabled), so an interrupted hand-off is finished by running it again. The
// plugin's inventory ConfigMap is removed last: while it exists, the hand-off is not done.
package handoff

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Plan is what a hand-off will do, computed before anything changes.
type Plan struct {
	// Instance is the FluxInstance the operator will reconcile: the one the plugin applied last.
	Instance *unstructured.Unstructured
	Operator operator.OperatorPresence
	// Inventory is the plugin's record; it becomes the FluxInstance's status.inventory.
	Inventory *inventory.Inventory
	// Create and Delete are what the operator's first reconcile may create and delete: the
	// difference between a fresh rendering of the instance and the inventory (empty when the
	// cluster is as the plugin left it and both render from the same distribution).
	Create []string
	Delete []string
	// Stage is where an earlier, interrupted hand-off stopped ("" for a fresh one).
	Stage string
}

// Stages of an interrupted hand-off, read from the FluxInstance object.
const (
	StageDisabled = "the FluxInstance exists with reconciliation disabled"
	StageEnabled  = "the FluxInstance was handed to the operator; the check and the clean-up remain"
)

// HandedOffError says the hand-off is done already: the operator's FluxInstance holds the record
// and the plugin's is gone (a re-run after a complete hand-off ends here).
type HandedOffError struct{ Namespace, Name, Record string }

func (e *HandedOffError) Error() string {
	return fmt.Sprintf("FluxInstance %s/%s is already managed by the Flux Operator (its inventory is in %s): there is nothing to hand off", e.Namespace, e.Name, e.Record)
}

// NotReadyError says why a hand-off cannot start; nothing was changed.
type NotReadyError struct{ Reason string }

func (e *NotReadyError) Error() string { return e.Reason }

// Renderer turns the plugin's record into the FluxInstance it applied and a fresh rendering of it.
type Renderer func(ctx context.Context, inv *inventory.Inventory) (instance *unstructured.Unstructured, rendered []*unstructured.Unstructured, err error)

// NewPlan checks that the instance can be handed off and computes the plan; nothing changes.
func NewPlan(ctx context.Context, inst kube.Instance, render Renderer) (*Plan, error) {
	inv, err := inventory.NewStore(inst).Read(ctx)
	if err != nil {
		return nil, err
	}
	ref := fmt.Sprintf("%s/%s", inst.Namespace, inventory.ConfigMapName)
	switch {
	case inv == nil:
		return nil, &NotReadyError{fmt.Sprintf("no instance applied by kubectl-fluxinstance in namespace %s (ConfigMap %s not found): "+
			"apply one first, or migrate a flux bootstrap installation with `kubectl fluxinstance migrate`", inst.Namespace, ref)}
	case inv.Source != "ConfigMap/"+ref:
		return nil, &HandedOffError{Namespace: inst.Namespace, Name: inst.Name, Record: inv.Source}
	case inv.State == inventory.StatePending:
		return nil, &NotReadyError{fmt.Sprintf("the last apply to namespace %s did not finish (ConfigMap %s says Pending): re-run `kubectl fluxinstance apply` first", inst.Namespace, ref)}
	case inv.State == inventory.StateDeleted:
		return nil, &NotReadyError{fmt.Sprintf("the instance in namespace %s was deleted (ConfigMap %s says Deleted): there is nothing to hand off", inst.Namespace, ref)}
	}
	presence, err := operator.DetectOperator(ctx, inst)
	if err != nil {
		return nil, err
	}
	if !presence.Running {
		return nil, &NotReadyError{fmt.Sprintf("the Flux Operator does not run in this cluster (%s): install it first, then run handoff again", presence.Evidence)}
	}
	instance, rendered, err := render(ctx, inv)
	if err != nil {
		return nil, err
	}
	p := &Plan{Instance: instance, Operator: presence, Inventory: inv}
	state, err := operator.FluxInstance(ctx, inst)
	if err != nil {
		return nil, err
	}
	switch {
	case state != nil && state.Disabled:
		p.Stage = StageDisabled
	case state != nil:
		p.Stage = StageEnabled
	}
	p.Create, p.Delete = difference(inv, rendered)
	return p, nil
}

// difference lists the rendered objects missing from the inventory and the inventory entries
// missing from the rendering.
func difference(inv *inventory.Inventory, rendered []*unstructured.Unstructured) (create, del []string) {
	have, want := inv.IDs(), object.UnstructuredSetToObjMetadataSet(rendered)
	return refs(want.Diff(have)), refs(have.Diff(want))
}

// refs names the objects as Kind/namespace/name, sorted.
func refs(ids object.ObjMetadataSet) []string {
	var out []string
	for _, id := range ids {
		out = append(out, kube.RefMeta(id))
	}
	sort.Strings(out)
	return out
}

// Options tune Run.
type Options struct {
	// Timeout bounds the wait for the operator's first reconcile.
	Timeout time.Duration
	// Progress receives one line per step and the operator's progress while waiting.
	Progress func(string)
	// Now stamps the reconcile request (time.Now when nil).
	Now func() time.Time
}

// Result is the check of the operator's first reconcile against the plan.
type Result struct {
	Objects int `json:"objects"`
	// Created and Deleted compare the operator's inventory with the plugin's.
	Created []string `json:"created,omitempty"`
	Deleted []string `json:"deleted,omitempty"`
	// Recreated lists objects whose UID changed; Restarted Deployments whose generation changed
	// (a pod template change rolls the pods).
	Recreated []string `json:"recreated,omitempty"`
	Restarted []string `json:"restarted,omitempty"`
	// Unplanned lists what happened that the plan did not say; a hand-off with any fails.
	Unplanned []string        `json:"unplanned,omitempty"`
	State     *operator.State `json:"state"`
}

// UnplannedError is returned when the operator's first reconcile did more than the plan said.
type UnplannedError struct{ Result *Result }

func (e *UnplannedError) Error() string {
	return fmt.Sprintf("the Flux Operator's first reconcile did what the hand-off plan did not say: %v; "+
		"the operator now manages the instance, the plugin's record (ConfigMap %s) is kept for reference", e.Result.Unplanned, inventory.ConfigMapName)
}

// Run performs the hand-off: see the package documentation.
func Run(ctx context.Context, inst kube.Instance, p *Plan, o Options) (*Result, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	snapshot, err := takeSnapshot(ctx, inst, p.Inventory)
	if err != nil {
		return nil, err
	}
	fieldManager := p.Inventory.FieldManager
	if fieldManager == "" {
		fieldManager = ownership.PluginFieldManager
	}
	if p.Stage != StageEnabled {
		progress(fmt.Sprintf("creating FluxInstance %s/%s with reconciliation disabled", inst.Namespace, inst.Name))
		if _, err := operator.ApplyFluxInstance(ctx, inst, withDisabled(p.Instance), fieldManager, kube.DryRunNone, ""); err != nil {
			return nil, err
		}
		progress(fmt.Sprintf("giving it the plugin's inventory (%d objects) as status.inventory", len(p.Inventory.Entries)))
		if err := inventory.NewStore(inst).WriteFluxInstance(ctx, p.Inventory.Entries, fieldManager); err != nil {
			return nil, err
		}
	}
	// Also when the FluxInstance is enabled already (a hand-off interrupted later, or a FluxInstance
	// created by hand over the plugin's objects): fields the plugin still co-owns would outlive
	// their removal from the operator's rendering. A no-op where they moved.
	progress(fmt.Sprintf("moving the fields of %s to %s", fieldManager, ownership.OperatorFieldManager))
	moved, err := moveFieldManager(ctx, inst, p.Inventory, fieldManager, ownership.OperatorFieldManager)
	if err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("moved %d objects", moved))
	token := operator.RequestToken(now())
	progress("enabling reconciliation: the Flux Operator takes over")
	if _, err := operator.ApplyFluxInstance(ctx, inst, p.Instance, fieldManager, kube.DryRunNone, token); err != nil {
		return nil, err
	}
	state, err := operator.WaitForOperator(ctx, inst, token, o.Timeout, func(s *operator.State) {
		progress("waiting for the operator: " + s.Summary())
	})
	if err != nil {
		return nil, err
	}
	res, err := check(ctx, inst, p, snapshot, state)
	if err != nil {
		return res, err
	}
	if len(res.Unplanned) > 0 {
		return res, &UnplannedError{Result: res}
	}
	if err := inventory.NewStore(inst).Delete(ctx, p.Inventory); err != nil {
		return res, err
	}
	return res, nil
}

func withDisabled(instance *unstructured.Unstructured) *unstructured.Unstructured {
	obj := instance.DeepCopy()
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[operator.AnnotationReconcile] = "disabled"
	obj.SetAnnotations(annotations)
	return obj
}

// liveFacts are what a hand-off must not change about an object.
type liveFacts struct {
	uid        string
	generation int64
}

// takeSnapshot records the UID and generation of every inventory object that exists.
func takeSnapshot(ctx context.Context, inst kube.Instance, inv *inventory.Inventory) (map[string]liveFacts, error) {
	live, err := inventory.NewStore(inst).LiveObjects(ctx, inv)
	if err != nil {
		return nil, err
	}
	out := map[string]liveFacts{}
	for id, obj := range live {
		out[id] = liveFacts{uid: string(obj.GetUID()), generation: obj.GetGeneration()}
	}
	return out, nil
}

// check compares the operator's inventory and the live objects with the plan and the snapshot.
func check(ctx context.Context, inst kube.Instance, p *Plan, before map[string]liveFacts, state *operator.State) (*Result, error) {
	res := &Result{State: state}
	theirs, err := inventory.NewStore(inst).ReadFluxInstance(ctx)
	if err != nil {
		return res, err
	}
	if theirs == nil {
		return res, errors.New("the Flux Operator reported the instance Ready without a status.inventory")
	}
	res.Objects = len(theirs.Entries)
	created, deleted := difference(p.Inventory, stubs(theirs))
	res.Created, res.Deleted = created, deleted
	res.Unplanned = append(res.Unplanned, notIn(created, p.Create, "created ")...)
	res.Unplanned = append(res.Unplanned, notIn(deleted, p.Delete, "deleted ")...)

	after, err := takeSnapshot(ctx, inst, p.Inventory)
	if err != nil {
		return res, err
	}
	for id, was := range before {
		ref := id
		if parsed, err := object.ParseObjMetadata(id); err == nil {
			ref = kube.RefMeta(parsed)
		}
		now, ok := after[id]
		if !ok {
			continue // deleted: reported above
		}
		if now.uid != was.uid {
			res.Recreated = append(res.Recreated, ref)
			res.Unplanned = append(res.Unplanned, "recreated "+ref)
		}
		if parsed, err := object.ParseObjMetadata(id); err == nil && parsed.GroupKind.Kind == "Deployment" && now.generation != was.generation {
			res.Restarted = append(res.Restarted, ref)
			res.Unplanned = append(res.Unplanned, "restarted "+ref)
		}
	}
	sort.Strings(res.Recreated)
	sort.Strings(res.Restarted)
	sort.Strings(res.Unplanned)
	return res, nil
}

func stubs(inv *inventory.Inventory) []*unstructured.Unstructured {
	ids, versions, err := inv.Objects()
	if err != nil {
		return nil
	}
	out := make([]*unstructured.Unstructured, 0, len(ids))
	for i, id := range ids {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(gv(id.GroupKind.Group, versions[i]))
		u.SetKind(id.GroupKind.Kind)
		u.SetName(id.Name)
		u.SetNamespace(id.Namespace)
		out = append(out, u)
	}
	return out
}

func gv(group, version string) string {
	if group == "" {
		return version
	}
	return group + "/" + version
}

func notIn(items, allowed []string, prefix string) []string {
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	var out []string
	for _, item := range items {
		if !ok[item] {
			out = append(out, prefix+item)
		}
	}
	return out
}

// moveFieldManager gives the fields that manager `from` owns on every inventory object to manager
// `to`, as an apply by `to` (ssa's manager replacement, one JSON patch per object that needs it).
// Nothing but managedFields changes, so no controller sees a new generation. It returns how many
// objects were patched.
func moveFieldManager(ctx context.Context, inst kube.Instance, inv *inventory.Inventory, from, to string) (int, error) {
	live, err := inventory.NewStore(inst).LiveObjects(ctx, inv)
	if err != nil {
		return 0, err
	}
	var moved atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(kube.DefaultConcurrency)
	for _, obj := range live {
		g.Go(func() error {
			patched, err := ownership.Cleanup(gctx, inst.Client, obj, ownership.MoveOptions(from), to)
			if err != nil {
				return kube.ObjectError(obj, "moving field ownership to "+to, err)
			}
			if patched {
				moved.Add(1)
			}
			return nil
		})
	}
	err = g.Wait()
	return int(moved.Load()), err
}
