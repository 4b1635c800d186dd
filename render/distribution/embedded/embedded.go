// Package embedded holds the default Flux distribution compiled into the binary.
//
// The archive is generated at build time (see data/README.md) and gitignored, so a fresh
// checkout has none: Archive then reports how to get one instead of failing the build.
package embedded

import (
	"embed"
	"errors"
	"io/fs"
)

//go:generate go run ./gen

// FileName is the generated archive inside data/.
const FileName = "distribution.tar.gz"

// data always contains README.md, which keeps the embed pattern valid without the generated file.
//
//go:embed data
var data embed.FS

// ErrMissing is returned by Archive when the binary was built without the generated archive.
var ErrMissing = errors.New("this binary has no embedded Flux distribution: pass --distribution " +
	"(a directory in the Flux Operator's distribution layout, a .tar.gz of it, a Flux release " +
	"manifests.tar.gz, or an oci:// artifact URL), or rebuild after `go generate ./render/distribution/embedded` " +
	"with FLUX_DISTRIBUTION_DIR pointing at the distribution data")

// Archive returns the embedded distribution, an indexed tar.gz of flux/ and flux-images/, or
// ErrMissing.
func Archive() ([]byte, error) {
	return archiveFrom(data)
}

func archiveFrom(fsys fs.FS) ([]byte, error) {
	b, err := fs.ReadFile(fsys, "data/"+FileName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrMissing
	}
	return b, err
}
