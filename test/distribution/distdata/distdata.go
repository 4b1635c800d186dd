// Package distdata gives tests the real Flux distribution data (FLUX_DISTRIBUTION_DIR) and
// the artifacts built from it: operator-layout tarballs, Flux release manifests.tar.gz files,
// and OCI artifacts pushed to a registry served on loopback.
package distdata

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// Media types of the Flux Operator's distribution artifact.
const (
	ConfigMediaType  = "application/vnd.cncf.flux.config.v1+json"
	ContentMediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"
)

// Dir returns the distribution data directory (testenv.DistributionDir: $FLUX_DISTRIBUTION_DIR,
// else ../shared/flux-distribution beside the repository; skipped when missing, failed under CI).
func Dir(tb testing.TB) string {
	tb.Helper()
	return testenv.DistributionDir(tb)
}

// Versions lists the flux/vX.Y.Z directories of dir (string order).
func Versions(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "flux"))
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "v") {
			out = append(out, e.Name())
		}
	}
	return out
}

// Entry is one file of a hand-built tarball.
type Entry struct {
	Name string
	Data []byte
}

// TarGz builds a plain, single-member tar.gz of the operator's layout from dir: flux/<v>/ and
// flux-images/<v>/ for the given versions (all when none), plus dir's README.md, like the
// operator's artifact which carries files a renderer does not read.
func TarGz(tb testing.TB, dir string, versions ...string) []byte {
	tb.Helper()
	want := map[string]bool{}
	for _, v := range versions {
		want[v] = true
	}
	var entries []Entry
	for _, tree := range []string{"flux", "flux-images"} {
		err := filepath.WalkDir(filepath.Join(dir, tree), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			parts := strings.Split(rel, "/")
			if len(want) > 0 && (len(parts) < 3 || !want[parts[1]]) {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entries = append(entries, Entry{Name: rel, Data: b})
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "README.md")); err == nil {
		entries = append(entries, Entry{Name: "README.md", Data: b})
	}
	return BuildTarGz(tb, entries)
}

// ManifestsTarGz builds a Flux release manifests.tar.gz for version: its component files at
// the root, named "./<file>" as `tar -C dir .` writes them.
func ManifestsTarGz(tb testing.TB, dir, version string) []byte {
	tb.Helper()
	files, err := os.ReadDir(filepath.Join(dir, "flux", version))
	if err != nil {
		tb.Fatal(err)
	}
	var entries []Entry
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, "flux", version, f.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		entries = append(entries, Entry{Name: "./" + f.Name(), Data: b})
	}
	return BuildTarGz(tb, entries)
}

// BuildTarGz writes entries (regular files, sorted by name) as a tar.gz with a "./" directory
// entry first.
func BuildTarGz(tb testing.TB, entries []Entry) []byte {
	tb.Helper()
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}); err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.Name, Mode: 0o644, Size: int64(len(e.Data))}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(e.Data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Registry is an OCI registry (go-containerregistry's pkg/registry) served on loopback.
type Registry struct {
	Server *httptest.Server
	// Host is "127.0.0.1:PORT" (or the address asked for).
	Host string
}

// RegistryOptions shape StartRegistry's server.
type RegistryOptions struct {
	// TLS serves HTTPS with httptest's self-signed certificate (valid for 127.0.0.1).
	TLS bool
	// Addr listens on this address instead of 127.0.0.1:0.
	Addr string
	// Wrap wraps the registry handler (auth checks, request counting, …).
	Wrap func(http.Handler) http.Handler
}

// StartRegistry starts a registry; it is stopped when the test ends (or by Server.Close).
func StartRegistry(tb testing.TB, opts RegistryOptions) *Registry {
	tb.Helper()
	h := registry.New()
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	if opts.Addr != "" {
		l, err := net.Listen("tcp", opts.Addr)
		if err != nil {
			tb.Skipf("cannot listen on %s: %v", opts.Addr, err)
		}
		srv.Listener.Close()
		srv.Listener = l
	}
	if opts.TLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	tb.Cleanup(srv.Close)
	return &Registry{Server: srv, Host: srv.Listener.Addr().String()}
}

// PushArtifact pushes an artifact whose config has configMediaType and whose only layer is
// layer with layerMediaType, tagged ref ("host/repo:tag"), and returns its manifest digest.
// Extra remote options carry transports and credentials.
func PushArtifact(tb testing.TB, ref string, layer []byte, configMediaType, layerMediaType string, insecure bool, opts ...remote.Option) string {
	tb.Helper()
	var nameOpts []name.Option
	if insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nameOpts...)
	if err != nil {
		tb.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.MediaType(configMediaType))
	img, err = mutate.AppendLayers(img, static.NewLayer(layer, types.MediaType(layerMediaType)))
	if err != nil {
		tb.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		tb.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		tb.Fatal(err)
	}
	return d.String()
}
