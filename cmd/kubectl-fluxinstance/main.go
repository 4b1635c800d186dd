// Command kubectl-fluxinstance is the kubectl plugin `kubectl fluxinstance`: kubectl finds it on PATH by its
// name. Everything but process wiring lives in the plugin package.
package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	// Auth provider plugins (OIDC, and the exec/token flows they build on) that kubeconfigs may name.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	"github.com/fluxinstance/kubectl-fluxinstance/plugin"
)

// Set by the Makefile through -ldflags -X; they describe the binary, so they are the one place where
// link-time variables are acceptable.
var (
	version   = "v0.0.0-dev"
	gitCommit = "unknown"
	buildDate = "1970-01-01T00:00:00Z"
)

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	info := plugin.BuildInfo{Version: version, GitCommit: gitCommit, BuildDate: buildDate}
	os.Exit(plugin.Run(os.Args[1:], streams, info))
}
