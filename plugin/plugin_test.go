package plugin

import (
	"github.com/fluxinstance/kubectl-fluxinstance/test/pluginrun"
)

// testBuildInfo is what the tests stamp into the binary in place of the Makefile's -ldflags.
var testBuildInfo = BuildInfo{Version: "v1.2.3-test", GitCommit: "abc123", BuildDate: "2026-11-25T00:00:00Z"}

type result = pluginrun.Result

// runPlugin runs the plugin in-process exactly as main does, with args as typed after
// `kubectl fluxinstance`.
var runPlugin = pluginrun.With(Run, testBuildInfo).Run
