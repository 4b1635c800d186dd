package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The inventory record (docs/inventory.md describes it for other tools).
const (
	// InventoryConfigMap is the record's name in the instance namespace. Its presence is also the
	// mark that this plugin applied the installation.
	InventoryConfigMap = "kubectl-fluxinstance-inventory"
	// FluxInstanceCRD is the Flux Operator's CRD; when it exists and the FluxInstance object does
	// too, its status.inventory mirrors the record in the operator's own format.
	FluxInstanceCRD = "fluxinstances.fluxcd.controlplane.io"

	// ConfigMap data keys.
	keyInventory     = "inventory"
	keyState         = "state"
	keyAppliedAt     = "appliedAt"
	keyFieldManager  = "fieldManager"
	keyUser          = "user"
	keyPluginVersion = "pluginVersion"
	keyDistribution  = "distribution"
	keyFluxVersion   = "fluxVersion"
	keyDigest        = "digest"
	keyInstance      = "instance"
	keyFingerprints  = "fingerprints"
)

// Inventory states.
const (
	// StatePending: an apply started and may not have finished; entries are the union of the
	// previous and the new rendering, so that a re-run can still prune what either created.
	StatePending = "Pending"
	// StateApplied: the last apply (and prune) finished; entries are exactly what it applied
	// plus CRDs kept as orphans.
	StateApplied = "Applied"
	// StateDeleted: Delete ran; entries are what it kept (CRDs, the namespace).
	StateDeleted = "Deleted"
)

var fluxInstanceGVK = schema.GroupVersionKind{Group: "fluxcd.controlplane.io", Version: "v1", Kind: "FluxInstance"}

// InventoryEntry is one applied object in the operator's format: id `<ns>_<name>_<group>_<kind>`
// (cli-utils ObjMetadata) and v its API version.
type InventoryEntry struct {
	ID      string `json:"id"`
	Version string `json:"v"`
}

// RecordInfo is what the caller knows about an apply and the record keeps.
type RecordInfo struct {
	PluginVersion string `json:"pluginVersion,omitempty"`
	// Distribution is the distribution source (e.g. "embedded", a directory or an oci:// URL).
	Distribution string `json:"distribution,omitempty"`
	FluxVersion  string `json:"fluxVersion,omitempty"`
	// Digest identifies the rendering (the operator's lastAppliedRevision form
	// `vX.Y.Z@sha256:<digest>` is a good value).
	Digest string `json:"digest,omitempty"`
	// User who applied; Reconcile asks the API server (SelfSubjectReview) when empty.
	User string `json:"user,omitempty"`
	// Instance is the applied FluxInstance as YAML, so that `status` can re-render it and report
	// drift without the user's file. A FluxInstance holds no secret values, only Secret names.
	Instance string `json:"instance,omitempty"`
}

// Inventory is the record of what this plugin applied.
type Inventory struct {
	Entries      []InventoryEntry `json:"entries"`
	State        string           `json:"state,omitempty"`
	AppliedAt    time.Time        `json:"appliedAt,omitzero"`
	FieldManager string           `json:"fieldManager,omitempty"`
	RecordInfo
	// Source says where it was read from: "ConfigMap/<ns>/<name>" or "FluxInstance/<ns>/<name>".
	Source string `json:"source,omitempty"`

	// fingerprints (by entry id) let the next apply skip objects it can prove unchanged; only an
	// Applied record written by Reconcile has them.
	fingerprints map[string]objectFingerprint
}

// NewInventory lists the given objects.
func NewInventory(objects []*unstructured.Unstructured) *Inventory {
	inv := &Inventory{}
	for _, o := range objects {
		inv.add(idOf(o), o.GroupVersionKind().Version)
	}
	inv.sort()
	return inv
}

func (inv *Inventory) add(id object.ObjMetadata, version string) {
	s := id.String()
	for _, e := range inv.Entries {
		if e.ID == s {
			return
		}
	}
	inv.Entries = append(inv.Entries, InventoryEntry{ID: s, Version: version})
}

func (inv *Inventory) sort() {
	sort.Slice(inv.Entries, func(i, j int) bool { return inv.Entries[i].ID < inv.Entries[j].ID })
}

