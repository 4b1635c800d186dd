package render

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/blang/semver/v4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// plan holds what Build derives once from the instance and the release.
type plan struct {
	inst       *fluxinstance.FluxInstance
	ns         string
	version    string // vX.Y.Z
	semver     semver.Version
	components []string
	has        map[string]bool
	cluster    fluxinstance.Cluster
	domain     string
	registry   string
	images     map[string]imageRef // component name -> tag/digest from the variant's list
	sharding   *fluxinstance.Sharding
	shardable  []string // the controllers copied per shard in this version
	// ids records, per object, what kustomize would know about it when the
	// user's patches run (see patchIDs); objects not listed are matched by
	// their name and namespace as they are.
	ids map[*unstructured.Unstructured]patchID
}

type imageRef struct {
	Tag    string
	Digest string
}

var (
	v260 = semver.MustParse("2.6.0")
	v270 = semver.MustParse("2.7.0")
	v290 = semver.MustParse("2.9.0")
)

// shardableFor returns the controllers the operator copies per shard: from
// Flux 2.9 source-watcher too (before, its manifests are the same but the
// operator leaves it unsharded).
func shardableFor(v semver.Version) []string {
	out := []string{
		fluxinstance.SourceController, fluxinstance.KustomizeController, fluxinstance.HelmController,
		fluxinstance.ImageReflectorController, fluxinstance.ImageAutomationController,
	}
	if !v.LT(v290) {
		out = append(out, fluxinstance.SourceWatcher)
	}
	return out
}

// storageServers are the controllers that serve artifacts over a Service of
// their own name; their shards get a Service and an advertised address each.
var storageServers = []string{fluxinstance.SourceController, fluxinstance.SourceWatcher}

// Build renders inst against rel: the objects the Flux Operator would apply,
// sorted the operator's way (see SortObjects). inst must already be defaulted
// (Default) and validated (Validate, ValidateForVersion); Build re-checks what
// it relies on and returns errors instead of panicking on anything else.
//
// Differences from the reference CLI (flux-operator build instance), where
// Build follows the operator: images are pinned by digest from the variant's
// image list; distribution.variant and sharding.storage are honoured; a
// cluster block without networkPolicy renders NetworkPolicies.
//
// warn receives what renders, as the operator renders it, but is likely not what the instance
// means (a patch whose target selects no object); nil drops it.
func Build(inst *fluxinstance.FluxInstance, rel *distribution.Release, warn func(string)) ([]*unstructured.Unstructured, error) {
	if warn == nil {
		warn = func(string) {}
	}
	if inst == nil {
		return nil, errors.New("no FluxInstance to render")
	}
	if rel == nil {
		return nil, errors.New("no distribution release to render from")
	}
	p, err := newPlan(inst, rel)
	if err != nil {
		return nil, err
	}
	objs, rbacNames, err := p.distributionObjects(rel)
	if err != nil {
		return nil, err
	}
	p.placeInInstance(objs, rbacNames)
	objs = p.addShards(objs)
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			if err := p.configureDeployment(o); err != nil {
				return nil, err
			}
		}
	}

	objs = append(objs, p.namespaceObject())
	objs = append(objs, p.storageObjects()...)
	syncObjs, err := p.syncObjects()
	if err != nil {
		return nil, err
	}
	objs = append(objs, syncObjs...)

	// User patches run before the operator's labels and annotations are set:
	// selectors see the objects without them, and a patch cannot change them.
	if k := inst.Spec.Kustomize; k != nil && len(k.Patches) > 0 {
		images := containerImages(objs)
		objs, err = applyPatches(objs, k.Patches, p.ids, warn)
		if err != nil {
			return nil, err
		}
		warnPinnedImages(images, objs, p.version, warn)
	}
	for _, o := range objs {
		p.setMetadata(o)
	}
	SortObjects(objs)
	return objs, nil
}

