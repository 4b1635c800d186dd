package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Who manages a Flux installation, as reported by `version` and `status`.
const (
	ManagedByBootstrap   = "flux bootstrap"
	ManagedByOperator    = "flux-operator"
	ManagedByHelm        = "Helm"
	ManagedByPlugin      = "kubectl-fluxinstance"
	ManagedByFluxInstall = "flux install"
)

// Labels and field managers that tell installers apart. They are facts of Flux, the Flux CLI,
// Helm and the Flux Operator.
const (
	// FluxDetectionCRD is the CRD every Flux installation has; the Flux CLI reads the version from it too.
	FluxDetectionCRD = "gitrepositories.source.toolkit.fluxcd.io"

	LabelVersion        = "app.kubernetes.io/version"
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	LabelKustomizeName  = "kustomize.toolkit.fluxcd.io/name"
	LabelKustomizeNS    = "kustomize.toolkit.fluxcd.io/namespace"
	ManagedByValueOp    = "flux-operator"
	ManagedByValueHelm  = "Helm"
	DefaultFieldManager = "kubectl-fluxinstance"
)

// Installation says whether Flux is installed and by what.
type Installation struct {
	Installed bool   `json:"installed"`
	Version   string `json:"version,omitempty"`
	ManagedBy string `json:"managedBy,omitempty"`
	// Namespace is where the installation's controllers run, when the CRD says so
	// (kustomize-controller's and the operator's owner labels).
	Namespace string `json:"namespace,omitempty"`
}

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// DetectInstallation reads the metadata of the GitRepository CRD, the way the Flux CLI does, and
// classifies who manages Flux. It needs only `get` on that one CRD.
func DetectInstallation(ctx context.Context, c client.Reader) (Installation, error) {
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(crdGVK)
	if err := c.Get(ctx, client.ObjectKey{Name: FluxDetectionCRD}, crd); err != nil {
		if apierrors.IsNotFound(err) {
			return Installation{}, nil
		}
		return Installation{}, fmt.Errorf("reading CustomResourceDefinition %s: %w", FluxDetectionCRD, err)
	}
	inst := ClassifyInstallation(crd)
	// The plugin's inventory record names the field manager it applied with, so an install
	// applied with a custom --field-manager is still told apart from the operator's.
	if inst.ManagedBy == ManagedByOperator && inst.Namespace != "" {
		cm := &corev1.ConfigMap{}
		err := c.Get(ctx, client.ObjectKey{Namespace: inst.Namespace, Name: InventoryConfigMap}, cm)
		if fm := cm.Data[keyFieldManager]; err == nil && fm != "" && ownedByManager(crd, fm) && !ownedByManager(crd, ManagedByValueOp) {
			inst.ManagedBy = ManagedByPlugin
		}
	}
	return inst, nil
}

// ClassifyInstallation decides from the CRD's labels and field managers. Order matters: a
// bootstrapped cluster also says managed-by nothing, and an instance applied by this plugin carries
// the operator's managed-by label (renderings are the operator's, byte for byte), so the field
// manager that owns it is what tells the two apart.
func ClassifyInstallation(crd metav1.Object) Installation {
	labels := crd.GetLabels()
	inst := Installation{Installed: true, Version: labels[LabelVersion]}
	switch {
	case labels[LabelKustomizeName] != "":
		inst.ManagedBy = ManagedByBootstrap
		inst.Namespace = labels[LabelKustomizeNS]
	case labels[LabelManagedBy] == ManagedByValueOp:
		inst.ManagedBy = ManagedByOperator
		if ownedByManager(crd, DefaultFieldManager) && !ownedByManager(crd, ManagedByValueOp) {
			inst.ManagedBy = ManagedByPlugin
		}
		inst.Namespace = labels["fluxcd.controlplane.io/namespace"]
	case labels[LabelManagedBy] == ManagedByValueHelm:
		inst.ManagedBy = ManagedByHelm
	default:
		inst.ManagedBy = ManagedByFluxInstall
		inst.Namespace = labels["app.kubernetes.io/instance"]
	}
	return inst
}

func ownedByManager(obj metav1.Object, manager string) bool {
	for _, f := range obj.GetManagedFields() {
		if f.Manager == manager && f.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}