// Objects parses the entries.
func (inv *Inventory) Objects() ([]object.ObjMetadata, []string, error) {
	if inv == nil {
		return nil, nil, nil
	}
	ids := make([]object.ObjMetadata, 0, len(inv.Entries))
	versions := make([]string, 0, len(inv.Entries))
	for _, e := range inv.Entries {
		id, err := object.ParseObjMetadata(e.ID)
		if err != nil {
			return nil, nil, fmt.Errorf("inventory entry %q: %w", e.ID, err)
		}
		ids = append(ids, id)
		versions = append(versions, e.Version)
	}
	return ids, versions, nil
}

// Contains tells whether every entry of other is in inv.
func (inv *Inventory) Contains(other *Inventory) bool {
	have := map[string]bool{}
	if inv != nil {
		for _, e := range inv.Entries {
			have[e.ID] = true
		}
	}
	for _, e := range other.Entries {
		if !have[e.ID] {
			return false
		}
	}
	return true
}

// union returns the entries of a and b (b's version wins).
func union(a, b *Inventory) *Inventory {
	out := &Inventory{}
	if b != nil {
		out.Entries = append(out.Entries, b.Entries...)
	}
	if a != nil {
		for _, e := range a.Entries {
			id, err := object.ParseObjMetadata(e.ID)
			if err != nil {
				continue
			}
			out.add(id, e.Version)
		}
	}
	out.sort()
	return out
}

// ReadInventory returns the record, or nil when this plugin never applied here. It reads the
// ConfigMap and, when there is none, a FluxInstance's status.inventory (an installation the
// operator reconciled). Only NotFound means "none": any other error is returned, so that a flaky
// connection never looks like an empty inventory (and so never makes prune or delete skip).
func (m *Manager) ReadInventory(ctx context.Context) (*Inventory, error) {
	cm := &corev1.ConfigMap{}
	err := m.client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: InventoryConfigMap}, cm)
	switch {
	case err == nil:
		inv, err := inventoryFromConfigMap(cm)
		if err != nil {
			return nil, fmt.Errorf("ConfigMap/%s/%s: %w", m.Namespace, InventoryConfigMap, err)
		}
		return inv, nil
	case !apierrors.IsNotFound(err):
		return nil, m.explain(fmt.Errorf("ConfigMap/%s/%s: reading the inventory: %w", m.Namespace, InventoryConfigMap, err))
	}
	return m.ReadFluxInstanceInventory(ctx)
}

// getFluxInstance returns the FluxInstance object when its CRD and the object exist, else nil.
func (m *Manager) getFluxInstance(ctx context.Context) (*unstructured.Unstructured, error) {
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(crdGVK)
	if err := m.client.Get(ctx, client.ObjectKey{Name: FluxInstanceCRD}, crd); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, m.explain(fmt.Errorf("CustomResourceDefinition/%s: reading: %w", FluxInstanceCRD, err))
	}
	fi := &unstructured.Unstructured{}
	fi.SetGroupVersionKind(fluxInstanceGVK)
	if err := m.client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Name}, fi); err != nil {
		if apierrors.IsNotFound(err) || isNoMatch(err) || apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, m.explain(fmt.Errorf("FluxInstance/%s/%s: reading: %w", m.Namespace, m.Name, err))
	}
	return fi, nil
}

func inventoryFromConfigMap(cm *corev1.ConfigMap) (*Inventory, error) {
	inv := &Inventory{
		State:        cm.Data[keyState],
		FieldManager: cm.Data[keyFieldManager],
		RecordInfo: RecordInfo{
			User:          cm.Data[keyUser],
			PluginVersion: cm.Data[keyPluginVersion],
			Distribution:  cm.Data[keyDistribution],
			FluxVersion:   cm.Data[keyFluxVersion],
			Digest:        cm.Data[keyDigest],
			Instance:      cm.Data[keyInstance],
		},
		Source: "ConfigMap/" + cm.Namespace + "/" + cm.Name,
	}
	if t := cm.Data[keyAppliedAt]; t != "" {
		parsed, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return nil, fmt.Errorf("data.%s: %w", keyAppliedAt, err)
		}
		inv.AppliedAt = parsed
	}
	var body struct {
		Entries []InventoryEntry `json:"entries"`
	}
	if err := json.Unmarshal([]byte(cm.Data[keyInventory]), &body); err != nil {
		return nil, fmt.Errorf("data.%s is not the inventory JSON: %w", keyInventory, err)
	}
	inv.Entries = body.Entries
	if raw := cm.Data[keyFingerprints]; raw != "" && inv.State == StateApplied {
		// Unreadable fingerprints only cost the fast path: never an error.
		var fps map[string]objectFingerprint
		if json.Unmarshal([]byte(raw), &fps) == nil {
			inv.fingerprints = fps
		}
	}
	return inv, nil
}

