package krew

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"text/template"

	"sigs.k8s.io/yaml"
)

// ManifestInput is what the manifest template is rendered with.
type ManifestInput struct {
	// Version is the Makefile's VERSION; the manifest gets SemverVersion(Version).
	Version string
	// URLBase is where the release assets live; an archive's URI is URLBase/ArchiveName.
	URLBase string
	// Checksums maps archive names to their sha256 (dist/checksums.txt).
	Checksums map[string]string
}

// RenderManifest executes the manifest template (krew/fluxinstance.yaml). Besides {{ .Version }}
// the template calls {{ uri "os/arch" }} and {{ sha256 "os/arch" }} for each platform entry. Every
// archive in Checksums must be referenced and every referenced archive must exist, so a manifest
// can neither miss a built platform nor point at one that was not built. The result is checked
// with CheckManifest.
func RenderManifest(tmpl []byte, in ManifestInput) ([]byte, error) {
	used := map[string]bool{}
	archive := func(platform string) (string, error) {
		p, err := ParsePlatform(platform)
		if err != nil {
			return "", err
		}
		name := p.ArchiveName()
		if _, ok := in.Checksums[name]; !ok {
			return "", fmt.Errorf("the template names platform %s but %s was not built (make dist)", p, name)
		}
		used[name] = true
		return name, nil
	}
	funcs := template.FuncMap{
		"uri": func(platform string) (string, error) {
			name, err := archive(platform)
			return strings.TrimSuffix(in.URLBase, "/") + "/" + name, err
		},
		"sha256": func(platform string) (string, error) {
			name, err := archive(platform)
			return in.Checksums[name], err
		},
	}
	t, err := template.New("manifest").Funcs(funcs).Option("missingkey=error").Parse(string(tmpl))
	if err != nil {
		return nil, fmt.Errorf("parsing the manifest template: %w", err)
	}
	if in.URLBase == "" {
		return nil, fmt.Errorf("the release URL base is empty: set KREW_URL_BASE")
	}
	var out bytes.Buffer
	data := struct{ Version string }{Version: SemverVersion(in.Version)}
	if err := t.Execute(&out, data); err != nil {
		return nil, fmt.Errorf("rendering the manifest template: %w", err)
	}
	var unused []string
	for name := range in.Checksums {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		return nil, fmt.Errorf("the manifest template has no platform entry for %s: add one to krew/fluxinstance.yaml", strings.Join(unused, ", "))
	}
	if err := CheckManifest(out.Bytes()); err != nil {
		return nil, fmt.Errorf("the rendered manifest: %w", err)
	}
	return out.Bytes(), nil
}

// Manifest is the part of a krew Plugin manifest that CheckManifest and the tests read.
type Manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string             `json:"version"`
		Homepage         string             `json:"homepage"`
		ShortDescription string             `json:"shortDescription"`
		Description      string             `json:"description"`
		Caveats          string             `json:"caveats"`
		Platforms        []ManifestPlatform `json:"platforms"`
	} `json:"spec"`
}

// ManifestPlatform is one spec.platforms entry.
type ManifestPlatform struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	URI    string `json:"uri"`
	SHA256 string `json:"sha256"`
	Bin    string `json:"bin"`
}

// ParseManifest decodes the fields of a rendered manifest that CheckManifest and the tests read.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// CheckManifest enforces the krew-index review rules that krew's own validator does not: a short
// description of at most 50 characters, a description wrapped at 80 columns, a strict "v"-semver
// version, quoted sha256 sums, and one selector per platform naming exactly os and arch.
func CheckManifest(data []byte) error {
	m, err := ParseManifest(data)
	if err != nil {
		return err
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" {
		add("apiVersion/kind are %s/%s, want krew.googlecontainertools.github.com/v1alpha2/Plugin", m.APIVersion, m.Kind)
	}
	if m.Metadata.Name != PluginName {
		add("metadata.name is %q, want %q", m.Metadata.Name, PluginName)
	}
	if !IsStrictSemver(m.Spec.Version) {
		add("spec.version %q is not a v-prefixed semantic version", m.Spec.Version)
	}
	if n := len([]rune(m.Spec.ShortDescription)); n == 0 || n > 50 {
		add("spec.shortDescription has %d characters, want 1 to 50", n)
	}
	if m.Spec.Homepage == "" {
		add("spec.homepage is empty")
	}
	if strings.TrimSpace(m.Spec.Description) == "" {
		add("spec.description is empty")
	}
	for i, line := range strings.Split(m.Spec.Description, "\n") {
		if n := len([]rune(line)); n > 80 {
			add("spec.description line %d has %d characters, wrap it at 80", i+1, n)
		}
	}
	seen := map[string]int{}
	for i, p := range m.Spec.Platforms {
		labels := p.Selector.MatchLabels
		if len(labels) != 2 || labels["os"] == "" || labels["arch"] == "" {
			add("spec.platforms[%d].selector.matchLabels must name exactly os and arch, got %v", i, labels)
			continue
		}
		key := labels["os"] + "/" + labels["arch"]
		if j, dup := seen[key]; dup {
			add("spec.platforms[%d] and [%d] both select %s", j, i, key)
		}
		seen[key] = i
		if p.URI == "" || p.Bin == "" || len(p.SHA256) != 64 {
			add("spec.platforms[%d] (%s) needs uri, bin and a 64-character sha256", i, key)
		}
	}
	if len(m.Spec.Platforms) == 0 {
		add("spec.platforms is empty")
	}
	// A sha256 that happens to be all digits would otherwise be read as a number by YAML tools.
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "sha256:"); ok && !strings.HasPrefix(strings.TrimSpace(v), `"`) {
			add("sha256 values must be quoted: %s", strings.TrimSpace(line))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}
