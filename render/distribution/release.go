package distribution

// Release is one Flux version of a distribution: the upstream install manifests of every
// component plus the image lists per variant. It is the unit the renderer works on.
type Release struct {
	// Version is the Flux version with its "v" prefix, e.g. "v2.7.5".
	Version string
	// Manifests maps a file name of flux/<version>/ (e.g. "source-controller.yaml",
	// "rbac.yaml", "policies.yaml") to its content.
	Manifests map[string][]byte
	// Images maps a variant (e.g. "upstream-alpine") to the content of
	// flux-images/<version>/<variant>.yaml, a kustomize `images:` list. Empty when the
	// distribution has no image list for this version (images then stay tag-only).
	Images map[string][]byte
}
