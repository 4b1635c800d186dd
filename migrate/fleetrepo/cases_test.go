package fleetrepo_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleetrepo"
)

// rewriteOne plans and writes a repository of one file, returning the file afterwards and the
// plan's warnings.
func rewriteOne(t *testing.T, target *fleetrepo.Target, content string) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "objects.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	p, err := fleetrepo.NewPlan(dir, target, fleetrepo.Options{})
	require.NoError(t, err)
	require.NoError(t, p.Write())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var warnings []string
	for _, w := range p.Warnings {
		warnings = append(warnings, w.String())
	}
	return string(data), warnings
}

func TestRewriteCases(t *testing.T) {
	target := newTarget(t)
	cases := map[string]struct {
		in, want string
		warnings []string // substrings, one per warning, in order
	}{
		"quoting styles are kept": {
			in:   "apiVersion: 'source.toolkit.fluxcd.io/v1beta2'\nkind: GitRepository\n---\napiVersion: \"kustomize.toolkit.fluxcd.io/v1beta1\"\nkind: Kustomization\n",
			want: "apiVersion: 'source.toolkit.fluxcd.io/v1'\nkind: GitRepository\n---\napiVersion: \"kustomize.toolkit.fluxcd.io/v1\"\nkind: Kustomization\n",
		},
		"an escaped value is left for a person": {
			in:       "apiVersion: \"source.toolkit.fluxcd.io\\x2fv1beta2\"\nkind: GitRepository\n",
			want:     "apiVersion: \"source.toolkit.fluxcd.io\\x2fv1beta2\"\nkind: GitRepository\n",
			warnings: []string{"objects.yaml:1: GitRepository: source.toolkit.fluxcd.io/v1beta2 is not served by the target, but it cannot be edited in place"},
		},
		"CRLF line ends are kept": {
			in:   "apiVersion: helm.toolkit.fluxcd.io/v2beta2\r\nkind: HelmRelease # x\r\nspec: {}\r\n",
			want: "apiVersion: helm.toolkit.fluxcd.io/v2\r\nkind: HelmRelease # x\r\nspec: {}\r\n",
		},
		"a byte order mark is kept": {
			in:   "\ufeffapiVersion: helm.toolkit.fluxcd.io/v2beta1\nkind: HelmRelease\n",
			want: "\ufeffapiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\n",
		},
		"columns count characters, not bytes": {
			in:   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"ünïcødé—名前\", annotations: {ref: x}}\ndata: {}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nspec: {path: \"./ä/ö\", sourceRef: {kind: GitRepository, apiVersion: source.toolkit.fluxcd.io/v1beta2, name: ü}}\n",
			want: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"ünïcødé—名前\", annotations: {ref: x}}\ndata: {}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nspec: {path: \"./ä/ö\", sourceRef: {kind: GitRepository, apiVersion: source.toolkit.fluxcd.io/v1, name: ü}}\n",
		},
		"an anchored reference is edited once, where it is written": {
			in:       "apiVersion: kustomize.toolkit.fluxcd.io/v1beta2\nkind: Kustomization\nspec:\n  sourceRef: &src\n    kind: GitRepository\n    apiVersion: source.toolkit.fluxcd.io/v1beta2\n  copy: *src\n",
			want:     "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nspec:\n  sourceRef: &src\n    kind: GitRepository\n    apiVersion: source.toolkit.fluxcd.io/v1\n  copy: *src\n",
			warnings: []string{"objects.yaml:1: Kustomization: spec.copy would be dropped at kustomize.toolkit.fluxcd.io/v1"},
		},
		"a patch target without a kind takes the group's one storage version": {
			in:       "patches:\n  - target: {group: helm.toolkit.fluxcd.io, version: v2beta1}\n    path: p.yaml\n  - target: {group: notification.toolkit.fluxcd.io, version: v1beta2}\n    path: q.yaml\n",
			want:     "patches:\n  - target: {group: helm.toolkit.fluxcd.io, version: v2}\n    path: p.yaml\n  - target: {group: notification.toolkit.fluxcd.io, version: v1beta2}\n    path: q.yaml\n",
			warnings: []string{"objects.yaml:4: patches[1].target: notification.toolkit.fluxcd.io/v1beta2 left unchanged: no sibling kind, and the kinds of notification.toolkit.fluxcd.io store different versions"},
		},
		"an inline patch that is not a literal block is left for a person": {
			in:       "patches:\n  - patch: \"apiVersion: helm.toolkit.fluxcd.io/v2beta1\\nkind: HelmRelease\\nmetadata: {name: x}\\n\"\n",
			want:     "patches:\n  - patch: \"apiVersion: helm.toolkit.fluxcd.io/v2beta1\\nkind: HelmRelease\\nmetadata: {name: x}\\n\"\n",
			warnings: []string{"objects.yaml:2: patches[0].patch: the inline patch names Flux versions the target does not serve (HelmRelease x helm.toolkit.fluxcd.io/v2beta1 → v2), but only a literal block (|) can be edited in place"},
		},
		"an inline strategic-merge patch of kustomize and its dropped fields": {
			in:       "patchesStrategicMerge:\n  - |-\n    # header comment\n    apiVersion: kustomize.toolkit.fluxcd.io/v1beta2\n    kind: Kustomization\n    metadata: {name: apps}\n    spec:\n      validation: client\n      $patch: merge\n",
			want:     "patchesStrategicMerge:\n  - |-\n    # header comment\n    apiVersion: kustomize.toolkit.fluxcd.io/v1\n    kind: Kustomization\n    metadata: {name: apps}\n    spec:\n      validation: client\n      $patch: merge\n",
			warnings: []string{"objects.yaml:4: patchesStrategicMerge[0]: Kustomization apps: spec.validation would be dropped at kustomize.toolkit.fluxcd.io/v1"},
		},
		"JSON 6902 operations that set an apiVersion, in a file and inline": {
			in:       "- op: replace\n  path: /spec/sourceRef/apiVersion\n  value: source.toolkit.fluxcd.io/v1beta2\n- op: add\n  path: /spec/providerRef/apiVersion\n  value: notification.toolkit.fluxcd.io/v1beta2\n---\npatches:\n  - target: {kind: Kustomization}\n    patch: |\n      - {op: replace, path: /spec/sourceRef/apiVersion, value: source.toolkit.fluxcd.io/v1beta1}\n",
			want:     "- op: replace\n  path: /spec/sourceRef/apiVersion\n  value: source.toolkit.fluxcd.io/v1\n- op: add\n  path: /spec/providerRef/apiVersion\n  value: notification.toolkit.fluxcd.io/v1beta2\n---\npatches:\n  - target: {kind: Kustomization}\n    patch: |\n      - {op: replace, path: /spec/sourceRef/apiVersion, value: source.toolkit.fluxcd.io/v1}\n",
			warnings: []string{"objects.yaml:6: [1].value (add /spec/providerRef/apiVersion): notification.toolkit.fluxcd.io/v1beta2 left unchanged: no sibling kind"},
		},
		"aliases that expand to a billion values are not expanded": {
			in:       "apiVersion: helm.toolkit.fluxcd.io/v2beta1\nkind: HelmRelease\nspec:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n  i: [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
			want:     "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nspec:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n  i: [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
			warnings: []string{"objects.yaml:1: HelmRelease: could not check which fields helm.toolkit.fluxcd.io/v2 drops (line 4: the object expands to more than 200 levels or 1048576 values (aliases))"},
		},
		"a file of comments and an empty document change nothing": {
			in:   "# nothing here\n---\n---\n# still nothing\n",
			want: "# nothing here\n---\n---\n# still nothing\n",
		},
		"served versions are left alone": {
			in:   "apiVersion: notification.toolkit.fluxcd.io/v1beta3\nkind: Alert\nspec:\n  eventSources: [{kind: Kustomization, name: '*', apiVersion: kustomize.toolkit.fluxcd.io/v1}]\n",
			want: "apiVersion: notification.toolkit.fluxcd.io/v1beta3\nkind: Alert\nspec:\n  eventSources: [{kind: Kustomization, name: '*', apiVersion: kustomize.toolkit.fluxcd.io/v1}]\n",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, warnings := rewriteOne(t, target, tc.in)
			assert.Equal(t, tc.want, got)
			require.Len(t, warnings, len(tc.warnings), strings.Join(warnings, "\n"))
			for i, w := range tc.warnings {
				assert.Contains(t, warnings[i], w)
			}
		})
	}
}

