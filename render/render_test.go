package render

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/fluxcd/pkg/ssa"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

const header = `apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "VERSION"
    registry: REGISTRY
`

func instance(t *testing.T, version, registry, extra string) *fluxinstance.FluxInstance {
	t.Helper()
	y := strings.NewReplacer("VERSION", version, "REGISTRY", registry).Replace(header) + extra
	inst, err := fluxinstance.Decode([]byte(y), "test.yaml")
	require.NoError(t, err)
	inst.Default()
	require.NoError(t, inst.Validate())
	return inst
}

func build(t *testing.T, version, extra string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Build(instance(t, version, "ghcr.io/fluxcd", extra), loadRelease(t, "v"+version), nil)
	require.NoError(t, err)
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func args(t *testing.T, objs []*unstructured.Unstructured, name string) []string {
	t.Helper()
	d := find(objs, "Deployment", name)
	require.NotNil(t, d, name)
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	return stringSlice(cs[0].(map[string]any)["args"])
}

func podSpec(t *testing.T, objs []*unstructured.Unstructured, name string) map[string]any {
	d := find(objs, "Deployment", name)
	require.NotNil(t, d, name)
	s, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
	return s
}

func TestBuildMinimal(t *testing.T) {
	objs := build(t, "2.7.5", "")
	require.NotEmpty(t, objs)
	// Operator order: CRDs, Namespace, cluster RBAC, ..., ServiceAccounts, Services, Deployments, the rest.
	assert.True(t, sort.IsSorted(ssa.SortableUnstructureds(objs)))
	for _, o := range objs {
		assert.Equal(t, ManagedByValue, o.GetLabels()[LabelManagedBy], objectID(o))
		assert.Equal(t, "flux-system", o.GetLabels()[LabelInstance])
		assert.Equal(t, "v2.7.5", o.GetLabels()[LabelVersion])
		assert.Equal(t, "flux", o.GetLabels()[LabelPartOf])
		assert.Equal(t, "flux", o.GetLabels()[LabelOwnerName])
		assert.Equal(t, "flux-system", o.GetLabels()[LabelOwnerNamespace])
		assert.Equal(t, SSAIgnore, o.GetAnnotations()[AnnotationKustomizeSSA])
		assert.Equal(t, PruneDisabledKustomize, o.GetAnnotations()[AnnotationKustomizePrune])
		for k := range o.GetAnnotations() {
			assert.False(t, strings.HasPrefix(k, "render.fluxinstance.internal"), "internal annotation leaked")
		}
	}
	assert.Equal(t, "CustomResourceDefinition", objs[0].GetKind())
	ns := find(objs, "Namespace", "flux-system")
	require.NotNil(t, ns)
	assert.Equal(t, "restricted", ns.GetLabels()["pod-security.kubernetes.io/warn"])
	assert.Equal(t, "disabled", ns.GetAnnotations()[AnnotationOperatorPrune])
	assert.NotNil(t, find(objs, "ClusterRole", "crd-controller-flux-system"))
	assert.NotNil(t, find(objs, "ResourceQuota", "critical-pods-flux-system"))
	assert.NotNil(t, find(objs, "NetworkPolicy", "allow-egress"))
	assert.Nil(t, find(objs, "Deployment", "image-reflector-controller"))

	a := args(t, objs, "source-controller")
	assert.Contains(t, a, "--events-addr=http://notification-controller.flux-system.svc.cluster.local./")
	assert.Contains(t, a, "--watch-all-namespaces=true")
	assert.Contains(t, a, "--feature-gates=ObjectLevelWorkloadIdentity=false")
	assert.NotContains(t, args(t, objs, "notification-controller"), "--events-addr=http://notification-controller.flux-system.svc.cluster.local./")
	ps := podSpec(t, objs, "source-controller")
	assert.Equal(t, map[string]any{"kubernetes.io/os": "linux"}, ps["nodeSelector"])
	img := ps["containers"].([]any)[0].(map[string]any)["image"].(string)
	assert.Regexp(t, `^ghcr\.io/fluxcd/source-controller:v1\.7\.4@sha256:[0-9a-f]{64}$`, img)

	// The token permission only comes with object-level workload identity.
	role := find(objs, "ClusterRole", "crd-controller-flux-system")
	assert.NotContains(t, toJSON(t, role), "serviceaccounts/token")
	assert.Contains(t, toJSON(t, role.Object["rules"]), fluxinstance.Group)
}

func TestBuildDoesNotMutateRelease(t *testing.T) {
	rel := loadRelease(t, "v2.7.5")
	before := string(rel.Manifests["source-controller.yaml"])
	_, err := Build(instance(t, "2.7.5", "ghcr.io/fluxcd", ""), rel, nil)
	require.NoError(t, err)
	assert.Equal(t, before, string(rel.Manifests["source-controller.yaml"]))
}

func TestNetworkPolicy(t *testing.T) {
	// A cluster block that omits networkPolicy still renders the policies (the operator's default).
	objs := build(t, "2.7.5", "  cluster:\n    size: small\n")
	assert.NotNil(t, find(objs, "NetworkPolicy", "allow-webhooks"))
	objs = build(t, "2.7.5", "  cluster:\n    networkPolicy: false\n")
	for _, o := range objs {
		assert.NotEqual(t, "NetworkPolicy", o.GetKind())
	}
}

func TestSizes(t *testing.T) {
	for size, want := range map[string]struct{ concurrent, requeue, cache, cpu, mem string }{
		"small":  {"--concurrent=5", "--requeue-dependency=10s", "--helm-cache-max-size=10", "1000m", "512Mi"},
		"medium": {"--concurrent=10", "--requeue-dependency=5s", "--helm-cache-max-size=50", "2000m", "1Gi"},
		"large":  {"--concurrent=20", "--requeue-dependency=5s", "--helm-cache-max-size=100", "3000m", "3Gi"},
	} {
		objs := build(t, "2.7.5", "  cluster:\n    size: "+size+"\n")
		for _, c := range []string{"kustomize-controller", "helm-controller"} {
			a := args(t, objs, c)
			assert.Contains(t, a, want.concurrent, size)
			assert.Contains(t, a, want.requeue, size)
			res := podSpec(t, objs, c)["containers"].([]any)[0].(map[string]any)["resources"].(map[string]any)
			assert.Equal(t, want.cpu, res["limits"].(map[string]any)["cpu"], size)
			assert.Equal(t, want.mem, res["limits"].(map[string]any)["memory"], size)
		}
		assert.Contains(t, args(t, objs, "source-controller"), want.cache)
		assert.Equal(t, size, find(objs, "Deployment", "notification-controller").GetAnnotations()[AnnotationProfile])
	}
}

func TestMultitenant(t *testing.T) {
	objs := build(t, "2.7.5", `  components: [source-controller, kustomize-controller, helm-controller, notification-controller, image-reflector-controller]
  cluster:
    multitenant: true
    tenantDefaultServiceAccount: tenant
  sync:
    kind: GitRepository
    url: https://github.com/org/fleet.git
    ref: refs/heads/main
    path: clusters/prod
`)
	k := args(t, objs, "kustomize-controller")
	assert.Contains(t, k, "--no-cross-namespace-refs=true")
	assert.Contains(t, k, "--no-remote-bases=true")
	assert.Contains(t, k, "--default-service-account=tenant")
	assert.Contains(t, args(t, objs, "helm-controller"), "--default-service-account=tenant")
	assert.Contains(t, args(t, objs, "image-reflector-controller"), "--no-cross-namespace-refs=true")
	assert.NotContains(t, strings.Join(args(t, objs, "source-controller"), " "), "no-cross-namespace")
	ks := find(objs, "Kustomization", "flux-system")
	require.NotNil(t, ks)
	sa, _, _ := unstructured.NestedString(ks.Object, "spec", "serviceAccountName")
	assert.Equal(t, "kustomize-controller", sa)
}

func TestWorkloadIdentity(t *testing.T) {
	objs := build(t, "2.7.5", "  cluster:\n    objectLevelWorkloadIdentity: true\n    multitenantWorkloadIdentity: true\n    tenantDefaultDecryptionServiceAccount: sops\n")
	assert.Contains(t, args(t, objs, "helm-controller"), "--feature-gates=ObjectLevelWorkloadIdentity=true")
	assert.Contains(t, args(t, objs, "source-controller"), "--default-service-account=default")
	assert.Contains(t, args(t, objs, "kustomize-controller"), "--default-decryption-service-account=sops")
	assert.Contains(t, args(t, objs, "helm-controller"), "--default-kubeconfig-service-account=default")
	assert.Contains(t, toJSON(t, find(objs, "ClusterRole", "crd-controller-flux-system")), "serviceaccounts/token")

	// 2.6: gate only when on, and not on helm-controller.
	objs = build(t, "2.6.0", "  cluster:\n    objectLevelWorkloadIdentity: true\n")
	assert.Contains(t, args(t, objs, "kustomize-controller"), "--feature-gates=ObjectLevelWorkloadIdentity=true")
	assert.NotContains(t, strings.Join(args(t, objs, "helm-controller"), " "), "ObjectLevelWorkloadIdentity")
	objs = build(t, "2.6.0", "")
	assert.NotContains(t, strings.Join(args(t, objs, "kustomize-controller"), " "), "ObjectLevelWorkloadIdentity")
}

func TestSourceWatcherFeatureGates(t *testing.T) {
	objs := build(t, "2.8.8", "  components: [source-controller, kustomize-controller, helm-controller, notification-controller, source-watcher]\n")
	assert.Contains(t, args(t, objs, "kustomize-controller"), "--feature-gates=ExternalArtifact=true")
	assert.Contains(t, args(t, objs, "helm-controller"), "--feature-gates=ExternalArtifact=true")
	assert.Contains(t, args(t, objs, "source-watcher"), "--storage-adv-addr=source-watcher.$(RUNTIME_NAMESPACE).svc.cluster.local.")
	objs = build(t, "2.8.8", "")
	assert.NotContains(t, args(t, objs, "kustomize-controller"), "--feature-gates=ExternalArtifact=true")

	// A component missing from the version is an error naming the field.
	_, err := Build(instance(t, "2.6.4", "ghcr.io/fluxcd", "  components: [source-controller, source-watcher]\n"), loadRelease(t, "v2.6.4"), nil)
	require.ErrorContains(t, err, `spec.components: component "source-watcher" is not part of Flux v2.6.4`)
}

func TestShardingAndStorage(t *testing.T) {
	objs := build(t, "2.7.5", `  components: [source-controller, kustomize-controller, helm-controller, notification-controller, image-automation-controller]
  sharding:
    key: example.com/shard
    shards: [a, b]
    storage: persistent
  storage:
    class: standard
    size: 10Gi
`)
	for _, c := range []string{"source-controller", "kustomize-controller", "helm-controller", "image-automation-controller"} {
		assert.Contains(t, args(t, objs, c), "--watch-label-selector=!example.com/shard")
		for _, s := range []string{"a", "b"} {
			d := find(objs, "Deployment", c+"-"+s)
			require.NotNil(t, d)
			assert.Contains(t, args(t, objs, c+"-"+s), "--watch-label-selector=example.com/shard="+s)
			assert.Equal(t, ShardRoleValue, d.GetAnnotations()[AnnotationShardRole])
			sel, _, _ := unstructured.NestedString(d.Object, "spec", "selector", "matchLabels", "app")
			assert.Equal(t, c+"-"+s, sel)
		}
	}
	assert.Nil(t, find(objs, "Deployment", "notification-controller-a"))
	assert.Contains(t, args(t, objs, "source-controller-a"), "--storage-adv-addr=source-controller-a.$(RUNTIME_NAMESPACE).svc.cluster.local.")
	assert.NotNil(t, find(objs, "Service", "source-controller-b"))
	for _, name := range []string{"source-controller", "source-controller-a", "source-controller-b"} {
		pvc := find(objs, "PersistentVolumeClaim", name)
		require.NotNil(t, pvc, name)
		size, _, _ := unstructured.NestedString(pvc.Object, "spec", "resources", "requests", "storage")
		assert.Equal(t, "10Gi", size)
		assert.Contains(t, toJSON(t, podSpec(t, objs, name)["volumes"]), `"claimName":"`+name+`"`)
	}

	// Ephemeral shards keep emptyDir storage.
	objs = build(t, "2.7.5", "  sharding:\n    shards: [a]\n  storage:\n    class: standard\n    size: 1Gi\n")
	assert.Nil(t, find(objs, "PersistentVolumeClaim", "source-controller-a"))
	assert.NotContains(t, toJSON(t, podSpec(t, objs, "source-controller-a")["volumes"]), "persistentVolumeClaim")
	assert.Contains(t, toJSON(t, podSpec(t, objs, "source-controller")["volumes"]), "persistentVolumeClaim")
}

func TestOpenShift(t *testing.T) {
	objs := build(t, "2.7.5", "  cluster:\n    type: openshift\n")
	ns := find(objs, "Namespace", "flux-system")
	assert.NotContains(t, ns.GetLabels(), "pod-security.kubernetes.io/warn")
	ps := podSpec(t, objs, "source-controller")
	assert.NotContains(t, ps, "securityContext")
	sc := ps["containers"].([]any)[0].(map[string]any)["securityContext"].(map[string]any)
	assert.NotContains(t, sc, "runAsNonRoot")
	assert.NotContains(t, sc, "seccompProfile")
	assert.Equal(t, false, sc["allowPrivilegeEscalation"])
}

func TestCommonMetadataAndPullSecret(t *testing.T) {
	inst := instance(t, "2.7.5", "registry.example.com/mirror", `  cluster:
    domain: corp.local
  commonMetadata:
    labels:
      team: platform
      app.kubernetes.io/managed-by: someone-else
    annotations:
      owner: sre
`)
	inst.Spec.Distribution.ImagePullSecret = "regcred"
	objs, err := Build(inst, loadRelease(t, "v2.7.5"), nil)
	require.NoError(t, err)
	for _, o := range objs {
		assert.Equal(t, "platform", o.GetLabels()["team"])
		assert.Equal(t, "sre", o.GetAnnotations()["owner"])
		assert.Equal(t, ManagedByValue, o.GetLabels()[LabelManagedBy], "operator labels win")
	}
	ps := podSpec(t, objs, "kustomize-controller")
	assert.Equal(t, []any{map[string]any{"name": "regcred"}}, ps["imagePullSecrets"])
	// A mirror without a variant falls back to tags.
	assert.Equal(t, "registry.example.com/mirror/kustomize-controller:v1.7.3", ps["containers"].([]any)[0].(map[string]any)["image"])
	assert.Contains(t, args(t, objs, "source-controller"), "--storage-adv-addr=source-controller.$(RUNTIME_NAMESPACE).svc.corp.local.")
	assert.Contains(t, args(t, objs, "helm-controller"), "--events-addr=http://notification-controller.flux-system.svc.corp.local./")
	tl, _, _ := unstructured.NestedStringMap(find(objs, "Deployment", "helm-controller").Object, "spec", "template", "metadata", "labels")
	assert.NotContains(t, tl, "team", "commonMetadata does not reach pod templates")
}

func TestSyncKinds(t *testing.T) {
	sync := func(kind, url, ref, extra string) string {
		return "  sync:\n    kind: " + kind + "\n    url: " + url + "\n    ref: " + ref + "\n    path: ./clusters\n" + extra
	}
	objs := build(t, "2.5.1", sync("OCIRepository", "oci://ghcr.io/org/fleet", "latest", "    interval: 90s\n    pullSecret: creds\n"))
	oci := find(objs, "OCIRepository", "flux-system")
	require.NotNil(t, oci)
	assert.Equal(t, "source.toolkit.fluxcd.io/v1beta2", oci.GetAPIVersion())
	assert.Equal(t, map[string]any{"interval": "1m30s", "url": "oci://ghcr.io/org/fleet", "ref": map[string]any{"tag": "latest"}, "secretRef": map[string]any{"name": "creds"}}, oci.Object["spec"])
	ks := find(objs, "Kustomization", "flux-system")
	assert.Equal(t, map[string]any{"interval": "10m0s", "path": "./clusters", "prune": true, "sourceRef": map[string]any{"kind": "OCIRepository", "name": "flux-system"}}, ks.Object["spec"])

	objs = build(t, "2.6.0", sync("OCIRepository", "oci://ghcr.io/org/fleet", "latest", ""))
	assert.Equal(t, "source.toolkit.fluxcd.io/v1", find(objs, "OCIRepository", "flux-system").GetAPIVersion())

	objs = build(t, "2.7.5", sync("Bucket", "minio.example.com", "fleet", "    provider: aws\n    name: custom\n"))
	b := find(objs, "Bucket", "custom")
	require.NotNil(t, b)
	assert.Equal(t, map[string]any{"interval": "1m0s", "endpoint": "minio.example.com", "bucketName": "fleet", "provider": "aws"}, b.Object["spec"])
	assert.NotNil(t, find(objs, "Kustomization", "custom"))

	objs = build(t, "2.9.4", sync("GitRepository", "https://github.com/org/fleet.git", "refs/heads/main", "    provider: github\n"))
	g := find(objs, "GitRepository", "flux-system")
	assert.Equal(t, "source.toolkit.fluxcd.io/v1", g.GetAPIVersion())
	assert.Equal(t, map[string]any{"name": "refs/heads/main"}, g.Object["spec"].(map[string]any)["ref"])
	assert.Equal(t, "github", g.Object["spec"].(map[string]any)["provider"])
}

func TestPatches(t *testing.T) {
	patches := `  sharding:
    shards: [a]
  kustomize:
    patches:
      - target:
          kind: Deployment
          name: source-controller
        patch: |
          apiVersion: apps/v1
          kind: Deployment
          metadata:
            name: source-controller
          spec:
            template:
              spec:
                containers:
                  - name: manager
                    resources:
                      limits:
                        memory: 3Gi
      - target:
          kind: Deployment
          name: "(kustomize|helm)-controller"
        patch: |
          - op: add
            path: /spec/template/spec/containers/0/args/-
            value: --concurrent=99
      - target:
          kind: NetworkPolicy
          name: allow-scraping
        patch: |
          $patch: delete
          apiVersion: networking.k8s.io/v1
          kind: NetworkPolicy
          metadata:
            name: allow-scraping
`
	objs := build(t, "2.7.5", patches)
	// A strategic merge patch whose target names a controller applies to it and all its shard copies.
	for _, name := range []string{"source-controller", "source-controller-a"} {
		res := podSpec(t, objs, name)["containers"].([]any)[0].(map[string]any)["resources"].(map[string]any)
		assert.Equal(t, "3Gi", res["limits"].(map[string]any)["memory"], name)
		assert.Equal(t, "1000m", res["limits"].(map[string]any)["cpu"], "merge keeps the rest")
	}
	// Like kustomize, a target matches a shard by its controller's (original) name too.
	for _, name := range []string{"kustomize-controller", "kustomize-controller-a", "helm-controller-a"} {
		a := args(t, objs, name)
		assert.Equal(t, "--concurrent=99", a[len(a)-1], "user patches come last: %s", name)
	}
	assert.Nil(t, find(objs, "NetworkPolicy", "allow-scraping"))
	assert.NotNil(t, find(objs, "NetworkPolicy", "allow-egress"))
	for _, o := range objs {
		assert.Equal(t, "flux-system", o.GetLabels()[LabelInstance], "patched objects keep their labels")
	}

	bad := func(extra string) error {
		_, err := Build(instance(t, "2.7.5", "ghcr.io/fluxcd", extra), loadRelease(t, "v2.7.5"), nil)
		return err
	}
	err := bad("  kustomize:\n    patches:\n      - patch: |\n          - op: remove\n            path: /spec/replicas\n")
	require.ErrorContains(t, err, "spec.kustomize.patches[0].target: required for a JSON6902 patch")
	err = bad("  kustomize:\n    patches:\n      - patch: |\n          apiVersion: apps/v1\n          kind: Deployment\n          metadata:\n            name: flagger\n")
	require.ErrorContains(t, err, "spec.kustomize.patches[0]: no object matches")
	err = bad("  kustomize:\n    patches:\n      - target:\n          kind: Deployment\n        patch: |\n          - op: replace\n            path: /spec/nothing/here\n            value: 1\n")
	require.ErrorContains(t, err, "spec.kustomize.patches[0]")
	// Without a target, a strategic merge patch must select one object, as in kustomize (the
	// operator's reconcile fails with "multiple matches"): with sharding, naming a sharded
	// controller selects its copies too. Without sharding the same patch is fine.
	untargeted := "  kustomize:\n    patches:\n      - patch: |\n          apiVersion: apps/v1\n          kind: Deployment\n" +
		"          metadata:\n            name: source-controller\n          spec:\n            replicas: 2\n"
	err = bad("  sharding:\n    shards: [a, b]\n" + untargeted)
	require.ErrorContains(t, err, "spec.kustomize.patches[0]: the strategic merge patch for Deployment source-controller has no target and matches 3 objects "+
		"(Deployment/source-controller, Deployment/source-controller-a, Deployment/source-controller-b)")
	require.ErrorContains(t, err, "add a target")
	require.NoError(t, bad(untargeted))
}

// Targets select as kustomize does when the operator runs the user's patches:
// by original or current name and namespace, before the operator's labels and
// annotations (which a patch therefore cannot change).
func TestPatchTargetsMatchOriginalIdentity(t *testing.T) {
	patch := func(target string, key string) string {
		return "      - target: " + target + "\n        patch: |\n          - {op: add, path: /metadata/annotations/" + key + ", value: x}\n"
	}
	objs := build(t, "2.7.5", `  components: [source-controller, kustomize-controller, notification-controller]
  sharding:
    shards: [s1]
  commonMetadata:
    labels: {team: a}
  sync: {kind: GitRepository, url: "https://example.com/repo", ref: refs/heads/main, path: x}
  kustomize:
    patches:
`+patch(`{kind: Service, name: "^source-controller$"}`, "p1")+
		patch(`{kind: ClusterRole, name: crd-controller}`, "p2")+
		patch(`{name: source-controller-s1}`, "p3")+
		patch(`{kind: Deployment, name: source-controller, annotationSelector: "!sharding.fluxcd.io/role"}`, "p4")+
		patch(`{namespace: flux-system}`, "p5")+
		patch(`{namespace: default, kind: Deployment}`, "p6")+
		patch(`{labelSelector: "app.kubernetes.io/managed-by=flux-operator"}`, "p7")+
		patch(`{labelSelector: "team=a"}`, "p8")+
		patch(`{kind: Deployment, name: kustomize-controller}`, "p9")+
		`      - target: {kind: Deployment, name: kustomize-controller}
        patch: |
          - {op: add, path: /metadata/labels/team, value: patched}
          - {op: add, path: /metadata/labels/app.kubernetes.io~1managed-by, value: patched}
`)
	annotated := func(key string) []string {
		var out []string
		for _, o := range objs {
			if _, ok := o.GetAnnotations()[key]; ok {
				out = append(out, o.GetKind()+"/"+o.GetName())
			}
		}
		return out
	}
	assert.ElementsMatch(t, []string{"Service/source-controller", "Service/source-controller-s1"}, annotated("p1"))
	assert.ElementsMatch(t, []string{"ClusterRole/crd-controller-flux-system"}, annotated("p2"))
	assert.ElementsMatch(t, []string{"Service/source-controller-s1", "Deployment/source-controller-s1"}, annotated("p3"))
	assert.ElementsMatch(t, []string{"Deployment/source-controller"}, annotated("p4"))
	// The distribution's objects have no namespace yet; copies, renamed RBAC and sync objects have it.
	assert.ElementsMatch(t, []string{"ResourceQuota/critical-pods-flux-system", "Service/source-controller-s1",
		"Deployment/source-controller-s1", "Deployment/kustomize-controller-s1", "GitRepository/flux-system",
		"Kustomization/flux-system"}, annotated("p5"))
	assert.ElementsMatch(t, []string{"Deployment/source-controller", "Deployment/source-controller-s1",
		"Deployment/kustomize-controller", "Deployment/kustomize-controller-s1", "Deployment/notification-controller"}, annotated("p6"))
	assert.Empty(t, annotated("p7"), "the operator's labels come after the patches")
	assert.Empty(t, annotated("p8"), "commonMetadata comes after the patches")
	assert.ElementsMatch(t, []string{"Deployment/kustomize-controller", "Deployment/kustomize-controller-s1"}, annotated("p9"))
	kc := find(objs, "Deployment", "kustomize-controller")
	assert.Equal(t, "a", kc.GetLabels()["team"], "commonMetadata wins over a patch")
	assert.Equal(t, ManagedByValue, kc.GetLabels()[LabelManagedBy], "the operator's labels win over a patch")

	// Without a target: the original or current name, in the patch's namespace ("default" when unset).
	smp := func(kind, name, ns string) string {
		return "  kustomize:\n    patches:\n      - patch: |\n          kind: " + kind + "\n          metadata:\n            name: " + name +
			"\n            namespace: " + ns + "\n            annotations: {smp: x}\n"
	}
	objs = build(t, "2.7.5", smp("ClusterRole", "crd-controller", `""`))
	assert.ElementsMatch(t, []string{"ClusterRole/crd-controller-flux-system"}, annotated("smp"))
	objs = build(t, "2.7.5", smp("ResourceQuota", "critical-pods-flux-system", "flux-system"))
	assert.ElementsMatch(t, []string{"ResourceQuota/critical-pods-flux-system"}, annotated("smp"))
	_, err := Build(instance(t, "2.7.5", "ghcr.io/fluxcd", smp("Deployment", "source-controller", "flux-system")), loadRelease(t, "v2.7.5"), nil)
	require.ErrorContains(t, err, "remove metadata.namespace")
}

func TestBuildWithoutNotificationController(t *testing.T) {
	objs := build(t, "2.7.5", "  components: [source-controller, kustomize-controller, helm-controller]\n")
	for _, name := range []string{"source-controller", "kustomize-controller", "helm-controller"} {
		assert.Equal(t, "--events-addr=", args(t, objs, name)[0], name)
	}
	role := find(objs, "ClusterRole", "crd-controller-flux-system")
	require.NotNil(t, role)
	assert.NotContains(t, toJSON(t, role.Object["rules"]), fluxinstance.Group, "the operator's API group comes with notification-controller only")
}

func TestShardingSourceWatcher(t *testing.T) {
	extra := "  components: [source-controller, kustomize-controller, notification-controller, source-watcher]\n  sharding:\n    shards: [blue]\n"
	for _, v := range []string{"2.7.5", "2.8.8"} {
		objs := build(t, v, extra)
		assert.Nil(t, find(objs, "Deployment", "source-watcher-blue"), v)
		assert.Nil(t, find(objs, "Service", "source-watcher-blue"), v)
		assert.NotContains(t, strings.Join(args(t, objs, "source-watcher"), " "), "--watch-label-selector", v)
	}
	objs := build(t, "2.9.4", extra)
	svc := find(objs, "Service", "source-watcher-blue")
	require.NotNil(t, svc)
	assert.Equal(t, "source-watcher-blue", svc.Object["spec"].(map[string]any)["selector"].(map[string]any)["app"])
	a := args(t, objs, "source-watcher-blue")
	i := slices.Index(a, "--storage-adv-addr=source-watcher.$(RUNTIME_NAMESPACE).svc.cluster.local.")
	require.GreaterOrEqual(t, i, 0)
	assert.Equal(t, []string{"--storage-adv-addr=source-watcher-blue.$(RUNTIME_NAMESPACE).svc.cluster.local.",
		"--watch-label-selector=sharding.fluxcd.io/key=blue"}, a[i+1:i+3])
	assert.Contains(t, args(t, objs, "source-watcher"), "--watch-label-selector=!sharding.fluxcd.io/key")
}

func TestBuildRejectsBadInput(t *testing.T) {
	rel := loadRelease(t, "v2.7.5")
	_, err := Build(nil, rel, nil)
	require.Error(t, err)
	_, err = Build(instance(t, "2.7.5", "ghcr.io/fluxcd", ""), nil, nil)
	require.Error(t, err)
	_, err = Build(instance(t, "2.7.5", "ghcr.io/fluxcd", ""), &distribution.Release{Version: "latest"}, nil)
	require.ErrorContains(t, err, "distribution")
	_, err = Build(instance(t, "2.7.5", "ghcr.io/fluxcd", ""), &distribution.Release{Version: "v2.7.5", Manifests: map[string][]byte{"source-controller.yaml": []byte("kind: [")}}, nil)
	require.ErrorContains(t, err, "flux/v2.7.5/source-controller.yaml")
}

func TestSortObjects(t *testing.T) {
	mk := func(apiVersion, kind, ns, name string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		u.SetNamespace(ns)
		u.SetName(name)
		return u
	}
	objs := []*unstructured.Unstructured{
		mk("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "ns", "a"),
		mk("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", "w"),
		mk("apps/v1", "Deployment", "ns", "b"),
		mk("apps/v1", "Deployment", "ns", "a"),
		mk("v1", "Service", "ns", "a"),
		mk("v1", "ServiceAccount", "ns", "a"),
		mk("rbac.authorization.k8s.io/v1", "ClusterRole", "", "r"),
		mk("v1", "Namespace", "", "ns"),
		mk("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "c"),
	}
	SortObjects(objs)
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	assert.Equal(t, []string{"CustomResourceDefinition/c", "Namespace/ns", "ClusterRole/r", "ServiceAccount/a", "Service/a",
		"Deployment/a", "Deployment/b", "Kustomization/a", "ValidatingWebhookConfiguration/w"}, got)
}

// TestSortObjectsIsStable: objects ssa ranks equal (same group, kind,
// namespace and name, here differing in version) keep the order Build
// produced them in; ssa's own sort.Sort does not promise that.
func TestSortObjectsIsStable(t *testing.T) {
	mk := func(apiVersion, kind, name string, i int) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		u.SetNamespace("ns")
		u.SetName(name)
		u.SetAnnotations(map[string]string{"i": strconv.Itoa(i)})
		return u
	}
	var objs []*unstructured.Unstructured
	var want []string
	for i := range 40 {
		// Interleaved with objects that sort first, in reverse, so that the
		// sort has to move every GitRepository.
		objs = append(objs, mk("v1", "ConfigMap", strconv.Itoa(99-i), i))
		objs = append(objs, mk("source.toolkit.fluxcd.io/v1beta"+strconv.Itoa(i%3), "GitRepository", "a", i))
		want = append(want, "GitRepository/"+strconv.Itoa(i))
	}
	SortObjects(objs)
	var got []string
	for _, o := range objs[40:] {
		got = append(got, o.GetKind()+"/"+o.GetAnnotations()["i"])
	}
	assert.Equal(t, want, got)
	assert.Equal(t, "60", objs[0].GetName())
}

// TestConfigurePodTemplateWithoutMetadata: a pod template without metadata
// still gets the operator's annotation and label (the distribution's
// templates all have metadata; this pins the fallback).
func TestConfigurePodTemplateWithoutMetadata(t *testing.T) {
	p := &plan{inst: instance(t, "2.7.5", "ghcr.io/fluxcd", "")}
	o := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{}}},
	}}
	podSpec, ok := nestedMap(o.Object, "spec", "template", "spec")
	require.True(t, ok)
	p.configurePodTemplate(o, podSpec)
	evict, _, _ := unstructured.NestedString(o.Object, "spec", "template", "metadata", "annotations", AnnotationSafeToEvict)
	assert.Equal(t, "true", evict)
	partOf, _, _ := unstructured.NestedString(o.Object, "spec", "template", "metadata", "labels", LabelPartOf)
	assert.Equal(t, PartOfValue, partOf)
}
