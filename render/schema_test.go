package render

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/kustomize/kyaml/openapi"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
)

// Every built-in kind Build emits must be in the schema subset: a kind without
// a schema would be merged by kyaml's heuristics instead of its merge keys.
func TestSchemaSubsetCoversRenderedKinds(t *testing.T) {
	require.NoError(t, useSchemaSubset())
	seen := map[string]bool{}
	for _, v := range releaseVersions(t) {
		inst := instance(t, strings.TrimPrefix(v, "v"), "ghcr.io/fluxcd", `  components: [source-controller, kustomize-controller, helm-controller, notification-controller, image-reflector-controller, image-automation-controller]
  storage: {class: standard, size: 1Gi}
`)
		objs, err := Build(inst, loadRelease(t, v), nil)
		require.NoError(t, err, v)
		for _, o := range objs {
			tm := kyaml.TypeMeta{APIVersion: o.GetAPIVersion(), Kind: o.GetKind()}
			if strings.Contains(tm.APIVersion, "fluxcd.io/") || seen[tm.APIVersion+"/"+tm.Kind] {
				continue // custom resources have no built-in schema
			}
			seen[tm.APIVersion+"/"+tm.Kind] = true
			assert.NotNil(t, openapi.SchemaForResourceType(tm), "%s %s is not in k8sschema.json: add it to internal/schemagen and go generate", tm.APIVersion, tm.Kind)
		}
	}
	assert.True(t, seen["apps/v1/Deployment"] && seen["v1/PersistentVolumeClaim"] && seen["v1/Namespace"])
}

// The subset gives the merge keys of the full schema: containers merge by
// name, and a list without strategy (tolerations) is replaced.
func TestStrategicMergeUsesMergeKeys(t *testing.T) {
	objs := build(t, "2.7.5", `  kustomize:
    patches:
      - patch: |
          apiVersion: apps/v1
          kind: Deployment
          metadata:
            name: source-controller
          spec:
            template:
              spec:
                containers:
                  - name: manager
                    env:
                      - name: EXTRA
                        value: "1"
                tolerations:
                  - {key: a, operator: Exists}
`)
	ps := podSpec(t, objs, "source-controller")
	cs := ps["containers"].([]any)
	require.Len(t, cs, 1)
	c := cs[0].(map[string]any)
	assert.NotEmpty(t, c["image"], "merged into the existing container")
	env := c["env"].([]any)
	assert.Greater(t, len(env), 1, "env merged by name, not replaced")
	assert.Contains(t, env, map[string]any{"name": "EXTRA", "value": "1"})
	assert.Equal(t, []any{map[string]any{"key": "a", "operator": "Exists"}}, ps["tolerations"])
}
