// Command gen writes the embedded default distribution, render/distribution/embedded/data/distribution.tar.gz,
// from a directory in the Flux Operator's distribution layout.
//
//	FLUX_DISTRIBUTION_DIR=/path/to/flux-distribution go generate ./render/distribution/embedded
//	go run ./render/distribution/embedded/gen [-dir DIR] [-o FILE]
//
// Only flux/vX.Y.Z/*.yaml and flux-images/vX.Y.Z/*.yaml are kept (the renderer reads nothing
// else), written as an indexed archive with sorted names, fixed times and gzip best compression,
// so the same input always yields the same bytes.
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/internal/archive"
)

// versionDir matches the version directories of the layout; anything else (flux-images/VERSION,
// README.md) is left out.
var versionDir = regexp.MustCompile(`^v\d+\.\d+\.\d+$`)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run() error {
	src := flag.String("dir", "", "distribution directory (default $FLUX_DISTRIBUTION_DIR, else ../shared/flux-distribution from the repository root)")
	flag.StringVar(src, "src", "", "alias of -dir")
	out := flag.String("o", "", "output file (default render/distribution/embedded/data/distribution.tar.gz in the repository)")
	flag.Parse()

	root, rootErr := repoRoot()
	if *src == "" {
		*src = os.Getenv("FLUX_DISTRIBUTION_DIR")
	}
	if *src == "" {
		if rootErr != nil {
			return rootErr
		}
		*src = filepath.Join(root, "..", "shared", "flux-distribution")
	}
	if *out == "" {
		if rootErr != nil {
			return rootErr
		}
		*out = filepath.Join(root, "render", "distribution", "embedded", "data", "distribution.tar.gz")
	}

	archiveBytes, n, err := generate(*src)
	if err != nil {
		return err
	}
	buf := bytes.NewBuffer(archiveBytes)
	// Write through a temporary file so that an interrupted run never leaves a truncated
	// archive behind for go:embed to pick up.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".distribution-*.tar.gz")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "gen: wrote %s (%d files, %d bytes) from %s\n", *out, n, buf.Len(), *src)
	return nil
}

// generate returns the archive for src and the number of files in it.
func generate(src string) ([]byte, int, error) {
	files, err := collect(src)
	if err != nil {
		return nil, 0, err
	}
	var buf bytes.Buffer
	if err := archive.Write(&buf, files, gzip.BestCompression); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), len(files), nil
}

func collect(src string) ([]archive.File, error) {
	var files []archive.File
	for _, tree := range []string{"flux", "flux-images"} {
		versions, err := os.ReadDir(filepath.Join(src, tree))
		if err != nil {
			return nil, fmt.Errorf("%s is not a distribution directory (want flux/vX.Y.Z/ and flux-images/vX.Y.Z/): %w", src, err)
		}
		for _, v := range versions {
			if !v.IsDir() || !versionDir.MatchString(v.Name()) {
				continue
			}
			entries, err := os.ReadDir(filepath.Join(src, tree, v.Name()))
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
					continue
				}
				b, err := os.ReadFile(filepath.Join(src, tree, v.Name(), e.Name()))
				if err != nil {
					return nil, err
				}
				files = append(files, archive.File{Name: tree + "/" + v.Name() + "/" + e.Name(), Data: b})
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s holds no flux/vX.Y.Z/*.yaml or flux-images/vX.Y.Z/*.yaml files", src)
	}
	return files, nil
}

// repoRoot finds the module root from the working directory (go generate runs in the package
// directory, go run wherever the user is).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (no go.mod above the working directory): pass -dir and -o")
		}
		dir = parent
	}
}
