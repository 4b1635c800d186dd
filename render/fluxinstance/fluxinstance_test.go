package fluxinstance

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

const minimal = `apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "2.7.x"
    registry: ghcr.io/fluxcd
`

func decodeDefault(t *testing.T, extra string) *FluxInstance {
	t.Helper()
	inst, err := Decode([]byte(minimal+extra), "test.yaml")
	require.NoError(t, err)
	inst.Default()
	return inst
}

func TestDecodeStrict(t *testing.T) {
	_, err := Decode([]byte(minimal+"  cluster:\n    multitenent: true\n"), "fi.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fi.yaml")
	assert.Contains(t, err.Error(), `spec.cluster.multitenent`)

	_, err = Decode([]byte(minimal+"  cluster:\n    multitenant: yes-please\n"), "fi.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec.cluster.multitenant")

	_, err = Decode([]byte(minimal+"  wait: true\n  wait: false\n"), "dup.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dup.yaml")

	_, err = Decode([]byte(strings.Replace(minimal, "kind: FluxInstance", "kind: Deployment", 1)), "d.yaml")
	require.ErrorContains(t, err, `found apiVersion "fluxcd.controlplane.io/v1" and kind "Deployment"`)

	_, err = Decode([]byte(strings.Replace(minimal, "/v1", "/v1beta1", 1)), "d.yaml")
	require.ErrorContains(t, err, "v1beta1")

	_, err = Decode([]byte(minimal+"---\n"+minimal), "two.yaml")
	require.ErrorContains(t, err, "two.yaml: expected exactly one FluxInstance")

	_, err = Decode([]byte("# nothing\n"), "empty.yaml")
	require.ErrorContains(t, err, "empty.yaml: no FluxInstance found")

	_, err = Decode([]byte("- a\n- b\n"), "list.yaml")
	require.ErrorContains(t, err, "list.yaml")

	// Unknown status fields (written by newer operators) are tolerated.
	inst, err := Decode([]byte(minimal+"status:\n  futureField: 1\n  lastAppliedRevision: v2.7.5@sha256:abc\n"), "s.yaml")
	require.NoError(t, err)
	assert.Equal(t, "v2.7.5@sha256:abc", inst.Status.LastAppliedRevision)
}

func TestDefaults(t *testing.T) {
	inst := decodeDefault(t, "")
	assert.Equal(t, DefaultComponents, inst.Spec.Components)
	require.NotNil(t, inst.Spec.Cluster)
	c := inst.Spec.Cluster
	assert.Equal(t, "kubernetes", c.Type)
	assert.True(t, inst.NetworkPolicyEnabled())
	assert.Equal(t, "cluster.local", c.Domain)
	assert.Equal(t, "default", c.TenantDefaultServiceAccount)
	assert.Equal(t, "default", c.TenantDefaultDecryptionServiceAccount)
	assert.Equal(t, "default", c.TenantDefaultKubeConfigServiceAccount)
	assert.Equal(t, VariantUpstreamAlpine, inst.Spec.Distribution.Variant)
	assert.True(t, *inst.Spec.Wait)
	assert.True(t, *inst.Spec.MigrateResources)
	assert.Nil(t, inst.Spec.Sync)
	require.NoError(t, inst.Validate())

	// A cluster block that omits networkPolicy still gets NetworkPolicies.
	inst = decodeDefault(t, "  cluster:\n    size: small\n")
	assert.True(t, inst.NetworkPolicyEnabled())
	assert.Equal(t, "small", inst.Spec.Cluster.Size)
	inst = decodeDefault(t, "  cluster:\n    networkPolicy: false\n")
	assert.False(t, inst.NetworkPolicyEnabled())

	inst = decodeDefault(t, "  sharding:\n    shards: [a]\n  sync:\n    kind: GitRepository\n    url: https://x/y.git\n    ref: refs/heads/main\n    path: p\n")
	assert.Equal(t, DefaultShardingKey, inst.Spec.Sharding.Key)
	assert.Equal(t, "1m", inst.Spec.Sync.Interval)
	assert.Equal(t, "flux-system", inst.Spec.Sync.Name)

	inst, err := Decode([]byte(strings.Replace(minimal, "  namespace: flux-system\n", "", 1)), "x")
	require.NoError(t, err)
	inst.Default()
	assert.Equal(t, DefaultNamespace, inst.Namespace)

	// Idempotent.
	inst = decodeDefault(t, "")
	before := *inst.Spec.Cluster
	inst.Default()
	assert.Equal(t, before, *inst.Spec.Cluster)
	var nilInst *FluxInstance
	nilInst.Default()
}

