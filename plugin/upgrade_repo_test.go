package plugin

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// copyRepo copies a fixture repository of migrate/fleetrepo to a temporary directory.
func copyRepo(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("..", "migrate", "fleetrepo", "testdata", name)
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	require.NoError(t, err)
	return dst
}

// snapshot is every file of dir by relative path.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		out[filepath.ToSlash(rel)] = string(data)
		return err
	}))
	return out
}

func TestUpgradeRepo(t *testing.T) {
	dist := testenv.DistributionDir(t)
	instance := writeFile(t, t.TempDir(), "flux-instance.yaml", fixtures.Instance(t, "tests/all-components-no-sync-2.9.x"))
	dir := copyRepo(t, "repo")
	before := snapshot(t, dir)
	changes := []string{
		" M clusters/prod/apps.yaml",
		" M apps/overlay/kustomization.yaml",
		"clusters/prod/apps.yaml:23: Kustomization flux-system/apps: kustomize.toolkit.fluxcd.io/v1beta2 → v1",
		"apps/podinfo/helmrelease.yaml:10: HelmRelease apps/podinfo: helm.toolkit.fluxcd.io/v2beta1 → v2",
		"apps/overlay/kustomization.yaml:11: Kustomization patches[0].target (HelmRelease): helm.toolkit.fluxcd.io/v2beta1 → v2",
	}
	warnings := []string{
		"apps/podinfo/helmrelease.yaml:10: HelmRelease apps/podinfo: spec.chart.spec.valuesFile would be dropped at helm.toolkit.fluxcd.io/v2",
		"clusters/prod/apps.yaml:23: Kustomization flux-system/apps: spec.patchesStrategicMerge would be dropped",
		"skipped charts/podinfo/: a Helm chart",
		"skipped docs/notes.yaml: not valid YAML",
	}

	r := runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist, "--dry-run")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.True(t, strings.HasPrefix(r.Stdout, "dry run: nothing is written"), r.Stdout)
	assert.Contains(t, r.Stdout, "dry run: 16 versions in 6 files would be rewritten; nothing was written")
	assertLines(t, r.Stdout, changes...)
	assertLines(t, r.Stderr, warnings...)
	assert.Equal(t, before, snapshot(t, dir), "--dry-run wrote")

	r = runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.NotContains(t, r.Stdout, "dry run")
	assert.Contains(t, r.Stdout, "rewrote 16 versions in 6 files (nothing committed)")
	assertLines(t, r.Stdout, changes...)
	assertLines(t, r.Stderr, warnings...)
	after := snapshot(t, dir)
	assert.Contains(t, after["clusters/prod/apps.yaml"], "\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n")
	assert.Equal(t, before["apps/plain/deployment.yml"], after["apps/plain/deployment.yml"])
	assert.Equal(t, before["charts/podinfo/templates/helmrelease.yaml"], after["charts/podinfo/templates/helmrelease.yaml"], "a chart is not read")

	r = runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "nothing rewritten in "+dir+" (1 warning above to fix by hand)\n", r.Stdout)
	assertLines(t, r.Stderr, "clusters/prod/apps.yaml:21: ConfigMap flux-system/settings data: source.toolkit.fluxcd.io/v1beta2 left unchanged: no kind beside it")
	assert.Equal(t, after, snapshot(t, dir), "a second run rewrote")
}

// assertLines checks that out holds each of want as the start of a line (after "Warning: " on stderr).
func assertLines(t *testing.T, out string, want ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(strings.TrimPrefix(l, "Warning: "), w)
		}
		assert.True(t, found, "no line starting with %q in:\n%s", w, out)
	}
}

