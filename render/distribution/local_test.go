package distribution

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/embedded"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/internal/archive"
	"github.com/fluxinstance/kubectl-fluxinstance/test/distribution/distdata"
)

// warnings collects Options.Warn messages.
type warnings []string

func (w *warnings) opts() Options {
	return Options{Warn: func(s string) { *w = append(*w, s) }}
}

// wantRelease reads flux/<v>/ and flux-images/<v>/ of the data directory directly.
func wantRelease(t *testing.T, dir, version string, withImages bool) *Release {
	t.Helper()
	r := newRelease(version)
	for _, tree := range []string{"flux", "flux-images"} {
		if tree == "flux-images" && !withImages {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, tree, version))
		require.NoError(t, err)
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(dir, tree, version, f.Name()))
			require.NoError(t, err)
			r.add(tree, f.Name(), b)
		}
	}
	return r
}

// requireEmbedded skips a test that needs the generated embedded distribution, or fails it
// under CI=true, where `make test` generates it first.
func requireEmbedded(t *testing.T, have bool) {
	t.Helper()
	if have {
		return
	}
	msg := "needs the embedded distribution: run go generate ./render/distribution/embedded"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, data, 0o644))
	return p
}

func TestOpenDir(t *testing.T) {
	dir := distdata.Dir(t)
	var w warnings
	d, err := Open(context.Background(), dir, w.opts())
	require.NoError(t, err)
	assert.Equal(t, "dir "+dir, d.Source())

	all := distdata.Versions(t, dir)
	sortVersions(all)
	assert.Equal(t, all, d.Versions())
	assert.Equal(t, "v2.2.3", d.Versions()[0])

	r, err := d.Release("2.7.5") // without "v" too
	require.NoError(t, err)
	want := wantRelease(t, dir, "v2.7.5", true)
	assert.Equal(t, want, r)
	assert.Contains(t, r.Manifests, "source-watcher.yaml")
	assert.Contains(t, r.Manifests, "policies.yaml")
	assert.Contains(t, r.Images, "upstream-alpine")
	assert.Contains(t, r.Images, "enterprise-distroless-fips")

	v, err := d.Resolve("2.6.x")
	require.NoError(t, err)
	assert.Equal(t, "v2.6.4", v)
	assert.Empty(t, w)
}

func TestOpenPlainTarball(t *testing.T) {
	dir := distdata.Dir(t)
	versions := []string{"v2.2.3", "v2.7.5", "v2.9.4"}
	p := writeTemp(t, "distribution.tgz", distdata.TarGz(t, dir, versions...))
	var w warnings
	d, err := Open(context.Background(), p, w.opts())
	require.NoError(t, err)
	assert.Equal(t, "tarball "+p, d.Source())
	assert.Equal(t, versions, d.Versions())
	for _, v := range versions {
		r, err := d.Release(v)
		require.NoError(t, err)
		assert.Equal(t, wantRelease(t, dir, v, true), r, v)
	}
	got, err := d.Resolve(">=2.6.0 <2.8.0")
	require.NoError(t, err)
	assert.Equal(t, "v2.7.5", got)
}

// The indexed form (embedded, OCI cache) must serve every version exactly like the directory.
func TestIndexedArchiveServesEveryVersion(t *testing.T) {
	dir := distdata.Dir(t)
	var files []archive.File
	for _, v := range distdata.Versions(t, dir) {
		for tree, m := range map[string]map[string][]byte{"flux": wantRelease(t, dir, v, true).Manifests} {
			for f, b := range m {
				files = append(files, archive.File{Name: tree + "/" + v + "/" + f, Data: b})
			}
		}
		for variant, b := range wantRelease(t, dir, v, true).Images {
			files = append(files, archive.File{Name: "flux-images/" + v + "/" + variant + ".yaml", Data: b})
		}
	}
	var buf bytes.Buffer
	require.NoError(t, archive.Write(&buf, files, gzip.BestSpeed))
	p := writeTemp(t, "indexed.tar.gz", buf.Bytes())
	d, err := Open(context.Background(), p, Options{})
	require.NoError(t, err)
	require.Equal(t, len(distdata.Versions(t, dir)), len(d.Versions()))
	for _, v := range d.Versions() {
		r, err := d.Release(v)
		require.NoError(t, err)
		assert.Equal(t, wantRelease(t, dir, v, true), r, v)
	}
}

