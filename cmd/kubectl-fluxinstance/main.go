// Command kubectl-fluxinstance is the kubectl plugin `kubectl fluxinstance`: kubectl finds it on PATH by its
// name. Everything but process wiring lives in the plugin package.
package main

import (
	"flag"
	"io"
	"os"

	"github.com/go-logr/logr"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

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
	silenceLibraryLogs()
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	info := plugin.BuildInfo{Version: version, GitCommit: gitCommit, BuildDate: buildDate}
	os.Exit(plugin.Run(os.Args[1:], streams, info))
}

// silenceLibraryLogs keeps client-go's and controller-runtime's own log lines (e.g. "Unexpected
// error when reading response body" on a dropped connection) off the user's terminal: every failure
// reaches the user as the command's error, once, in kubectl's format.
func silenceLibraryLogs() {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
	ctrllog.SetLogger(logr.Discard())
}
