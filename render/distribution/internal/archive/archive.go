// Package archive reads tar.gz distribution archives safely and writes them in an indexed form.
//
// An indexed archive is an ordinary tar.gz (any tar tool extracts it) made of several
// concatenated gzip members: the first holds only a small JSON index entry, the second every
// flux-images/ file, and then one member per Flux version holding flux/<version>/. The index
// records where each member starts, so a reader decompresses the index plus the one version it
// renders instead of the whole archive (the archive is ~16 MiB uncompressed, a version ~0.6 MiB).
// The embedded default distribution and the OCI pull cache are written this way.
package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// IndexName is the name of the first entry of an indexed archive. It starts with a dot so that
// it stays out of the flux/ and flux-images/ trees a renderer reads.
const IndexName = ".kubectl-fluxinstance-index.json"

// formatVersion is bumped whenever the index layout changes; readers treat other values as a
// plain (unindexed) archive and fall back to a full scan.
const formatVersion = 1

// Member locates one gzip member, relative to the end of the index member.
type Member struct {
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
}

// Index is the content of the IndexName entry.
type Index struct {
	Format int `json:"format"`
	// Images is the member holding every flux-images/<version>/<variant>.yaml file; zero
	// Size when the archive has none.
	Images Member `json:"images"`
	// Versions maps "vX.Y.Z" to the member holding flux/vX.Y.Z/.
	Versions map[string]Member `json:"versions"`
}

// File is one regular file of an archive.
type File struct {
	Name string
	Data []byte
}

// Limits bound what a reader accepts, so that a hostile or corrupt archive cannot exhaust memory.
type Limits struct {
	// MaxTotal bounds the sum of all entry sizes (uncompressed).
	MaxTotal int64
	// MaxFile bounds the size of one entry.
	MaxFile int64
	// MaxEntries bounds the number of entries.
	MaxEntries int
}

// DefaultLimits are generous for a Flux distribution (the whole operator artifact is ~20 MiB)
// and still keep a decompression bomb from taking the machine down.
func DefaultLimits() Limits {
	return Limits{MaxTotal: 256 << 20, MaxFile: 32 << 20, MaxEntries: 100000}
}

// CleanName validates a tar entry name and returns it cleaned ("./a//b" -> "a/b"; "./" -> "").
// Absolute paths, ".." elements, backslashes and drive letters are rejected: none occur in a
// real distribution and each can escape a destination directory in some extractor.
func CleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty entry name")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path")
	case strings.ContainsRune(name, '\\'):
		return "", errors.New("backslash in path")
	case len(name) >= 2 && name[1] == ':':
		return "", errors.New("drive-letter path")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errors.New(`".." path element escapes the archive root`)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// Walk reads a tar stream and calls fn for every regular file, after checking the entry is safe
// and within limits. Directories and PAX global headers are skipped; symbolic links, hard
// links, devices, FIFOs and any other entry type are errors. Errors name the offending entry.
func Walk(r io.Reader, lim Limits, fn func(name string, size int64, body io.Reader) error) error {
	tr := tar.NewReader(r)
	var total int64
	for n := 1; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar entry %d: %w", n, err)
		}
		if n > lim.MaxEntries {
			return fmt.Errorf("more than %d entries", lim.MaxEntries)
		}
		name, err := CleanName(hdr.Name)
		if err != nil {
			return fmt.Errorf("unsafe entry %q: %w", hdr.Name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeXGlobalHeader:
			continue
		case tar.TypeReg, '\x00': // '\x00' is the pre-POSIX regular file flag
		case tar.TypeSymlink:
			return fmt.Errorf("unsafe entry %q: symbolic link to %q (only regular files and directories are allowed)", hdr.Name, hdr.Linkname)
		case tar.TypeLink:
			return fmt.Errorf("unsafe entry %q: hard link to %q (only regular files and directories are allowed)", hdr.Name, hdr.Linkname)
		case tar.TypeChar, tar.TypeBlock:
			return fmt.Errorf("unsafe entry %q: device file (only regular files and directories are allowed)", hdr.Name)
		case tar.TypeFifo:
			return fmt.Errorf("unsafe entry %q: FIFO (only regular files and directories are allowed)", hdr.Name)
		default:
			return fmt.Errorf("unsafe entry %q: unsupported tar entry type %q (only regular files and directories are allowed)", hdr.Name, hdr.Typeflag)
		}
		if hdr.Size > lim.MaxFile {
			return fmt.Errorf("entry %q is %d bytes, more than the %d bytes allowed per file", hdr.Name, hdr.Size, lim.MaxFile)
		}
		total += hdr.Size
		if total > lim.MaxTotal {
			return fmt.Errorf("entry %q takes the archive past the %d bytes allowed in total (uncompressed)", hdr.Name, lim.MaxTotal)
		}
		if name == "" {
			continue
		}
		if err := fn(name, hdr.Size, tr); err != nil {
			return err
		}
	}
}

