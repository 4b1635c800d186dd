package distribution

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/test/distribution/distdata"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// counter counts registry requests by kind.
type counter struct {
	mu    sync.Mutex
	blobs int
	total int
}

func (c *counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.total++
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			c.blobs++
		}
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (c *counter) get() (blobs, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blobs, c.total
}

// ociLayer is the content layer of an operator-layout artifact with a few real versions.
func ociLayer(t *testing.T) (dir string, layer []byte) {
	t.Helper()
	dir = distdata.Dir(t)
	return dir, distdata.TarGz(t, dir, "v2.6.3", "v2.7.5")
}

func TestOCIPullCacheAndOfflineFallback(t *testing.T) {
	dir, layer := ociLayer(t)
	var c counter
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{Wrap: c.wrap})
	digest := distdata.PushArtifact(t, reg.Host+"/flux/distribution:latest", layer, ConfigMediaType, ContentMediaType, false)
	cache := t.TempDir()
	var w warnings
	opts := w.opts()
	opts.CacheDir = cache
	ctx := context.Background()
	byTag := "oci://" + reg.Host + "/flux/distribution:latest"
	byDigest := "oci://" + reg.Host + "/flux/distribution@" + digest

	// First pull by tag: downloads, verifies, caches.
	_, before := c.get()
	d, err := Open(ctx, byTag, opts)
	require.NoError(t, err)
	assert.Equal(t, byTag+"@"+digest, d.Source())
	assert.Equal(t, []string{"v2.6.3", "v2.7.5"}, d.Versions())
	r, err := d.Release("v2.7.5")
	require.NoError(t, err)
	assert.Equal(t, wantRelease(t, dir, "v2.7.5", true), r)
	blobs, _ := c.get()
	assert.Positive(t, blobs, "the layer was downloaded")
	assert.FileExists(t, filepath.Join(cache, "sha256-"+strings.TrimPrefix(digest, "sha256:")+".tar.gz"))
	_, afterFirst := c.get()
	assert.Greater(t, afterFirst, before)

	// Second pull by tag: only the manifest is asked for, the content comes from the cache.
	d, err = Open(ctx, byTag, opts)
	require.NoError(t, err)
	assert.Equal(t, byTag+"@"+digest, d.Source())
	blobs2, afterSecond := c.get()
	assert.Equal(t, blobs, blobs2, "no blob downloaded again")
	assert.Greater(t, afterSecond, afterFirst, "the tag was resolved against the registry")

	// By digest with a cached copy: no request at all.
	d, err = Open(ctx, byDigest, opts)
	require.NoError(t, err)
	assert.Equal(t, byDigest, d.Source())
	_, afterDigest := c.get()
	assert.Equal(t, afterSecond, afterDigest)

	// Registry gone: the tag falls back to the recorded digest, with a warning.
	reg.Server.Close()
	require.Empty(t, w)
	d, err = Open(ctx, byTag, opts)
	require.NoError(t, err)
	assert.Contains(t, d.Source(), digest)
	assert.Contains(t, d.Source(), "cached")
	r, err = d.Release("v2.6.3")
	require.NoError(t, err)
	assert.Equal(t, wantRelease(t, dir, "v2.6.3", true), r)
	require.Len(t, w, 1)
	assert.Contains(t, w[0], "cannot reach the registry")
	assert.Contains(t, w[0], digest)

	d, err = Open(ctx, byDigest, opts)
	require.NoError(t, err, "a cached digest needs no registry")
	assert.Equal(t, []string{"v2.6.3", "v2.7.5"}, d.Versions())

	// A tag never pulled has nothing to fall back to.
	_, err = Open(ctx, "oci://"+reg.Host+"/flux/distribution:other", opts)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "flux/distribution:other")
}

