package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleet"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
)

// errRolloutStopped is the result of a cluster the rollout did not start because an earlier one
// failed (without --continue-on-error).
var errRolloutStopped = errors.New("not started: an earlier cluster failed (--continue-on-error goes on)")

// rolloutGate lets a cluster's apply start only while the rollout goes on, and lets the summary
// wait for every apply that started: an interrupted apply releases its lock before it returns,
// and the process must not exit before that.
type rolloutGate struct {
	mu      sync.Mutex
	stopped bool
	running sync.WaitGroup
}

// enter is false once the rollout stopped; otherwise the caller must call leave.
func (g *rolloutGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.running.Add(1)
	return true
}

func (g *rolloutGate) leave() { g.running.Done() }

func (g *rolloutGate) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
}

// stopAndWait starts nothing more and waits for the applies that started.
func (g *rolloutGate) stopAndWait() {
	g.stop()
	g.running.Wait()
}

// validateFleet checks the flags that only make sense across contexts, or not at all there.
func (o *ApplyOptions) validateFleet(cmd *cobra.Command) error {
	switch {
	case !o.fleet.enabled() && o.ContinueOnError:
		return usageError(cmd, "--continue-on-error needs --contexts or --all-contexts")
	case o.fleet.enabled() && o.Output != "":
		return usageError(cmd, "-o %s prints one cluster's changes: across contexts each line is prefixed with its context; run apply per context for -o %s", o.Output, o.Output)
	}
	return nil
}

// runFleet rolls the FluxInstance out to every selected cluster in the order given, at most
// --max-parallel at a time, each with the single-cluster apply; the first failure stops the
// clusters not started yet unless --continue-on-error. The summary is printed whatever happened.
func (o *ApplyOptions) runFleet(ctx context.Context) error {
	inputs, err := resolveFleetInputs(o.Filenames, o.fleet.names, o.In)
	if err != nil {
		return err
	}
	gate := &rolloutGate{}
	var mu sync.Mutex // one line at a time on the shared streams
	results, flags := runFleet(ctx, &o.fleet, o.configFlags, func(ctx context.Context, f *genericclioptions.ConfigFlags) (struct{}, error) {
		if !gate.enter() {
			return struct{}{}, errRolloutStopped
		}
		defer gate.leave()
		err := o.applyCluster(ctx, f, inputs, &mu)
		if err != nil && !o.ContinueOnError {
			gate.stop()
		}
		return struct{}{}, err
	})
	gate.stopAndWait()
	return o.printRollout(ctx, results, flags)
}

// applyCluster runs the single-cluster apply (its mode, lock, migration and wait) with one
// cluster's flags and FluxInstance, its output prefixed with the context.
func (o *ApplyOptions) applyCluster(ctx context.Context, f *genericclioptions.ConfigFlags, inputs *fleetInputs, mu *sync.Mutex) error {
	name := contextOf(f)
	out, errOut := newPrefixWriter(mu, o.Out, name), newPrefixWriter(mu, o.ErrOut, name)
	defer out.Flush()
	defer errOut.Flush()
	one := *o
	one.fleet, one.configFlags = fleetFlags{}, f
	one.Filenames, one.Recursive = inputs.files[name], false
	one.IOStreams = genericiooptions.IOStreams{In: inputs.input(), Out: out, ErrOut: errOut}
	fmt.Fprintf(errOut, "applying %s\n", strings.Join(one.Filenames, ", "))
	err := o.fleet.probeCluster(ctx, f)
	if err == nil {
		err = one.Run(ctx)
	}
	if err != nil {
		ce := describeClusterError(err, ctx.Err() != nil, f)
		fmt.Fprintf(errOut, "error: applying %s: %s\n", strings.Join(one.Filenames, ", "), ce.Full)
	}
	return err
}

// printRollout prints the summary table (context, result, elapsed) and says which clusters
// failed or were not started; either makes the exit code 1.
func (o *ApplyOptions) printRollout(ctx context.Context, results []fleet.Result[struct{}], flags map[string]*genericclioptions.ConfigFlags) error {
	applied := "applied"
	if o.dryRun != kube.DryRunNone {
		applied = fmt.Sprintf("applied (dry run: %s)", o.dryRun)
	}
	rows := make([][]string, len(results))
	var failed, skipped []string
	for i, r := range results {
		result, elapsed := applied, r.Elapsed.Round(100*time.Millisecond).String()
		var notRun *fleet.NotRunError
		switch {
		case errors.Is(r.Err, errRolloutStopped) || notStarted(r.Err):
			result, elapsed = "not started", "-"
			skipped = append(skipped, r.Context)
		case errors.As(r.Err, &notRun):
			result = "interrupted"
			failed = append(failed, r.Context+" (interrupted)")
		case r.Err != nil:
			ce := describeClusterError(r.Err, ctx.Err() != nil, flags[r.Context])
			result = "failed: " + ce.Summary
			failed = append(failed, r.Context+" ("+ce.Summary+")")
		}
		rows[i] = []string{r.Context, result, elapsed}
	}
	printSummary(o.Out, []string{"CONTEXT", "RESULT", "ELAPSED"}, rows)
	if len(failed)+len(skipped) == 0 {
		return nil
	}
	msg := fmt.Sprintf("%d of %d clusters applied", len(results)-len(failed)-len(skipped), len(results))
	if len(failed) > 0 {
		msg += "; failed: " + strings.Join(failed, ", ")
	}
	if len(skipped) > 0 {
		msg += "; not started: " + strings.Join(skipped, ", ")
	}
	if ctx.Err() != nil {
		msg = "interrupted: " + msg
	}
	return &ExitError{Code: 1, Err: errors.New(msg)}
}
