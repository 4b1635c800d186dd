package distribution

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/internal/archive"
)

// openArchive opens a tar.gz held in memory. desc names it in messages; pathHint is the file
// path (or "") a Flux release manifests.tar.gz may take its version from.
func openArchive(data []byte, desc, pathHint string, opts Options) (*Distribution, error) {
	if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
		return nil, fmt.Errorf("distribution %s: not a gzip-compressed tar archive (.tar.gz/.tgz)", desc)
	}
	idx, base, ok, err := archive.ReadIndex(data)
	if err != nil {
		return nil, fmt.Errorf("distribution %s: %w", desc, err)
	}
	if ok {
		return openIndexed(data, idx, base, desc, opts)
	}
	return openPlainArchive(data, desc, pathHint, opts)
}

// openIndexed serves an archive written by archive.Write: one small member per version.
func openIndexed(data []byte, idx *archive.Index, base int64, desc string, opts Options) (*Distribution, error) {
	d := &Distribution{description: desc}
	for v := range idx.Versions {
		if !versionPattern.MatchString(v) {
			return nil, fmt.Errorf("distribution %s: index lists %q, which is not a vX.Y.Z version", desc, v)
		}
		d.versions = append(d.versions, v)
	}
	sortVersions(d.versions)
	d.load = func(version string) (*Release, error) {
		r := newRelease(version)
		seen := map[string]bool{}
		collect := func(m archive.Member, wantTree string) error {
			if m.Size == 0 {
				return nil
			}
			zr, err := archive.MemberReader(data, base, m)
			if err != nil {
				return err
			}
			return archive.Walk(zr, *opts.limits, func(name string, size int64, body io.Reader) error {
				tree, v, file, ok := classify(name)
				if !ok || tree != wantTree {
					return fmt.Errorf("entry %q does not belong in the %s member of the index", name, wantTree)
				}
				if v != version {
					return nil
				}
				if seen[name] {
					return fmt.Errorf("duplicate entry %q", name)
				}
				seen[name] = true
				b, err := archive.ReadAll(body, size)
				if err != nil {
					return fmt.Errorf("entry %q: %w", name, err)
				}
				r.add(tree, file, b)
				return nil
			})
		}
		if err := collect(idx.Images, "flux-images"); err != nil {
			return nil, err
		}
		if err := collect(idx.Versions[version], "flux"); err != nil {
			return nil, err
		}
		return r, nil
	}
	if len(d.versions) == 0 {
		return nil, fmt.Errorf("distribution %s holds no flux/vX.Y.Z/ directories", desc)
	}
	return d, nil
}

// looseFile is a .yaml file outside the operator's layout, kept while scanning in case the
// archive turns out to be a Flux release manifests.tar.gz.
type looseFile struct {
	name string
	data []byte
}

