// Package operator is what the plugin knows of the Flux Operator and works with rather than
// against: whether it runs (DetectOperator), the FluxInstance object and the operator's view of it
// (State), applying that object for the operator and waiting for its reconcile.
package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	appsv1 "k8s.io/api/apps/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Facts of the Flux Operator that the plugin relies on to work with it rather than against it.
const (
	// FluxInstanceCRD is the Flux Operator's CRD.
	FluxInstanceCRD = "fluxinstances.fluxcd.controlplane.io"
	// OperatorFinalizer is set by the operator on every FluxInstance it reconciled.
	OperatorFinalizer = "fluxcd.controlplane.io/finalizer"
	// AnnotationReconcile set to "disabled" makes the operator skip a FluxInstance.
	AnnotationReconcile = "fluxcd.controlplane.io/reconcile"
	// AnnotationRequestedAt asks a Flux reconciler for a reconcile now; it answers by copying the
	// value to status.lastHandledReconcileAt.
	AnnotationRequestedAt = "reconcile.fluxcd.io/requestedAt"
	// FluxReportName is the one FluxReport the operator writes, in its own namespace.
	FluxReportName = "flux"
	// operatorDeploymentLabel selects the operator's Deployment (its Helm chart and install
	// manifests set it).
	operatorDeploymentLabel = "app.kubernetes.io/name"
	operatorDeploymentName  = "flux-operator"
	// reportFreshness is how recent a FluxReport must be to show a running operator without a
	// Deployment to see (an operator run out of cluster). The operator refreshes the report every
	// five minutes by default; three intervals leave room for a busy API server.
	reportFreshness = 15 * time.Minute
)

// FluxInstanceGVK is the kind of a FluxInstance.
var FluxInstanceGVK = schema.GroupVersionKind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxInstance"}

var fluxReportGVK = schema.GroupVersionKind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxReport"}

// OperatorPresence says whether the Flux Operator runs in the cluster, and why the plugin thinks so.
type OperatorPresence struct {
	// CRD is true when the FluxInstance CRD is installed.
	CRD bool `json:"crd"`
	// Running is true when an operator Deployment or a recent FluxReport was found.
	Running bool `json:"running"`
	// Evidence names what was found ("Deployment flux-system/flux-operator", "FluxReport
	// flux-system/flux updated 40s ago") or, when not running, what was missing.
	Evidence string `json:"evidence"`
}

// DetectOperator looks for the Flux Operator: its FluxInstance CRD, then a Deployment of it in any
// namespace (the instance's namespace alone when the user may not list cluster-wide), then a
// FluxReport in the instance's namespace refreshed within the last 15 minutes.
func DetectOperator(ctx context.Context, inst kube.Instance) (OperatorPresence, error) {
	c := inst.Client
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(kube.CRDGVK)
	if err := c.Get(ctx, client.ObjectKey{Name: FluxInstanceCRD}, crd); err != nil {
		if apierrors.IsNotFound(err) {
			return OperatorPresence{Evidence: "the FluxInstance CRD (" + FluxInstanceCRD + ") is not installed"}, nil
		}
		return OperatorPresence{}, fmt.Errorf("CustomResourceDefinition/%s: reading: %w", FluxInstanceCRD, err)
	}
	p := OperatorPresence{CRD: true}
	deployments, err := operatorDeployments(ctx, inst)
	if err != nil {
		return p, err
	}
	for _, d := range deployments {
		if d.Spec.Replicas == nil || *d.Spec.Replicas > 0 {
			p.Running, p.Evidence = true, fmt.Sprintf("Deployment %s/%s", d.Namespace, d.Name)
			return p, nil
		}
	}
	report := &unstructured.Unstructured{}
	report.SetGroupVersionKind(fluxReportGVK)
	err = c.Get(ctx, client.ObjectKey{Namespace: inst.Namespace, Name: FluxReportName}, report)
	switch {
	case apierrors.IsNotFound(err) || kube.IsNoMatch(err) || apierrors.IsForbidden(err):
		p.Evidence = fmt.Sprintf("no flux-operator Deployment and no FluxReport %s/%s", inst.Namespace, FluxReportName)
		return p, nil
	case err != nil:
		return p, fmt.Errorf("FluxReport/%s/%s: reading: %w", inst.Namespace, FluxReportName, err)
	}
	age := time.Since(lastWrite(report)).Round(time.Second)
	if age > reportFreshness {
		p.Evidence = fmt.Sprintf("no flux-operator Deployment, and FluxReport %s/%s was last updated %s ago", inst.Namespace, FluxReportName, age)
		return p, nil
	}
	p.Running, p.Evidence = true, fmt.Sprintf("FluxReport %s/%s updated %s ago", inst.Namespace, FluxReportName, age)
	return p, nil
}

