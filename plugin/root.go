// Package plugin is the kubectl face of kubectl-fluxinstance: one file per command, each with an options
// struct following k8s.io/kubectl's Complete/Validate/Run pattern, and the printing that goes with it.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// CommandName is how users type the plugin; kubectl maps it to the binary kubectl-fluxinstance.
const CommandName = "kubectl fluxinstance"

// BuildInfo describes the binary; the Makefile stamps it at link time.
type BuildInfo struct {
	Version   string `json:"gitVersion"`
	GitCommit string `json:"gitCommit"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// NewRootCommand builds the command tree. Nothing in it touches process state: streams and
// build information come in as arguments so tests can run commands in-process.
func NewRootCommand(streams genericiooptions.IOStreams, info BuildInfo) *cobra.Command {
	cmd, _ := newRootCommand(streams, info)
	return cmd
}

func newRootCommand(streams genericiooptions.IOStreams, info BuildInfo) (*cobra.Command, *genericclioptions.ConfigFlags) {
	configFlags := genericclioptions.NewConfigFlags(true).WithDiscoveryBurst(300).WithDiscoveryQPS(50.0)

	cmd := &cobra.Command{
		Use:   "fluxinstance",
		Short: "Render, apply and migrate Flux installations described by a FluxInstance",
		Long: `Render, apply and migrate Flux installations described by a Flux Operator FluxInstance
(fluxcd.controlplane.io/v1), with server-side apply and without an operator in the cluster.`,
		Annotations: map[string]string{
			// Makes cobra print "kubectl fluxinstance" in every usage line instead of the binary name.
			cobra.CommandDisplayNameAnnotation: CommandName,
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		// The root command only groups sub-commands.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError(c, "%s", err) })
	configFlags.AddFlags(cmd.PersistentFlags())

	cmd.AddCommand(
		NewCmdVersion(configFlags, streams, info),
		NewCmdBuild(configFlags, streams),
		NewCmdApply(configFlags, streams, info),
		NewCmdDiff(configFlags, streams),
		NewCmdStatus(configFlags, streams),
		NewCmdDelete(configFlags, streams),
		NewCmdMigrate(configFlags, streams, info),
		NewCmdUpgradeRepo(configFlags, streams),
		NewCmdHandoff(configFlags, streams),
		NewCmdCreate(configFlags, streams),
	)
	for _, c := range cmd.Commands() {
		wrapArgsValidation(c)
	}
	// After every AddCommand: it walks the tree to complete flags and arguments.
	registerCompletions(cmd, configFlags)
	return cmd, configFlags
}

// Run executes the plugin with args and returns the process exit code: 0 on success, 1 for a failed
// operation, 2 for a usage error, and whatever an ExitError carries (diff exits 1 for "differences").
func Run(args []string, streams genericiooptions.IOStreams, info BuildInfo) int {
	ctx, stop := interruptible()
	defer stop()
	return run(ctx, args, streams, info)
}

// run is Run with the command's context given: cancelling ctx is what Ctrl-C does, so that tests
// can interrupt a command without sending the test process a signal.
func run(ctx context.Context, args []string, streams genericiooptions.IOStreams, info BuildInfo) int {
	cmd, configFlags := newRootCommand(streams, info)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	host := func() string {
		if cfg, cerr := configFlags.ToRESTConfig(); cerr == nil {
			return cfg.Host
		}
		return ""
	}
	interrupted := ctx.Err() != nil
	var exit *ExitError
	if errors.As(err, &exit) {
		if exit.Err != nil {
			fmt.Fprintf(streams.ErrOut, "error: %v\n", redactCredentials(translate(exit.Err, interrupted, host).Error()))
		}
		return exit.Code
	}
	err = translate(err, interrupted, host)
	fmt.Fprintf(streams.ErrOut, "error: %v\n", redactCredentials(err.Error()))
	var usage *UsageError
	if errors.As(err, &usage) || isCobraUsageError(err) {
		return 2
	}
	return 1
}

// interruptible returns a context that SIGINT or SIGTERM cancels, so that every read, write, wait
// and pull of the command stops. A second signal ends the process at once (exit 130), as a second
// Ctrl-C does kubectl: restoring the default action is not enough, since libraries may listen too.
func interruptible() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-signals:
			cancel()
		case <-done:
			return
		}
		select {
		case <-signals:
			os.Exit(130)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(signals)
		close(done)
		cancel()
	}
}

// credentialsInURL matches the user:password part of a URL (oci://bob:secret@ghcr.io/x).
var credentialsInURL = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+):[^/\s@]+@`)

// redactCredentials hides passwords of URLs in a message the way net/url's Redacted does
// (oci://bob:xxxxx@ghcr.io/x), whichever package wrote the URL into it: every error reaches the
// user through Run, so this is the one place that needs it.
func redactCredentials(msg string) string {
	return credentialsInURL.ReplaceAllString(msg, "${1}:xxxxx@")
}
