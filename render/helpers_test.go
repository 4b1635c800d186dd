package render

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
)

// distributionDir returns FLUX_DISTRIBUTION_DIR or ../shared/flux-distribution
// relative to the repository root. Missing data skips locally and fails in CI.
func distributionDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("FLUX_DISTRIBUTION_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "shared", "flux-distribution")
	}
	if _, err := os.Stat(filepath.Join(dir, "flux")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("distribution data not found at %s (set FLUX_DISTRIBUTION_DIR): %v", dir, err)
		}
		t.Skipf("distribution data not found at %s (set FLUX_DISTRIBUTION_DIR)", dir)
	}
	return dir
}

// loadRelease builds a Release from the distribution directory for an exact
// version such as "v2.7.5".
func loadRelease(t testing.TB, version string) *distribution.Release {
	t.Helper()
	dir := distributionDir(t)
	rel := &distribution.Release{Version: version, Manifests: map[string][]byte{}, Images: map[string][]byte{}}
	files, err := filepath.Glob(filepath.Join(dir, "flux", version, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests for %s in %s", version, dir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel.Manifests[filepath.Base(f)] = data
	}
	images, _ := filepath.Glob(filepath.Join(dir, "flux-images", version, "*.yaml"))
	for _, f := range images {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel.Images[strings.TrimSuffix(filepath.Base(f), ".yaml")] = data
	}
	return rel
}

// releaseVersions lists the versions under flux/ in the distribution.
func releaseVersions(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(distributionDir(t), "flux"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "v") {
			out = append(out, e.Name())
		}
	}
	return out
}

func toJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
