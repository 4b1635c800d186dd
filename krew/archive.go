package krew

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File is one member of a release archive.
type File struct {
	// Name is the path inside the archive.
	Name string
	// Source is the file on disk.
	Source string
	// Executable sets mode 0755 instead of 0644.
	Executable bool
}

// WriteArchive writes files as a .tar.gz (or a .zip for Windows) at out. The result depends only on
// the files' contents, names and modes, and on mtime: entries are sorted, owned by 0:0 without
// user names, stamped with mtime, and the gzip header carries no name or time (like gzip -n).
func WriteArchive(out string, p Platform, files []File, mtime time.Time) (err error) {
	files = append([]File(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for i := 1; i < len(files); i++ {
		if files[i].Name == files[i-1].Name {
			return fmt.Errorf("archive %s: %s listed twice", out, files[i].Name)
		}
	}
	mtime = mtime.UTC().Truncate(time.Second)

	tmp, err := os.CreateTemp(filepath.Dir(out), ".archive-*")
	if err != nil {
		return fmt.Errorf("archive %s: %w", out, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriter(tmp)
	if p.Windows() {
		err = writeZip(bw, files, mtime)
	} else {
		err = writeTarGz(bw, files, mtime)
	}
	if err != nil {
		return fmt.Errorf("archive %s: %w", out, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("archive %s: %w", out, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", out, err)
	}
	if err = os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("archive %s: %w", out, err)
	}
	if err = os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("archive %s: %w", out, err)
	}
	return nil
}

func mode(f File) int64 {
	if f.Executable {
		return 0o755
	}
	return 0o644
}

func writeTarGz(w io.Writer, files []File, mtime time.Time) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	// gzip.Writer's zero Header already means no name and no timestamp, as gzip -n writes.
	tw := tar.NewWriter(gz)
	for _, f := range files {
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return err
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.Name,
			Mode:     mode(f),
			Size:     int64(len(data)),
			ModTime:  mtime,
			Format:   tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func writeZip(w io.Writer, files []File, mtime time.Time) error {
	zw := zip.NewWriter(w)
	for _, f := range files {
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return err
		}
		hdr := &zip.FileHeader{Name: f.Name, Method: zip.Deflate, Modified: mtime}
		hdr.SetMode(os.FileMode(mode(f)))
		fw, err := zw.CreateHeader(hdr)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		if _, err := fw.Write(data); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	return zw.Close()
}

// SHA256File returns the lowercase hex sha256 of a file, the form krew manifests carry.
func SHA256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteChecksums writes dir/checksums.txt in sha256sum's format ("HASH  NAME", sorted by name) for
// the named files of dir, so `sha256sum -c checksums.txt` verifies a download.
func WriteChecksums(dir string, names []string) error {
	names = append([]string(nil), names...)
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		sum, err := SHA256File(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("checksums: %w", err)
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, n)
	}
	if err := os.WriteFile(filepath.Join(dir, "checksums.txt"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("checksums: %w", err)
	}
	return nil
}

// ReadChecksums parses a checksums.txt written by WriteChecksums: archive name -> sha256.
func ReadChecksums(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	for i, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != sha256.Size*2 || name == "" {
			return nil, fmt.Errorf("%s:%d: expected \"SHA256  NAME\", got %q", path, i+1, line)
		}
		sums[name] = sum
	}
	return sums, nil
}