func TestUpgradeRepoComponentsNotRendered(t *testing.T) {
	// Without the image controllers the target has no image CRDs: those objects are left as they
	// are, and said to be.
	dist := testenv.DistributionDir(t)
	instance := writeFile(t, t.TempDir(), "flux-instance.yaml", `apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata: {name: flux, namespace: flux-system}
spec: {distribution: {version: 2.9.x, registry: ghcr.io/fluxcd}}
`)
	dir := copyRepo(t, "repo")
	before := snapshot(t, dir)
	r := runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assertLines(t, r.Stderr, "image/automation.yaml:1: ImageUpdateAutomation flux-system/fleet: ImageUpdateAutomation image.toolkit.fluxcd.io/v1beta1 left unchanged: the target rendering has no CRD for ImageUpdateAutomation.image.toolkit.fluxcd.io")
	// Its source reference is a source kind the target has: rewritten, and only that line.
	after := snapshot(t, dir)
	assert.Equal(t, strings.Replace(before["image/automation.yaml"], "apiVersion: source.toolkit.fluxcd.io/v1beta1", "apiVersion: source.toolkit.fluxcd.io/v1", 1), after["image/automation.yaml"])

	// Run again: nothing left to rewrite, but what was left unchanged (the automation, the
	// ConfigMap's data) is still said to be.
	r = runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "nothing rewritten in "+dir+" (2 warnings above to fix by hand)\n", r.Stdout)
	assertLines(t, r.Stderr, "image/automation.yaml:1: ImageUpdateAutomation flux-system/fleet: ImageUpdateAutomation image.toolkit.fluxcd.io/v1beta1 left unchanged")
	assert.Equal(t, after, snapshot(t, dir))
}

func TestUpgradeRepoRefusals(t *testing.T) {
	dist := testenv.DistributionDir(t)
	instance := writeFile(t, t.TempDir(), "flux-instance.yaml", fixtures.Instance(t, "tests/all-components-no-sync-2.9.x"))

	for name, repoDir := range map[string]string{"missing": filepath.Join(t.TempDir(), "nowhere"), "a file": instance} {
		r := runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", repoDir, "--distribution", dist)
		assert.Equal(t, 2, r.Code, name)
		assert.Contains(t, r.Stderr, "--repo-dir \""+repoDir+"\" is not a directory", name)
	}
	r := runPlugin(t, "", "upgrade-repo", "-f", instance, "--distribution", dist)
	assert.Equal(t, 2, r.Code, r.Stderr)

	dir := copyRepo(t, "invalid")
	before := snapshot(t, dir)
	r = runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "broken.yaml: not valid YAML (yaml: line 4:")
	assert.Contains(t, r.Stderr, "nothing was written")
	assert.Equal(t, before, snapshot(t, dir))

	r = runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist, "--skip-invalid")
	require.Equal(t, 0, r.Code, r.Stderr)
	assertLines(t, r.Stdout, " M fine.yaml")
	assertLines(t, r.Stderr, "skipped broken.yaml: not valid YAML (yaml: line 4:")
	assert.Equal(t, before["broken.yaml"], snapshot(t, dir)["broken.yaml"])

	r = runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist, "--skip-invalid")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Regexp(t, "^nothing to rewrite: every Flux apiVersion of the files read in "+regexp.QuoteMeta(dir)+` is served by Flux v2\.9\.\d+ \(1 path skipped above\)\n$`, r.Stdout)
	require.NoError(t, os.Remove(filepath.Join(dir, "broken.yaml")))
	r = runPlugin(t, "", "upgrade-repo", "-f", instance, "--repo-dir", dir, "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Regexp(t, "^nothing to rewrite: every Flux apiVersion in "+regexp.QuoteMeta(dir)+` is served by Flux v2\.9\.\d+\n$`, r.Stdout)
	assert.Empty(t, r.Stderr)
}

func TestUpgradeRepoCompletion(t *testing.T) {
	assert.Equal(t, cobra.ShellCompDirectiveFilterDirs, complete(t, "upgrade-repo", "--repo-dir", "").directive)
	assert.Equal(t, completion{[]string{"yaml", "yml", "json"}, cobra.ShellCompDirectiveFilterFileExt}, complete(t, "upgrade-repo", "-f", ""))
	assert.Contains(t, complete(t, "").values, "upgrade-repo")
}
