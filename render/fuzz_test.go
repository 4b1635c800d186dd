package render

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// namesFieldOrFile reports whether an error message points the user at a
// field path, the input file or a distribution file.
func namesFieldOrFile(msg string) bool {
	for _, line := range strings.Split(msg, "\n") {
		if !(strings.Contains(line, "spec.") || strings.Contains(line, "metadata.") ||
			strings.Contains(line, "fuzz.yaml") || strings.Contains(line, "flux/v") || strings.Contains(line, "distribution")) {
			return false
		}
	}
	return true
}

// FuzzDecodeValidateBuild runs decode -> default -> validate -> build on
// arbitrary input against the real v2.7.5 release: it must never panic, and
// every error must name a field or the file.
func FuzzDecodeValidateBuild(f *testing.F) {
	rel := loadRelease(f, "v2.7.5")
	files, _ := filepath.Glob(filepath.Join(repoRoot(), "test", "fixtures", "instances", "*.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata:\n  name: flux\nspec:\n  distribution:\n    version: 2.x\n    registry: fluxcd\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		inst, err := fluxinstance.Decode(data, "fuzz.yaml")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("decode error does not name the file: %v", err)
			}
			return
		}
		inst.Default()
		if err := inst.Validate(); err != nil {
			if !namesFieldOrFile(err.Error()) {
				t.Fatalf("validation error does not name a field: %v", err)
			}
			return
		}
		if err := inst.ValidateForVersion(rel.Version); err != nil {
			if !namesFieldOrFile(err.Error()) {
				t.Fatalf("version error does not name a field: %v", err)
			}
			return
		}
		if _, err := Build(inst, rel, nil); err != nil && !namesFieldOrFile(err.Error()) {
			t.Fatalf("build error does not name a field or file: %v", err)
		}
	})
}
