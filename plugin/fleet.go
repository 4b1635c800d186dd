package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleet"
)

// fleetFlags select many kubeconfig contexts instead of the current one: the fleet view of a
// command: status, diff, apply and migrate --dry-run add the same flags and share runFleet.
type fleetFlags struct {
	Contexts    []string
	AllContexts bool
	MaxParallel int
	// wholeRunDeadline bounds each cluster's whole run by the request timeout, as status does
	// (a few short reads). Diff, apply and migrate's plan send hundreds of requests and apply
	// waits for readiness (bounded by its --timeout): for them only each request is bounded.
	wholeRunDeadline bool

	// resolved in complete
	names   []string
	timeout time.Duration
}

// addFlags adds the fleet flags; maxParallel is the command's default and parallelHelp says
// what is done at once (status reads, apply rolls out).
func (f *fleetFlags) addFlags(cmd *cobra.Command, maxParallel int, parallelHelp string) {
	cmd.Flags().StringSliceVar(&f.Contexts, "contexts", nil, "Run on these kubeconfig contexts (comma-separated), one row per cluster, in this order.")
	cmd.Flags().BoolVar(&f.AllContexts, "all-contexts", false, "Run on every context of the kubeconfig, sorted by name.")
	cmd.Flags().IntVar(&f.MaxParallel, "max-parallel", maxParallel, "With --contexts or --all-contexts: "+parallelHelp)
}

// enabled tells whether a fleet flag was given: without one the command runs on one cluster.
func (f *fleetFlags) enabled() bool { return f.AllContexts || len(f.Contexts) > 0 }

// complete checks the fleet flags against kubectl's and resolves the contexts from the kubeconfig;
// an unknown context is a usage error naming the known ones.
func (f *fleetFlags) complete(cmd *cobra.Command, flags *genericclioptions.ConfigFlags) error {
	switch {
	case !f.enabled():
		if cmd.Flags().Changed("max-parallel") {
			return usageError(cmd, "--max-parallel needs --contexts or --all-contexts")
		}
		return nil
	case f.AllContexts && len(f.Contexts) > 0:
		return usageError(cmd, "--contexts and --all-contexts exclude each other: name the contexts or take them all")
	case cmd.Flags().Changed("context"):
		return usageError(cmd, "--context selects one cluster, --contexts and --all-contexts many: use one of them")
	case f.MaxParallel < 1:
		return usageError(cmd, "--max-parallel must be at least 1; got %d", f.MaxParallel)
	}
	names, err := fleet.Contexts(flags, f.Contexts, f.AllContexts)
	var unknown *fleet.UnknownContextError
	if errors.As(err, &unknown) {
		return usageError(cmd, "%s", err)
	}
	if err != nil {
		return err
	}
	f.names = names
	if f.timeout, err = requestTimeout(flags); err != nil {
		return usageError(cmd, "%s", err)
	}
	if !cmd.Flags().Changed("request-timeout") {
		f.timeout = defaultClusterTimeout
	}
	return nil
}

// clusterFlags returns each context's copy of kubectl's flags. Each request is bounded by the
// cluster's timeout too: client-go's discovery calls take no context, so only a request timeout
// stops them on a cluster that never answers.
func (f *fleetFlags) clusterFlags(base *genericclioptions.ConfigFlags) map[string]*genericclioptions.ConfigFlags {
	out := make(map[string]*genericclioptions.ConfigFlags, len(f.names))
	for _, name := range f.names {
		flags := fleet.FlagsFor(base, name)
		if f.timeout > 0 {
			t := f.timeout.String()
			flags.Timeout = &t
		}
		out[name] = flags
	}
	return out
}

// runFleet runs fn on every selected context with its own flags, in parallel as the flags allow.
func runFleet[T any](ctx context.Context, f *fleetFlags, base *genericclioptions.ConfigFlags, fn func(context.Context, *genericclioptions.ConfigFlags) (T, error)) ([]fleet.Result[T], map[string]*genericclioptions.ConfigFlags) {
	flags := f.clusterFlags(base)
	var deadline time.Duration
	if f.wholeRunDeadline {
		deadline = f.timeout
	}
	results := fleet.Run(ctx, f.names, fleet.Options{MaxParallel: f.MaxParallel, Timeout: deadline}, func(ctx context.Context, name string) (T, error) {
		return fn(ctx, flags[name])
	})
	for i, r := range results {
		// Each request has the cluster's timeout too, and may hit it a moment before the
		// cluster's deadline does: the same cause, said the same way.
		var timeout *fleet.TimeoutError
		if ctx.Err() == nil && f.wholeRunDeadline && errors.Is(r.Err, context.DeadlineExceeded) && !errors.As(r.Err, &timeout) {
			results[i].Err = &fleet.TimeoutError{Context: r.Context, Timeout: f.timeout}
		}
	}
	return results, flags
}

