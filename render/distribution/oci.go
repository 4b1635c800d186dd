package distribution

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution/internal/archive"
)

// Media types of the Flux Operator's distribution artifact.
const (
	ConfigMediaType  = "application/vnd.cncf.flux.config.v1+json"
	ContentMediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"
)

// offlineTimeout bounds the manifest lookup of a tag when a cached copy could be used instead,
// so that a black-holed registry costs seconds, not the transport's minutes.
const offlineTimeout = 20 * time.Second

// tagRecord remembers which digest a tag pointed to at the last successful pull, so that a
// build by tag still works when the registry is unreachable.
type tagRecord struct {
	Reference string    `json:"reference"`
	Digest    string    `json:"digest"`
	Pulled    time.Time `json:"pulled"`
}

// openOCI opens oci://host/repo:tag or oci://host/repo@sha256:…. Artifacts are cached by
// manifest digest as <cache>/sha256-<hex>.tar.gz, re-packed in the indexed layout (only
// flux/ and flux-images/), so a repeated build reads one small member instead of pulling.
func openOCI(ctx context.Context, source string, opts Options) (*Distribution, error) {
	ref, err := parseOCIReference(source, opts)
	if err != nil {
		return nil, err
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		if cacheDir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	label := func(digest string) string { return artifactLabel(ref, digest) }

	// A digest is immutable: a cached copy is the artifact, no need to ask the registry.
	if dig, ok := ref.(name.Digest); ok {
		if d, err := openCached(cacheDir, dig.DigestStr(), label(dig.DigestStr()), opts); d != nil || err != nil {
			return d, err
		}
	}

	transportOpt, err := registryTransport(opts)
	if err != nil {
		return nil, fmt.Errorf("distribution %s: %w", source, err)
	}
	// pullCtx bounds every request of the pull together; ctx alone says whether the user
	// cancelled (Ctrl-C), which must never be papered over with a cached copy.
	pullCtx := ctx
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		pullCtx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	recordPath := filepath.Join(cacheDir, "tags", refKey(ref.Name())+".json")
	var record *tagRecord
	getCtx := pullCtx
	if _, isTag := ref.(name.Tag); isTag {
		if record = readTagRecord(recordPath); record != nil && fileExists(cachePath(cacheDir, record.Digest)) {
			var cancel context.CancelFunc
			getCtx, cancel = context.WithTimeout(pullCtx, offlineTimeout)
			defer cancel()
		} else {
			record = nil
		}
	}
	remoteOpts := []remote.Option{
		remote.WithContext(getCtx),
		remote.WithAuthFromKeychain(opts.Keychain),
		remote.WithUserAgent("kubectl-fluxinstance"),
		transportOpt,
	}
	desc, err := remote.Get(ref, remoteOpts...)
	if err != nil {
		if record != nil && ctx.Err() == nil && !registryAnswered(err) {
			opts.Warn(fmt.Sprintf("cannot reach the registry for %s (%v); using the cached artifact %s pulled %s",
				source, err, record.Digest, record.Pulled.Format(time.RFC3339)))
			d, cerr := openCached(cacheDir, record.Digest, label(record.Digest)+" (cached, registry unreachable)", opts)
			if d != nil || cerr != nil {
				return d, cerr
			}
		}
		return nil, fmt.Errorf("distribution %s: %w", source, pullHint(err, ref, expired(pullCtx, opts), opts))
	}
	digest := desc.Digest.String()
	d, err := openCached(cacheDir, digest, label(digest), opts)
	if d == nil && err == nil {
		var data []byte
		if data, err = pull(pullCtx, ref, desc, source, opts, transportOpt); err != nil {
			if noAnswer(err) {
				err = noAnswerHint(err, ref, expired(pullCtx, opts))
			}
			return nil, err
		}
		if err := writeFileAtomic(cachePath(cacheDir, digest), data); err != nil {
			opts.Warn(fmt.Sprintf("cannot cache %s in %s: %v", source, cacheDir, err))
		}
		d, err = openArchive(data, label(digest), "", opts)
	}
	if err != nil {
		return nil, err
	}
	if _, isTag := ref.(name.Tag); isTag {
		writeTagRecord(recordPath, tagRecord{Reference: ref.Name(), Digest: digest, Pulled: time.Now().UTC()}, opts)
	}
	return d, nil
}

// parseOCIReference parses oci://host/repo:tag or oci://host/repo@sha256:…, over plain HTTP
// when opts.Insecure.
func parseOCIReference(source string, opts Options) (name.Reference, error) {
	var nameOpts []name.Option
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(source, "oci://"), nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("distribution %s: invalid OCI reference: %w", source, err)
	}
	return ref, nil
}