// ReadAll reads an entry body announced with size bytes.
func ReadAll(body io.Reader, size int64) ([]byte, error) {
	buf := make([]byte, size)
	if _, err := io.ReadFull(body, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// ReadIndex reports whether data is an indexed archive and returns its index and the offset the
// index's members are relative to. ok is false (and err nil) for any other tar.gz.
func ReadIndex(data []byte) (idx *Index, base int64, ok bool, err error) {
	br := bytes.NewReader(data)
	// bytes.Reader is an io.ByteReader, so gzip reads exactly the first member and no further:
	// afterwards br's position is the start of the next member.
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, 0, false, fmt.Errorf("not a gzip file: %w", err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != IndexName || hdr.Typeflag != tar.TypeReg || hdr.Size > 1<<20 {
		return nil, 0, false, nil
	}
	raw, err := ReadAll(tr, hdr.Size)
	if err != nil {
		return nil, 0, false, fmt.Errorf("reading %s: %w", IndexName, err)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil, 0, false, fmt.Errorf("reading %s: %w", IndexName, err)
	}
	idx = &Index{}
	if err := json.Unmarshal(raw, idx); err != nil {
		return nil, 0, false, fmt.Errorf("decoding %s: %w", IndexName, err)
	}
	if idx.Format != formatVersion {
		return nil, 0, false, nil
	}
	base = int64(len(data)) - int64(br.Len())
	rest := int64(br.Len())
	check := func(what string, m Member) error {
		if m.Offset < 0 || m.Size < 0 || m.Offset > rest || m.Size > rest-m.Offset {
			return fmt.Errorf("%s: member %s at %d+%d lies outside the archive", IndexName, what, m.Offset, m.Size)
		}
		return nil
	}
	if err := check("flux-images", idx.Images); err != nil {
		return nil, 0, false, err
	}
	for v, m := range idx.Versions {
		if err := check(v, m); err != nil {
			return nil, 0, false, err
		}
	}
	return idx, base, true, nil
}

// MemberReader returns a reader of the uncompressed tar bytes of one member.
func MemberReader(data []byte, base int64, m Member) (io.Reader, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data[base+m.Offset : base+m.Offset+m.Size]))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	return zr, nil
}

// Write writes files as an indexed tar.gz. Every name must be flux-images/<version>/<file> or
// flux/<version>/<file>; output is deterministic (sorted names, fixed times and owners).
func Write(w io.Writer, files []File, level int) error {
	groups, versions, err := groupFiles(files)
	if err != nil {
		return err
	}
	members, err := writeMembers(groups, level)
	if err != nil {
		return err
	}
	head, err := indexMember(groups, versions, members, level)
	if err != nil {
		return err
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	for _, m := range members {
		if _, err := w.Write(m); err != nil {
			return err
		}
	}
	return nil
}

// groupFiles splits files into the archive's members: groups[0] holds the image lists
// (flux-images/), then one group per Flux version, in versions' (sorted) order.
func groupFiles(files []File) (groups [][]File, versions []string, err error) {
	var images []File
	byVersion := map[string][]File{}
	for _, f := range files {
		parts := strings.Split(f.Name, "/")
		if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
			return nil, nil, fmt.Errorf("archive: %q is not <flux|flux-images>/<version>/<file>", f.Name)
		}
		switch parts[0] {
		case "flux-images":
			images = append(images, f)
		case "flux":
			byVersion[parts[1]] = append(byVersion[parts[1]], f)
		default:
			return nil, nil, fmt.Errorf("archive: %q is not under flux/ or flux-images/", f.Name)
		}
	}
	versions = make([]string, 0, len(byVersion))
	for v := range byVersion {
		versions = append(versions, v)
	}
	sort.Strings(versions)
	groups = make([][]File, 0, len(versions)+1)
	groups = append(groups, images)
	for _, v := range versions {
		groups = append(groups, byVersion[v])
	}
	return groups, versions, nil
}

// writeMembers compresses each group, sorted by name, into a gzip member of its own. The tar
// stream runs across the members: each member ends on an entry boundary, and only the last one
// carries the end-of-archive blocks. An empty group has no member (nil), except the last.
func writeMembers(groups [][]File, level int) ([][]byte, error) {
	var sw switchWriter
	tw := tar.NewWriter(&sw)
	members := make([][]byte, len(groups))
	for i, g := range groups {
		if len(g) == 0 && i < len(groups)-1 {
			continue
		}
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, level)
		if err != nil {
			return nil, err
		}
		sw.w = zw
		sort.Slice(g, func(a, b int) bool { return g[a].Name < g[b].Name })
		for _, f := range g {
			if err := writeEntry(tw, f); err != nil {
				return nil, err
			}
		}
		if i == len(groups)-1 {
			err = tw.Close()
		} else {
			err = tw.Flush()
		}
		if err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		members[i] = buf.Bytes()
	}
	return members, nil
}

