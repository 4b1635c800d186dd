package render

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// Internal bookkeeping annotations, removed before Build returns.
const (
	internalComponent = "render.fluxinstance.internal/component"
	internalShard     = "render.fluxinstance.internal/shard"
)

// profile is a size profile of the operator.
type profile struct {
	// resources per component; components not listed keep theirs.
	resources map[string]map[string]interface{}
	// args appended per component.
	args map[string][]string
}

func res(cpuLimit, memLimit, cpuReq, memReq string) map[string]interface{} {
	return map[string]interface{}{
		"limits":   map[string]interface{}{"cpu": cpuLimit, "memory": memLimit},
		"requests": map[string]interface{}{"cpu": cpuReq, "memory": memReq},
	}
}

var helmCache = []string{"--helm-cache-ttl=720m", "--helm-cache-purge-interval=60m"}

// profileFor returns the size profile (small, medium, large) as the operator
// renders it; "" has no profile.
func profileFor(size string) *profile {
	switch size {
	case "small":
		// Small caps every controller, including the optional ones.
		r := res("1000m", "512Mi", "100m", "64Mi")
		all := map[string]map[string]interface{}{}
		for _, c := range fluxinstance.AllComponents {
			all[c] = r
		}
		return &profile{resources: all, args: map[string][]string{
			fluxinstance.KustomizeController: {"--concurrent=5", "--requeue-dependency=10s"},
			fluxinstance.HelmController:      {"--concurrent=5", "--requeue-dependency=10s"},
			fluxinstance.SourceController:    append([]string{"--helm-cache-max-size=10"}, helmCache...),
		}}
	case "medium":
		r := res("2000m", "1Gi", "100m", "128Mi")
		return &profile{
			resources: map[string]map[string]interface{}{
				fluxinstance.KustomizeController: r, fluxinstance.HelmController: r, fluxinstance.SourceController: r,
			},
			args: map[string][]string{
				fluxinstance.KustomizeController: {"--concurrent=10", "--requeue-dependency=5s"},
				fluxinstance.HelmController:      {"--concurrent=10", "--requeue-dependency=5s"},
				fluxinstance.SourceController:    append(append([]string{"--helm-cache-max-size=50"}, helmCache...), "--concurrent=5"),
			},
		}
	case "large":
		r := res("3000m", "3Gi", "100m", "256Mi")
		return &profile{
			resources: map[string]map[string]interface{}{
				fluxinstance.KustomizeController: r, fluxinstance.HelmController: r,
				fluxinstance.SourceController: res("2000m", "2Gi", "100m", "256Mi"),
			},
			args: map[string][]string{
				fluxinstance.KustomizeController: {"--concurrent=20", "--requeue-dependency=5s"},
				fluxinstance.HelmController:      {"--concurrent=20", "--requeue-dependency=5s"},
				fluxinstance.SourceController:    append(append([]string{"--helm-cache-max-size=100"}, helmCache...), "--concurrent=10"),
			},
		}
	}
	return nil
}

// addShards copies the shardable controllers' Deployments (and the Services
// of the storage servers) once per shard, and tags every Deployment with its
// component and shard for configureDeployment. kustomize still knows a copy
// by the original's name (so a patch target naming the controller selects
// its shards too), and by its own name in the instance namespace.
func (p *plan) addShards(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			setAnnotation(o, internalComponent, o.GetName())
		}
	}
	if p.sharding == nil || len(p.sharding.Shards) == 0 {
		return objs
	}
	out := objs
	for _, o := range objs {
		kind, name := o.GetKind(), o.GetName()
		deploy := kind == "Deployment" && slices.Contains(p.shardable, name)
		service := kind == "Service" && slices.Contains(storageServers, name) && slices.Contains(p.shardable, name)
		if !deploy && !service {
			continue
		}
		for _, s := range p.sharding.Shards {
			c := o.DeepCopy()
			shardName := name + "-" + s
			c.SetName(shardName)
			setAnnotation(c, AnnotationShardRole, ShardRoleValue)
			if deploy {
				setAnnotation(c, internalShard, s)
				_ = unstructured.SetNestedField(c.Object, shardName, "spec", "selector", "matchLabels", "app")
				_ = unstructured.SetNestedField(c.Object, shardName, "spec", "template", "metadata", "labels", "app")
				_ = unstructured.SetNestedField(c.Object, ShardRoleValue, "spec", "template", "metadata", "annotations", AnnotationShardRole)
			} else {
				_ = unstructured.SetNestedField(c.Object, shardName, "spec", "selector", "app")
			}
			id, ok := p.ids[o]
			if !ok {
				id = patchID{orgName: name}
			}
			id.curNS = p.ns
			p.ids[c] = id
			out = append(out, c)
		}
	}
	return out
}

