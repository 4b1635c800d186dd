// Package inventory is the plugin's record of what it applied to a cluster: the ConfigMap
// `kubectl-fluxinstance-inventory` in the instance namespace (docs/inventory.md), its states
// (Pending while an apply may be creating objects, Applied, Deleted), the fingerprints that let
// the next apply skip unchanged objects, and its mirror in a FluxInstance's status.inventory, the
// Flux Operator's own format.
//
// Entries stay the operator's {id, v} pairs rather than a cli-utils ObjMetadataSet: each carries
// the API version to read the object with, and an id that does not parse must reach Objects to
// be reported. Set operations on the ids (Contains, the hand-off's difference) go through IDs,
// an ObjMetadataSet.
package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The inventory record (docs/inventory.md describes it for other tools).
const (
	// ConfigMapName is the record's name in the instance namespace. Its presence is also the
	// mark that this plugin applied the installation.
	ConfigMapName = "kubectl-fluxinstance-inventory"
	// MigrationConfigMapName is the record `migrate` keeps of a takeover from `flux bootstrap`.
	MigrationConfigMapName = "kubectl-fluxinstance-migration"

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

// Entry is one applied object in the operator's format: id `<ns>_<name>_<group>_<kind>`
// (cli-utils ObjMetadata) and v its API version.
type Entry struct {
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
	Entries      []Entry   `json:"entries"`
	State        string    `json:"state,omitempty"`
	AppliedAt    time.Time `json:"appliedAt,omitzero"`
	FieldManager string    `json:"fieldManager,omitempty"`
	RecordInfo
	// Source says where it was read from: "ConfigMap/<ns>/<name>" or "FluxInstance/<ns>/<name>".
	Source string `json:"source,omitempty"`
	// ResourceVersion is the record ConfigMap's version this inventory was read from or replaces
	// ("" when there is no ConfigMap yet). Write is a compare-and-swap on it, so that a write
	// based on a stale read fails instead of losing another command's update.
	ResourceVersion string `json:"-"`

	// Fingerprints (by entry id) let the next apply skip objects it can prove unchanged; only an
	// Applied record written by an apply has them.
	Fingerprints map[string]Fingerprint `json:"-"`
}

// Fingerprint is what the record keeps per applied object so that the next apply can prove,
// without a request, that applying it again would change nothing: Desired identifies the object
// as it was applied (and with what), Live the in-cluster copy right after.
type Fingerprint struct {
	Desired string `json:"d"`
	Live    string `json:"l"`
}

// New lists the given objects.
func New(objects []*unstructured.Unstructured) *Inventory {
	inv := &Inventory{}
	for _, o := range objects {
		inv.Add(kube.ID(o), o.GroupVersionKind().Version)
	}
	inv.sort()
	return inv
}

// Add lists id at version unless it is listed already.
func (inv *Inventory) Add(id object.ObjMetadata, version string) {
	s := id.String()
	if !slices.ContainsFunc(inv.Entries, func(e Entry) bool { return e.ID == s }) {
		inv.Entries = append(inv.Entries, Entry{ID: s, Version: version})
	}
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

// IDs is the set of the entries' ids, in entry order; inv may be nil. An entry whose id does not
// parse is left out: no object can match it (Objects reports it).
func (inv *Inventory) IDs() object.ObjMetadataSet {
	var ids object.ObjMetadataSet
	for _, e := range inv.entries() {
		if id, err := object.ParseObjMetadata(e.ID); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

func (inv *Inventory) entries() []Entry {
	if inv == nil {
		return nil
	}
	return inv.Entries
}

// Contains tells whether every entry of other is in inv.
func (inv *Inventory) Contains(other *Inventory) bool {
	return len(other.IDs().Diff(inv.IDs())) == 0
}

// Union returns the entries of a and b, sorted; either may be nil. The version of an id listed
// by both is b's (the newer rendering); entries whose id does not parse are left out.
func Union(a, b *Inventory) *Inventory {
	out := &Inventory{}
	for _, e := range slices.Concat(b.entries(), a.entries()) { // b first: Add keeps the first
		if id, err := object.ParseObjMetadata(e.ID); err == nil {
			out.Add(id, e.Version)
		}
	}
	out.sort()
	return out
}

// IsRecord tells whether id is one of the plugin's own records, which no record may list: a record
// listing itself would have prune or delete remove it.
func IsRecord(id object.ObjMetadata) bool {
	return id.GroupKind.Group == "" && id.GroupKind.Kind == "ConfigMap" &&
		(id.Name == ConfigMapName || id.Name == MigrationConfigMapName)
}

// Store reads and writes the record of one instance.
type Store struct {
	kube.Instance
}

// NewStore returns the Store of the instance.
func NewStore(inst kube.Instance) *Store { return &Store{Instance: inst} }

func (s *Store) ref() string { return "ConfigMap/" + s.Namespace + "/" + ConfigMapName }

// Read returns the record, or nil when this plugin never applied here. It reads the ConfigMap
// and, when there is none, a FluxInstance's status.inventory (an installation the operator
// reconciled). Only NotFound means "none": any other error is returned, so that a flaky
// connection never looks like an empty inventory (and so never makes prune or delete skip).
func (s *Store) Read(ctx context.Context) (*Inventory, error) {
	cm := &corev1.ConfigMap{}
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: ConfigMapName}, cm)
	switch {
	case err == nil:
		inv, err := fromConfigMap(cm)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.ref(), err)
		}
		return inv, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%s: reading the inventory: %w", s.ref(), err)
	}
	return s.ReadFluxInstance(ctx)
}

