package distribution

import (
	"context"
	"testing"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/embedded"
)

// BenchmarkEmbeddedRelease is the warm path of `build`: open the embedded distribution,
// resolve a constraint and load one version.
func BenchmarkEmbeddedRelease(b *testing.B) {
	if _, err := embedded.Archive(); err != nil {
		b.Skip(err)
	}
	for b.Loop() {
		d, err := Open(context.Background(), "", Options{})
		if err != nil {
			b.Fatal(err)
		}
		v, err := d.Resolve("2.x")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.Release(v); err != nil {
			b.Fatal(err)
		}
	}
}
