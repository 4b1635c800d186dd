package plugin

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleetrepo"
)

const upgradeRepoExample = `  # Show what an upgrade to the FluxInstance's Flux version changes in a checkout of the fleet repository
  kubectl fluxinstance upgrade-repo -f flux-instance.yaml --repo-dir ~/src/fleet --dry-run

  # Rewrite the checkout, then review and commit the changes
  kubectl fluxinstance upgrade-repo -f flux-instance.yaml --repo-dir ~/src/fleet
  git -C ~/src/fleet diff

  # Upgrade to the Flux of a distribution archive, rewriting the files that parse and listing the others
  kubectl fluxinstance upgrade-repo -f flux-instance.yaml --repo-dir . --distribution ./manifests.tar.gz --skip-invalid`

// UpgradeRepoOptions holds the flags of `kubectl fluxinstance upgrade-repo`.
type UpgradeRepoOptions struct {
	instanceFlags
	RepoDir     string
	DryRun      bool
	SkipInvalid bool

	configFlags *genericclioptions.ConfigFlags
	namespace   string
	enforceNS   bool
	genericiooptions.IOStreams
}

// NewCmdUpgradeRepo returns the `upgrade-repo` command.
func NewCmdUpgradeRepo(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &UpgradeRepoOptions{configFlags: configFlags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "upgrade-repo -f FILENAME --repo-dir DIR",
		Short: "Rewrite the Flux apiVersions of a fleet repository checkout to versions the FluxInstance's Flux serves",
		Long: `Render the FluxInstance (like build, without contacting a cluster) and, in every YAML file of a local
checkout of the fleet repository, set each Flux apiVersion that the rendered CRDs no longer serve to the version
they store: objects, references such as spec.sourceRef, kustomize patch targets (patches[].target,
patchesJson6902[].target) and the objects of inline patches. Only the version changes: comments, key order,
quoting and every other line stay byte for byte. Fields the new versions no longer have are reported as
warnings (the rewrite still happens: review the diff before you commit). Nothing is committed.

Hidden directories (.git) and Helm charts (Chart.yaml beside templates/) are not read, and are listed. A YAML
file that does not parse stops the command before anything is written when it names a Flux API group; others
are listed as skipped.`,
		Example: upgradeRepoExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	o.addFlags(cmd, "upgrade to")
	cmd.Flags().StringVar(&o.RepoDir, "repo-dir", "", "A local checkout of the fleet repository to rewrite (no commit).")
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "Print what would change, and write nothing.")
	cmd.Flags().BoolVar(&o.SkipInvalid, "skip-invalid", false, "Skip (and list) YAML files that do not parse even when they name a Flux API group, instead of stopping.")
	_ = cmd.MarkFlagRequired("repo-dir")
	_ = cmd.MarkFlagDirname("repo-dir")
	return cmd
}

// Complete reads -n like build: only an explicit --namespace overrides the FluxInstance's.
func (o *UpgradeRepoOptions) Complete(cmd *cobra.Command) error {
	o.namespace, o.enforceNS = explicitNamespace(cmd)
	var err error
	if o.requestTimeout, err = requestTimeout(o.configFlags); err != nil {
		return usageError(cmd, "%v", err)
	}
	return nil
}

// Validate checks the flags.
func (o *UpgradeRepoOptions) Validate(cmd *cobra.Command) error {
	if len(o.Filenames) == 0 {
		return usageError(cmd, "-f, --filename is required")
	}
	if st, err := os.Stat(o.RepoDir); o.RepoDir == "" || err != nil || !st.IsDir() {
		return usageError(cmd, "--repo-dir %q is not a directory", o.RepoDir)
	}
	return nil
}

// Run renders the instance, plans the rewrite of the checkout, prints it and (unless --dry-run)
// writes it.
func (o *UpgradeRepoOptions) Run(ctx context.Context) error {
	r, err := o.render(ctx, o.In, o.namespace, o.enforceNS, warnTo(o.ErrOut))
	if err != nil {
		return err
	}
	target, err := fleetrepo.NewTarget(r.Objects)
	if err != nil {
		return fmt.Errorf("%s (Flux %s): %w", r.File, r.Version, err)
	}
	plan, err := fleetrepo.NewPlan(o.RepoDir, target, fleetrepo.Options{SkipInvalid: o.SkipInvalid})
	if err != nil {
		return fmt.Errorf("--repo-dir %s: %w", o.RepoDir, err)
	}
	if o.DryRun {
		fmt.Fprintf(o.Out, "dry run: nothing is written; upgrading %s to Flux %s would change:\n", o.RepoDir, r.Version)
	}
	o.printPlan(plan)
	if !o.DryRun && len(plan.Files) > 0 {
		if err := plan.Write(); err != nil {
			return fmt.Errorf("--repo-dir %s: %w", o.RepoDir, err)
		}
	}
	o.printSummary(plan, r.Version)
	return nil
}

// printPlan prints the changed files (`git status --short`) and each change on stdout, the
// warnings and the skipped files on stderr.
func (o *UpgradeRepoOptions) printPlan(plan *fleetrepo.Plan) {
	for _, f := range plan.Files {
		fmt.Fprintf(o.Out, " M %s\n", f.Path)
	}
	for _, c := range plan.Changes() {
		fmt.Fprintln(o.Out, c)
	}
	for _, s := range plan.Skipped {
		fmt.Fprintf(o.ErrOut, "Warning: skipped %s\n", s)
	}
	for _, w := range plan.Warnings {
		fmt.Fprintf(o.ErrOut, "Warning: %s\n", w)
	}
}

func (o *UpgradeRepoOptions) printSummary(plan *fleetrepo.Plan, version string) {
	n := len(plan.Changes())
	switch {
	case len(plan.Files) == 0 && len(plan.Warnings) > 0:
		fmt.Fprintf(o.Out, "nothing rewritten in %s (%s above to fix by hand)\n", o.RepoDir, plural(len(plan.Warnings), "warning"))
	case len(plan.Files) == 0 && len(plan.Skipped) > 0:
		fmt.Fprintf(o.Out, "nothing to rewrite: every Flux apiVersion of the files read in %s is served by Flux %s (%s skipped above)\n", o.RepoDir, version, plural(len(plan.Skipped), "path"))
	case len(plan.Files) == 0:
		fmt.Fprintf(o.Out, "nothing to rewrite: every Flux apiVersion in %s is served by Flux %s\n", o.RepoDir, version)
	case o.DryRun:
		fmt.Fprintf(o.Out, "dry run: %s in %s would be rewritten; nothing was written\n", plural(n, "version"), plural(len(plan.Files), "file"))
	default:
		fmt.Fprintf(o.Out, "rewrote %s in %s (nothing committed): review them with git diff, then commit\n", plural(n, "version"), plural(len(plan.Files), "file"))
	}
	if len(plan.Warnings) > 0 && len(plan.Files) > 0 {
		verb := "were"
		if o.DryRun {
			verb = "would be"
		}
		fmt.Fprintf(o.ErrOut, "Warning: the versions %s rewritten regardless of the %s above: fix what they name before you commit\n", verb, plural(len(plan.Warnings), "warning"))
	}
}

// plural is "1 file", "2 files".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
