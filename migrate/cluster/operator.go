package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Facts of the Flux Operator that the plugin relies on to work with it rather than against it.
const (
	// OperatorFieldManager is the field manager the operator applies with.
	OperatorFieldManager = "flux-operator"
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
func (m *Manager) DetectOperator(ctx context.Context) (OperatorPresence, error) {
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(crdGVK)
	if err := m.client.Get(ctx, client.ObjectKey{Name: FluxInstanceCRD}, crd); err != nil {
		if apierrors.IsNotFound(err) {
			return OperatorPresence{Evidence: "the FluxInstance CRD (" + FluxInstanceCRD + ") is not installed"}, nil
		}
		return OperatorPresence{}, m.explain(fmt.Errorf("CustomResourceDefinition/%s: reading: %w", FluxInstanceCRD, err))
	}
	p := OperatorPresence{CRD: true}
	deployments, err := m.operatorDeployments(ctx)
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
	err = m.client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: FluxReportName}, report)
	switch {
	case apierrors.IsNotFound(err) || isNoMatch(err) || apierrors.IsForbidden(err):
		p.Evidence = fmt.Sprintf("no flux-operator Deployment and no FluxReport %s/%s", m.Namespace, FluxReportName)
		return p, nil
	case err != nil:
		return p, m.explain(fmt.Errorf("FluxReport/%s/%s: reading: %w", m.Namespace, FluxReportName, err))
	}
	age := time.Since(lastWrite(report)).Round(time.Second)
	if age > reportFreshness {
		p.Evidence = fmt.Sprintf("no flux-operator Deployment, and FluxReport %s/%s was last updated %s ago", m.Namespace, FluxReportName, age)
		return p, nil
	}
	p.Running, p.Evidence = true, fmt.Sprintf("FluxReport %s/%s updated %s ago", m.Namespace, FluxReportName, age)
	return p, nil
}

// operatorDeployments lists the operator's Deployments cluster-wide, or in the instance namespace
// when listing cluster-wide is forbidden.
func (m *Manager) operatorDeployments(ctx context.Context) ([]appsv1.Deployment, error) {
	var list appsv1.DeploymentList
	selector := client.MatchingLabels{operatorDeploymentLabel: operatorDeploymentName}
	err := m.client.List(ctx, &list, selector)
	if apierrors.IsForbidden(err) {
		err = m.client.List(ctx, &list, selector, client.InNamespace(m.Namespace))
	}
	if apierrors.IsForbidden(err) {
		return nil, nil
	}
	if err != nil {
		return nil, m.explain(fmt.Errorf("listing the flux-operator Deployments: %w", err))
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

// FluxInstanceState is what the operator says about a FluxInstance.
type FluxInstanceState struct {
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

// FluxInstance returns the instance object and the operator's view of it; nil when the CRD or the
// object does not exist.
func (m *Manager) FluxInstance(ctx context.Context) (*FluxInstanceState, error) {
	fi, err := m.getFluxInstance(ctx)
	if err != nil || fi == nil {
		return nil, err
	}
	return fluxInstanceState(fi), nil
}

func fluxInstanceState(fi *unstructured.Unstructured) *FluxInstanceState {
	s := &FluxInstanceState{Object: fi, Ready: "Unknown", Generation: fi.GetGeneration()}
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
func (s *FluxInstanceState) Current(token string) bool {
	if s.ObservedGeneration < s.Generation {
		return false
	}
	return token == "" || s.LastHandledReconcileAt == token
}

// Settled tells whether the operator's last status write is complete: it writes the conditions
// first and the revisions and inventory in a second request, so Ready=True can be seen with the
// previous revision and inventory for a moment.
func (s *FluxInstanceState) Settled() bool {
	return s.LastAppliedRevision != "" && s.LastAppliedRevision == s.LastAttemptedRevision && s.HasInventory
}

// Failed tells whether the operator finished a reconcile of the current object with an error
// (it retries, but with the same spec it fails the same way).
func (s *FluxInstanceState) Failed(token string) bool {
	return s.Current(token) && s.Ready == "False" && s.Reason != "Progressing" && s.Reason != "ProgressingWithRetry"
}

// Summary is one line of progress: readiness, revisions and the inventory size.
func (s *FluxInstanceState) Summary() string {
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
	State    *FluxInstanceState
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
func (m *Manager) WaitForOperator(ctx context.Context, token string, timeout time.Duration, progress func(*FluxInstanceState)) (*FluxInstanceState, error) {
	ref := fmt.Sprintf("FluxInstance/%s/%s", m.Namespace, m.Name)
	deadline := time.Now().Add(timeout)
	lastProgress := time.Now()
	var state *FluxInstanceState
	for {
		var err error
		state, err = m.FluxInstance(ctx)
		if err != nil {
			return nil, err
		}
		switch {
		case state != nil && state.Current(token) && state.Ready == "True" && state.Settled():
			return state, nil
		case state != nil && state.Failed(token):
			return state, &OperatorNotReadyError{Instance: ref, Failed: true, State: state}
		case time.Now().After(deadline):
			return state, &OperatorNotReadyError{Instance: ref, Timeout: timeout, State: state}
		}
		if progress != nil && state != nil && time.Since(lastProgress) >= 5*time.Second {
			progress(state)
			lastProgress = time.Now()
		}
		select {
		case <-ctx.Done():
			return state, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ApplyFluxInstance server-side applies the FluxInstance object (the user's intent for the
// operator) and returns the action as kubectl prints it. requestToken, when set, goes into the
// reconcile.fluxcd.io/requestedAt annotation so that the operator reconciles now even when the
// spec did not change; WaitForOperator then waits for that token.
func (m *Manager) ApplyFluxInstance(ctx context.Context, obj *unstructured.Unstructured, fieldManager string, dryRun DryRun, requestToken string) (string, error) {
	obj = obj.DeepCopy()
	obj.SetGroupVersionKind(fluxInstanceGVK)
	obj.SetNamespace(m.Namespace)
	obj.SetName(m.Name)
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
	before, err := m.getFluxInstance(ctx)
	if err != nil {
		return "", err
	}
	if dryRun == DryRunClient {
		if before == nil {
			return "created", nil
		}
		return "configured", nil
	}
	opts := []client.PatchOption{client.ForceOwnership, client.FieldOwner(fieldManager)}
	if dryRun == DryRunServer {
		opts = append(opts, client.DryRunAll)
	}
	if err := m.client.Patch(ctx, obj, client.Apply, opts...); err != nil {
		return "", m.explain(fmt.Errorf("FluxInstance/%s/%s: applying: %w", m.Namespace, m.Name, err))
	}
	switch {
	case before == nil:
		return "created", nil
	case before.GetResourceVersion() == obj.GetResourceVersion():
		return "unchanged", nil
	default:
		return "configured", nil
	}
}
