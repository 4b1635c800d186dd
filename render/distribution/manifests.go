package distribution

import (
	"fmt"
	"io"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/embedded"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/internal/archive"
)

// A Flux release's manifests.tar.gz holds, at its root, one file per component
// (source-controller.yaml, …) plus rbac.yaml and policies.yaml. The files carry no Flux version:
// no app.kubernetes.io/version label (flux install adds it at install time) and images are
// tagged with each controller's own version (fluxcd/source-controller:v1.7.4). So the version
// is found, in order of trust, from:
//  1. an app.kubernetes.io/version label, should the files have one (e.g. re-packaged output);
//  2. a version in the file or directory name (flux-v2.7.5-manifests.tar.gz, v2.7.5/);
//  3. the controller image tags, matched against the image lists of the embedded distribution
//     (each Flux release pins one set of controller versions).

var (
	versionLabel = regexp.MustCompile(`(?m)^\s*app\.kubernetes\.io/version:\s*["']?(v?\d+\.\d+\.\d+)["']?\s*$`)
	fluxImage    = regexp.MustCompile(`(?m)^\s*(?:-\s+)?image:\s*["']?(?:[^\s"']*/)?fluxcd/([a-z0-9-]+):([^\s"'@]+)`)
	nameVersion  = regexp.MustCompile(`(?:^|[^0-9.])v?(\d+\.\d+\.\d+)(?:[^0-9]|$)`)
)

// openManifests opens the loose .yaml files of a Flux release as a one-version distribution
// without image lists.
func openManifests(files []looseFile, desc, pathHint string, opts Options) (*Distribution, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("distribution %s: found neither flux/vX.Y.Z/ directories (the Flux Operator's distribution layout) "+
			"nor a Flux release's manifests (source-controller.yaml, … at the root or in one directory)", desc)
	}
	dir := path.Dir(files[0].name)
	hasController := false
	for _, f := range files {
		if path.Dir(f.name) != dir {
			return nil, fmt.Errorf("distribution %s: Flux release manifests must sit in one directory, found %s and %s", desc, files[0].name, f.name)
		}
		if strings.HasSuffix(f.name, "-controller.yaml") {
			hasController = true
		}
	}
	if !hasController {
		return nil, fmt.Errorf("distribution %s: found neither flux/vX.Y.Z/ directories nor a Flux release's *-controller.yaml manifests", desc)
	}
	hints := []string{}
	if dir != "." {
		hints = append(hints, dir)
	}
	if pathHint != "" {
		hints = append(hints, filepath.Base(pathHint), filepath.Base(filepath.Dir(pathHint)))
	}
	version, err := detectVersion(files, hints, opts.Warn)
	if err != nil {
		return nil, fmt.Errorf("distribution %s: %w", desc, err)
	}
	content := map[string][]byte{}
	for _, f := range files {
		content[path.Base(f.name)] = f.data
	}
	return &Distribution{
		description: fmt.Sprintf("Flux %s manifests (%s)", version, desc),
		versions:    []string{version},
		load: func(string) (*Release, error) {
			r := newRelease(version)
			for k, v := range content {
				r.Manifests[k] = v
			}
			return r, nil
		},
	}, nil
}