func TestOpenEmbedded(t *testing.T) {
	_, embErr := embedded.Archive()
	d, err := Open(context.Background(), "", Options{})
	if errors.Is(embErr, embedded.ErrMissing) {
		require.ErrorIs(t, err, embedded.ErrMissing)
		assert.Contains(t, err.Error(), "--distribution")
		return
	}
	require.NoError(t, err)
	dir := distdata.Dir(t)
	all := distdata.Versions(t, dir)
	sortVersions(all)
	assert.Equal(t, all, d.Versions())
	assert.Equal(t, "embedded ("+all[len(all)-1]+" … "+all[0]+")", d.Source())
	for _, v := range []string{all[0], "v2.7.5", all[len(all)-1]} {
		r, err := d.Release(v)
		require.NoError(t, err)
		assert.Equal(t, wantRelease(t, dir, v, true), r, v)
	}
}

func TestOpenFluxReleaseManifests(t *testing.T) {
	dir := distdata.Dir(t)
	_, embErr := embedded.Archive()
	haveEmbedded := embErr == nil
	tarball := distdata.ManifestsTarGz(t, dir, "v2.7.5")

	t.Run("version from the controller image tags", func(t *testing.T) {
		p := writeTemp(t, "manifests.tar.gz", tarball)
		var w warnings
		d, err := Open(context.Background(), p, w.opts())
		if !haveEmbedded {
			require.ErrorContains(t, err, "cannot tell which Flux version")
			assert.Contains(t, err.Error(), "flux-v2.7.5-manifests.tar.gz")
			return
		}
		require.NoError(t, err)
		assert.Equal(t, []string{"v2.7.5"}, d.Versions())
		assert.Equal(t, "Flux v2.7.5 manifests (tarball "+p+")", d.Source())
		r, err := d.Release("v2.7.5")
		require.NoError(t, err)
		assert.Equal(t, wantRelease(t, dir, "v2.7.5", false), r)
		assert.Empty(t, r.Images)
		assert.NotNil(t, r.Images)
		assert.Empty(t, w)
	})

	t.Run("every version is recognised by its controller images", func(t *testing.T) {
		requireEmbedded(t, haveEmbedded)
		for _, v := range distdata.Versions(t, dir) {
			var files []looseFile
			for name, b := range wantRelease(t, dir, v, false).Manifests {
				files = append(files, looseFile{name: name, data: b})
			}
			var w warnings
			got, err := detectVersion(files, nil, w.opts().Warn)
			require.NoError(t, err, v)
			assert.Equal(t, v, got)
			switch v {
			case "v2.8.3":
				// Flux v2.8.4 shipped the same controllers; the data has manifests for v2.8.3 only.
				require.Len(t, w, 1)
				assert.Contains(t, w[0], "v2.8.3, v2.8.4")
			case "v2.2.3":
				// Its manifests and its image list disagree on source-controller.
				require.Len(t, w, 1)
				assert.Contains(t, w[0], "on 5 of 6 images")
			default:
				assert.Empty(t, w, v)
			}
		}
	})

	t.Run("version from the file name", func(t *testing.T) {
		p := writeTemp(t, "flux-v2.6.3-manifests.tar.gz", distdata.ManifestsTarGz(t, dir, "v2.6.3"))
		var w warnings
		d, err := Open(context.Background(), p, w.opts())
		require.NoError(t, err)
		assert.Equal(t, []string{"v2.6.3"}, d.Versions())
		assert.Empty(t, w)
	})

	t.Run("file name contradicting the images warns", func(t *testing.T) {
		requireEmbedded(t, haveEmbedded)
		p := writeTemp(t, "flux-v2.6.3-manifests.tar.gz", tarball)
		var w warnings
		d, err := Open(context.Background(), p, w.opts())
		require.NoError(t, err)
		assert.Equal(t, []string{"v2.6.3"}, d.Versions())
		require.Len(t, w, 1)
		assert.Contains(t, w[0], "Flux v2.7.5")
	})

	t.Run("version label wins", func(t *testing.T) {
		var entries []distdata.Entry
		for name, b := range wantRelease(t, dir, "v2.7.5", false).Manifests {
			if name == "source-controller.yaml" {
				b = bytes.Replace(b, []byte("    app.kubernetes.io/part-of: flux\n"),
					[]byte("    app.kubernetes.io/part-of: flux\n    app.kubernetes.io/version: v2.7.5\n"), -1)
			}
			entries = append(entries, distdata.Entry{Name: "manifests/" + name, Data: b})
		}
		p := writeTemp(t, "flux-v2.6.3.tar.gz", distdata.BuildTarGz(t, entries))
		d, err := Open(context.Background(), p, Options{Warn: func(string) {}})
		require.NoError(t, err)
		assert.Equal(t, []string{"v2.7.5"}, d.Versions())
		r, err := d.Release("v2.7.5")
		require.NoError(t, err)
		assert.Len(t, r.Manifests, len(wantRelease(t, dir, "v2.7.5", false).Manifests))
	})

	t.Run("extracted into a directory named after the version", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "v2.8.0")
		require.NoError(t, os.MkdirAll(root, 0o755))
		for name, b := range wantRelease(t, dir, "v2.8.0", false).Manifests {
			require.NoError(t, os.WriteFile(filepath.Join(root, name), b, 0o644))
		}
		d, err := Open(context.Background(), root, Options{})
		require.NoError(t, err)
		assert.Equal(t, []string{"v2.8.0"}, d.Versions())
		r, err := d.Release("v2.8.0")
		require.NoError(t, err)
		assert.Equal(t, wantRelease(t, dir, "v2.8.0", false), r)
	})
}