// WriteInventory stores the record with server-side apply of the ConfigMap (fields manager
// fieldManager), and mirrors the entries into the FluxInstance's status.inventory when that
// object exists. AppliedAt defaults to now and FieldManager to fieldManager.
func (m *Manager) WriteInventory(ctx context.Context, inv *Inventory, fieldManager string) error {
	if fieldManager == "" {
		fieldManager = DefaultFieldManager
	}
	if inv.AppliedAt.IsZero() {
		inv.AppliedAt = time.Now().UTC()
	}
	if inv.FieldManager == "" {
		inv.FieldManager = fieldManager
	}
	if inv.State == "" {
		inv.State = StateApplied
	}
	inv.sort()
	entries := inv.Entries
	if entries == nil {
		entries = []InventoryEntry{}
	}
	body, err := json.Marshal(map[string]any{"entries": entries})
	if err != nil {
		return err
	}
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	cm.SetName(InventoryConfigMap)
	cm.SetNamespace(m.Namespace)
	cm.SetLabels(map[string]string{
		LabelManagedBy:              ManagedByPlugin,
		"app.kubernetes.io/part-of": "flux",
		LabelOwnerName:              m.Name,
		LabelOwnerNamespace:         m.Namespace,
	})
	data := map[string]any{
		keyInventory:    string(body),
		keyState:        inv.State,
		keyAppliedAt:    inv.AppliedAt.UTC().Format(time.RFC3339),
		keyFieldManager: inv.FieldManager,
	}
	for k, v := range map[string]string{
		keyUser: inv.User, keyPluginVersion: inv.PluginVersion, keyDistribution: inv.Distribution,
		keyFluxVersion: inv.FluxVersion, keyDigest: inv.Digest, keyInstance: inv.Instance,
	} {
		if v != "" {
			data[k] = v
		}
	}
	if len(inv.fingerprints) > 0 && inv.State == StateApplied {
		raw, err := json.Marshal(inv.fingerprints)
		if err != nil {
			return err
		}
		data[keyFingerprints] = string(raw)
	}
	cm.Object["data"] = data
	if err := m.client.Patch(ctx, cm, client.Apply, client.ForceOwnership, client.FieldOwner(fieldManager)); err != nil {
		return m.explain(fmt.Errorf("ConfigMap/%s/%s: writing the inventory: %w", m.Namespace, InventoryConfigMap, err))
	}
	if inv.State == StatePending {
		return nil
	}
	return m.mirrorToFluxInstance(ctx, entries, fieldManager)
}

// mirrorToFluxInstance writes status.inventory of an existing FluxInstance, so that a Flux
// Operator taking over later knows what to garbage-collect.
func (m *Manager) mirrorToFluxInstance(ctx context.Context, entries []InventoryEntry, fieldManager string) error {
	fi, err := m.getFluxInstance(ctx)
	if err != nil || fi == nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"inventory": map[string]any{"entries": entries}}})
	if err != nil {
		return err
	}
	if err := m.client.Status().Patch(ctx, fi, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldManager)); err != nil {
		return m.explain(fmt.Errorf("FluxInstance/%s/%s: writing status.inventory: %w", m.Namespace, m.Name, err))
	}
	return nil
}

// deleteInventory removes the record (NotFound is fine).
func (m *Manager) deleteInventory(ctx context.Context) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: InventoryConfigMap}}
	if err := m.client.Delete(ctx, cm); err != nil && !apierrors.IsNotFound(err) {
		return m.explain(fmt.Errorf("ConfigMap/%s/%s: deleting the inventory: %w", m.Namespace, InventoryConfigMap, err))
	}
	return nil
}

// WhoAmI asks the API server who the credentials belong to (SelfSubjectReview); "" when the
// server does not say.
func (m *Manager) WhoAmI(ctx context.Context) string {
	review := &authenticationv1.SelfSubjectReview{}
	if err := m.client.Create(ctx, review); err != nil {
		return ""
	}
	return review.Status.UserInfo.Username
}
