package plugin

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
)

// maxInputBytes bounds every -f input (a file, each file of a directory, a URL, stdin): a
// FluxInstance is a few kilobytes, and a bound refuses a huge or endless input before it is parsed.
const maxInputBytes = 4 << 20

func isURL(name string) bool {
	return strings.HasPrefix(name, "http://") || strings.HasPrefix(name, "https://")
}

// fetchURL reads an http(s) -f argument with the command's context (Ctrl-C stops it), bounded by
// timeout (--request-timeout, 0 for none) and, without it too, by the per-request bounds an OCI
// pull has (distribution.BoundedTransport), so that a server that accepts and never answers
// cannot hang the command.
func fetchURL(ctx context.Context, rawURL string, timeout time.Duration) ([]byte, error) {
	transport := distribution.BoundedTransport(&http.Transport{Proxy: http.ProxyFromEnvironment})
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", rawURL, resp.Status)
	}
	return readBounded(resp.Body, rawURL)
}

// readBounded reads r, refusing more than maxInputBytes.
func readBounded(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxInputBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxInputBytes {
		return nil, tooLarge(name, "")
	}
	return data, nil
}

// tooLarge is the refusal of an input over maxInputBytes; size is said when known.
func tooLarge(name, size string) error {
	return fmt.Errorf("%s is larger than %d MiB%s: a FluxInstance is a few kilobytes; pass the file that holds only the FluxInstance", name, maxInputBytes>>20, size)
}

// checkFileSizes refuses a -f file, or a file of a -f directory (its subdirectories with -R),
// larger than maxInputBytes, before anything is parsed.
func checkFileSizes(name string, recursive bool) error {
	info, err := os.Stat(name)
	if err != nil {
		return nil // the builder reports a missing path in its own words
	}
	if !info.IsDir() {
		return checkSize(name, info)
	}
	return filepath.WalkDir(name, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if path != name && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		return checkSize(path, info)
	})
}

func checkSize(name string, info fs.FileInfo) error {
	if info.Mode().IsRegular() && info.Size() > maxInputBytes {
		return tooLarge(name, fmt.Sprintf(" (%d bytes)", info.Size()))
	}
	return nil
}