// openPlainArchive scans any other tar.gz once to list its versions (checking every entry),
// and again in Release for the files of the one version asked for: this keeps memory at one
// version instead of the whole distribution.
func openPlainArchive(data []byte, desc, pathHint string, opts Options) (*Distribution, error) {
	walk := func(fn func(name string, size int64, body io.Reader) error) error {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return err
		}
		if err := archive.Walk(zr, *opts.limits, fn); err != nil {
			return err
		}
		// Read to the end so that trailing garbage or a truncated stream is reported.
		_, err = io.Copy(io.Discard, zr)
		return err
	}

	found := map[string]bool{}
	seen := map[string]bool{}
	var loose []looseFile
	var looseSize int64
	err := walk(func(name string, size int64, body io.Reader) error {
		if seen[name] {
			return fmt.Errorf("duplicate entry %q", name)
		}
		seen[name] = true
		if tree, v, _, ok := classify(name); ok {
			if tree == "flux" {
				found[v] = true
			}
			return nil
		}
		if len(found) == 0 && strings.HasSuffix(name, ".yaml") && strings.Count(name, "/") <= 1 && looseSize < 64<<20 {
			b, err := archive.ReadAll(body, size)
			if err != nil {
				return fmt.Errorf("entry %q: %w", name, err)
			}
			looseSize += size
			loose = append(loose, looseFile{name: name, data: b})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("distribution %s: %w", desc, err)
	}
	if len(found) == 0 {
		return openManifests(loose, desc, pathHint, opts)
	}

	d := &Distribution{description: desc}
	for v := range found {
		d.versions = append(d.versions, v)
	}
	sortVersions(d.versions)
	d.load = func(version string) (*Release, error) {
		r := newRelease(version)
		err := walk(func(name string, size int64, body io.Reader) error {
			tree, v, file, ok := classify(name)
			if !ok || v != version {
				return nil
			}
			b, err := archive.ReadAll(body, size)
			if err != nil {
				return fmt.Errorf("entry %q: %w", name, err)
			}
			r.add(tree, file, b)
			return nil
		})
		return r, err
	}
	return d, nil
}

// openDir opens a directory in the operator's layout, or one holding a Flux release's
// manifests (an extracted manifests.tar.gz).
func openDir(dir string, opts Options) (*Distribution, error) {
	desc := "dir " + dir
	entries, err := os.ReadDir(filepath.Join(dir, "flux"))
	if os.IsNotExist(err) {
		loose, err := readLooseDir(dir, opts)
		if err != nil {
			return nil, fmt.Errorf("distribution %s: %w", desc, err)
		}
		return openManifests(loose, desc, dir, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("distribution %s: %w", desc, err)
	}
	d := &Distribution{description: desc}
	for _, e := range entries {
		if versionPattern.MatchString(e.Name()) && isDir(filepath.Join(dir, "flux", e.Name())) {
			d.versions = append(d.versions, e.Name())
		}
	}
	if len(d.versions) == 0 {
		return nil, fmt.Errorf("distribution %s: flux/ holds no vX.Y.Z/ directories", desc)
	}
	sortVersions(d.versions)
	d.load = func(version string) (*Release, error) {
		r := newRelease(version)
		var total int64
		for _, tree := range []string{"flux", "flux-images"} {
			sub := filepath.Join(dir, tree, version)
			files, err := os.ReadDir(sub)
			if os.IsNotExist(err) && tree == "flux-images" {
				continue // no image lists: images stay tag-only
			}
			if err != nil {
				return nil, err
			}
			for _, f := range files {
				if f.IsDir() || !strings.HasSuffix(f.Name(), ".yaml") {
					continue
				}
				b, err := readBounded(filepath.Join(sub, f.Name()), opts, &total)
				if err != nil {
					return nil, err
				}
				r.add(tree, f.Name(), b)
			}
		}
		return r, nil
	}
	return d, nil
}

// readLooseDir reads the .yaml files of a manifests directory: at its root, or in its only
// subdirectory.
func readLooseDir(dir string, opts Options) ([]looseFile, error) {
	var total int64
	read := func(sub string) ([]looseFile, []string, error) {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return nil, nil, err
		}
		var files []looseFile
		var dirs []string
		for _, e := range entries {
			switch {
			case e.IsDir():
				dirs = append(dirs, e.Name())
			case strings.HasSuffix(e.Name(), ".yaml"):
				b, err := readBounded(filepath.Join(dir, sub, e.Name()), opts, &total)
				if err != nil {
					return nil, nil, err
				}
				files = append(files, looseFile{name: path.Join(filepath.ToSlash(sub), e.Name()), data: b})
			}
		}
		return files, dirs, nil
	}
	files, dirs, err := read("")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 && len(dirs) == 1 {
		files, _, err = read(dirs[0])
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

func readBounded(file string, opts Options, total *int64) ([]byte, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if fi.Size() > opts.limits.MaxFile {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d bytes allowed per file", file, fi.Size(), opts.limits.MaxFile)
	}
	*total += fi.Size()
	if *total > opts.limits.MaxTotal {
		return nil, fmt.Errorf("%s takes the distribution past the %d bytes allowed in total", file, opts.limits.MaxTotal)
	}
	return os.ReadFile(file)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// sortedNames returns the keys of m, sorted.
func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
