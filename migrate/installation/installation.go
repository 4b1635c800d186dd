// Package installation tells whether Flux is installed and by what (`flux bootstrap`, `flux install`,
// Helm, the Flux Operator or this plugin), from as little as one CRD: what `version` and `status`
// report, and where detection of further installers belongs.
package installation

import (
	"context"
	"fmt"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Who manages a Flux installation, as reported by `version` and `status`.
const (
	ManagedByBootstrap   = "flux bootstrap"
	ManagedByOperator    = ownership.OperatorFieldManager
	ManagedByHelm        = "Helm"
	ManagedByPlugin      = ownership.PluginName
	ManagedByFluxInstall = "flux install"
)

// FluxDetectionCRD is the CRD every Flux installation has; the Flux CLI reads the version from it
// too.
const FluxDetectionCRD = "gitrepositories.source.toolkit.fluxcd.io"

// Installation says whether Flux is installed and by what.
type Installation struct {
	Installed bool   `json:"installed"`
	Version   string `json:"version,omitempty"`
	ManagedBy string `json:"managedBy,omitempty"`
	// Namespace is where the installation's controllers run, when the CRD says so
	// (kustomize-controller's and the operator's owner labels).
	Namespace string `json:"namespace,omitempty"`
	// Helm is the Helm release that installed Flux, when the CRD names one (helm.go).
	Helm *HelmRelease `json:"helm,omitempty"`
}

// DetectInstallation reads the metadata of the GitRepository CRD, the way the Flux CLI does, and
// classifies who manages Flux. It needs only `get` on that one CRD.
func DetectInstallation(ctx context.Context, c client.Reader) (Installation, error) {
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(kube.CRDGVK)
	err := c.Get(ctx, client.ObjectKey{Name: FluxDetectionCRD}, crd)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return Installation{}, nil
		}
		return Installation{}, fmt.Errorf("reading CustomResourceDefinition %s: %w", FluxDetectionCRD, err)
	}
	inst := ClassifyInstallation(crd)
	if inst.ManagedBy == ManagedByHelm {
		if inst.Helm, err = DetectHelm(ctx, c, crd); err != nil {
			return Installation{}, err
		}
	}
	// The plugin's inventory record names the field manager it applied with, so an install
	// applied with a custom --field-manager is still told apart from the operator's.
	if inst.ManagedBy == ManagedByOperator && inst.Namespace != "" {
		cm := &corev1.ConfigMap{}
		err := c.Get(ctx, client.ObjectKey{Namespace: inst.Namespace, Name: inventory.ConfigMapName}, cm)
		if fm := inventory.RecordedFieldManager(cm); err == nil && fm != "" && ownedByManager(crd, fm) && !ownedByManager(crd, ownership.OperatorFieldManager) {
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
	inst := Installation{Installed: true, Version: labels[render.LabelVersion]}
	switch {
	case labels[ownership.LabelKustomizeName] != "":
		inst.ManagedBy = ManagedByBootstrap
		inst.Namespace = labels[ownership.LabelKustomizeNamespace]
	case labels[render.LabelManagedBy] == render.ManagedByValue:
		inst.ManagedBy = ManagedByOperator
		if ownedByManager(crd, ownership.PluginFieldManager) && !ownedByManager(crd, ownership.OperatorFieldManager) {
			inst.ManagedBy = ManagedByPlugin
		}
		inst.Namespace = labels[render.LabelOwnerNamespace]
	case labels[render.LabelManagedBy] == ownership.ManagedByHelmValue:
		inst.ManagedBy = ManagedByHelm
		// The chart installs the controllers in the release's namespace.
		inst.Namespace = crd.GetAnnotations()[ownership.AnnotationHelmReleaseNamespace]
	default:
		inst.ManagedBy = ManagedByFluxInstall
		inst.Namespace = labels[render.LabelInstance]
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