// indexMember returns the archive's first gzip member: a tar holding only the Index of where
// the other members start once written after it.
func indexMember(groups [][]File, versions []string, members [][]byte, level int) ([]byte, error) {
	idx := Index{Format: formatVersion, Versions: map[string]Member{}}
	var off int64
	for i, m := range members {
		mem := Member{Offset: off, Size: int64(len(m))}
		if i == 0 {
			if len(groups[0]) > 0 {
				idx.Images = mem
			}
		} else if len(groups[i]) > 0 {
			idx.Versions[versions[i-1]] = mem
		}
		off += int64(len(m))
	}
	raw, err := json.Marshal(idx) // encoding/json sorts map keys: deterministic
	if err != nil {
		return nil, err
	}
	var head bytes.Buffer
	zw, err := gzip.NewWriterLevel(&head, level)
	if err != nil {
		return nil, err
	}
	itw := tar.NewWriter(zw)
	if err := writeEntry(itw, File{Name: IndexName, Data: raw}); err != nil {
		return nil, err
	}
	if err := itw.Flush(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return head.Bytes(), nil
}

func writeEntry(tw *tar.Writer, f File) error {
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     f.Name,
		Mode:     0o644,
		Size:     int64(len(f.Data)),
		// A fixed time keeps the output reproducible.
		ModTime: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
	}); err != nil {
		return fmt.Errorf("archive: writing %s: %w", f.Name, err)
	}
	if _, err := tw.Write(f.Data); err != nil {
		return fmt.Errorf("archive: writing %s: %w", f.Name, err)
	}
	return nil
}

// switchWriter lets one tar.Writer continue its stream into successive gzip members.
type switchWriter struct{ w io.Writer }

func (s *switchWriter) Write(p []byte) (int, error) { return s.w.Write(p) }
