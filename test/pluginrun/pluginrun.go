// Package pluginrun runs the plugin in-process exactly as main does, with its streams captured: the
// plugin package's own tests and the e2e packages share it. It does not import the plugin package
// (the run function is a parameter), so the plugin's in-package tests can use it without an import
// cycle.
package pluginrun

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Result is what one run printed and its exit code.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Plugin is plugin.Run with its build information bound.
type Plugin func(args []string, streams genericiooptions.IOStreams) int

// With binds the build information to run (plugin.Run): pluginrun.With(plugin.Run, info).
func With[Info any](run func([]string, genericiooptions.IOStreams, Info) int, info Info) Plugin {
	return func(args []string, streams genericiooptions.IOStreams) int { return run(args, streams, info) }
}

// Run runs the plugin with args as typed after `kubectl fluxinstance` and stdin as its input.
func (p Plugin) Run(t testing.TB, stdin string, args ...string) Result {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}
	code := p(args, streams)
	return Result{Stdout: out.String(), Stderr: errOut.String(), Code: code}
}
