package plugin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// A -f URL whose server accepts and never answers ends with --request-timeout, naming the URL
// (not the cluster), and changes nothing.
func TestBuildFromAServerThatNeverAnswers(t *testing.T) {
	url := "http://" + testenv.StartSilent(t, "") + "/flux-instance.yaml"
	start := time.Now()
	r := runPlugin(t, "", "build", "-f", url, "--request-timeout=1s")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "error: reading "+url+": ")
	assert.Contains(t, r.Stderr, "Client.Timeout exceeded")
	assert.NotContains(t, r.Stderr, "unable to reach the cluster")
	assert.Less(t, time.Since(start), 20*time.Second, "bounded by --request-timeout, not by the server")

	r = runPlugin(t, "", "build", "-f", url, "--request-timeout=soon")
	assert.Equal(t, 2, r.Code)
	assert.Contains(t, r.Stderr, `invalid --request-timeout "soon"`)
}

// isolateRegistryClient keeps an OCI pull away from the machine's cache and credentials.
func isolateRegistryClient(t *testing.T) {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("DOCKER_CONFIG", t.TempDir())
}

// A --distribution registry that accepts and never answers ends with --request-timeout, with an
// error that names the distribution and the registry and says what to do.
func TestBuildFromARegistryThatNeverAnswers(t *testing.T) {
	isolateRegistryClient(t)
	host := testenv.StartSilent(t, "")
	file := writeFile(t, t.TempDir(), "flux.yaml", fixtures.Instance(t, "tests/minimal-2.7.x"))
	source := "oci://" + host + "/x:v1"
	start := time.Now()
	r := runPlugin(t, "", "build", "-f", file, "--distribution", source, "--request-timeout=1s")
	elapsed := time.Since(start)
	assert.Equal(t, 1, r.Code)
	assert.Empty(t, r.Stdout)
	assert.True(t, strings.HasPrefix(r.Stderr, "error: opening the Flux distribution: distribution "+source+": "), r.Stderr)
	assert.Contains(t, r.Stderr, "context deadline exceeded")
	assert.Contains(t, r.Stderr, "(the registry "+host+" did not answer within --request-timeout=1s: retry, check that the registry is up and reachable from here, or raise --request-timeout)")
	assert.NotContains(t, r.Stderr, "unable to reach the cluster")
	assert.Less(t, elapsed, 20*time.Second, "bounded by --request-timeout, not by the registry")
}

// Ctrl-C stops a pull from a registry that never answers, without --request-timeout, and is
// reported as an interruption: the command's context reaches every request of the pull.
func TestInterruptStopsARegistryPull(t *testing.T) {
	isolateRegistryClient(t)
	host := testenv.StartSilent(t, "")
	file := writeFile(t, t.TempDir(), "flux.yaml", fixtures.Instance(t, "tests/minimal-2.7.x"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Well under the per-request bounds (10 s for TLS, 30 s for a response), which would end
	// the pull with another error if the context did not reach it.
	time.AfterFunc(500*time.Millisecond, cancel)
	var out, errOut bytes.Buffer
	start := time.Now()
	code := run(ctx, []string{"build", "-f", file, "--distribution", "oci://" + host + "/x:v1"},
		genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, testBuildInfo)
	elapsed := time.Since(start)
	assert.Equal(t, 1, code)
	assert.True(t, strings.HasPrefix(errOut.String(), "error: interrupted: run the command again"), errOut.String())
	assert.Empty(t, out.String())
	assert.Less(t, elapsed, 20*time.Second, "stopped by the cancellation, not by a per-request bound")
}

// Inputs above the documented bound are refused before they are parsed: a file, a file in a -f
// directory, and standard input.
func TestOversizedInputIsRefusedBeforeParsing(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "huge.yaml")
	require.NoError(t, os.WriteFile(big, []byte(strings.Repeat("# padding\n", maxInputBytes/10+1)), 0o600))

	r := runPlugin(t, "", "build", "-f", big)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, big+" is larger than 4 MiB")

	r = runPlugin(t, "", "build", "-f", dir)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, big+" is larger than 4 MiB")

	r = runPlugin(t, strings.Repeat("# padding\n", maxInputBytes/10+1), "build", "-f", "-")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "standard input is larger than 4 MiB")
}

// A file of many documents is refused with a message that lists a few and counts the rest.
func TestManyDocumentsAreSummarized(t *testing.T) {
	var b strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%d\n", i)
	}
	file := writeFile(t, t.TempDir(), "many.yaml", b.String())
	r := runPlugin(t, "", "build", "-f", file)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "and 1995 more")
	assert.Less(t, len(r.Stderr), 1000, "the message stays short: %d bytes", len(r.Stderr))
}