func TestOCIWrongMediaType(t *testing.T) {
	_, layer := ociLayer(t)
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{})
	distdata.PushArtifact(t, reg.Host+"/flux/image:v1", layer,
		"application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip", false)
	_, err := Open(context.Background(), "oci://"+reg.Host+"/flux/image:v1", Options{CacheDir: t.TempDir()})
	require.Error(t, err)
	for _, want := range []string{
		"not a Flux distribution artifact",
		`"application/vnd.oci.image.config.v1+json"`, "application/vnd.oci.image.layer.v1.tar+gzip",
		`"` + ConfigMediaType + `"`, `"` + ContentMediaType + `"`,
		"oci://" + reg.Host + "/flux/image:v1",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestOCIUnsafeLayerIsRejected(t *testing.T) {
	layer := distdata.BuildTarGz(t, []distdata.Entry{{Name: "flux/v2.7.5/../../../x.yaml", Data: []byte("a: b\n")}})
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{})
	distdata.PushArtifact(t, reg.Host+"/flux/evil:v1", layer, ConfigMediaType, ContentMediaType, false)
	cache := t.TempDir()
	_, err := Open(context.Background(), "oci://"+reg.Host+"/flux/evil:v1", Options{CacheDir: cache})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"flux/v2.7.5/../../../x.yaml"`)
	assert.Contains(t, err.Error(), "oci://"+reg.Host+"/flux/evil:v1")
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), ".tar.gz", "nothing cached")
	}
}

func TestOCIPrivateCA(t *testing.T) {
	_, layer := ociLayer(t)
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{TLS: true})
	ref := reg.Host + "/flux/distribution:v1"
	distdata.PushArtifact(t, ref, layer, ConfigMediaType, ContentMediaType, false, remote.WithTransport(reg.Server.Client().Transport))

	_, err := Open(context.Background(), "oci://"+ref, Options{CacheDir: t.TempDir()})
	require.Error(t, err, "the self-signed CA is not trusted by default")
	assert.Contains(t, err.Error(), "certificate")

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.Server.Certificate().Raw}), 0o644))
	d, err := Open(context.Background(), "oci://"+ref, Options{CacheDir: t.TempDir(), CAFile: caFile})
	require.NoError(t, err)
	assert.Equal(t, []string{"v2.6.3", "v2.7.5"}, d.Versions())

	bad := filepath.Join(t.TempDir(), "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("nope"), 0o644))
	_, err = Open(context.Background(), "oci://"+ref, Options{CacheDir: t.TempDir(), CAFile: bad})
	require.ErrorContains(t, err, "holds no PEM certificate")
}

// go-containerregistry always allows plain HTTP to 127.0.0.1 and localhost, so the Insecure
// option is exercised on another loopback address, which it treats like any remote host.
func TestOCIInsecurePlainHTTP(t *testing.T) {
	_, layer := ociLayer(t)
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{Addr: "127.0.0.2:0"})
	ref := reg.Host + "/flux/distribution:v1"
	distdata.PushArtifact(t, ref, layer, ConfigMediaType, ContentMediaType, true)

	_, err := Open(context.Background(), "oci://"+ref, Options{CacheDir: t.TempDir()})
	require.Error(t, err, "plain HTTP needs Insecure")
	assert.Contains(t, err.Error(), "--insecure-registry")

	d, err := Open(context.Background(), "oci://"+ref, Options{CacheDir: t.TempDir(), Insecure: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"v2.6.3", "v2.7.5"}, d.Versions())
}

func TestOCIBasicAuthFromDockerConfig(t *testing.T) {
	_, layer := ociLayer(t)
	const user, pass = "flux", "s3cret"
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{Wrap: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}})
	ref := reg.Host + "/private/distribution:v1"
	distdata.PushArtifact(t, ref, layer, ConfigMediaType, ContentMediaType, false,
		remote.WithAuth(&authn.Basic{Username: user, Password: pass}))

	// Isolate from the machine's own Docker/Podman credentials.
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	empty := t.TempDir()
	t.Setenv("DOCKER_CONFIG", empty)
	_, err := Open(context.Background(), "oci://"+ref, Options{CacheDir: t.TempDir()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "docker login")

	cfg := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	require.NoError(t, os.WriteFile(filepath.Join(cfg, "config.json"),
		[]byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, auth)), 0o600))
	t.Setenv("DOCKER_CONFIG", cfg)
	d, err := Open(context.Background(), "oci://"+ref, Options{CacheDir: t.TempDir()})
	require.NoError(t, err)
	assert.Equal(t, []string{"v2.6.3", "v2.7.5"}, d.Versions())
}

func TestOCICancelledContext(t *testing.T) {
	_, layer := ociLayer(t)
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{})
	ref := reg.Host + "/flux/distribution:v1"
	distdata.PushArtifact(t, ref, layer, ConfigMediaType, ContentMediaType, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, "oci://"+ref, Options{CacheDir: t.TempDir()})
	require.ErrorIs(t, err, context.Canceled)
}

// A registry that accepts and never answers: Timeout (--request-timeout) bounds the whole pull,
// with an error that names the registry and says what to do; with a cached copy of the tag, the
// bound ends the wait and the cached copy is used.
func TestOCIRegistryThatNeverAnswers(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	silent := testenv.StartSilent(t, "")
	source := "oci://" + silent + "/flux/distribution:v1"
	start := time.Now()
	_, err := Open(context.Background(), source, Options{CacheDir: t.TempDir(), Timeout: time.Second})
	elapsed := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "distribution "+source+": ")
	assert.ErrorContains(t, err, "(the registry "+silent+" did not answer within --request-timeout=1s: retry, check that the registry is up and reachable from here, or raise --request-timeout)")
	assert.Less(t, elapsed, 20*time.Second, "bounded by Timeout, not by the registry")

	// The same tag pulled once, then the registry hangs: Timeout is shorter than the offline
	// bound of a cached tag, and ends the wait as well.
	_, layer := ociLayer(t)
	reg := distdata.StartRegistry(t, distdata.RegistryOptions{})
	ref := reg.Host + "/flux/distribution:v1"
	digest := distdata.PushArtifact(t, ref, layer, ConfigMediaType, ContentMediaType, false)
	var w warnings
	opts := w.opts()
	opts.CacheDir = t.TempDir()
	opts.Timeout = time.Second
	_, err = Open(context.Background(), "oci://"+ref, opts)
	require.NoError(t, err)
	reg.Server.Close()
	testenv.StartSilent(t, reg.Host)
	start = time.Now()
	d, err := Open(context.Background(), "oci://"+ref, opts)
	elapsed = time.Since(start)
	require.NoError(t, err)
	assert.Contains(t, d.Source(), digest)
	assert.Contains(t, d.Source(), "cached, registry unreachable")
	require.Len(t, w, 1)
	assert.Contains(t, w[0], "cannot reach the registry for oci://"+ref)
	assert.Less(t, elapsed, offlineTimeout, "bounded by Timeout, not by the offline bound")
}

func TestOCIInvalidReference(t *testing.T) {
	_, err := Open(context.Background(), "oci://UPPER/Case:tag", Options{CacheDir: t.TempDir()})
	require.ErrorContains(t, err, "invalid OCI reference")
}