func setAnnotation(o *unstructured.Unstructured, k, v string) {
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[k] = v
	o.SetAnnotations(a)
}

// configureDeployment applies everything the operator sets on a controller
// Deployment, in the operator's order: the order of the steps that append
// arguments decides the order of the manager's args.
func (p *plan) configureDeployment(o *unstructured.Unstructured) error {
	component, shard := takeInternalAnnotations(o)
	podSpec, manager, err := podSpecAndManager(o)
	if err != nil {
		return err
	}
	args := p.rewriteArgs(stringSlice(manager["args"]), component)
	args = append(args, p.shardArgs(component, shard)...)
	if pr := profileFor(p.cluster.Size); pr != nil {
		setAnnotation(o, AnnotationProfile, p.cluster.Size)
		if r, ok := pr.resources[component]; ok {
			manager["resources"] = runtime.DeepCopyJSON(r)
		}
		args = append(args, pr.args[component]...)
	}
	args = append(args, p.multitenancyArgs(component)...)
	args = append(args, p.featureGateArgs(component)...)
	args = append(args, p.tenantIdentityArgs(component)...)
	manager["args"] = toInterfaces(args)

	p.rewriteImages(podSpec)
	p.configurePodTemplate(o, podSpec)
	if p.cluster.Type == fluxinstance.ClusterTypeOpenShift {
		relaxSecurityContexts(podSpec)
	}
	if component == fluxinstance.SourceController && p.inst.Spec.Storage != nil {
		return p.mountPersistentStorage(o, podSpec, manager, shard)
	}
	return nil
}

// takeInternalAnnotations removes addShards' bookkeeping annotations from o
// (they must not reach the output) and returns the component and shard they
// recorded.
func takeInternalAnnotations(o *unstructured.Unstructured) (component, shard string) {
	ann := o.GetAnnotations()
	component, shard = ann[internalComponent], ann[internalShard]
	delete(ann, internalComponent)
	delete(ann, internalShard)
	if len(ann) == 0 {
		ann = nil
	}
	o.SetAnnotations(ann)
	return component, shard
}

// podSpecAndManager returns the live pod spec of a Deployment and its
// manager container: the one named "manager", else the first.
func podSpecAndManager(o *unstructured.Unstructured) (podSpec, manager map[string]interface{}, err error) {
	podSpec, ok := nestedMap(o.Object, "spec", "template", "spec")
	if !ok {
		return nil, nil, fmt.Errorf("distribution: Deployment %s has no pod template", o.GetName())
	}
	containers, _ := podSpec["containers"].([]interface{})
	for _, c := range containers {
		if m, ok := c.(map[string]interface{}); ok {
			if manager == nil || m["name"] == "manager" {
				manager = m
			}
		}
	}
	if manager == nil {
		return nil, nil, fmt.Errorf("distribution: Deployment %s has no container", o.GetName())
	}
	return podSpec, manager, nil
}

// rewriteArgs points the distribution's own arguments at the instance: the
// events address (empty without notification-controller, there is nobody
// to send events to), watching all namespaces, and the storage address.
func (p *plan) rewriteArgs(args []string, component string) []string {
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--events-addr="):
			args[i] = "--events-addr="
			if p.has[fluxinstance.NotificationController] {
				args[i] = fmt.Sprintf("--events-addr=http://notification-controller.%s.svc.%s./", p.ns, p.domain)
			}
		case a == "--watch-all-namespaces" || strings.HasPrefix(a, "--watch-all-namespaces="):
			args[i] = "--watch-all-namespaces=true"
		case strings.HasPrefix(a, "--storage-adv-addr="):
			args[i] = fmt.Sprintf("--storage-adv-addr=%s.$(RUNTIME_NAMESPACE).svc.%s.", component, p.domain)
		}
	}
	return args
}

// shardArgs makes a shard watch only its objects (and advertise its own
// storage address), and the main controller of a sharded component watch
// only the objects of no shard.
func (p *plan) shardArgs(component, shard string) []string {
	if p.sharding == nil || len(p.sharding.Shards) == 0 || !slices.Contains(p.shardable, component) {
		return nil
	}
	if shard == "" {
		return []string{fmt.Sprintf("--watch-label-selector=!%s", p.sharding.Key)}
	}
	var args []string
	if slices.Contains(storageServers, component) {
		args = append(args, fmt.Sprintf("--storage-adv-addr=%s-%s.$(RUNTIME_NAMESPACE).svc.%s.", component, shard, p.domain))
	}
	return append(args, fmt.Sprintf("--watch-label-selector=%s=%s", p.sharding.Key, shard))
}