// operatorDeployments lists the operator's Deployments cluster-wide, or in the instance namespace
// when listing cluster-wide is forbidden.
func operatorDeployments(ctx context.Context, inst kube.Instance) ([]appsv1.Deployment, error) {
	var list appsv1.DeploymentList
	selector := client.MatchingLabels{operatorDeploymentLabel: operatorDeploymentName}
	err := inst.Client.List(ctx, &list, selector)
	if apierrors.IsForbidden(err) {
		err = inst.Client.List(ctx, &list, selector, client.InNamespace(inst.Namespace))
	}
	if apierrors.IsForbidden(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the flux-operator Deployments: %w", err)
	}
	return list.Items, nil
}

// lastWrite is the newest time the object was written: its managed fields' times (a status
// update counts) and its creation.
func lastWrite(obj metav1.Object) time.Time {
	t := obj.GetCreationTimestamp().Time
	for _, f := range obj.GetManagedFields() {
		if f.Time != nil && f.Time.After(t) {
			t = f.Time.Time
		}
	}
	return t
}

// State is what the operator says about a FluxInstance.
type State struct {
	Object *unstructured.Unstructured `json:"-"`
	// Disabled is true when the reconcile annotation turns the operator off for this object.
	Disabled bool `json:"disabled,omitempty"`
	// Reconciled is true once the operator has acted on the object (its finalizer or a revision).
	Reconciled            bool   `json:"reconciled"`
	Ready                 string `json:"ready"`
	Reason                string `json:"reason,omitempty"`
	Message               string `json:"message,omitempty"`
	LastAttemptedRevision string `json:"lastAttemptedRevision,omitempty"`
	LastAppliedRevision   string `json:"lastAppliedRevision,omitempty"`
	// Inventory is the number of objects the operator's status.inventory lists.
	Inventory              int    `json:"inventory"`
	HasInventory           bool   `json:"-"`
	Generation             int64  `json:"generation"`
	ObservedGeneration     int64  `json:"observedGeneration"`
	LastHandledReconcileAt string `json:"lastHandledReconcileAt,omitempty"`
	// Failing lists the conditions that are False, as "Type: Reason: message".
	Failing []string `json:"failing,omitempty"`
}

// GetFluxInstance returns the FluxInstance object when its CRD and the object exist, else nil
// (also when the user may not read them: then there is nothing the plugin could do with it).
func GetFluxInstance(ctx context.Context, inst kube.Instance) (*unstructured.Unstructured, error) {
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(kube.CRDGVK)
	if err := inst.Client.Get(ctx, client.ObjectKey{Name: FluxInstanceCRD}, crd); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("CustomResourceDefinition/%s: reading: %w", FluxInstanceCRD, err)
	}
	fi := &unstructured.Unstructured{}
	fi.SetGroupVersionKind(FluxInstanceGVK)
	if err := inst.Client.Get(ctx, client.ObjectKey{Namespace: inst.Namespace, Name: inst.Name}, fi); err != nil {
		if apierrors.IsNotFound(err) || kube.IsNoMatch(err) || apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("FluxInstance/%s/%s: reading: %w", inst.Namespace, inst.Name, err)
	}
	return fi, nil
}

// FluxInstance returns the instance object and the operator's view of it; nil when the CRD or the
// object does not exist.
func FluxInstance(ctx context.Context, inst kube.Instance) (*State, error) {
	fi, err := GetFluxInstance(ctx, inst)
	if err != nil || fi == nil {
		return nil, err
	}
	return fluxInstanceState(fi), nil
}