// distributionObjects parses the distribution files the instance installs:
// one per component, rbac.yaml, and policies.yaml when NetworkPolicies are
// on. rbacNames holds the "kind/name" of the objects of rbac.yaml, the
// cluster-wide ones placeInInstance renames per instance.
func (p *plan) distributionObjects(rel *distribution.Release) (objs []*unstructured.Unstructured, rbacNames map[string]bool, err error) {
	for _, c := range p.components {
		file := c + ".yaml"
		data, ok := rel.Manifests[file]
		if !ok {
			return nil, nil, fmt.Errorf("spec.components: component %q is not part of Flux %s (the distribution has no flux/%s/%s); remove it or pick another version",
				c, p.version, p.version, file)
		}
		parsed, err := p.parseFile(file, data)
		if err != nil {
			return nil, nil, err
		}
		objs = append(objs, parsed...)
	}
	rbac, ok := rel.Manifests["rbac.yaml"]
	if !ok {
		return nil, nil, fmt.Errorf("distribution: flux/%s/rbac.yaml is missing", p.version)
	}
	parsed, err := p.parseFile("rbac.yaml", rbac)
	if err != nil {
		return nil, nil, err
	}
	rbacNames = map[string]bool{}
	for _, o := range parsed {
		rbacNames[o.GetKind()+"/"+o.GetName()] = true
	}
	objs = append(objs, parsed...)
	if p.inst.NetworkPolicyEnabled() {
		pol, ok := rel.Manifests["policies.yaml"]
		if !ok {
			return nil, nil, fmt.Errorf("distribution: flux/%s/policies.yaml is missing (needed because spec.cluster.networkPolicy is true)", p.version)
		}
		parsed, err := p.parseFile("policies.yaml", pol)
		if err != nil {
			return nil, nil, err
		}
		objs = append(objs, parsed...)
	}
	return objs, rbacNames, nil
}

// parseFile parses a file of the release, named in errors by its path in
// the distribution.
func (p *plan) parseFile(file string, data []byte) ([]*unstructured.Unstructured, error) {
	return parseManifests("flux/"+p.version+"/"+file, data)
}

// placeInInstance moves the distribution's objects into the instance: the
// namespaced ones into its namespace, the cluster-wide RBAC objects renamed
// with the namespace as suffix so that several instances (in different
// namespaces) do not collide, the bindings following them; it records what
// kustomize knows of each object for the user's patches (see patchID).
func (p *plan) placeInInstance(objs []*unstructured.Unstructured, rbacNames map[string]bool) {
	for _, o := range objs {
		// The distribution's objects have no namespace: kustomize knows them
		// by their upstream name in the default namespace; the renamed RBAC
		// objects also by their new name in the instance namespace.
		id := patchID{orgName: o.GetName(), orgNS: o.GetNamespace(), curNS: o.GetNamespace()}
		if rbacNames[o.GetKind()+"/"+o.GetName()] {
			o.SetName(o.GetName() + "-" + p.ns)
			id.curNS = p.ns
		}
		p.ids[o] = id
		if !clusterScoped(o.GetKind()) {
			o.SetNamespace(p.ns)
		}
		switch o.GetKind() {
		case "ClusterRoleBinding", "RoleBinding":
			fixBinding(o, p.ns, rbacNames)
		case "ClusterRole":
			if o.GetName() == "crd-controller-"+p.ns {
				p.fixCRDControllerRole(o)
			}
		case "CustomResourceDefinition":
			switch o.GetName() {
			case "alerts.notification.toolkit.fluxcd.io", "receivers.notification.toolkit.fluxcd.io":
				extendKindEnums(o.Object)
			}
		}
	}
}