// multitenancyArgs is the multi-tenancy lockdown: no cross-namespace
// references, and tenants' objects run as their namespace's default account.
func (p *plan) multitenancyArgs(component string) []string {
	if !p.cluster.Multitenant {
		return nil
	}
	sa := "--default-service-account=" + p.cluster.TenantDefaultServiceAccount
	switch component {
	case fluxinstance.KustomizeController:
		return []string{"--no-cross-namespace-refs=true", "--no-remote-bases=true", sa}
	case fluxinstance.HelmController:
		return []string{"--no-cross-namespace-refs=true", sa}
	case fluxinstance.NotificationController, fluxinstance.ImageReflectorController,
		fluxinstance.ImageAutomationController, fluxinstance.SourceWatcher:
		return []string{"--no-cross-namespace-refs=true"}
	}
	return nil
}

// olwiComponents are the controllers with the ObjectLevelWorkloadIdentity gate.
var olwiComponents = []string{
	fluxinstance.SourceController, fluxinstance.KustomizeController, fluxinstance.HelmController,
	fluxinstance.NotificationController, fluxinstance.ImageReflectorController, fluxinstance.ImageAutomationController,
}

// featureGateArgs sets the feature gates: ExternalArtifact where
// source-watcher produces artifacts that kustomize and helm consume, and
// ObjectLevelWorkloadIdentity, from Flux 2.7 always explicit, in 2.6 only
// when on (and helm-controller did not support it then).
func (p *plan) featureGateArgs(component string) []string {
	var args []string
	if p.has[fluxinstance.SourceWatcher] && (component == fluxinstance.KustomizeController || component == fluxinstance.HelmController) {
		args = append(args, "--feature-gates=ExternalArtifact=true")
	}
	olwi := p.cluster.ObjectLevelWorkloadIdentity
	switch {
	case !p.semver.LT(v270):
		if slices.Contains(olwiComponents, component) {
			args = append(args, fmt.Sprintf("--feature-gates=ObjectLevelWorkloadIdentity=%t", olwi))
		}
	case !p.semver.LT(v260) && olwi:
		if slices.Contains(olwiComponents, component) && component != fluxinstance.HelmController {
			args = append(args, "--feature-gates=ObjectLevelWorkloadIdentity=true")
		}
	}
	return args
}

// tenantIdentityArgs gives tenants default identities under multi-tenant
// workload identity.
func (p *plan) tenantIdentityArgs(component string) []string {
	c := p.cluster
	if !c.MultitenantWorkloadIdentity {
		return nil
	}
	switch component {
	case fluxinstance.SourceController, fluxinstance.NotificationController,
		fluxinstance.ImageReflectorController, fluxinstance.ImageAutomationController:
		return []string{"--default-service-account=" + c.TenantDefaultServiceAccount}
	case fluxinstance.KustomizeController:
		return []string{"--default-decryption-service-account=" + c.TenantDefaultDecryptionServiceAccount,
			"--default-kubeconfig-service-account=" + c.TenantDefaultKubeConfigServiceAccount}
	case fluxinstance.HelmController:
		return []string{"--default-kubeconfig-service-account=" + c.TenantDefaultKubeConfigServiceAccount}
	}
	return nil
}

