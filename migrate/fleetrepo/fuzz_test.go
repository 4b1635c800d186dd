package fleetrepo_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	yaml "go.yaml.in/yaml/v3"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleetrepo"
)

// FuzzRewrite feeds arbitrary files to the plan: it must never panic, and a file it rewrites must
// still parse and differ from the input exactly on the lines of its changes.
func FuzzRewrite(f *testing.F) {
	target := newTarget(f)
	_ = filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(path) == ".yaml" {
			if data, err := os.ReadFile(path); err == nil {
				f.Add(data)
			}
		}
		return nil
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "f.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := fleetrepo.NewPlan(dir, target, fleetrepo.Options{SkipInvalid: true})
		if err != nil {
			t.Fatalf("plan: %v", err)
		}
		if len(p.Files) == 0 {
			return
		}
		if err := p.Write(); err != nil {
			t.Fatalf("write: %v", err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(got))
		for {
			var n yaml.Node
			if err := dec.Decode(&n); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("the rewrite does not parse: %v\n%s", err, got)
				}
				break
			}
		}
		want := map[int]bool{}
		for _, c := range p.Files[0].Changes {
			want[c.Line] = true
		}
		diff := differentLines(data, got)
		for line := range diff {
			if !want[line] {
				t.Fatalf("line %d changed without a change on it:\n%s\n---\n%s", line, data, got)
			}
		}
	})
}
