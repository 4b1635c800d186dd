package plugin

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A -f URL whose server accepts and never answers ends with --request-timeout, naming the URL
// (not the cluster), and changes nothing.
func TestBuildFromAServerThatNeverAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	url := "http://" + l.Addr().String() + "/flux-instance.yaml"
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