// RecordedFieldManager is the field manager the record says the last apply used ("" when cm is
// not a record).
func RecordedFieldManager(cm *corev1.ConfigMap) string { return cm.Data[keyFieldManager] }

func fromConfigMap(cm *corev1.ConfigMap) (*Inventory, error) {
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
		Source:          "ConfigMap/" + cm.Namespace + "/" + cm.Name,
		ResourceVersion: cm.ResourceVersion,
	}
	if t := cm.Data[keyAppliedAt]; t != "" {
		parsed, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return nil, fmt.Errorf("data.%s: %w", keyAppliedAt, err)
		}
		inv.AppliedAt = parsed
	}
	var body struct {
		Entries []Entry `json:"entries"`
	}
	if err := json.Unmarshal([]byte(cm.Data[keyInventory]), &body); err != nil {
		return nil, fmt.Errorf("data.%s is not the inventory JSON: %w", keyInventory, err)
	}
	inv.Entries = body.Entries
	if raw := cm.Data[keyFingerprints]; raw != "" && inv.State == StateApplied {
		// Unreadable fingerprints only cost the fast path: never an error.
		var fps map[string]Fingerprint
		if json.Unmarshal([]byte(raw), &fps) == nil {
			inv.Fingerprints = fps
		}
	}
	return inv, nil
}

// MaxRecordBytes is what the record's data may hold: the API server refuses a ConfigMap whose
// data exceeds 1 MiB.
const MaxRecordBytes = 1 << 20

// TooLargeError is a record that a ConfigMap cannot hold.
type TooLargeError struct {
	Ref   string
	Bytes int
	// Largest names the biggest part of the record, for the user to act on.
	Largest      string
	LargestBytes int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: the inventory record would be %s, over the %s a ConfigMap holds; its largest part is %s (%s): make it smaller (for the FluxInstance, its annotations, labels or patches)",
		e.Ref, mib(e.Bytes), mib(MaxRecordBytes), e.Largest, mib(e.LargestBytes))
}

func mib(n int) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

// Fits checks, before anything is created, that the record of inv can be written: the record of
// an apply is at most the Pending one (the union of the previous and the new entries), so a
// Pending record that fits guarantees the rest do (Write drops the fingerprints, an
// optimisation, when they would not fit).
func (s *Store) Fits(inv *Inventory, fieldManager string) error {
	cm, _, err := s.build(inv, fieldManager)
	if err != nil {
		return err
	}
	return s.checkSize(cm)
}

func (s *Store) checkSize(cm *unstructured.Unstructured) error {
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	total, largest, largestBytes := 0, "", 0
	for k, v := range data {
		total += len(k) + len(v)
		if len(v) > largestBytes {
			largest, largestBytes = "data."+k, len(v)
		}
	}
	if total <= MaxRecordBytes {
		return nil
	}
	if largest == "data."+keyInstance {
		largest = "the FluxInstance (data." + keyInstance + ")"
	}
	return &TooLargeError{Ref: s.ref(), Bytes: total, Largest: largest, LargestBytes: largestBytes}
}

