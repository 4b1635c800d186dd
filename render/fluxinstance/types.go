// Package fluxinstance holds the Go types of the Flux Operator's FluxInstance API
// (fluxcd.controlplane.io/v1), written from its public API reference, with strict
// decoding, the defaults the operator's CRD and controller apply, and validation.
package fluxinstance

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// Group is the API group of FluxInstance.
	Group = "fluxcd.controlplane.io"
	// Version is the only served API version.
	Version = "v1"
	// APIVersion is Group/Version as written in manifests.
	APIVersion = Group + "/" + Version
	// Kind is the FluxInstance kind.
	Kind = "FluxInstance"
	// RequiredName is the only name the operator accepts for a FluxInstance.
	RequiredName = "flux"
	// DefaultNamespace is used when a FluxInstance does not name its namespace.
	DefaultNamespace = "flux-system"
)

// Component names of a Flux distribution.
const (
	SourceController            = "source-controller"
	KustomizeController         = "kustomize-controller"
	HelmController              = "helm-controller"
	NotificationController      = "notification-controller"
	ImageReflectorController    = "image-reflector-controller"
	ImageAutomationController   = "image-automation-controller"
	SourceWatcher               = "source-watcher"
	DefaultShardingKey          = "sharding.fluxcd.io/key"
	DefaultDomain               = "cluster.local"
	DefaultTenantSA             = "default"
	DefaultSyncInterval         = "1m"
	ClusterTypeKubernetes       = "kubernetes"
	ClusterTypeOpenShift        = "openshift"
	ShardingStorageEphemeral    = "ephemeral"
	ShardingStoragePersistent   = "persistent"
	VariantUpstreamAlpine       = "upstream-alpine"
	VariantEnterpriseAlpine     = "enterprise-alpine"
	VariantEnterpriseDistroless = "enterprise-distroless"
	VariantEnterpriseFIPS       = "enterprise-distroless-fips"
)

// AllComponents lists every component name the API accepts, in the order the
// operator documents them.
var AllComponents = []string{
	SourceController, KustomizeController, HelmController, NotificationController,
	ImageReflectorController, ImageAutomationController, SourceWatcher,
}

// DefaultComponents are installed when spec.components is empty.
var DefaultComponents = []string{SourceController, KustomizeController, HelmController, NotificationController}

// FluxInstance is the Schema for the fluxinstances API.
type FluxInstance struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FluxInstanceSpec   `json:"spec,omitempty"`
	Status FluxInstanceStatus `json:"status,omitempty"`
}

// FluxInstanceSpec defines the desired state of a Flux installation.
type FluxInstanceSpec struct {
	// Distribution selects the Flux version, registry and image variant.
	Distribution Distribution `json:"distribution"`
	// Components lists the Flux controllers to install.
	Components []string `json:"components,omitempty"`
	// Cluster describes the cluster the controllers run in.
	Cluster *Cluster `json:"cluster,omitempty"`
	// Sharding configures per-shard controller copies.
	Sharding *Sharding `json:"sharding,omitempty"`
	// Storage configures a persistent volume for source-controller's artifacts.
	Storage *Storage `json:"storage,omitempty"`
	// Kustomize holds patches applied to the rendered objects, last.
	Kustomize *Kustomize `json:"kustomize,omitempty"`
	// CommonMetadata is added to every rendered object.
	CommonMetadata *CommonMetadata `json:"commonMetadata,omitempty"`
	// Wait makes the operator wait for the applied objects to become ready.
	Wait *bool `json:"wait,omitempty"`
	// MigrateResources makes the operator migrate stored Flux objects to the
	// latest API versions after an upgrade.
	MigrateResources *bool `json:"migrateResources,omitempty"`
	// Sync configures the cluster sync source and Kustomization.
	Sync *Sync `json:"sync,omitempty"`
}

// Distribution specifies the Flux distribution.
type Distribution struct {
	// Version is an exact Flux version or a semver range, e.g. "2.x".
	Version string `json:"version"`
	// Registry is the container registry the controller images are pulled from.
	Registry string `json:"registry"`
	// Variant is the image variant; derived from Registry when empty.
	Variant string `json:"variant,omitempty"`
	// ImagePullSecret names a Secret in the instance namespace used to pull images.
	ImagePullSecret string `json:"imagePullSecret,omitempty"`
	// Artifact is the oci:// URL of the distribution manifests artifact.
	Artifact string `json:"artifact,omitempty"`
	// ArtifactPullSecret names a Secret used to pull Artifact.
	ArtifactPullSecret string `json:"artifactPullSecret,omitempty"`
}

// Cluster describes the target cluster.
type Cluster struct {
	// Type is kubernetes, openshift, aws, azure or gcp.
	Type string `json:"type,omitempty"`
	// Size is a resource profile: small, medium or large.
	Size string `json:"size,omitempty"`
	// Multitenant enables the multi-tenancy lockdown.
	Multitenant bool `json:"multitenant,omitempty"`
	// TenantDefaultServiceAccount is the default service account of tenants' Kustomizations and HelmReleases.
	TenantDefaultServiceAccount string `json:"tenantDefaultServiceAccount,omitempty"`
	// TenantDefaultDecryptionServiceAccount is the default service account used for SOPS decryption.
	TenantDefaultDecryptionServiceAccount string `json:"tenantDefaultDecryptionServiceAccount,omitempty"`
	// TenantDefaultKubeConfigServiceAccount is the default service account used with remote kubeconfigs.
	TenantDefaultKubeConfigServiceAccount string `json:"tenantDefaultKubeConfigServiceAccount,omitempty"`
	// ObjectLevelWorkloadIdentity enables workload identity per Flux object (Flux >= 2.6).
	ObjectLevelWorkloadIdentity bool `json:"objectLevelWorkloadIdentity,omitempty"`
	// MultitenantWorkloadIdentity locks workload identity down to tenants (Flux >= 2.7).
	MultitenantWorkloadIdentity bool `json:"multitenantWorkloadIdentity,omitempty"`
	// NetworkPolicy restricts network access to the controllers; true when omitted.
	NetworkPolicy *bool `json:"networkPolicy,omitempty"`
	// Domain is the cluster DNS domain.
	Domain string `json:"domain,omitempty"`
}

