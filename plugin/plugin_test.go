package plugin

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// testBuildInfo is what the tests stamp into the binary in place of the Makefile's -ldflags.
var testBuildInfo = BuildInfo{Version: "v1.2.3-test", GitCommit: "abc123", BuildDate: "2026-11-25T00:00:00Z"}

type result struct {
	stdout, stderr string
	code           int
}

// runPlugin runs the plugin in-process exactly as main does, with args as typed after
// `kubectl fluxinstance`.
func runPlugin(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}
	code := Run(args, streams, testBuildInfo)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}
