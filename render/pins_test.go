package render

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A patch that keeps a controller at another release's image (what `migrate` writes to restart
// nothing) renders as the operator renders it, with a warning naming the container, the image
// and the release's tag; a patch to another image, another registry with the release's tag, or
// anything but the image warns of nothing.
func TestBuildWarnsOfPatchesPinningAnotherRelease(t *testing.T) {
	patches := func(image string) string {
		return `  kustomize:
    patches:
      - target:
          kind: Deployment
          name: kustomize-controller
        patch: |
          - op: replace
            path: /spec/template/spec/containers/0/image
            value: ` + image + `
`
	}
	warningsOf := func(t *testing.T, extra string) []string {
		var warnings []string
		objs, err := Build(instance(t, "2.9.4", "ghcr.io/fluxcd", extra), loadRelease(t, "v2.9.4"), func(w string) { warnings = append(warnings, w) })
		require.NoError(t, err)
		require.NotNil(t, find(objs, "Deployment", "kustomize-controller"))
		return warnings
	}

	warnings := warningsOf(t, patches("ghcr.io/fluxcd/kustomize-controller:v1.2.2"))
	require.Len(t, warnings, 1)
	assert.Equal(t, "spec.kustomize.patches set Deployment kustomize-controller container manager to ghcr.io/fluxcd/kustomize-controller:v1.2.2, "+
		"not Flux v2.9.4's v1.9.4: that controller stays at another release than the CRDs and the rest of v2.9.4; remove the patch to upgrade it "+
		"(`kubectl fluxinstance migrate` writes such patches to keep the images that ran before the takeover)", warnings[0])

	for name, image := range map[string]string{
		"the release's tag without its digest": "ghcr.io/fluxcd/kustomize-controller:v1.9.4",
		"another registry, the release's tag":  "registry.example.com/fluxcd/kustomize-controller:v1.9.4",
		"another image":                        "registry.example.com/team/patched-kustomizer:v0.1.0",
	} {
		assert.Empty(t, warningsOf(t, patches(image)), name)
	}
	assert.Empty(t, warningsOf(t, `  kustomize:
    patches:
      - target:
          kind: Deployment
        patch: |
          - op: add
            path: /spec/template/spec/containers/0/args/-
            value: --log-level=debug
`), "a patch that leaves images alone")
}
