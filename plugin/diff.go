package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/diff"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleet"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

const diffExample = `  # Show what applying a FluxInstance would change, including what would be pruned
  kubectl fluxinstance diff -f flux-instance.yaml

  # Diff every cluster of a fleet repository against its own FluxInstance, 4 clusters at once
  kubectl fluxinstance diff --all-contexts -f clusters/ --max-parallel 4

  # Use another diff program, like kubectl diff
  KUBECTL_EXTERNAL_DIFF="meld" kubectl fluxinstance diff -f flux-instance.yaml`

// Exit codes of diff, as kubectl diff's.
const (
	diffExitNoChanges = 0
	diffExitChanges   = 1
	diffExitError     = 2
)

// DiffOptions holds the flags of `kubectl fluxinstance diff`.
type DiffOptions struct {
	instanceFlags
	FieldManager string
	Strict       bool
	fleet        fleetFlags

	fieldManagerSet bool

	namespace   string
	enforceNS   bool
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
}

// NewCmdDiff returns the `diff` command.
func NewCmdDiff(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &DiffOptions{configFlags: configFlags, IOStreams: streams, FieldManager: ownership.PluginFieldManager}
	cmd := &cobra.Command{
		Use:   "diff -f FILENAME",
		Short: "Show what applying a FluxInstance would change in the cluster",
		Long: `Render a FluxInstance, server-side dry-run every object against the cluster and print a unified
diff per object (Secret values masked), plus the objects the apply would prune. Where the new
release removes API versions that objects are still stored at, the storage migration the apply would
run first is listed on stderr (kinds, object counts, versions from and to, status.storedVersions
before and after), with the fields it would drop and the Kustomizations still applying removed
versions. Nothing changes.

Exit status: 0 no differences, 1 differences found, greater than 1 an error, like kubectl diff.
KUBECTL_EXTERNAL_DIFF names another diff program, called with the live and merged directories.

With --contexts or --all-contexts, every cluster is diffed in parallel (--max-parallel) against
-f FILE, or with -f DIR against DIR/<context>/flux-instance.yaml; each cluster's diff is printed
under "=== context NAME ===" in the order of the contexts, then one summary row per cluster. The
exit status is 0 when no cluster has differences, 1 when one has, greater than 1 when one failed.`,
		Example: diffExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	o.addFlags(cmd, "diff")
	cmd.Flags().StringVar(&o.FieldManager, "field-manager", o.FieldManager, "Name of the manager the apply would use. Default: kubectl-fluxinstance, or flux-operator where the Flux Operator reconciles the instance.")
	addStrictFlag(cmd, &o.Strict)
	o.fleet.addFlags(cmd, fleet.DefaultMaxParallel, "how many clusters are diffed at once.")
	return cmd
}

// Complete reads the namespace override.
func (o *DiffOptions) Complete(cmd *cobra.Command) error {
	o.namespace, o.enforceNS = explicitNamespace(cmd)
	o.fieldManagerSet = cmd.Flags().Changed("field-manager")
	var err error
	if o.requestTimeout, err = requestTimeout(o.configFlags); err != nil {
		return usageError(cmd, "%v", err)
	}
	return o.fleet.complete(cmd, o.configFlags)
}

// Validate checks the flags.
func (o *DiffOptions) Validate(cmd *cobra.Command) error {
	if len(o.Filenames) == 0 {
		return usageError(cmd, "-f, --filename is required")
	}
	return nil
}

// Run exits 1 when there are differences (a planned storage migration is one); every error exits
// 2, so a script can tell "changes" from "could not tell".
func (o *DiffOptions) Run(ctx context.Context) error {
	if o.fleet.enabled() {
		return o.runFleet(ctx)
	}
	entries, migrates, err := o.diff(ctx)
	if err != nil {
		return &ExitError{Code: diffExitError, Err: err}
	}
	if !diff.HasChanges(entries) {
		if migrates {
			return &ExitError{Code: diffExitChanges}
		}
		return nil
	}
	if external := os.Getenv("KUBECTL_EXTERNAL_DIFF"); external != "" {
		return o.runExternal(ctx, external, entries)
	}
	for _, e := range entries {
		if e.Changed() {
			fmt.Fprint(o.Out, e.Text)
		}
	}
	return &ExitError{Code: diffExitChanges}
}

// diff returns the per-object differences and whether the apply would migrate stored objects first.
func (o *DiffOptions) diff(ctx context.Context) ([]diff.Entry, bool, error) {
	r, err := o.render(ctx, o.In, o.namespace, o.enforceNS, warnTo(o.ErrOut))
	if err != nil {
		return nil, false, err
	}
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return nil, false, err
	}
	if err := preflightSync(ctx, conn, r.Instance, r.Objects, o.Strict, o.ErrOut); err != nil {
		return nil, false, err
	}
	m := apply.NewManager(kube.Instance{Client: conn.Client, Name: r.Instance.Name, Namespace: r.Instance.Namespace})
	objects, migrates, err := o.migrationPreview(ctx, m, r)
	if err != nil {
		return nil, false, err
	}
	inv, err := m.Store().Read(ctx)
	if err != nil {
		return nil, false, err
	}
	prunable, _, err := m.PruneCandidates(ctx, inv, r.Objects)
	if err != nil {
		return nil, false, err
	}
	fieldManager := o.FieldManager
	if !o.fieldManagerSet {
		// Where the Flux Operator reconciles the instance, dry-run as the operator: fields it owns
		// and the new rendering drops then show as removed, as its next reconcile will remove them.
		mg, err := detectManagement(ctx, m)
		if err != nil {
			return nil, false, err
		}
		if mg.ByOperator {
			fieldManager = ownership.OperatorFieldManager
		}
	}
	entries, err := diff.Objects(ctx, m, objects, prunable, diff.Options{FieldManager: fieldManager})
	return entries, migrates, err
}