func newPlan(inst *fluxinstance.FluxInstance, rel *distribution.Release) (*plan, error) {
	v, err := fluxinstance.ParseVersion(rel.Version)
	if err != nil {
		return nil, fmt.Errorf("distribution: release version %q is not a semantic version: %w", rel.Version, err)
	}
	p := &plan{
		inst:      inst,
		ns:        inst.Namespace,
		version:   "v" + v.String(),
		semver:    v,
		cluster:   inst.GetCluster(),
		sharding:  inst.Spec.Sharding,
		shardable: shardableFor(v),
		ids:       map[*unstructured.Unstructured]patchID{},
	}
	if p.ns == "" {
		p.ns = fluxinstance.DefaultNamespace
	}
	p.domain = p.cluster.Domain
	if p.domain == "" {
		p.domain = fluxinstance.DefaultDomain
	}
	p.components = inst.Spec.Components
	if len(p.components) == 0 {
		p.components = fluxinstance.DefaultComponents
	}
	p.has = map[string]bool{}
	for _, c := range p.components {
		if !slices.Contains(fluxinstance.AllComponents, c) {
			return nil, fmt.Errorf("spec.components: unknown component %q, must be one of: %s", c, strings.Join(fluxinstance.AllComponents, ", "))
		}
		if p.has[c] {
			return nil, fmt.Errorf("spec.components: component %q is listed more than once", c)
		}
		p.has[c] = true
	}
	p.registry = strings.TrimSuffix(strings.TrimSpace(inst.Spec.Distribution.Registry), "/")
	if p.registry == "" {
		return nil, errors.New("spec.distribution.registry: required")
	}
	if sh := p.sharding; sh != nil {
		if sh.Key == "" {
			return nil, errors.New("spec.sharding.key: empty (call Default before Build)")
		}
		seen := map[string]bool{}
		for i, s := range sh.Shards {
			if s == "" || seen[s] {
				return nil, fmt.Errorf("spec.sharding.shards[%d]: empty or duplicate shard %q", i, s)
			}
			seen[s] = true
		}
		if sh.Storage == fluxinstance.ShardingStoragePersistent && inst.Spec.Storage == nil {
			return nil, errors.New("spec.sharding.storage: persistent sharding storage requires spec.storage")
		}
	}
	variant := inst.Spec.Distribution.Variant
	if variant == "" {
		variant = fluxinstance.VariantForRegistry(p.registry)
	}
	if list, ok := rel.Images[variant]; ok && variant != "" {
		p.images, err = parseImageList(list)
		if err != nil {
			return nil, fmt.Errorf("distribution: flux-images/%s/%s.yaml: %w", p.version, variant, err)
		}
	}
	return p, nil
}

