package render

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A patch that sets a controller's image to another tag of the same image pins that controller
// to another release: the rest of the rendering (CRDs, arguments, RBAC) moves to the instance's
// version and the controller does not. `kubectl fluxinstance migrate` writes such patches on
// purpose (they keep the images `flux bootstrap` deployed, so that the takeover restarts
// nothing), and they outlive the version they were written for when a person only changes
// spec.distribution.version. The operator renders them silently; Build warns.

// containerImages maps each Deployment's containers, by "Deployment NAME container NAME", to
// their images.
func containerImages(objs []*unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		podSpec, ok := nestedMap(o.Object, "spec", "template", "spec")
		if !ok {
			continue
		}
		for _, c := range podContainers(podSpec) {
			name, _ := c["name"].(string)
			if img, ok := c["image"].(string); ok {
				out[fmt.Sprintf("Deployment %s container %s", o.GetName(), name)] = img
			}
		}
	}
	return out
}

// warnPinnedImages warns of every container whose image the patches moved from the release's
// tag to another tag of the same image.
func warnPinnedImages(before map[string]string, objs []*unstructured.Unstructured, version string, warn func(string)) {
	after := containerImages(objs)
	for _, container := range slices.Sorted(maps.Keys(after)) {
		img := after[container]
		was, ok := before[container]
		if !ok || was == img {
			continue
		}
		repo, tag, _ := SplitImage(img)
		wasRepo, wasTag, _ := SplitImage(was)
		if imageName(repo) != imageName(wasRepo) || tag == wasTag {
			continue
		}
		warn(fmt.Sprintf("spec.kustomize.patches set %s to %s, not Flux %s's %s: that controller stays at another release "+
			"than the CRDs and the rest of %s; remove the patch to upgrade it (`kubectl fluxinstance migrate` writes such "+
			"patches to keep the images that ran before the takeover)", container, img, version, wasTag, version))
	}
}

// SplitImage splits an image reference into its repository (registry and path), its tag and its
// digest, each "" when absent: "ghcr.io/fluxcd/source-controller:v1.9.4@sha256:…" is
// "ghcr.io/fluxcd/source-controller", "v1.9.4", "sha256:…". A port in the registry is not a tag.
func SplitImage(img string) (repo, tag, digest string) {
	repo = img
	if i := strings.IndexByte(repo, '@'); i >= 0 {
		repo, digest = repo[:i], repo[i+1:]
	}
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}

// imageName is the last path element of an image's repository: the component, for Flux's images.
func imageName(repo string) string { return repo[strings.LastIndexByte(repo, '/')+1:] }