func detectVersion(files []looseFile, hints []string, warn func(string)) (string, error) {
	labels := map[string]bool{}
	tags := map[string]string{} // component -> tag
	for _, f := range files {
		for _, m := range versionLabel.FindAllSubmatch(f.data, -1) {
			labels["v"+strings.TrimPrefix(string(m[1]), "v")] = true
		}
		for _, m := range fluxImage.FindAllSubmatch(f.data, -1) {
			tags[string(m[1])] = string(m[2])
		}
	}
	if len(labels) == 1 {
		for v := range labels {
			return v, nil
		}
	}
	if len(labels) > 1 {
		return "", fmt.Errorf("the manifests carry several app.kubernetes.io/version labels (%s): they are not one Flux release", strings.Join(sortedNames(labels), ", "))
	}

	var hinted string
	for _, h := range hints {
		if m := nameVersion.FindStringSubmatch(h); m != nil {
			hinted = "v" + m[1]
			break
		}
	}
	candidates, best, withManifests, known := matchImageTags(tags)
	switch {
	case hinted != "":
		if known && len(candidates) > 0 && !slices.Contains(candidates, hinted) {
			warn(fmt.Sprintf("the manifests are named %s but their controller images (%s) are those of Flux %s; using %s",
				hinted, describeTags(tags), strings.Join(candidates, " or "), hinted))
		}
		return hinted, nil
	case len(candidates) == 1:
		if best < len(tags) {
			warn(fmt.Sprintf("the controller images of the manifests (%s) match Flux %s on %d of %d images; using %s (put the version in the file name to be sure)",
				describeTags(tags), candidates[0], best, len(tags), candidates[0]))
		}
		return candidates[0], nil
	case len(candidates) > 1:
		// Several releases shipped the same controllers (e.g. a CLI-only patch release): prefer
		// the newest one the embedded distribution has manifests for.
		v := candidates[len(candidates)-1]
		for _, c := range candidates {
			if withManifests[c] {
				v = c
			}
		}
		warn(fmt.Sprintf("the controller images of the manifests (%s) match Flux %s; using %s (put the version in the file name to choose)",
			describeTags(tags), strings.Join(candidates, ", "), v))
		return v, nil
	}
	why := "the embedded distribution lists no version with these controller images"
	if !known {
		why = "this binary has no embedded distribution to look the controller images up in"
	}
	return "", fmt.Errorf("cannot tell which Flux version these release manifests are: they have no app.kubernetes.io/version label, "+
		"no version in their file or directory name, and %s (%s); name the file or directory after the version, e.g. flux-v2.7.5-manifests.tar.gz",
		why, describeTags(tags))
}

// matchImageTags returns the versions (ascending) of the embedded distribution whose
// upstream image list shares the most controller tags with tags (best of them), and which
// versions it has manifests for; known is false without an embedded distribution.
func matchImageTags(tags map[string]string) (candidates []string, best int, withManifests map[string]bool, known bool) {
	if len(tags) == 0 {
		return nil, 0, nil, false
	}
	data, err := embedded.Archive()
	if err != nil {
		return nil, 0, nil, false
	}
	idx, base, ok, err := archive.ReadIndex(data)
	if err != nil || !ok || idx.Images.Size == 0 {
		return nil, 0, nil, false
	}
	withManifests = map[string]bool{}
	for v := range idx.Versions {
		withManifests[v] = true
	}
	lists := map[string][]byte{}
	zr, err := archive.MemberReader(data, base, idx.Images)
	if err != nil {
		return nil, 0, nil, false
	}
	err = archive.Walk(zr, archive.DefaultLimits(), func(name string, size int64, body io.Reader) error {
		_, v, file, ok := classify(name)
		if !ok || file != "upstream-alpine.yaml" {
			return nil
		}
		b, err := archive.ReadAll(body, size)
		lists[v] = b
		return err
	})
	if err != nil {
		return nil, 0, nil, false
	}
	for v, raw := range lists {
		var list struct {
			Images []struct {
				Name   string `json:"name"`
				NewTag string `json:"newTag"`
			} `json:"images"`
		}
		if yaml.Unmarshal(raw, &list) != nil {
			continue
		}
		have := map[string]string{}
		for _, img := range list.Images {
			have[path.Base(img.Name)] = img.NewTag
		}
		score := 0
		for c, t := range tags {
			if have[c] == t {
				score++
			}
		}
		switch {
		case score > best:
			best, candidates = score, []string{v}
		case score == best:
			candidates = append(candidates, v)
		}
	}
	// At most one controller may differ: the Flux data itself has such a case (v2.2.3's
	// manifests ship source-controller v1.2.5, its image list v1.2.4), and more than one
	// mismatch means a release the embedded distribution does not know.
	if best == 0 || best < len(tags)-1 {
		return nil, 0, withManifests, true
	}
	sortVersions(candidates)
	return candidates, best, withManifests, true
}

func describeTags(tags map[string]string) string {
	if len(tags) == 0 {
		return "no fluxcd/ images found"
	}
	out := make([]string, 0, len(tags))
	for _, c := range sortedNames(tags) {
		out = append(out, c+":"+tags[c])
	}
	return strings.Join(out, ", ")
}