func fluxInstanceState(fi *unstructured.Unstructured) *State {
	s := &State{Object: fi, Ready: "Unknown", Generation: fi.GetGeneration()}
	s.Disabled = isDisabled(fi)
	s.LastAttemptedRevision, _, _ = unstructured.NestedString(fi.Object, "status", "lastAttemptedRevision")
	s.LastAppliedRevision, _, _ = unstructured.NestedString(fi.Object, "status", "lastAppliedRevision")
	s.LastHandledReconcileAt, _, _ = unstructured.NestedString(fi.Object, "status", "lastHandledReconcileAt")
	s.ObservedGeneration, _, _ = unstructured.NestedInt64(fi.Object, "status", "observedGeneration")
	entries, found, _ := unstructured.NestedSlice(fi.Object, "status", "inventory", "entries")
	s.Inventory, s.HasInventory = len(entries), found
	for _, f := range fi.GetFinalizers() {
		if f == OperatorFinalizer {
			s.Reconciled = true
		}
	}
	if s.LastAttemptedRevision != "" {
		s.Reconciled = true
	}
	conds, _, _ := unstructured.NestedSlice(fi.Object, "status", "conditions")
	for _, raw := range conds {
		c, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		typ, _ := c["type"].(string)
		status, _ := c["status"].(string)
		reason, _ := c["reason"].(string)
		message, _ := c["message"].(string)
		if typ == "Ready" {
			s.Ready, s.Reason, s.Message = status, reason, message
			if g, ok := c["observedGeneration"].(int64); ok && g > s.ObservedGeneration {
				s.ObservedGeneration = g
			}
		}
		if status == "False" {
			s.Failing = append(s.Failing, fmt.Sprintf("%s: %s: %s", typ, reason, message))
		}
	}
	return s
}

func isDisabled(obj metav1.Object) bool {
	return obj.GetAnnotations()[AnnotationReconcile] == "disabled"
}

// Current tells whether the operator has finished reconciling the object as it is now: the
// generation is observed and, when token is set, the reconcile request with that token handled.
func (s *State) Current(token string) bool {
	if s.ObservedGeneration < s.Generation {
		return false
	}
	return token == "" || s.LastHandledReconcileAt == token
}

// Settled tells whether the operator's last status write is complete: it writes the conditions
// first and the revisions and inventory in a second request, so Ready=True can be seen with the
// previous revision and inventory for a moment.
func (s *State) Settled() bool {
	return s.LastAppliedRevision != "" && s.LastAppliedRevision == s.LastAttemptedRevision && s.HasInventory
}

// Failed tells whether the operator finished a reconcile of the current object with an error
// (it retries, but with the same spec it fails the same way).
func (s *State) Failed(token string) bool {
	return s.Current(token) && s.Ready == "False" && s.Reason != "Progressing" && s.Reason != "ProgressingWithRetry"
}

// Summary is one line of progress: readiness, revisions and the inventory size.
func (s *State) Summary() string {
	line := fmt.Sprintf("Ready=%s", s.Ready)
	if s.Reason != "" {
		line += " " + s.Reason
	}
	if s.Message != "" {
		line += ": " + s.Message
	}
	attempted, applied := s.LastAttemptedRevision, s.LastAppliedRevision
	if attempted == "" {
		attempted = "none"
	}
	if applied == "" {
		applied = "none"
	}
	return fmt.Sprintf("%s (lastAttemptedRevision %s, lastAppliedRevision %s, %d objects in its inventory)", line, attempted, applied, s.Inventory)
}

// OperatorNotReadyError is returned when the operator did not report the instance Ready in time,
// or reported a failure.
type OperatorNotReadyError struct {
	Instance string
	Timeout  time.Duration
	Failed   bool
	State    *State
}

func (e *OperatorNotReadyError) Error() string {
	head := fmt.Sprintf("timed out after %s waiting for the Flux Operator to reconcile %s", e.Timeout, e.Instance)
	if e.Failed {
		head = fmt.Sprintf("the Flux Operator failed to reconcile %s", e.Instance)
	}
	if e.State == nil {
		return head + ": it does not exist"
	}
	msg := head + ": " + e.State.Summary()
	for _, f := range e.State.Failing {
		if !strings.HasPrefix(f, "Ready: ") { // the summary has it already
			msg += "; " + f
		}
	}
	return msg
}