// migrationPreview prints, on stderr, the storage migration the apply would run before the CRD
// stage and what it would lose, and returns the rendering as a dry run can send it (the API
// server refuses the new CRDs, even in a dry run, while objects are stored at versions they drop).
// A migration the instance forbids is the apply's refusal, and diff's error.
func (o *DiffOptions) migrationPreview(ctx context.Context, m *apply.Manager, r *rendering) ([]*unstructured.Unstructured, bool, error) {
	migration, err := planMigration(ctx, m.Client, r)
	if err != nil || migration.Empty() {
		return r.Objects, false, err
	}
	if err := printMigrationPreview(ctx, m.Client, o.ErrOut, migration, r.Objects, "the upgrade would lose (apply refuses unless --force)", "apply would migrate"); err != nil {
		return nil, false, err
	}
	fmt.Fprintln(o.ErrOut, "  (the diffs show these CRDs as the migration leaves them, still serving the stored versions; the apply then drops the versions the new release removes)")
	objects, err := migration.PreviewObjects(ctx, m.Client, r.Objects)
	return objects, true, err
}

// runExternal hands the live and merged directories to KUBECTL_EXTERNAL_DIFF, as kubectl does:
// the program's exit status 1 means "differences", any other non-zero is an error.
func (o *DiffOptions) runExternal(ctx context.Context, external string, entries []diff.Entry) error {
	dir, err := os.MkdirTemp("", "kubectl-fluxinstance-diff-")
	if err != nil {
		return &ExitError{Code: diffExitError, Err: err}
	}
	defer os.RemoveAll(dir)
	live, merged, err := diff.WriteDiffDirs(entries, dir)
	if err != nil {
		return &ExitError{Code: diffExitError, Err: err}
	}
	program, args := externalDiffCommand(external)
	cmd := exec.CommandContext(ctx, program, append(args, live, merged)...)
	cmd.Stdout, cmd.Stderr = o.Out, o.ErrOut
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		// The program found no difference in what we think differs; trust our own verdict.
		return &ExitError{Code: diffExitChanges}
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return &ExitError{Code: diffExitChanges}
	}
	return &ExitError{Code: diffExitError, Err: fmt.Errorf("running KUBECTL_EXTERNAL_DIFF=%q: %w", external, err)}
}

// externalDiffArg is kubectl's rule for the arguments of KUBECTL_EXTERNAL_DIFF: letters, digits,
// '-' and '=' only, so that the variable names a program and its options, never a shell command.
var externalDiffArg = regexp.MustCompile(`^[a-zA-Z0-9-=]+$`)

// externalDiffCommand splits KUBECTL_EXTERNAL_DIFF the way kubectl's DiffProgram does (on single
// spaces, dropping arguments outside externalDiffArg). It is written here rather than taken from
// k8s.io/kubectl/pkg/cmd/diff because that package pulls kubectl's apply, describe and three more
// modules into the binary for these few lines.
func externalDiffCommand(external string) (string, []string) {
	fields := strings.Split(external, " ")
	var args []string
	for _, a := range fields[1:] {
		if externalDiffArg.MatchString(a) {
			args = append(args, a)
		}
	}
	return fields[0], args
}