func TestOpenRejectsWhatIsNotADistribution(t *testing.T) {
	ctx := context.Background()
	_, err := Open(ctx, filepath.Join(t.TempDir(), "missing.tar.gz"), Options{})
	require.ErrorContains(t, err, "missing.tar.gz")

	_, err = Open(ctx, "https://example.com/manifests.tar.gz", Options{})
	require.ErrorContains(t, err, "unsupported scheme")

	p := writeTemp(t, "plain.tar", []byte("not gzip at all"))
	_, err = Open(ctx, p, Options{})
	require.ErrorContains(t, err, "tarball "+p+": not a gzip-compressed tar archive")

	p = writeTemp(t, "other.tar.gz", distdata.BuildTarGz(t, []distdata.Entry{{Name: "docs/readme.txt", Data: []byte("hi")}}))
	_, err = Open(ctx, p, Options{})
	require.ErrorContains(t, err, "found neither flux/vX.Y.Z/ directories")

	_, err = Open(ctx, t.TempDir(), Options{})
	require.ErrorContains(t, err, "found neither flux/vX.Y.Z/ directories")
}

// rawTarGz writes headers as given, without tar.Writer's consistency checks on the content
// (an oversized entry announces more bytes than follow).
func rawTarGz(t *testing.T, hdrs []*tar.Header, bodies [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i, h := range hdrs {
		require.NoError(t, tw.WriteHeader(h))
		if i < len(bodies) && bodies[i] != nil {
			_, err := tw.Write(bodies[i])
			require.NoError(t, err)
		}
	}
	_ = tw.Flush() // fails for the oversized entry, whose content is left out on purpose
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestMaliciousTarballs(t *testing.T) {
	yamlBody := []byte("kind: ConfigMap\n")
	reg := func(name string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(yamlBody))}
	}
	ok := reg("flux/v2.7.5/source-controller.yaml")
	// Compressible, so that the archive itself stays under the total limit it breaks.
	bigBody := bytes.Repeat([]byte("a: b\n"), 400)
	bigReg := func(name string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(bigBody))}
	}
	for _, tc := range []struct {
		name   string
		hdrs   []*tar.Header
		bodies [][]byte
		limits *archive.Limits
		want   []string
	}{
		{name: "dot-dot", hdrs: []*tar.Header{ok, reg("flux/../../etc/cron.d/evil.yaml")}, bodies: [][]byte{yamlBody, yamlBody},
			want: []string{`"flux/../../etc/cron.d/evil.yaml"`, "escapes the archive root"}},
		{name: "absolute", hdrs: []*tar.Header{reg("/etc/passwd")}, bodies: [][]byte{yamlBody},
			want: []string{`"/etc/passwd"`, "absolute path"}},
		{name: "symlink", hdrs: []*tar.Header{{Typeflag: tar.TypeSymlink, Name: "flux/v2.7.5/rbac.yaml", Linkname: "/etc/shadow"}},
			want: []string{`"flux/v2.7.5/rbac.yaml"`, "symbolic link", "/etc/shadow"}},
		{name: "hard link", hdrs: []*tar.Header{ok, {Typeflag: tar.TypeLink, Name: "flux/v2.7.5/rbac.yaml", Linkname: "flux/v2.7.5/source-controller.yaml"}}, bodies: [][]byte{yamlBody},
			want: []string{`"flux/v2.7.5/rbac.yaml"`, "hard link"}},
		{name: "device", hdrs: []*tar.Header{{Typeflag: tar.TypeChar, Name: "flux/v2.7.5/null", Devmajor: 1, Devminor: 3}},
			want: []string{`"flux/v2.7.5/null"`, "device"}},
		{name: "fifo", hdrs: []*tar.Header{{Typeflag: tar.TypeFifo, Name: "flux/v2.7.5/pipe"}},
			want: []string{`"flux/v2.7.5/pipe"`, "FIFO"}},
		{name: "oversized file", hdrs: []*tar.Header{{Typeflag: tar.TypeReg, Name: "flux/v2.7.5/huge.yaml", Mode: 0o644, Size: 1 << 40}},
			want: []string{`"flux/v2.7.5/huge.yaml"`, "bytes allowed per file"}},
		{name: "oversized total", hdrs: []*tar.Header{bigReg("flux/v2.7.5/source-controller.yaml"), bigReg("flux/v2.7.5/rbac.yaml")}, bodies: [][]byte{bigBody, bigBody},
			limits: &archive.Limits{MaxTotal: int64(len(bigBody)) * 3 / 2, MaxFile: 1 << 20, MaxEntries: 10},
			want:   []string{`"flux/v2.7.5/rbac.yaml"`, "allowed in total"}},
		{name: "too many entries", hdrs: []*tar.Header{ok, reg("flux/v2.7.5/a.yaml"), reg("flux/v2.7.5/b.yaml")}, bodies: [][]byte{yamlBody, yamlBody, yamlBody},
			limits: &archive.Limits{MaxTotal: 1 << 20, MaxFile: 1 << 20, MaxEntries: 2},
			want:   []string{"more than 2 entries"}},
		{name: "duplicate", hdrs: []*tar.Header{ok, ok}, bodies: [][]byte{yamlBody, yamlBody},
			want: []string{`duplicate entry "flux/v2.7.5/source-controller.yaml"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTemp(t, "evil.tar.gz", rawTarGz(t, tc.hdrs, tc.bodies))
			opts := Options{limits: tc.limits}
			_, err := Open(context.Background(), p, opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "tarball "+p, "the error names the source")
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

// A hostile index must not make the reader look outside the archive or at other files.
func TestCorruptIndexIsRejected(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, archive.Write(&buf, []archive.File{{Name: "flux/v2.7.5/a.yaml", Data: []byte("a: 1\n")}}, gzip.BestSpeed))
	good := buf.Bytes()
	idx, base, ok, err := archive.ReadIndex(good)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, int64(len(good)), base+idx.Versions["v2.7.5"].Offset+idx.Versions["v2.7.5"].Size)

	// Re-write only the index member with an out-of-range offset.
	rest := good[base:]
	var head bytes.Buffer
	zw := gzip.NewWriter(&head)
	tw := tar.NewWriter(zw)
	raw := []byte(`{"format":1,"images":{"offset":0,"size":0},"versions":{"v2.7.5":{"offset":0,"size":999999}}}`)
	require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: archive.IndexName, Mode: 0o644, Size: int64(len(raw))}))
	_, err = tw.Write(raw)
	require.NoError(t, err)
	require.NoError(t, tw.Flush())
	require.NoError(t, zw.Close())
	p := writeTemp(t, "bad.tar.gz", append(head.Bytes(), rest...))
	_, err = Open(context.Background(), p, Options{})
	require.ErrorContains(t, err, "lies outside the archive")
	assert.True(t, strings.Contains(err.Error(), p))
}