// Sharding configures controller sharding.
type Sharding struct {
	// Key is the label key used to assign objects to shards.
	Key string `json:"key,omitempty"`
	// Shards lists the shard names.
	Shards []string `json:"shards"`
	// Storage is ephemeral or persistent (per-shard PVCs, requires spec.storage).
	Storage string `json:"storage,omitempty"`
}

// Storage configures a PersistentVolumeClaim for source-controller.
type Storage struct {
	// Class is the storage class name.
	Class string `json:"class"`
	// Size is the requested capacity, e.g. 10Gi.
	Size string `json:"size"`
}

// Kustomize holds the user patches.
type Kustomize struct {
	// Patches are strategic merge or JSON6902 patches, applied last.
	Patches []Patch `json:"patches,omitempty"`
}

// Patch is a kustomize patch with an optional target.
type Patch struct {
	// Patch is the content: a strategic merge patch or a JSON6902 list of operations.
	Patch string `json:"patch"`
	// Target selects the objects to patch.
	Target *Selector `json:"target,omitempty"`
}

// Selector selects objects by group, version, kind, name and namespace (regular
// expressions) and by label and annotation selectors.
type Selector struct {
	Group              string `json:"group,omitempty"`
	Version            string `json:"version,omitempty"`
	Kind               string `json:"kind,omitempty"`
	Name               string `json:"name,omitempty"`
	Namespace          string `json:"namespace,omitempty"`
	LabelSelector      string `json:"labelSelector,omitempty"`
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// CommonMetadata is added to every rendered object.
type CommonMetadata struct {
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Sync configures the cluster sync source and Kustomization.
type Sync struct {
	// Kind is GitRepository, OCIRepository or Bucket.
	Kind string `json:"kind"`
	// URL of the source.
	URL string `json:"url"`
	// Ref is a Git ref name (refs/heads/main), an OCI tag or a bucket name.
	Ref string `json:"ref"`
	// Path inside the source of the manifests to apply.
	Path string `json:"path"`
	// PullSecret names the Secret with the source credentials.
	PullSecret string `json:"pullSecret,omitempty"`
	// Provider is generic, aws, azure, gcp or github.
	Provider string `json:"provider,omitempty"`
	// Interval is the source's reconcile interval, e.g. 1m.
	Interval string `json:"interval,omitempty"`
	// Name of the source and Kustomization; the namespace when empty.
	Name string `json:"name,omitempty"`
}

// FluxInstanceStatus is the observed state reported by the operator.
type FluxInstanceStatus struct {
	ObservedGeneration     int64              `json:"observedGeneration,omitempty"`
	Conditions             []metav1.Condition `json:"conditions,omitempty"`
	LastHandledReconcileAt string             `json:"lastHandledReconcileAt,omitempty"`
	LastHandledForceAt     string             `json:"lastHandledForceAt,omitempty"`
	LastAppliedRevision    string             `json:"lastAppliedRevision,omitempty"`
	LastAttemptedRevision  string             `json:"lastAttemptedRevision,omitempty"`
	LastArtifactRevision   string             `json:"lastArtifactRevision,omitempty"`
	Components             []ComponentImage   `json:"components,omitempty"`
	Inventory              *ResourceInventory `json:"inventory,omitempty"`
	History                []Snapshot         `json:"history,omitempty"`
}

// ComponentImage is an installed controller image.
type ComponentImage struct {
	Name       string `json:"name"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest,omitempty"`
}

// ResourceInventory lists the objects applied by the operator.
type ResourceInventory struct {
	Entries []ResourceRef `json:"entries"`
}

// ResourceRef identifies an applied object.
type ResourceRef struct {
	// ID is <namespace>_<name>_<group>_<kind>.
	ID string `json:"id"`
	// Version is the object's API version.
	Version string `json:"v"`
}

// Snapshot is one entry of the reconcile history.
type Snapshot struct {
	Digest                 string            `json:"digest"`
	FirstReconciled        metav1.Time       `json:"firstReconciled"`
	LastReconciled         metav1.Time       `json:"lastReconciled"`
	LastReconciledDuration metav1.Duration   `json:"lastReconciledDuration"`
	LastReconciledStatus   string            `json:"lastReconciledStatus"`
	TotalReconciliations   int64             `json:"totalReconciliations"`
	Metadata               map[string]string `json:"metadata,omitempty"`
}

// GetCluster returns spec.cluster, never nil (an empty Cluster when unset).
func (in *FluxInstance) GetCluster() Cluster {
	if in == nil || in.Spec.Cluster == nil {
		return Cluster{}
	}
	return *in.Spec.Cluster
}

// NetworkPolicyEnabled reports whether NetworkPolicies are rendered; true unless
// spec.cluster.networkPolicy is explicitly false.
func (in *FluxInstance) NetworkPolicyEnabled() bool {
	c := in.GetCluster()
	return c.NetworkPolicy == nil || *c.NetworkPolicy
}
