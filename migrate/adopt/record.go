package adopt

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// The migration record: a ConfigMap in the Flux namespace written before the first change and
// updated when the takeover is verified. It makes a re-run resume with the same FluxInstance,
// a completed migration report "nothing to do", and --rollback know what to give back.
const (
	RecordConfigMap = inventory.MigrationConfigMapName
	labelRecord     = "kubectl-fluxinstance/migration-record"

	StateInProgress = "InProgress"
	StateCompleted  = "Completed"
)

// RecordEntry is one Flux object the migration took over (cli-utils id and API version).
type RecordEntry struct {
	ID      string `json:"id"`
	Version string `json:"v"`
}

// Record is the migration record.
type Record struct {
	Namespace string
	State     string
	StartedAt string
	// Installer is who installed Flux (installation.ManagedByBootstrap, ManagedByFluxInstall or ManagedByHelm):
	// whom rollback gives the objects back to. Records written before `flux install` was adopted
	// have none and are bootstrap's.
	Installer string
	// Kustomization is the bootstrap Kustomization (namespace/name) whose owner labels rollback
	// restores; empty for `flux install`.
	Kustomization string
	Instance      *fluxinstance.FluxInstance
	Objects       []RecordEntry
	// Helm is the release a Helm installation's migration takes over.
	Helm *RecordedHelm
}

// RecordedHelm is what a migration of a Helm installation keeps about the release: where its
// records are, and the HelmRelease it suspended, for a resumed run and for --rollback.
type RecordedHelm struct {
	Name             string `json:"name"`
	Namespace        string `json:"namespace"`
	StorageNamespace string `json:"storageNamespace"`
	// ManagedBy is the HelmRelease (namespace/name) whose helm-controller ran the release.
	ManagedBy string `json:"managedBy,omitempty"`
	// SuspendedHelmRelease is ManagedBy when the migration suspended it.
	SuspendedHelmRelease string `json:"suspendedHelmRelease,omitempty"`
}

func newRecordedHelm(rel *installation.HelmRelease) *RecordedHelm {
	st := storageOf(rel)
	r := &RecordedHelm{Name: rel.Name, Namespace: rel.Namespace, StorageNamespace: st.StorageNamespace}
	if m := rel.ManagedBy; m != nil {
		r.ManagedBy = m.Namespace + "/" + m.Name
	}
	return r
}

// release is the recorded release as detection reports it.
func (r *RecordedHelm) release() *installation.HelmRelease {
	rel := &installation.HelmRelease{Name: r.Name, Namespace: r.Namespace}
	if r.ManagedBy != "" {
		ns, name, _ := strings.Cut(r.ManagedBy, "/")
		rel.ManagedBy = &installation.FluxHelmRelease{Namespace: ns, Name: name, StorageNamespace: r.StorageNamespace}
	}
	return rel
}

func recordFromConfigMap(cm *corev1.ConfigMap) (*Record, error) {
	r := &Record{
		Namespace:     cm.Namespace,
		State:         cm.Data["state"],
		StartedAt:     cm.Data["startedAt"],
		Kustomization: cm.Data["kustomization"],
		Installer:     cm.Data["installer"],
	}
	if s := cm.Data["instance"]; s != "" {
		inst, err := fluxinstance.Decode([]byte(s), "ConfigMap/"+cm.Namespace+"/"+cm.Name+" data.instance")
		if err != nil {
			return nil, err
		}
		r.Instance = inst
	}
	if s := cm.Data["helm"]; s != "" {
		r.Helm = &RecordedHelm{}
		if err := json.Unmarshal([]byte(s), r.Helm); err != nil {
			return nil, fmt.Errorf("ConfigMap/%s/%s: data.helm: %w", cm.Namespace, cm.Name, err)
		}
	}
	if s := cm.Data["objects"]; s != "" {
		if err := json.Unmarshal([]byte(s), &r.Objects); err != nil {
			return nil, fmt.Errorf("ConfigMap/%s/%s: data.objects: %w", cm.Namespace, cm.Name, err)
		}
	}
	return r, nil
}

// writeRecord stores the record with server-side apply.
func writeRecord(ctx context.Context, c client.Client, r *Record) error {
	data := map[string]any{"state": r.State, "startedAt": r.StartedAt, "kustomization": r.Kustomization, "installer": r.installer()}
	if r.Instance != nil {
		y, err := InstanceYAML(r.Instance)
		if err != nil {
			return err
		}
		data["instance"] = string(y)
	}
	if r.Helm != nil {
		h, err := json.Marshal(r.Helm)
		if err != nil {
			return err
		}
		data["helm"] = string(h)
	}
	objs, err := json.Marshal(r.Objects)
	if err != nil {
		return err
	}
	data["objects"] = string(objs)
	cm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{
			"name": RecordConfigMap, "namespace": r.Namespace,
			"labels": map[string]any{render.LabelManagedBy: ownership.PluginName, labelRecord: "true"},
		},
		"data": data,
	}}
	if err := c.Patch(ctx, cm, client.Apply, client.ForceOwnership, client.FieldOwner(ownership.PluginFieldManager)); err != nil {
		return fmt.Errorf("ConfigMap/%s/%s: writing the migration record: %w", r.Namespace, RecordConfigMap, err)
	}
	return nil
}

// readRecord returns the record in namespace ns, or nil.
func readRecord(ctx context.Context, c client.Client, ns string) (*Record, error) {
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: RecordConfigMap}, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("ConfigMap/%s/%s: reading the migration record: %w", ns, RecordConfigMap, err)
	}
	return recordFromConfigMap(cm)
}

// installer is the record's Installer, bootstrap's for records that predate the field.
func (r *Record) installer() string {
	if r.Installer == "" {
		return installation.ManagedByBootstrap
	}
	return r.Installer
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }
