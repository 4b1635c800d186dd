// Package distribution opens the Flux distributions a FluxInstance is rendered from and hands
// the renderer one Release (one Flux version's manifests and image lists).
//
// A source is selected by a string (the --distribution flag, or spec.distribution.artifact):
//
//   - ""                        the default distribution embedded in the binary;
//   - "oci://host/repo:tag"     an OCI artifact in the Flux Operator's layout (also "@sha256:…"),
//     cached by digest in the user's cache directory;
//   - a directory               in the operator's layout (flux/vX.Y.Z/*.yaml and
//     flux-images/vX.Y.Z/<variant>.yaml), or holding one Flux release's manifests;
//   - a .tar.gz/.tgz file       of the operator's layout, or a Flux release manifests.tar.gz.
//
// Opening only indexes what versions exist; Release decompresses and returns one version, so
// a build touches a small fraction of the data.
package distribution

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/embedded"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/internal/archive"
)

// Options configure how a source is opened. The zero value is ready to use.
type Options struct {
	// Insecure allows plain HTTP to the OCI registry (--insecure-registry). As in Docker,
	// registries on localhost, 127.0.0.1 and private (RFC 1918) addresses may use plain HTTP
	// without it (go-containerregistry's rule); HTTPS is still tried first.
	Insecure bool
	// Timeout bounds the whole of an OCI pull, every request of it together (--request-timeout);
	// 0 for no overall bound. Each request is bounded anyway (DialTimeout, TLSHandshakeTimeout,
	// ResponseHeaderTimeout), and the context given to Open cancels it.
	Timeout time.Duration
	// CAFile is a PEM bundle of extra certificate authorities trusted for the OCI registry,
	// on top of the system pool (--ca-file).
	CAFile string
	// CacheDir holds pulled OCI artifacts; default DefaultCacheDir().
	CacheDir string
	// Keychain resolves registry credentials; default authn.DefaultKeychain (the Docker
	// config, honouring DOCKER_CONFIG, and credential helpers).
	Keychain authn.Keychain
	// Warn receives non-fatal problems (e.g. "registry unreachable, using the cached
	// artifact"); default: printed to stderr.
	Warn func(string)

	// limits override archive.DefaultLimits in tests.
	limits *archive.Limits
}

func (o Options) withDefaults() Options {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Warn == nil {
		o.Warn = func(msg string) { fmt.Fprintln(os.Stderr, "Warning: "+msg) }
	}
	if o.limits == nil {
		l := archive.DefaultLimits()
		o.limits = &l
	}
	return o
}

// Distribution is an opened distribution: an index of the Flux versions it holds.
type Distribution struct {
	description string
	versions    []string // ascending
	load        func(version string) (*Release, error)
}

// Open opens the distribution named by source (see the package documentation); "" is the
// embedded default. ctx bounds network access (OCI pulls).
func Open(ctx context.Context, source string, opts Options) (*Distribution, error) {
	opts = opts.withDefaults()
	switch {
	case source == "":
		return openEmbedded(opts)
	case strings.HasPrefix(source, "oci://"):
		return openOCI(ctx, source, opts)
	case strings.Contains(source, "://"):
		return nil, fmt.Errorf("distribution %q: unsupported scheme; use a directory, a .tar.gz file or an oci:// artifact URL", source)
	}
	fi, err := os.Stat(source)
	if err != nil {
		return nil, fmt.Errorf("distribution %q: %w (expected a directory, a .tar.gz file or an oci:// artifact URL)", source, err)
	}
	if fi.IsDir() {
		return openDir(source, opts)
	}
	if fi.Size() > opts.limits.MaxTotal {
		return nil, fmt.Errorf("distribution tarball %s: file is %d bytes, more than the %d bytes allowed", source, fi.Size(), opts.limits.MaxTotal)
	}
	data, err := os.ReadFile(source)
	if err != nil {
		return nil, fmt.Errorf("distribution tarball %s: %w", source, err)
	}
	return openArchive(data, "tarball "+source, source, opts)
}

func openEmbedded(opts Options) (*Distribution, error) {
	data, err := embedded.Archive()
	if err != nil {
		return nil, err
	}
	d, err := openArchive(data, "embedded distribution", "", opts)
	if err != nil {
		return nil, err
	}
	if n := len(d.versions); n > 0 {
		d.description = fmt.Sprintf("embedded (%s … %s)", d.versions[n-1], d.versions[0])
	}
	return d, nil
}

// Versions returns the Flux versions the distribution can render ("vX.Y.Z"), ascending.
func (d *Distribution) Versions() []string {
	return append([]string(nil), d.versions...)
}

// Source describes where the distribution came from, for status output and errors:
// "embedded (v2.9.4 … v2.2.3)", "dir /path", "tarball /path", "oci://host/repo:tag@sha256:…".
func (d *Distribution) Source() string { return d.description }

// String implements fmt.Stringer with Source.
func (d *Distribution) String() string { return d.description }

// Resolve returns the highest version matching constraint, the FluxInstance's
// spec.distribution.version: exact ("2.7.5" or "v2.7.5"), wildcard ("2.x", "2.7.x", "*") or a
// range (">=2.6.0 <2.8.0"). No match is an error listing the versions available.
func (d *Distribution) Resolve(constraint string) (string, error) {
	return resolve(constraint, d.versions, d.description)
}

// Release loads one version ("vX.Y.Z" or "X.Y.Z"): flux/<version>/*.yaml and
// flux-images/<version>/*.yaml.
func (d *Distribution) Release(version string) (*Release, error) {
	v := "v" + strings.TrimPrefix(strings.TrimSpace(version), "v")
	for _, have := range d.versions {
		if have == v {
			r, err := d.load(v)
			if err != nil {
				return nil, fmt.Errorf("distribution %s: loading %s: %w", d.description, v, err)
			}
			if len(r.Manifests) == 0 {
				return nil, fmt.Errorf("distribution %s: flux/%s/ holds no .yaml files", d.description, v)
			}
			return r, nil
		}
	}
	return nil, fmt.Errorf("distribution %s has no Flux version %s; available: %s", d.description, version, strings.Join(d.versions, ", "))
}

// newRelease returns an empty release for version.
func newRelease(version string) *Release {
	return &Release{Version: version, Manifests: map[string][]byte{}, Images: map[string][]byte{}}
}

// classify sorts a cleaned archive/dir-relative path into the operator's layout:
// tree "flux" or "flux-images", the version and the file (manifest name or variant file).
func classify(name string) (tree, version, file string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 3 || (parts[0] != "flux" && parts[0] != "flux-images") ||
		!versionPattern.MatchString(parts[1]) || !strings.HasSuffix(parts[2], ".yaml") {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// add stores a layout file into a release.
func (r *Release) add(tree, file string, data []byte) {
	if tree == "flux" {
		r.Manifests[file] = data
	} else {
		r.Images[strings.TrimSuffix(file, ".yaml")] = data
	}
}

// DefaultCacheDir is where OCI pulls are cached: <user cache dir>/kubectl-fluxinstance/distribution.
func DefaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cannot find the user cache directory for OCI pulls (set $XDG_CACHE_HOME or HOME): %w", err)
	}
	return filepath.Join(dir, "kubectl-fluxinstance", "distribution"), nil
}
