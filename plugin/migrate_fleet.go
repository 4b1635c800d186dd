package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/adopt"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
)

// validateFleet allows only the plan across contexts: a takeover asks, locks, verifies and says
// what to change in that cluster's repository, one cluster at a time.
func (o *MigrateOptions) validateFleet(cmd *cobra.Command) error {
	if !o.fleet.enabled() {
		return nil
	}
	switch {
	case o.dryRun.Changes() || o.Rollback:
		return usageError(cmd, "migrate changes one cluster at a time: run it per context (--contexts and --all-contexts only go with --dry-run)")
	case o.CheckPermissions:
		return usageError(cmd, "--check-permissions checks one cluster: run it per context")
	case o.RepoDir != "" || o.OutputFile != "":
		return usageError(cmd, "--repo-dir and --output-file are one cluster's: run migrate --dry-run per context for them")
	case cmd.Flags().Changed("output"):
		return usageError(cmd, "-o prints one cluster's FluxInstance: across contexts migrate --dry-run prints a table; run it per context for the FluxInstance")
	}
	return nil
}

// migrateRow is one cluster's plan in the table.
type migrateRow struct {
	installer, version, adoptable string
	patches                       int
	// summary is the plan's summary as one-cluster migrate --dry-run prints it on stderr.
	summary bytes.Buffer
}

// runFleet plans the adoption of every selected cluster and prints one row each: the installer
// and version detected, whether migrate would adopt it (or its refusal) and the patches the
// FluxInstance needs. A cluster that could not be read makes the exit code 1; a refusal does not.
func (o *MigrateOptions) runFleet(ctx context.Context) error {
	results, flags := runFleet(ctx, &o.fleet, o.configFlags, o.planCluster)
	rows := make([][]string, len(results))
	var failed []string
	for i, r := range results {
		if r.Value != nil && r.Value.summary.Len() > 0 {
			fmt.Fprint(o.ErrOut, clusterHeader(r.Context))
			_, _ = o.ErrOut.Write(r.Value.summary.Bytes())
		}
		if r.Err != nil {
			ce := printClusterError(o.ErrOut, ctx.Err() != nil, r.Context, r.Err, flags[r.Context])
			rows[i] = []string{r.Context, "-", "-", "failed: " + ce.Summary, "-"}
			failed = append(failed, r.Context+" ("+ce.Summary+")")
			continue
		}
		v := r.Value
		rows[i] = []string{r.Context, v.installer, v.version, v.adoptable, strconv.Itoa(v.patches)}
	}
	printSummary(o.Out, []string{"CONTEXT", "INSTALLER", "VERSION", "ADOPTABLE", "PATCHES"}, rows)
	if len(failed) > 0 {
		return &ExitError{Code: 1, Err: fmt.Errorf("%d of %d clusters could not be planned: %s", len(failed), len(rows), strings.Join(failed, ", "))}
	}
	return nil
}

// planCluster is one-cluster migrate --dry-run's plan with that cluster's flags, its summary
// kept for stderr; a refusal is a row, any other error the cluster's.
func (o *MigrateOptions) planCluster(ctx context.Context, f *genericclioptions.ConfigFlags) (*migrateRow, error) {
	row := &migrateRow{installer: "-", version: "-"}
	one := *o
	one.fleet, one.configFlags = fleetFlags{}, f
	one.IOStreams = genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &row.summary, ErrOut: &row.summary}
	if err := o.fleet.probeCluster(ctx, f); err != nil {
		return row, err
	}
	conn, err := kube.Connect(f)
	if err != nil {
		return row, err
	}
	p, err := one.plan(ctx, conn)
	var refusal *adopt.RefusalError
	switch {
	case errors.As(err, &refusal):
		// In the table up to its first clause, as status's adoption column; stderr has it whole.
		row.adoptable = adoptionCell(&Adoption{Reason: refusal.Reason}, false)
		fmt.Fprintf(&row.summary, "not adoptable: %s\n", refusal.Reason)
		return row, nil
	case err != nil:
		return row, err
	}
	row.installer, row.version, row.adoptable = p.Install.Installer, p.Install.Version, "yes"
	row.patches = len(p.Patches)
	return row, nil
}
