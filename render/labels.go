package render

// Labels and annotations the operator puts on what it applies. apply and
// migrate use them to recognise and take over objects.
const (
	// LabelManagedBy is app.kubernetes.io/managed-by, set to ManagedByValue.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on rendered objects.
	ManagedByValue = "flux-operator"
	// LabelInstance is app.kubernetes.io/instance, set to the instance namespace.
	LabelInstance = "app.kubernetes.io/instance"
	// LabelVersion is app.kubernetes.io/version, set to the Flux version (vX.Y.Z).
	LabelVersion = "app.kubernetes.io/version"
	// LabelPartOf is app.kubernetes.io/part-of, set to PartOfValue.
	LabelPartOf = "app.kubernetes.io/part-of"
	// PartOfValue is the value of LabelPartOf.
	PartOfValue = "flux"
	// LabelComponent is app.kubernetes.io/component, kept from the upstream manifests.
	LabelComponent = "app.kubernetes.io/component"
	// LabelOwnerName is the owner label naming the FluxInstance.
	LabelOwnerName = "fluxcd.controlplane.io/name"
	// LabelOwnerNamespace is the owner label naming the FluxInstance namespace.
	LabelOwnerNamespace = "fluxcd.controlplane.io/namespace"

	// AnnotationKustomizeSSA makes kustomize-controller skip an object whose
	// in-cluster copy carries it with value SSAIgnore.
	AnnotationKustomizeSSA = "kustomize.toolkit.fluxcd.io/ssa"
	// SSAIgnore is the value of AnnotationKustomizeSSA.
	SSAIgnore = "Ignore"
	// AnnotationKustomizePrune stops kustomize-controller's garbage collection
	// when set to PruneDisabledKustomize.
	AnnotationKustomizePrune = "kustomize.toolkit.fluxcd.io/prune"
	// PruneDisabledKustomize is the value of AnnotationKustomizePrune.
	PruneDisabledKustomize = "Disabled"
	// AnnotationOperatorPrune stops the operator's garbage collection when set
	// to PruneDisabledOperator (rendered on the Namespace).
	AnnotationOperatorPrune = "fluxcd.controlplane.io/prune"
	// PruneDisabledOperator is the value of AnnotationOperatorPrune.
	PruneDisabledOperator = "disabled"
	// AnnotationProfile names the size profile on Deployments.
	AnnotationProfile = "fluxcd.controlplane.io/profile"
	// AnnotationShardRole marks shard Deployments and Services.
	AnnotationShardRole = "sharding.fluxcd.io/role"
	// ShardRoleValue is the value of AnnotationShardRole.
	ShardRoleValue = "shard"
	// AnnotationSafeToEvict is set to "true" on every pod template.
	AnnotationSafeToEvict = "cluster-autoscaler.kubernetes.io/safe-to-evict"
)

// OwnerLabels returns the labels that identify objects owned by the
// FluxInstance "flux" in namespace ns.
func OwnerLabels(ns string) map[string]string {
	return map[string]string{LabelOwnerName: "flux", LabelOwnerNamespace: ns}
}