// artifactLabel names the artifact ref resolved to digest, keeping the tag it was asked by.
func artifactLabel(ref name.Reference, digest string) string {
	repo := "oci://" + ref.Context().Name()
	if tag, ok := ref.(name.Tag); ok {
		return repo + ":" + tag.TagStr() + "@" + digest
	}
	return repo + "@" + digest
}

// pull checks the artifact's media types, downloads its content layer and re-packs it.
func pull(ctx context.Context, ref name.Reference, desc *remote.Descriptor, source string, opts Options, transportOpt remote.Option) ([]byte, error) {
	if desc.MediaType != types.OCIManifestSchema1 && desc.MediaType != types.DockerManifestSchema2 {
		return nil, fmt.Errorf("distribution %s: not a Flux distribution artifact: the reference is a %s; expected an image manifest (%s) "+
			"with config media type %s and a first layer of media type %s", source, desc.MediaType, types.OCIManifestSchema1, ConfigMediaType, ContentMediaType)
	}
	var mf v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &mf); err != nil {
		return nil, fmt.Errorf("distribution %s: decoding the manifest: %w", source, err)
	}
	var layerTypes []string
	for _, l := range mf.Layers {
		layerTypes = append(layerTypes, string(l.MediaType))
	}
	if mf.Config.MediaType != ConfigMediaType || len(mf.Layers) == 0 || mf.Layers[0].MediaType != ContentMediaType {
		found := "none"
		if len(layerTypes) > 0 {
			found = strings.Join(layerTypes, ", ")
		}
		return nil, fmt.Errorf("distribution %s: not a Flux distribution artifact: found config media type %q and layer media types [%s]; "+
			"expected config media type %q and a first layer of media type %q", source, mf.Config.MediaType, found, ConfigMediaType, ContentMediaType)
	}
	layerDesc := mf.Layers[0]
	if layerDesc.Size > opts.limits.MaxTotal {
		return nil, fmt.Errorf("distribution %s: content layer is %d bytes, more than the %d bytes allowed", source, layerDesc.Size, opts.limits.MaxTotal)
	}
	layer, err := remote.Layer(ref.Context().Digest(layerDesc.Digest.String()),
		remote.WithContext(ctx), remote.WithAuthFromKeychain(opts.Keychain), remote.WithUserAgent("kubectl-fluxinstance"), transportOpt)
	if err != nil {
		return nil, fmt.Errorf("distribution %s: %w", source, err)
	}
	// Compressed verifies the blob's size and digest as it is read.
	rc, err := layer.Compressed()
	if err != nil {
		return nil, fmt.Errorf("distribution %s: downloading layer %s: %w", source, layerDesc.Digest, err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(io.LimitReader(rc, layerDesc.Size+1))
	if err != nil {
		return nil, fmt.Errorf("distribution %s: layer %s is not gzip-compressed: %w", source, layerDesc.Digest, err)
	}
	var files []archive.File
	err = archive.Walk(zr, *opts.limits, func(name string, size int64, body io.Reader) error {
		if _, _, _, ok := classify(name); !ok {
			return nil
		}
		b, err := archive.ReadAll(body, size)
		if err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
		files = append(files, archive.File{Name: name, Data: b})
		return nil
	})
	if err == nil {
		_, err = io.Copy(io.Discard, rc) // drain so the digest is verified
	}
	if err != nil {
		return nil, fmt.Errorf("distribution %s: layer %s: %w", source, layerDesc.Digest, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("distribution %s: layer %s holds no flux/vX.Y.Z/*.yaml files", source, layerDesc.Digest)
	}
	var buf bytes.Buffer
	// BestSpeed: the cache is local, and this runs on every cold pull.
	if err := archive.Write(&buf, files, gzip.BestSpeed); err != nil {
		return nil, fmt.Errorf("distribution %s: %w", source, err)
	}
	return buf.Bytes(), nil
}

// openCached opens the cached artifact for digest; (nil, nil) when there is none.
func openCached(cacheDir, digest, desc string, opts Options) (*Distribution, error) {
	data, err := os.ReadFile(cachePath(cacheDir, digest))
	if err != nil {
		return nil, nil
	}
	d, err := openArchive(data, desc, "", opts)
	if err != nil {
		return nil, fmt.Errorf("%w (remove the corrupt cache file %s and retry)", err, cachePath(cacheDir, digest))
	}
	return d, nil
}

func cachePath(cacheDir, digest string) string {
	return filepath.Join(cacheDir, strings.ReplaceAll(digest, ":", "-")+".tar.gz")
}

// refKey names the tag record of a reference: a hash, since references hold ':' and '/'.
func refKey(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(sum[:16])
}

func readTagRecord(p string) *tagRecord {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var r tagRecord
	if json.Unmarshal(b, &r) != nil || !strings.HasPrefix(r.Digest, "sha256:") || len(r.Digest) != len("sha256:")+64 {
		return nil
	}
	if _, err := hex.DecodeString(strings.TrimPrefix(r.Digest, "sha256:")); err != nil {
		return nil
	}
	return &r
}

func writeTagRecord(p string, r tagRecord, opts Options) {
	b, _ := json.Marshal(r)
	if err := writeFileAtomic(p, b); err != nil {
		opts.Warn(fmt.Sprintf("cannot record %s -> %s in the cache: %v", r.Reference, r.Digest, err))
	}
}

func writeFileAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// registryAnswered reports whether err is the registry's own answer (unauthorized, not found…)
// rather than a failure to reach it: an answer must not be papered over with a cached copy.
func registryAnswered(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode < 500
}

// pullHint adds what to do to the common failures.
func pullHint(err error, ref name.Reference, overall time.Duration, opts Options) error {
	if noAnswer(err) {
		return noAnswerHint(err, ref, overall)
	}
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("%w (log in with `docker login` or set DOCKER_CONFIG to a directory whose config.json has credentials for the registry)", err)
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) && opts.CAFile == "" {
		return fmt.Errorf("%w (for a registry with a private certificate authority, pass --ca-file)", err)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") && !opts.Insecure {
		return fmt.Errorf("%w (for a plain-HTTP registry, pass --insecure-registry)", err)
	}
	return err
}

// expired returns --request-timeout when it ended the pull (pullCtx is bounded by it), else 0.
func expired(pullCtx context.Context, opts Options) time.Duration {
	if opts.Timeout > 0 && errors.Is(pullCtx.Err(), context.DeadlineExceeded) {
		return opts.Timeout
	}
	return 0
}

// noAnswer tells whether err is a timeout: the registry did not answer in time. A cancellation
// by the user is not one: it is reported as an interruption further up.
func noAnswer(err error) bool {
	var netErr net.Error
	return !errors.Is(err, context.Canceled) &&
		(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout())
}

// noAnswerHint names the registry that did not answer in time (noAnswer) and says what to do.
// overall is --request-timeout when it is what ran out, 0 when a per-request bound did.
func noAnswerHint(err error, ref name.Reference, overall time.Duration) error {
	registry := ref.Context().RegistryStr()
	if overall > 0 {
		return fmt.Errorf("%w (the registry %s did not answer within --request-timeout=%s: retry, check that the registry is up and reachable from here, or raise --request-timeout)",
			err, registry, overall)
	}
	return fmt.Errorf("%w (the registry %s did not answer in time, %s to connect, %s for the TLS handshake and %s for each response to start: retry, or check that the registry is up and reachable from here)",
		err, registry, DialTimeout, TLSHandshakeTimeout, ResponseHeaderTimeout)
}

// registryTransport returns the HTTP transport: ggcr's default with the per-request bounds
// (ggcr's has no response-header timeout, so a registry that accepts and never answers would
// hang the pull), plus the CA bundle.
func registryTransport(opts Options) (remote.Option, error) {
	base, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("unexpected default transport type")
	}
	t := BoundedTransport(base.Clone())
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", opts.CAFile)
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.TLSClientConfig != nil {
			cfg = t.TLSClientConfig.Clone()
		}
		cfg.RootCAs = pool
		t.TLSClientConfig = cfg
	}
	return remote.WithTransport(t), nil
}