func TestVariantForRegistry(t *testing.T) {
	for reg, want := range map[string]string{
		"ghcr.io/fluxcd":                                VariantUpstreamAlpine,
		"fluxcd":                                        VariantUpstreamAlpine,
		"ghcr.io/fluxcd/":                               VariantUpstreamAlpine,
		"ghcr.io/controlplaneio-fluxcd/alpine":          VariantEnterpriseAlpine,
		"ghcr.io/controlplaneio-fluxcd/distroless":      VariantEnterpriseDistroless,
		"ghcr.io/controlplaneio-fluxcd/distroless-fips": VariantEnterpriseFIPS,
		"registry.example.com/fluxcd":                   "",
	} {
		assert.Equal(t, want, VariantForRegistry(reg), reg)
	}
	inst := decodeDefault(t, "")
	inst.Spec.Distribution.Variant = ""
	inst.Spec.Distribution.Registry = "mirror.local/flux"
	inst.Default()
	assert.Empty(t, inst.Spec.Distribution.Variant)
}

func TestValidateMessages(t *testing.T) {
	cases := map[string]struct {
		mutate func(*FluxInstance)
		want   []string
	}{
		"name":            {func(i *FluxInstance) { i.Name = "other" }, []string{`metadata.name: Invalid value: "other": must be "flux"`}},
		"namespace":       {func(i *FluxInstance) { i.Namespace = "Bad_NS" }, []string{"metadata.namespace"}},
		"version":         {func(i *FluxInstance) { i.Spec.Distribution.Version = "" }, []string{"spec.distribution.version: Required value"}},
		"version garbage": {func(i *FluxInstance) { i.Spec.Distribution.Version = "latest!" }, []string{"spec.distribution.version"}},
		"registry":        {func(i *FluxInstance) { i.Spec.Distribution.Registry = "" }, []string{"spec.distribution.registry: Required value"}},
		"variant":         {func(i *FluxInstance) { i.Spec.Distribution.Variant = "ubuntu" }, []string{`spec.distribution.variant: Unsupported value: "ubuntu"`}},
		"artifact":        {func(i *FluxInstance) { i.Spec.Distribution.Artifact = "https://x" }, []string{"spec.distribution.artifact"}},
		"component":       {func(i *FluxInstance) { i.Spec.Components = []string{"source-controller", "flagger"} }, []string{`spec.components[1]: Unsupported value: "flagger": supported values: "source-controller"`}},
		"component dup":   {func(i *FluxInstance) { i.Spec.Components = []string{"source-controller", "source-controller"} }, []string{`spec.components[1]: Duplicate value: "source-controller"`}},
		"cluster type":    {func(i *FluxInstance) { i.Spec.Cluster.Type = "k3s" }, []string{`spec.cluster.type: Unsupported value: "k3s"`}},
		"size":            {func(i *FluxInstance) { i.Spec.Cluster.Size = "huge" }, []string{`spec.cluster.size: Unsupported value: "huge"`}},
		"mtwi":            {func(i *FluxInstance) { i.Spec.Cluster.MultitenantWorkloadIdentity = true }, []string{"spec.cluster.multitenantWorkloadIdentity: Forbidden: requires spec.cluster.objectLevelWorkloadIdentity to be true"}},
		"domain":          {func(i *FluxInstance) { i.Spec.Cluster.Domain = "bad domain" }, []string{"spec.cluster.domain"}},
		"tenant sa":       {func(i *FluxInstance) { i.Spec.Cluster.TenantDefaultServiceAccount = "Bad SA" }, []string{"spec.cluster.tenantDefaultServiceAccount"}},
		"sharding persistent": {func(i *FluxInstance) {
			i.Spec.Sharding = &Sharding{Key: DefaultShardingKey, Shards: []string{"a"}, Storage: "persistent"}
		}, []string{`spec.sharding.storage: Invalid value: "persistent": persistent sharding storage requires spec.storage`}},
		"sharding enum": {func(i *FluxInstance) {
			i.Spec.Sharding = &Sharding{Key: DefaultShardingKey, Shards: []string{"a"}, Storage: "disk"}
		}, []string{`spec.sharding.storage: Unsupported value: "disk"`}},
		"shards": {func(i *FluxInstance) { i.Spec.Sharding = &Sharding{Key: DefaultShardingKey} }, []string{"spec.sharding.shards: Required value"}},
		"shard name": {func(i *FluxInstance) {
			i.Spec.Sharding = &Sharding{Key: DefaultShardingKey, Shards: []string{"A_b", "x", "x"}}
		}, []string{`spec.sharding.shards[0]: Invalid value: "A_b": not a valid shard name`, `spec.sharding.shards[2]: Duplicate value: "x"`}},
		"shard key": {func(i *FluxInstance) { i.Spec.Sharding = &Sharding{Key: "bad key", Shards: []string{"a"}} }, []string{"spec.sharding.key"}},
		"storage":   {func(i *FluxInstance) { i.Spec.Storage = &Storage{Size: "ten"} }, []string{"spec.storage.class: Required value", `spec.storage.size: Invalid value: "ten"`}},
		"patch": {func(i *FluxInstance) {
			i.Spec.Kustomize = &Kustomize{Patches: []Patch{{Patch: " "}, {Patch: "x", Target: &Selector{Name: "(", LabelSelector: "a in (", AnnotationSelector: "!!"}}}}
		}, []string{"spec.kustomize.patches[0].patch: Required value", "spec.kustomize.patches[1].target.name", "spec.kustomize.patches[1].target.labelSelector", "spec.kustomize.patches[1].target.annotationSelector"}},
		"common metadata": {func(i *FluxInstance) {
			i.Spec.CommonMetadata = &CommonMetadata{Labels: map[string]string{"a": "not valid!"}, Annotations: map[string]string{"bad key!": "x"}}
		}, []string{"spec.commonMetadata.labels[a]", "spec.commonMetadata.annotations"}},
		"sync required": {func(i *FluxInstance) { i.Spec.Sync = &Sync{Interval: "1m"} }, []string{"spec.sync.kind: Required value", "spec.sync.url: Required value", "spec.sync.ref: Required value", "spec.sync.path: Required value"}},
		"sync kind":     {func(i *FluxInstance) { i.Spec.Sync = sync("HelmRepository", "https://x", "") }, []string{`spec.sync.kind: Unsupported value: "HelmRepository"`}},
		"sync interval": {func(i *FluxInstance) {
			s := sync("GitRepository", "https://x", "")
			s.Interval = "1 minute"
			i.Spec.Sync = s
		}, []string{`spec.sync.interval: Invalid value: "1 minute": not a duration`}},
		"github on oci": {func(i *FluxInstance) { i.Spec.Sync = sync("OCIRepository", "oci://x", "github") }, []string{`spec.sync.provider: Invalid value: "github": only supported with kind GitRepository`}},
		"gcp on git":    {func(i *FluxInstance) { i.Spec.Sync = sync("GitRepository", "https://x", "gcp") }, []string{`spec.sync.provider: Invalid value: "gcp": only supported with kind OCIRepository or Bucket`}},
		"provider enum": {func(i *FluxInstance) { i.Spec.Sync = sync("Bucket", "minio", "ibm") }, []string{`spec.sync.provider: Unsupported value: "ibm"`}},
		"git url":       {func(i *FluxInstance) { i.Spec.Sync = sync("GitRepository", "git@github.com:x/y", "") }, []string{"spec.sync.url"}},
		"oci url":       {func(i *FluxInstance) { i.Spec.Sync = sync("OCIRepository", "ghcr.io/x", "") }, []string{`spec.sync.url: Invalid value: "ghcr.io/x": must start with oci://`}},
		"sync name": {func(i *FluxInstance) {
			s := sync("Bucket", "minio", "")
			s.Name = "Bad"
			s.PullSecret = "Bad"
			i.Spec.Sync = s
		}, []string{"spec.sync.name", "spec.sync.pullSecret"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			inst := decodeDefault(t, "")
			tc.mutate(inst)
			err := inst.Validate()
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
	// All violations are reported at once, one per line, each a field error naming its path.
	inst := decodeDefault(t, "")
	inst.Name = "x"
	inst.Spec.Cluster.Size = "huge"
	err := inst.Validate()
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 2, err.Error())
	assert.True(t, strings.HasPrefix(lines[0], "metadata.name: "), lines[0])
	assert.True(t, strings.HasPrefix(lines[1], "spec.cluster.size: "), lines[1])
	var fieldErr *field.Error
	require.ErrorAs(t, err, &fieldErr)

	// Valid combinations pass.
	inst = decodeDefault(t, "")
	inst.Spec.Sync = sync("GitRepository", "https://x", "github")
	require.NoError(t, inst.Validate())
	inst.Spec.Sync = sync("Bucket", "minio.local", "gcp")
	require.NoError(t, inst.Validate())
	for _, iv := range []string{"1m", "1.5h", "1h30m", "500ms"} {
		inst.Spec.Sync.Interval = iv
		require.NoError(t, inst.Validate(), iv)
	}
}

func sync(kind, url, provider string) *Sync {
	return &Sync{Kind: kind, URL: url, Ref: "main", Path: "./", Provider: provider, Interval: "1m", Name: "flux-system"}
}

func TestValidateForVersion(t *testing.T) {
	inst := decodeDefault(t, "")
	inst.Spec.Components = append(inst.Spec.Components, SourceWatcher)
	inst.Spec.Cluster.ObjectLevelWorkloadIdentity = true
	inst.Spec.Cluster.MultitenantWorkloadIdentity = true
	inst.Spec.Sync = sync("GitRepository", "https://x", "aws")

	err := inst.ValidateForVersion("v2.5.1")
	require.Error(t, err)
	for _, w := range []string{
		"spec.components[4]: component source-watcher requires Flux v2.7.0 or later, the resolved version is v2.5.1",
		"spec.cluster.objectLevelWorkloadIdentity: object-level workload identity requires Flux v2.6.0",
		"spec.cluster.multitenantWorkloadIdentity: multi-tenant workload identity requires Flux v2.7.0",
		"spec.sync.provider: provider aws for a GitRepository requires Flux v2.9.0",
	} {
		assert.Contains(t, err.Error(), w)
	}
	err = inst.ValidateForVersion("2.6.0")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "objectLevelWorkloadIdentity")
	err = inst.ValidateForVersion("v2.7.5")
	require.ErrorContains(t, err, "provider aws")
	assert.NotContains(t, err.Error(), "source-watcher")
	require.NoError(t, inst.ValidateForVersion("v2.9.0"))
	require.ErrorContains(t, inst.ValidateForVersion("nonsense"), "spec.distribution.version")

	// aws for OCI is fine on any version.
	inst = decodeDefault(t, "")
	inst.Spec.Sync = sync("OCIRepository", "oci://x", "aws")
	require.NoError(t, inst.ValidateForVersion("v2.2.3"))
}