func TestWriteRefusesAFileChangedSinceThePlan(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.yaml")
	require.NoError(t, os.WriteFile(path, []byte("apiVersion: helm.toolkit.fluxcd.io/v2beta2\nkind: HelmRelease\n"), 0o644))
	p, err := fleetrepo.NewPlan(dir, newTarget(t), fleetrepo.Options{})
	require.NoError(t, err)
	require.Len(t, p.Files, 1)
	edited := "apiVersion: helm.toolkit.fluxcd.io/v2beta2\nkind: HelmRelease\nmetadata: {name: edited}\n"
	require.NoError(t, os.WriteFile(path, []byte(edited), 0o644))
	err = p.Write()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a.yaml changed since it was read: nothing was written")
	data, _ := os.ReadFile(path)
	assert.Equal(t, edited, string(data))
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 1, "no temporary file left behind")
}

func TestNewTargetNeedsFluxCRDs(t *testing.T) {
	_, err := fleetrepo.NewTarget(nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no Flux CustomResourceDefinition")
}

func TestSymbolicLinksAreListedNotFollowed(t *testing.T) {
	dir := t.TempDir()
	content := "apiVersion: helm.toolkit.fluxcd.io/v2beta2\nkind: HelmRelease\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "real.yaml"), []byte(content), 0o644))
	require.NoError(t, os.Symlink("real.yaml", filepath.Join(dir, "link.yaml")))
	p, err := fleetrepo.NewPlan(dir, newTarget(t), fleetrepo.Options{})
	require.NoError(t, err)
	require.Len(t, p.Files, 1)
	assert.Equal(t, "real.yaml", p.Files[0].Path)
	require.Len(t, p.Skipped, 1)
	assert.Equal(t, "link.yaml: not a regular file: not followed (a symbolic link's target is rewritten where it lives, when that is in the repository)", p.Skipped[0].String())
	require.NoError(t, p.Write())
	info, err := os.Lstat(filepath.Join(dir, "link.yaml"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeSymlink, info.Mode().Type(), "the link is still a link")
}