// podContainers returns the init containers and containers of a pod spec.
func podContainers(podSpec map[string]interface{}) []map[string]interface{} {
	var out []map[string]interface{}
	for _, field := range []string{"initContainers", "containers"} {
		list, _ := podSpec[field].([]interface{})
		for _, ci := range list {
			if m, ok := ci.(map[string]interface{}); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

// rewriteImages moves every container's image to the registry, with the
// variant's tag and digest when listed (see rewriteImage).
func (p *plan) rewriteImages(podSpec map[string]interface{}) {
	for _, m := range podContainers(podSpec) {
		if img, ok := m["image"].(string); ok {
			m["image"] = p.rewriteImage(img)
		}
	}
}

// configurePodTemplate sets what the operator puts on every controller's
// pod: the safe-to-evict annotation, the part-of label (older releases lack
// it on pod templates), a Linux node selector and the image pull secret.
func (p *plan) configurePodTemplate(o *unstructured.Unstructured, podSpec map[string]interface{}) {
	tmplMeta, _ := nestedMap(o.Object, "spec", "template", "metadata")
	if tmplMeta == nil {
		// SetNestedMap stores a copy: fetch the stored map to fill it.
		_ = unstructured.SetNestedMap(o.Object, map[string]interface{}{}, "spec", "template", "metadata")
		tmplMeta, _ = nestedMap(o.Object, "spec", "template", "metadata")
	}
	tmplAnn, _ := tmplMeta["annotations"].(map[string]interface{})
	if tmplAnn == nil {
		tmplAnn = map[string]interface{}{}
		tmplMeta["annotations"] = tmplAnn
	}
	tmplAnn[AnnotationSafeToEvict] = "true"
	tmplLabels, _ := tmplMeta["labels"].(map[string]interface{})
	if tmplLabels == nil {
		tmplLabels = map[string]interface{}{}
		tmplMeta["labels"] = tmplLabels
	}
	tmplLabels[LabelPartOf] = PartOfValue
	podSpec["nodeSelector"] = map[string]interface{}{"kubernetes.io/os": "linux"}
	if s := p.inst.Spec.Distribution.ImagePullSecret; s != "" {
		podSpec["imagePullSecrets"] = []interface{}{map[string]interface{}{"name": s}}
	}
}

// relaxSecurityContexts drops what OpenShift assigns itself (UIDs, fsGroups
// and seccomp profiles) from the pod and its containers.
func relaxSecurityContexts(podSpec map[string]interface{}) {
	delete(podSpec, "securityContext")
	for _, m := range podContainers(podSpec) {
		if sc, ok := m["securityContext"].(map[string]interface{}); ok {
			delete(sc, "runAsNonRoot")
			delete(sc, "seccompProfile")
		}
	}
}

// mountPersistentStorage gives source-controller (and its shards when asked)
// the persistent storage of spec.storage. The main controller keeps its
// volumes, gets "persistent-data" on the claim source-controller appended
// and mounts it at /data. A shard's first volume (the emptyDir "data") and
// its first mount are replaced instead, by "persistent-data-<shard>" on the
// claim source-controller-<shard>, as the operator's shard kustomization does.
func (p *plan) mountPersistentStorage(o *unstructured.Unstructured, podSpec, manager map[string]interface{}, shard string) error {
	component := fluxinstance.SourceController
	mounts, _ := manager["volumeMounts"].([]interface{})
	vols, _ := podSpec["volumes"].([]interface{})
	switch {
	case shard == "":
		for _, mi := range mounts {
			if m, ok := mi.(map[string]interface{}); ok && m["mountPath"] == "/data" {
				m["name"] = "persistent-data"
			}
		}
		podSpec["volumes"] = append(vols, map[string]interface{}{
			"name":                  "persistent-data",
			"persistentVolumeClaim": map[string]interface{}{"claimName": component},
		})
	case p.persistentShards():
		if len(vols) == 0 || len(mounts) == 0 {
			return fmt.Errorf("distribution: Deployment %s has no volume or mount to put the shard's persistent storage in", o.GetName())
		}
		name := "persistent-data-" + shard
		vols[0] = map[string]interface{}{
			"name":                  name,
			"persistentVolumeClaim": map[string]interface{}{"claimName": component + "-" + shard},
		}
		mounts[0] = map[string]interface{}{"name": name, "mountPath": "/data"}
	}
	return nil
}

// rewriteImage moves an upstream image (fluxcd/<name>:<tag>) to the
// registry, pinning tag and digest from the variant's image list when it
// lists the component.
func (p *plan) rewriteImage(img string) string {
	repo, tag, _ := SplitImage(img)
	name := imageName(repo)
	out := p.registry + "/" + name
	if ref, ok := p.images[name]; ok && ref.Tag != "" {
		out += ":" + ref.Tag
		if ref.Digest != "" {
			out += "@" + ref.Digest
		}
		return out
	}
	if tag != "" {
		out += ":" + tag
	}
	return out
}

// nestedMap returns the map at fields in obj itself, not a copy (as
// unstructured.NestedMap would), so that changes to it reach the object.
func nestedMap(obj map[string]interface{}, fields ...string) (map[string]interface{}, bool) {
	v, _, _ := unstructured.NestedFieldNoCopy(obj, fields...)
	m, ok := v.(map[string]interface{})
	return m, ok
}

func stringSlice(v interface{}) []string {
	list, _ := v.([]interface{})
	out := make([]string, 0, len(list)+8)
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func toInterfaces(s []string) []interface{} {
	out := make([]interface{}, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}