// WaitForOperator polls the FluxInstance until the operator reports it Ready for its current
// generation (and the reconcile request token, when set), calling progress about every 5 s. A
// reconcile that ended in failure stops the wait at once.
func WaitForOperator(ctx context.Context, inst kube.Instance, token string, timeout time.Duration, progress func(*State)) (*State, error) {
	ref := fmt.Sprintf("FluxInstance/%s/%s", inst.Namespace, inst.Name)
	lastProgress := time.Now()
	var state *State
	var readErr, failed error
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		// The caller's ctx, not the poll's: the timeout ends the wait, never a read half-way.
		state, readErr = FluxInstance(ctx, inst)
		switch {
		case readErr != nil:
			return false, readErr
		case state != nil && state.Current(token) && state.Ready == "True" && state.Settled():
			return true, nil
		case state != nil && state.Failed(token):
			failed = &OperatorNotReadyError{Instance: ref, Failed: true, State: state}
			return false, failed
		}
		if progress != nil && state != nil && time.Since(lastProgress) >= 5*time.Second {
			progress(state)
			lastProgress = time.Now()
		}
		return false, nil
	})
	switch {
	case readErr != nil:
		return nil, readErr
	case err == nil || failed != nil:
		return state, err
	case ctx.Err() != nil:
		return state, ctx.Err()
	}
	return state, &OperatorNotReadyError{Instance: ref, Timeout: timeout, State: state}
}

// RequestToken is a reconcile request token for ApplyFluxInstance and WaitForOperator: the
// request time in nanoseconds, unique per request.
func RequestToken(now time.Time) string { return strconv.FormatInt(now.UnixNano(), 10) }

// RequestReconcile asks the operator to reconcile the FluxInstance now, by the requestedAt
// annotation, and returns the token for WaitForOperator. A merge patch, not part of the apply: the
// annotation is then owned by fieldManager's update, which the next apply of the FluxInstance
// leaves alone (an apply would drop it again and report the FluxInstance configured).
func RequestReconcile(ctx context.Context, inst kube.Instance, fieldManager string, now time.Time) (string, error) {
	token := RequestToken(now)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationRequestedAt: token}}})
	if err != nil {
		return "", err
	}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(FluxInstanceGVK)
	obj.SetNamespace(inst.Namespace)
	obj.SetName(inst.Name)
	if err := inst.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldManager)); err != nil {
		return "", fmt.Errorf("FluxInstance/%s/%s: requesting a reconcile: %w", inst.Namespace, inst.Name, err)
	}
	return token, nil
}

// ApplyFluxInstance server-side applies the FluxInstance object (the user's intent for the
// operator) and returns the action as kubectl prints it. requestToken, when set, goes into the
// reconcile.fluxcd.io/requestedAt annotation so that the operator reconciles now even when the
// spec did not change; WaitForOperator then waits for that token.
func ApplyFluxInstance(ctx context.Context, inst kube.Instance, obj *unstructured.Unstructured, fieldManager string, dryRun kube.DryRun, requestToken string) (string, error) {
	obj = obj.DeepCopy()
	obj.SetGroupVersionKind(FluxInstanceGVK)
	obj.SetNamespace(inst.Namespace)
	obj.SetName(inst.Name)
	obj.SetResourceVersion("")
	obj.SetManagedFields(nil)
	unstructured.RemoveNestedField(obj.Object, "status")
	if requestToken != "" {
		annotations := obj.GetAnnotations()
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[AnnotationRequestedAt] = requestToken
		obj.SetAnnotations(annotations)
	}
	before, err := GetFluxInstance(ctx, inst)
	if err != nil {
		return "", err
	}
	if dryRun == kube.DryRunClient {
		if before == nil {
			return "created", nil
		}
		return "configured", nil
	}
	opts := []client.PatchOption{client.ForceOwnership, client.FieldOwner(fieldManager)}
	if dryRun == kube.DryRunServer {
		opts = append(opts, client.DryRunAll)
	}
	if err := inst.Client.Patch(ctx, obj, client.Apply, opts...); err != nil {
		return "", fmt.Errorf("FluxInstance/%s/%s: applying: %w", inst.Namespace, inst.Name, err)
	}
	switch {
	case before == nil:
		return "created", nil
	case dryRun == kube.DryRunServer:
		// A dry run keeps the resourceVersion: the answer is what would be stored.
		if apiequality.Semantic.DeepEqual(before.Object, obj.Object) {
			return "unchanged", nil
		}
		return "configured", nil
	case before.GetResourceVersion() == obj.GetResourceVersion():
		return "unchanged", nil
	default:
		return "configured", nil
	}
}
