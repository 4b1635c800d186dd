package render

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

func benchBuild(b *testing.B, fixture, version string) {
	rel := loadRelease(b, version)
	data, err := os.ReadFile(filepath.Join(repoRoot(), "test", "fixtures", "instances", fixture))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		inst, err := fluxinstance.Decode(data, fixture)
		if err != nil {
			b.Fatal(err)
		}
		inst.Default()
		if _, err := Build(inst, rel, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildMinimal(b *testing.B) { benchBuild(b, "minimal-2.7.5.yaml", "v2.7.5") }
func BenchmarkBuildAllFields(b *testing.B) {
	benchBuild(b, "enterprise-fips-sharded-patches-2.9.4.yaml", "v2.9.4")
}