// Write stores the record (refusing one over MaxRecordBytes), and mirrors the entries into the FluxInstance's status.inventory when
// that object exists. AppliedAt defaults to now and FieldManager to fieldManager.
//
// It is a compare-and-swap on inv.ResourceVersion: with none it creates the ConfigMap (and
// fails if one appeared meanwhile); otherwise it applies with that resourceVersion as a
// precondition (and fails if the record changed since). On success inv.ResourceVersion is the
// new version, for the next write.
func (s *Store) Write(ctx context.Context, inv *Inventory, fieldManager string) error {
	if fieldManager == "" {
		fieldManager = ownership.PluginFieldManager
	}
	cm, entries, err := s.build(inv, fieldManager)
	if err != nil {
		return err
	}
	if err := s.checkSize(cm); err != nil {
		if _, fingerprinted := cm.Object["data"].(map[string]any)[keyFingerprints]; !fingerprinted {
			return err
		}
		delete(cm.Object["data"].(map[string]any), keyFingerprints)
		if err := s.checkSize(cm); err != nil {
			return err
		}
	}
	// A whole-object update rather than a server-side apply: the record is the plugin's alone,
	// and a replace drops keys a previous write had (fingerprints, say) whoever wrote them.
	if inv.ResourceVersion == "" {
		err = s.Client.Create(ctx, cm, client.FieldOwner(fieldManager))
	} else {
		cm.SetResourceVersion(inv.ResourceVersion)
		err = s.Client.Update(ctx, cm, client.FieldOwner(fieldManager))
	}
	switch {
	case apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err):
		return fmt.Errorf("%s: another command wrote the inventory since this one read it (was the lock bypassed?); nothing of this write was stored: re-run the command: %w", s.ref(), err)
	case err != nil:
		return fmt.Errorf("%s: writing the inventory: %w", s.ref(), err)
	}
	inv.ResourceVersion = cm.GetResourceVersion()
	if inv.State == StatePending {
		return nil
	}
	return s.mirror(ctx, entries, fieldManager)
}

// build is the record ConfigMap of inv (defaults filled in) and the entries it lists.
func (s *Store) build(inv *Inventory, fieldManager string) (*unstructured.Unstructured, []Entry, error) {
	if fieldManager == "" {
		fieldManager = ownership.PluginFieldManager
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
	entries := []Entry{}
	for _, e := range inv.Entries {
		// The record never lists itself (a rendering cannot contain it; an edited record could).
		if id, err := object.ParseObjMetadata(e.ID); err == nil && IsRecord(id) {
			continue
		}
		entries = append(entries, e)
	}
	body, err := json.Marshal(map[string]any{"entries": entries})
	if err != nil {
		return nil, nil, err
	}
	cm := &unstructured.Unstructured{}
	cm.SetAPIVersion("v1")
	cm.SetKind("ConfigMap")
	cm.SetName(ConfigMapName)
	cm.SetNamespace(s.Namespace)
	cm.SetLabels(map[string]string{
		render.LabelManagedBy:      ownership.PluginName,
		render.LabelPartOf:         render.PartOfValue,
		render.LabelOwnerName:      s.Name,
		render.LabelOwnerNamespace: s.Namespace,
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
	if len(inv.Fingerprints) > 0 && inv.State == StateApplied {
		raw, err := json.Marshal(inv.Fingerprints)
		if err != nil {
			return nil, nil, err
		}
		data[keyFingerprints] = string(raw)
	}
	cm.Object["data"] = data
	return cm, entries, nil
}

// Delete removes the record inv was read from (NotFound is fine): once another manager's record
// (the FluxInstance's status.inventory) replaces it, or when nothing is left to record. Like
// Write, it is a compare-and-swap: a record changed since inv was read is not deleted.
func (s *Store) Delete(ctx context.Context, inv *Inventory) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: ConfigMapName}}
	var opts []client.DeleteOption
	if inv != nil && inv.ResourceVersion != "" {
		opts = append(opts, client.Preconditions{ResourceVersion: &inv.ResourceVersion})
	}
	err := s.Client.Delete(ctx, cm, opts...)
	switch {
	case apierrors.IsConflict(err):
		return fmt.Errorf("%s: another command wrote the inventory since this one read it (was the lock bypassed?); it was kept: re-run the command: %w", s.ref(), err)
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("%s: deleting the inventory: %w", s.ref(), err)
	}
	return nil
}