// parseImageList reads a kustomize images list and indexes it by component
// (the last path segment of the image name).
func parseImageList(data []byte) (map[string]imageRef, error) {
	var list struct {
		Images []struct {
			Name   string `json:"name"`
			NewTag string `json:"newTag"`
			Digest string `json:"digest"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal(data, &list); err != nil {
		return nil, err
	}
	out := make(map[string]imageRef, len(list.Images))
	for _, im := range list.Images {
		name := im.Name[strings.LastIndexByte(im.Name, '/')+1:]
		out[name] = imageRef{Tag: im.NewTag, Digest: im.Digest}
	}
	return out, nil
}

func clusterScoped(kind string) bool {
	switch kind {
	case "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace", "PriorityClass",
		"StorageClass", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService":
		return true
	}
	return false
}

// fixBinding points ServiceAccount subjects at the instance namespace and
// follows the renamed ClusterRoles.
func fixBinding(o *unstructured.Unstructured, ns string, renamed map[string]bool) {
	if ref, ok := o.Object["roleRef"].(map[string]interface{}); ok {
		kind, _ := ref["kind"].(string)
		name, _ := ref["name"].(string)
		if renamed[kind+"/"+name] {
			ref["name"] = name + "-" + ns
		}
	}
	subjects, _ := o.Object["subjects"].([]interface{})
	for _, s := range subjects {
		if m, ok := s.(map[string]interface{}); ok && m["kind"] == "ServiceAccount" {
			m["namespace"] = ns
		}
	}
}

// fixCRDControllerRole drops the token-request permission unless object-level
// workload identity is on, and, when notification-controller is installed,
// lets the controllers manage the operator's own API group (its Alerts and
// Receivers may reference the operator's kinds), both as the operator does.
func (p *plan) fixCRDControllerRole(o *unstructured.Unstructured) {
	rules, _ := o.Object["rules"].([]interface{})
	out := make([]interface{}, 0, len(rules)+1)
	for _, r := range rules {
		if !p.cluster.ObjectLevelWorkloadIdentity {
			if m, ok := r.(map[string]interface{}); ok {
				if res, ok := m["resources"].([]interface{}); ok && len(res) == 1 && res[0] == "serviceaccounts/token" {
					continue
				}
			}
		}
		out = append(out, r)
	}
	if p.has[fluxinstance.NotificationController] {
		out = append(out, map[string]interface{}{
			"apiGroups": []interface{}{fluxinstance.Group},
			"resources": []interface{}{"*"},
			"verbs":     []interface{}{"*"},
		})
	}
	o.Object["rules"] = out
}

func (p *plan) namespaceObject() *unstructured.Unstructured {
	labels := map[string]interface{}{}
	if p.cluster.Type != fluxinstance.ClusterTypeOpenShift {
		labels["pod-security.kubernetes.io/warn"] = "restricted"
		labels["pod-security.kubernetes.io/warn-version"] = "latest"
	}
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "v1",
		"kind":       "Namespace",
		"metadata": map[string]interface{}{
			"name":        p.ns,
			"labels":      labels,
			"annotations": map[string]interface{}{AnnotationOperatorPrune: PruneDisabledOperator},
		},
	}}
}

func pvc(name, ns string, st *fluxinstance.Storage) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "v1",
		"kind":       "PersistentVolumeClaim",
		"metadata":   map[string]interface{}{"name": name, "namespace": ns},
		"spec": map[string]interface{}{
			"accessModes":      []interface{}{"ReadWriteOnce"},
			"resources":        map[string]interface{}{"requests": map[string]interface{}{"storage": st.Size}},
			"storageClassName": st.Class,
		},
	}}
}

// storageObjects renders the source-controller PVC, and one per shard when
// sharding.storage is persistent. Like the shard copies of the Deployments,
// a shard's PVC carries the shard role annotation and is known to patch
// targets by the original's name too (the operator renders it in the shard's
// kustomization, with a name suffix).
func (p *plan) storageObjects() []*unstructured.Unstructured {
	st := p.inst.Spec.Storage
	if st == nil || !p.has[fluxinstance.SourceController] {
		return nil
	}
	// Patch targets see it without namespace, like the distribution's objects.
	main := pvc(fluxinstance.SourceController, p.ns, st)
	p.ids[main] = patchID{orgName: fluxinstance.SourceController}
	out := []*unstructured.Unstructured{main}
	if p.persistentShards() {
		for _, s := range p.sharding.Shards {
			c := pvc(fluxinstance.SourceController+"-"+s, p.ns, st)
			setAnnotation(c, AnnotationShardRole, ShardRoleValue)
			p.ids[c] = patchID{orgName: fluxinstance.SourceController, curNS: p.ns}
			out = append(out, c)
		}
	}
	return out
}

func (p *plan) persistentShards() bool {
	return p.sharding != nil && p.sharding.Storage == fluxinstance.ShardingStoragePersistent && p.inst.Spec.Storage != nil
}

// setMetadata adds commonMetadata, then the operator's labels and annotations
// (which win over commonMetadata: they are the ownership contract).
func (p *plan) setMetadata(o *unstructured.Unstructured) {
	labels := o.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	annotations := o.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	if cm := p.inst.Spec.CommonMetadata; cm != nil {
		maps.Copy(labels, cm.Labels)
		maps.Copy(annotations, cm.Annotations)
	}
	labels[LabelManagedBy] = ManagedByValue
	labels[LabelInstance] = p.ns
	labels[LabelVersion] = p.version
	labels[LabelPartOf] = PartOfValue
	owner := p.inst.Name
	if owner == "" {
		owner = fluxinstance.RequiredName
	}
	labels[LabelOwnerName] = owner
	labels[LabelOwnerNamespace] = p.ns
	annotations[AnnotationKustomizeSSA] = SSAIgnore
	annotations[AnnotationKustomizePrune] = PruneDisabledKustomize
	o.SetLabels(labels)
	o.SetAnnotations(annotations)
}

// syncObjects renders the sync source and Kustomization.
func (p *plan) syncObjects() ([]*unstructured.Unstructured, error) {
	sy := p.inst.Spec.Sync
	if sy == nil {
		return nil, nil
	}
	name := sy.Name
	if name == "" {
		name = p.ns
	}
	intervalStr := sy.Interval
	if intervalStr == "" {
		intervalStr = fluxinstance.DefaultSyncInterval
	}
	interval, err := time.ParseDuration(intervalStr)
	if err != nil {
		return nil, fmt.Errorf("spec.sync.interval: %q is not a duration: %w", sy.Interval, err)
	}
	spec := map[string]interface{}{"interval": interval.String()}
	apiVersion := "source.toolkit.fluxcd.io/v1"
	switch sy.Kind {
	case "GitRepository":
		spec["url"] = sy.URL
		spec["ref"] = map[string]interface{}{"name": sy.Ref}
	case "OCIRepository":
		spec["url"] = sy.URL
		spec["ref"] = map[string]interface{}{"tag": sy.Ref}
		if p.semver.LT(v260) {
			apiVersion = "source.toolkit.fluxcd.io/v1beta2"
		}
	case "Bucket":
		spec["endpoint"] = sy.URL
		spec["bucketName"] = sy.Ref
		if p.semver.LT(v260) {
			apiVersion = "source.toolkit.fluxcd.io/v1beta2"
		}
	default:
		return nil, fmt.Errorf("spec.sync.kind: unsupported kind %q, must be one of: %s", sy.Kind, strings.Join(fluxinstance.SyncKinds, ", "))
	}
	if sy.Provider != "" {
		spec["provider"] = sy.Provider
	}
	if sy.PullSecret != "" {
		spec["secretRef"] = map[string]interface{}{"name": sy.PullSecret}
	}
	source := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": apiVersion,
		"kind":       sy.Kind,
		"metadata":   map[string]interface{}{"name": name, "namespace": p.ns},
		"spec":       spec,
	}}
	ksSpec := map[string]interface{}{
		"interval":  (10 * time.Minute).String(),
		"path":      sy.Path,
		"prune":     true,
		"sourceRef": map[string]interface{}{"kind": sy.Kind, "name": name},
	}
	if p.cluster.Multitenant {
		// Under lockdown the sync Kustomization runs with the controller's
		// own identity, the only one allowed cluster-wide.
		ksSpec["serviceAccountName"] = fluxinstance.KustomizeController
	}
	ks := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1",
		"kind":       "Kustomization",
		"metadata":   map[string]interface{}{"name": name, "namespace": p.ns},
		"spec":       ksSpec,
	}}
	return []*unstructured.Unstructured{source, ks}, nil
}

// operatorEventKinds are the operator's kinds that Alerts and Receivers may
// reference; the operator adds them to the notification CRDs' kind enums.
var operatorEventKinds = []string{"FluxInstance", "ResourceSet", "ResourceSetInputProvider"}

// extendKindEnums appends operatorEventKinds to every enum of Flux kinds (the
// ones listing OCIRepository) in a CRD schema.
func extendKindEnums(v interface{}) {
	switch t := v.(type) {
	case map[string]interface{}:
		if enum, ok := t["enum"].([]interface{}); ok && slices.Contains(enum, interface{}("OCIRepository")) {
			for _, k := range operatorEventKinds {
				if !slices.Contains(enum, interface{}(k)) {
					enum = append(enum, k)
				}
			}
			t["enum"] = enum
		}
		for _, x := range t {
			extendKindEnums(x)
		}
	case []interface{}:
		for _, x := range t {
			extendKindEnums(x)
		}
	}
}
