package fleetrepo_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleetrepo"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

var update = flag.Bool("update", false, "regenerate the golden files under testdata/golden")

// targetFlux is the release the fixtures are upgraded to.
const targetFlux = "v2.9.4"

// targetCRDs reads the rendered objects of a Flux release from the distribution data.
func targetCRDs(t testing.TB, version string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.ReadManifests(filepath.Join(testenv.DistributionDir(t), "flux", version))
	require.NoError(t, err)
	return objs
}

func newTarget(t testing.TB) *fleetrepo.Target {
	t.Helper()
	target, err := fleetrepo.NewTarget(targetCRDs(t, targetFlux))
	require.NoError(t, err)
	return target
}

// copyTree copies a fixture to a temporary directory, every file's modification time set in the
// past, so that a rewrite (even with the same bytes) shows.
func copyTree(t *testing.T, src string) (string, time.Time) {
	t.Helper()
	dst := t.TempDir()
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, data, 0o640); err != nil {
			return err
		}
		return os.Chtimes(target, old, old)
	})
	require.NoError(t, err)
	return dst, old
}

// report is the plan as the golden file records it.
func report(p *fleetrepo.Plan) string {
	var b strings.Builder
	for _, f := range p.Files {
		fmt.Fprintf(&b, " M %s\n", f.Path)
	}
	for _, c := range p.Changes() {
		fmt.Fprintln(&b, c)
	}
	for _, w := range p.Warnings {
		fmt.Fprintln(&b, "warning:", w)
	}
	for _, s := range p.Skipped {
		fmt.Fprintln(&b, "skipped:", s)
	}
	return b.String()
}

// golden compares got with testdata/golden/name, or writes it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", filepath.FromSlash(name))
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run go test ./migrate/fleetrepo/... -update")
	assert.Equal(t, string(want), string(got), "%s changed; review and run go test ./migrate/fleetrepo/... -update", name)
}

func TestPlanAndWrite(t *testing.T) {
	dir, old := copyTree(t, filepath.Join("testdata", "repo"))
	p, err := fleetrepo.NewPlan(dir, newTarget(t), fleetrepo.Options{})
	require.NoError(t, err)
	golden(t, "repo/report.txt", []byte(report(p)))
	assertTree(t, dir, filepath.Join("testdata", "repo"), old, nil)

	require.NoError(t, p.Write())
	changed := map[string]*fleetrepo.File{}
	for _, f := range p.Files {
		changed[f.Path] = f
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		require.NoError(t, err)
		golden(t, "repo/files/"+f.Path, data)
	}
	assertTree(t, dir, filepath.Join("testdata", "repo"), old, changed)

	// The rewritten objects are valid for the target, and a second plan finds nothing to do.
	var paths []string
	for _, f := range p.Files {
		paths = append(paths, f.Path)
	}
	assertValidForTarget(t, targetCRDs(t, targetFlux), dir, paths, []string{"apps/overlay/patch-interval.yaml"})
	again, err := fleetrepo.NewPlan(dir, newTarget(t), fleetrepo.Options{})
	require.NoError(t, err)
	assert.Empty(t, again.Files)
}

// assertTree checks the rewritten tree against the fixture: a file without changes is neither
// changed nor rewritten (its modification time is the old one); a changed file differs from the
// fixture exactly on the lines of its changes, and keeps its mode.
func assertTree(t *testing.T, dir, fixture string, old time.Time, changed map[string]*fleetrepo.File) {
	t.Helper()
	err := filepath.WalkDir(fixture, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(fixture, path)
		want, _ := os.ReadFile(path)
		got, err := os.ReadFile(filepath.Join(dir, rel))
		require.NoError(t, err)
		info, err := os.Stat(filepath.Join(dir, rel))
		require.NoError(t, err)
		assert.Equal(t, fs.FileMode(0o640), info.Mode().Perm(), rel)
		f := changed[filepath.ToSlash(rel)]
		if f == nil {
			assert.Equal(t, string(want), string(got), rel)
			assert.True(t, info.ModTime().Equal(old), "%s was rewritten", rel)
			return nil
		}
		wantLines := map[int]bool{}
		for _, c := range f.Changes {
			wantLines[c.Line] = true
		}
		assert.Equal(t, wantLines, differentLines(want, got), "%s: lines changed", rel)
		return nil
	})
	require.NoError(t, err)
}

// differentLines are the 1-based numbers of the lines that differ; both must have as many lines.
func differentLines(a, b []byte) map[int]bool {
	al, bl := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	out := map[int]bool{}
	if len(al) != len(bl) {
		out[-1] = true
		return out
	}
	for i := range al {
		if !bytes.Equal(al[i], bl[i]) {
			out[i+1] = true
		}
	}
	return out
}

func TestInvalidYAML(t *testing.T) {
	dir, old := copyTree(t, filepath.Join("testdata", "invalid"))
	_, err := fleetrepo.NewPlan(dir, newTarget(t), fleetrepo.Options{})
	var invalid *fleetrepo.InvalidError
	require.True(t, errors.As(err, &invalid), "%v", err)
	golden(t, "invalid/error.txt", []byte(err.Error()))
	assertTree(t, dir, filepath.Join("testdata", "invalid"), old, nil)

	p, err := fleetrepo.NewPlan(dir, newTarget(t), fleetrepo.Options{SkipInvalid: true})
	require.NoError(t, err)
	golden(t, "invalid/skip-invalid.txt", []byte(report(p)))
}
