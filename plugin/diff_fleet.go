package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// clusterOutput is what one cluster's run printed, held until its turn: clusters run at once,
// and their output is printed whole, in the order of the contexts, never interleaved.
type clusterOutput struct {
	out, errOut bytes.Buffer
	// code is the run's exit code (diff: 0 no changes, 1 changes).
	code int
}

// runFleet diffs every selected cluster with the single-cluster diff, its own flags and its own
// FluxInstance, prints each cluster's diff under a header and a summary row per cluster.
func (o *DiffOptions) runFleet(ctx context.Context) error {
	inputs, err := resolveFleetInputs(o.Filenames, o.fleet.names, o.In)
	if err != nil {
		return &ExitError{Code: diffExitError, Err: err}
	}
	results, flags := runFleet(ctx, &o.fleet, o.configFlags, func(ctx context.Context, f *genericclioptions.ConfigFlags) (*clusterOutput, error) {
		return o.diffCluster(ctx, f, inputs)
	})
	code, summary := diffExitNoChanges, make([][]string, len(results))
	for i, r := range results {
		summary[i] = []string{r.Context, "no changes"}
		printClusterOutput(o.IOStreams, r.Context, r.Value)
		switch {
		case r.Err != nil:
			ce := printClusterError(o.ErrOut, ctx.Err() != nil, r.Context, r.Err, flags[r.Context])
			summary[i][1], code = "failed: "+ce.Summary, diffExitError
		case r.Value.code == diffExitChanges:
			summary[i][1] = "changes"
			code = max(code, diffExitChanges)
		}
	}
	printSummary(o.Out, []string{"CONTEXT", "DIFF"}, summary)
	if code == diffExitNoChanges {
		return nil
	}
	return &ExitError{Code: code}
}

// printClusterOutput prints one cluster's buffered output under its header: stdout on stdout,
// and stderr, when there is any, on stderr under the same header.
func printClusterOutput(streams genericiooptions.IOStreams, context string, res *clusterOutput) {
	header := clusterHeader(context)
	fmt.Fprint(streams.Out, header)
	if res == nil {
		return
	}
	_, _ = streams.Out.Write(res.out.Bytes())
	if res.errOut.Len() > 0 {
		fmt.Fprint(streams.ErrOut, header)
		_, _ = streams.ErrOut.Write(res.errOut.Bytes())
	}
}

// diffCluster runs the single-cluster diff with one cluster's flags, FluxInstance and buffers.
// Its exit code 1 (changes) is a result; an error (exit code 2) is the cluster's error.
func (o *DiffOptions) diffCluster(ctx context.Context, f *genericclioptions.ConfigFlags, inputs *fleetInputs) (*clusterOutput, error) {
	res := &clusterOutput{}
	if err := o.fleet.probeCluster(ctx, f); err != nil {
		return res, err
	}
	one := *o
	one.fleet, one.configFlags = fleetFlags{}, f
	one.Filenames, one.Recursive = inputs.files[contextOf(f)], false
	one.IOStreams = genericiooptions.IOStreams{In: inputs.input(), Out: &res.out, ErrOut: &res.errOut}
	err := one.Run(ctx)
	var exit *ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.Code < diffExitError:
		res.code = exit.Code
	case errors.As(err, &exit) && exit.Err != nil:
		return res, fmt.Errorf("context %q: diffing %s: %w", contextOf(f), strings.Join(one.Filenames, ", "), exit.Err)
	case errors.As(err, &exit):
		return res, fmt.Errorf("context %q: diffing %s: exit status %d", contextOf(f), strings.Join(one.Filenames, ", "), exit.Code)
	default:
		return res, err
	}
	return res, nil
}
