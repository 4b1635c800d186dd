package plugin

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// fleetInstanceFile is the name of each cluster's FluxInstance in a fleet directory: the
// fleet-repository shape clusters/<context>/flux-instance.yaml.
const fleetInstanceFile = "flux-instance.yaml"

// fleetInputs is where each cluster's FluxInstance comes from in diff and apply across contexts.
type fleetInputs struct {
	// files maps a context to the -f value its run reads.
	files map[string][]string
	// stdin is what -f - read, once for every cluster (nil otherwise).
	stdin []byte
}

// resolveFleetInputs maps every selected context to its FluxInstance before any cluster is
// touched: with -f DIR, DIR/<context>/flux-instance.yaml, which must exist; with one file, URL or
// -, that one for all. A missing file is an error naming the path and the context.
func resolveFleetInputs(filenames []string, names []string, stdin io.Reader) (*fleetInputs, error) {
	if len(filenames) != 1 {
		return nil, fmt.Errorf("with --contexts or --all-contexts, -f takes one file for every cluster or one directory holding <context>/%s; got %d", fleetInstanceFile, len(filenames))
	}
	in := &fleetInputs{files: make(map[string][]string, len(names))}
	name := filenames[0]
	if name == "-" {
		data, err := readBounded(stdin, "standard input")
		if err != nil {
			return nil, err
		}
		in.stdin = data
	}
	st, err := os.Stat(name)
	if name == "-" || isURL(name) || err == nil && !st.IsDir() {
		for _, n := range names {
			in.files[n] = filenames
		}
		return in, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading -f %s: %w", name, err)
	}
	var missing []string
	for _, n := range names {
		file := filepath.Join(name, n, fleetInstanceFile)
		if st, err := os.Stat(file); err != nil || st.IsDir() {
			missing = append(missing, fmt.Sprintf("%s (context %q)", file, n))
		}
		in.files[n] = []string{file}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("-f %s is a directory, so each cluster's FluxInstance is <dir>/<context>/%s, and these are missing: %s", name, fleetInstanceFile, summarize(missing, 10))
	}
	return in, nil
}

// input is a fresh reader of what -f - read, for one cluster's run.
func (in *fleetInputs) input() io.Reader { return bytes.NewReader(in.stdin) }

// contextOf is the context a cluster's flags select (fleet.FlagsFor always sets it).
func contextOf(flags *genericclioptions.ConfigFlags) string {
	if flags.Context == nil {
		return ""
	}
	return *flags.Context
}

// prefixWriter writes whole lines to w, each prefixed with the cluster's context, so that
// clusters applied at once never interleave within a line. Lines are held until their newline;
// Flush writes a last partial line.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

func newPrefixWriter(mu *sync.Mutex, w io.Writer, context string) *prefixWriter {
	return &prefixWriter{mu: mu, w: w, prefix: []byte("[" + context + "] ")}
}

// Write holds the shared lock throughout: a cluster's progress may be written from more than
// one goroutine, and other clusters write to the same stream.
func (p *prefixWriter) Write(data []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, data...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(data), nil
		}
		if _, err := p.w.Write(append(append([]byte(nil), p.prefix...), p.buf[:i+1]...)); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
}

// Flush writes what is left of the last line, ended.
func (p *prefixWriter) Flush() {
	p.mu.Lock()
	rest := p.buf
	p.buf = nil
	p.mu.Unlock()
	if len(rest) > 0 {
		_, _ = p.Write(append(rest, '\n'))
	}
}