// clusterError is how a fleet row reports a cluster that could not be read: whether its API
// server answered at all, one short line for the table and the whole message for -o json.
type clusterError struct {
	Reachable bool
	Summary   string
	Full      string
}

// describeClusterError classifies err, translated the way a one-cluster command prints it (so
// credentials in URLs are redacted and transport failures name the server).
func describeClusterError(err error, interrupted bool, flags *genericclioptions.ConfigFlags) clusterError {
	host := func() string {
		if cfg, cerr := flags.ToRESTConfig(); cerr == nil {
			return cfg.Host
		}
		return ""
	}
	full := redactCredentials(translate(err, interrupted, host).Error())
	var status apierrors.APIStatus
	var timeout *fleet.TimeoutError
	var notRun *fleet.NotRunError
	switch {
	case errors.As(err, &notRun) && notRun.Started:
		return clusterError{Summary: "interrupted", Full: err.Error()}
	case errors.As(err, &notRun):
		return clusterError{Summary: "not checked", Full: err.Error()}
	case errors.As(err, &timeout):
		return clusterError{Summary: fmt.Sprintf("no answer within %s", timeout.Timeout), Full: full}
	case apierrors.IsUnauthorized(err):
		return clusterError{Reachable: true, Summary: "credentials rejected", Full: full}
	case errors.As(err, &status) && apierrors.IsForbidden(err):
		// The API server's message names the user, verb and resource; the object is the rest.
		msg := status.Status().Message
		if _, who, ok := strings.Cut(msg, "is forbidden: "); ok {
			msg = who
		}
		return clusterError{Reachable: true, Summary: "forbidden: " + msg, Full: full}
	case errors.As(err, &status):
		return clusterError{Reachable: true, Summary: summarizeLine(status.Status().Message), Full: full}
	case isTransport(err):
		return clusterError{Summary: rootCause(err), Full: full}
	}
	return clusterError{Summary: summarizeLine(full), Full: full}
}

// summarizeLine is the first line of msg, cut to fit a table cell.
func summarizeLine(msg string) string {
	const most = 100
	msg, _, _ = strings.Cut(msg, "\n")
	if r := []rune(msg); len(r) > most {
		return string(r[:most-1]) + "…"
	}
	return msg
}

// probeCluster asks the cluster's API server for its version, bounded by the cluster's timeout,
// before a command that sends hundreds of requests: a cluster that never answers would otherwise
// hold its row for one --request-timeout per request client-go retries (seven, measured, for a
// diff), not one. A cluster that does not answer in time is a *fleet.TimeoutError.
func (f *fleetFlags) probeCluster(ctx context.Context, flags *genericclioptions.ConfigFlags) error {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	pctx := ctx
	if f.timeout > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	err = dc.RESTClient().Get().AbsPath("/version").Do(pctx).Error()
	var netErr net.Error
	if err != nil && ctx.Err() == nil && (pctx.Err() != nil || errors.As(err, &netErr) && netErr.Timeout()) {
		return &fleet.TimeoutError{Context: contextOf(flags), Timeout: f.timeout}
	}
	return err
}

// printSummary prints the fleet's summary table, one row per cluster in the order given.
func printSummary(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
}

// notStarted tells whether a fleet result is a cluster the run never started.
func notStarted(err error) bool {
	var notRun *fleet.NotRunError
	return errors.As(err, &notRun) && !notRun.Started
}

// clusterHeader is the line above a cluster's output in diff and migrate --dry-run across contexts.
func clusterHeader(context string) string { return fmt.Sprintf("=== context %s ===\n", context) }

// printClusterError prints a cluster's error in full on errOut, naming its context, and returns it
// classified for the summary row.
func printClusterError(errOut io.Writer, interrupted bool, context string, err error, flags *genericclioptions.ConfigFlags) clusterError {
	ce := describeClusterError(err, interrupted, flags)
	fmt.Fprintf(errOut, "error: %s\n", namingContext(context, ce.Full))
	return ce
}

// namingContext prefixes a cluster's error with its context, unless it names it already (the
// fleet runner's timeouts and interruptions do).
func namingContext(context, msg string) string {
	prefix := fmt.Sprintf("context %q", context)
	if strings.HasPrefix(msg, prefix) {
		return msg
	}
	return prefix + ": " + msg
}
