package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/fluxcd/pkg/ssa"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/adopt"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleet"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/permissions"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

const migrateExample = `  # Show what a migration of the cluster bootstrapped with 'flux bootstrap' would do, and the FluxInstance
  kubectl fluxinstance migrate --dry-run

  # Migrate the installation in namespace flux-system, without a prompt, and update a checkout of the fleet repo
  kubectl fluxinstance migrate -n flux-system --yes --repo-dir ~/src/fleet

  # Which clusters of the kubeconfig could be adopted, and with how many patches
  kubectl fluxinstance migrate --dry-run --all-contexts

  # Give the installation back to 'flux bootstrap' (or 'flux install')
  kubectl fluxinstance migrate --rollback -n flux-system`

// MigrateOptions holds the flags of `kubectl fluxinstance migrate`.
type MigrateOptions struct {
	lockFlag
	outputFlag
	distributionFlags
	OutputFile       string
	RepoDir          string
	Yes              bool
	Rollback         bool
	CheckPermissions bool
	Strict           bool
	fleet            fleetFlags

	dryRun      kube.DryRun
	configFlags *genericclioptions.ConfigFlags
	namespace   string
	version     string
	genericiooptions.IOStreams
}

// NewCmdMigrate returns the `migrate` command.
func NewCmdMigrate(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, info BuildInfo) *cobra.Command {
	o := &MigrateOptions{configFlags: configFlags, outputFlag: outputFlag{Output: "yaml"}, IOStreams: streams, version: info.Version}
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Adopt a Flux installation made by 'flux bootstrap', 'flux install' or Helm as a FluxInstance, deleting and restarting nothing",
		Long: `Detect a Flux installation made by 'flux bootstrap', 'flux install' or the Flux Helm chart, generate the
FluxInstance that reproduces it (users' patches and changed chart values included, as spec.kustomize.patches),
and take its objects over from kustomize-controller, the Flux CLI or Helm: every Flux object gets
kustomize.toolkit.fluxcd.io/ssa: Ignore and prune: Disabled and loses kustomize-controller's owner labels,
kubectl's last-applied annotation and Helm's release annotations, so that removing the bootstrap files from Git
afterwards prunes nothing. For Helm, a HelmRelease that runs the release is suspended first, and the release
records are set aside last, once every object is verified: 'helm uninstall' then deletes nothing. Verified
before it prints the next step; safe to re-run; --rollback gives the installation back to its installer.`,
		Example: migrateExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := runE(o)(cmd, args)
			if apierrors.IsForbidden(err) && !o.CheckPermissions {
				return fmt.Errorf("%w\nrun `kubectl fluxinstance migrate --check-permissions` to list every permission migrate needs", err)
			}
			return err
		},
	}
	f := cmd.Flags()
	addDryRunFlag(cmd)
	o.outputFlag.addFlag(cmd, "", "yaml", "json")
	o.lockFlag.addFlag(cmd)
	f.StringVar(&o.OutputFile, "output-file", "", "Write the FluxInstance to this file instead of stdout.")
	f.StringVar(&o.RepoDir, "repo-dir", "", "A local checkout of the fleet repository: replace the bootstrap files with the FluxInstance (no commit).")
	f.BoolVarP(&o.Yes, "yes", "y", false, "Do not ask for confirmation.")
	f.BoolVar(&o.Rollback, "rollback", false, "Give the installation back to its installer: 'flux bootstrap', 'flux install' or the Helm release (labels, field managers, annotations, release records).")
	f.BoolVar(&o.CheckPermissions, "check-permissions", false, "Only check, with SelfSubjectAccessReviews, that you have every permission migrate needs, and list the missing ones.")
	o.distributionFlags.addFlags(cmd, "render from", "the distribution built into the plugin")
	addStrictFlag(cmd, &o.Strict)
	o.fleet.addFlags(cmd, fleet.DefaultMaxParallel, "how many clusters are planned at once (with --dry-run only: migrate changes one cluster at a time).")
	return cmd
}

// Complete reads -n only when given: without it migrate searches every namespace.
func (o *MigrateOptions) Complete(cmd *cobra.Command) error {
	if f := cmd.Flags().Lookup("namespace"); f != nil && f.Changed {
		o.namespace = f.Value.String()
	}
	var err error
	if o.requestTimeout, err = requestTimeout(o.configFlags); err != nil {
		return usageError(cmd, "%v", err)
	}
	// Migrate's plan already asks the API server (server-side dry runs learn its defaults): client
	// and server both stop after the plan.
	if o.dryRun, err = dryRunMode(cmd); err != nil {
		return err
	}
	return o.fleet.complete(cmd, o.configFlags)
}

// Validate checks the flags.
func (o *MigrateOptions) Validate(cmd *cobra.Command) error {
	if err := o.outputFlag.validate(cmd); err != nil {
		return err
	}
	if err := o.validateFleet(cmd); err != nil {
		return err
	}
	if o.Rollback && (o.RepoDir != "" || o.OutputFile != "") {
		return usageError(cmd, "--rollback cannot be combined with --repo-dir or --output-file")
	}
	if o.RepoDir != "" {
		if st, err := os.Stat(o.RepoDir); err != nil || !st.IsDir() {
			return usageError(cmd, "--repo-dir %q is not a directory", o.RepoDir)
		}
	}
	return nil
}

func (o *MigrateOptions) info(format string, args ...any) {
	fmt.Fprintf(o.ErrOut, format+"\n", args...)
}

// Run detects, plans, and (unless --dry-run) takes over or rolls back.
func (o *MigrateOptions) Run(ctx context.Context) error {
	if o.fleet.enabled() {
		return o.runFleet(ctx)
	}
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return err
	}
	if o.CheckPermissions {
		return o.runCheckPermissions(ctx, conn)
	}
	if o.Rollback {
		return o.runRollback(ctx, conn)
	}
	p, err := o.plan(ctx, conn)
	if err != nil {
		return err
	}
	instance, err := o.encodeInstance(p)
	if err != nil {
		return err
	}
	if !o.dryRun.Changes() {
		return o.showPlan(p, instance)
	}
	return o.takeOver(ctx, conn, p, instance)
}

// plan detects the `flux bootstrap` installation, renders its exact running version (a FluxInstance
// of another version would upgrade Flux, not adopt it), builds the plan, prints its summary and
// checks the sync credentials the rendering needs.
func (o *MigrateOptions) plan(ctx context.Context, conn *kube.Connection) (*adopt.Plan, error) {
	in, err := adopt.Detect(ctx, conn.Client, o.namespace)
	if err != nil {
		return nil, err
	}
	if o.RepoDir != "" {
		if err := adopt.CheckRepoDir(in); err != nil {
			return nil, err
		}
	}
	dist, err := distribution.Open(ctx, o.Distribution, o.distributionFlags.options(func(m string) { o.info("Warning: %s", m) }))
	if err != nil {
		return nil, fmt.Errorf("opening the Flux distribution: %w", err)
	}
	rel, err := dist.Release(in.Version)
	if err != nil {
		return nil, fmt.Errorf("the cluster runs Flux %s, which the distribution %s does not have (the FluxInstance must render the exact running version): %w; pass --distribution with a distribution that has it",
			in.Version, dist.Source(), err)
	}
	p, err := adopt.BuildPlan(ctx, conn.Client, in, rel)
	if err != nil {
		return nil, err
	}
	for _, line := range p.Summary() {
		o.info("%s", line)
	}
	if err := preflightSync(ctx, conn, p.Instance, p.Objects, o.Strict, o.ErrOut); err != nil {
		return nil, err
	}
	return p, nil
}

// showPlan is --dry-run's end: what --repo-dir would change, and the FluxInstance.
func (o *MigrateOptions) showPlan(p *adopt.Plan, instance []byte) error {
	if o.RepoDir != "" {
		changes, err := adopt.UpdateRepo(o.RepoDir, p, mustYAML(p), true)
		if err != nil {
			return err
		}
		o.info("Would change in %s:", o.RepoDir)
		for _, ch := range changes {
			o.info("%s", ch)
		}
	}
	return o.writeInstance(instance)
}

// takeOver takes the Flux objects over from kustomize-controller after a confirmation (nothing to
// do when a previous run already did and verified it), then writes the FluxInstance and updates
// the fleet repository.
func (o *MigrateOptions) takeOver(ctx context.Context, conn *kube.Connection, p *adopt.Plan, instance []byte) error {
	in := p.Install
	m := apply.NewManager(kube.Instance{Client: conn.Client, Name: fluxinstance.RequiredName, Namespace: in.Namespace})
	if ok, err := adopt.UpToDate(ctx, m, p); err != nil {
		return err
	} else if ok {
		o.info("Nothing to do: Flux in namespace %q is already migrated and verified.", in.Namespace)
		if err := o.writeInstance(instance); err != nil {
			return err
		}
		return o.updateRepo(p)
	}
	if err := o.confirm(fmt.Sprintf("Take over the Flux objects in namespace %q from `%s`?", in.Namespace, in.Installer)); err != nil {
		return err
	}
	// The same record as apply's, so that status and a later apply treat both alike.
	record, err := applyRecord(&rendering{Instance: p.Instance, Version: in.Version, DistributionRef: o.Distribution, Objects: p.Objects}, o.version)
	if err != nil {
		return err
	}
	var res *adopt.TakeoverResult
	err = o.withLock(ctx, m.Instance, "migrate", o.ErrOut, func(ctx context.Context) (err error) {
		res, err = adopt.Takeover(ctx, m, p, adopt.TakeoverOptions{
			Record: record,
			Progress: func(e ssa.ChangeSetEntry) {
				if e.Action != ssa.UnchangedAction {
					o.info("%s %s", e.Subject, e.Action)
				}
			},
		})
		return err
	})
	if err != nil {
		return err
	}
	for _, ref := range res.Protected {
		o.info("%s protected (kept, not managed by the FluxInstance)", ref)
	}
	o.info("Verified: kustomize-controller's garbage collection would delete none of the %d Flux objects.", len(p.FluxObjects))
	if len(res.SetAside) > 0 {
		o.info("Verified: no Flux object carries Helm's ownership; set aside %d Helm release records (%s): `helm uninstall %s` finds no release and deletes nothing.", len(res.SetAside), strings.Join(res.SetAside, ", "), p.Install.Helm.Name)
	}
	if err := o.writeInstance(instance); err != nil {
		return err
	}
	if err := o.updateRepo(p); err != nil {
		return err
	}
	o.info("%s", adopt.NextStep(p))
	return nil
}

func mustYAML(p *adopt.Plan) []byte {
	data, _ := adopt.InstanceYAML(p.Instance)
	return data
}

func (o *MigrateOptions) updateRepo(p *adopt.Plan) error {
	if o.RepoDir == "" {
		return nil
	}
	changes, err := adopt.UpdateRepo(o.RepoDir, p, mustYAML(p), false)
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		o.info("%s: the bootstrap files are already replaced", o.RepoDir)
	}
	for _, ch := range changes {
		o.info("%s", ch)
	}
	return nil
}

func (o *MigrateOptions) encodeInstance(p *adopt.Plan) ([]byte, error) {
	data, err := adopt.InstanceYAML(p.Instance)
	if err != nil {
		return nil, err
	}
	if o.Output == "json" {
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			return nil, err
		}
		out, err := json.MarshalIndent(m, "", "    ")
		if err != nil {
			return nil, err
		}
		return append(out, '\n'), nil
	}
	return data, nil
}

func (o *MigrateOptions) writeInstance(data []byte) error {
	if o.OutputFile != "" {
		if err := os.WriteFile(o.OutputFile, data, 0o644); err != nil {
			return fmt.Errorf("--output-file: %w", err)
		}
		o.info("FluxInstance written to %s", o.OutputFile)
		return nil
	}
	_, err := o.Out.Write(data)
	return err
}

// confirm asks on a terminal; --yes skips it; without a terminal it refuses.
func (o *MigrateOptions) confirm(question string) error {
	if o.Yes {
		return nil
	}
	f, ok := o.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return errors.New("refusing to change the cluster without confirmation: stdin is not a terminal; pass --yes (or --dry-run to only see the plan)")
	}
	fmt.Fprintf(o.ErrOut, "%s [y/N]: ", question)
	line, err := bufio.NewReader(o.In).ReadString('\n')
	if err != nil && line == "" {
		return errors.New("aborted: no answer")
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("aborted: nothing was changed")
}

// runCheckPermissions lists what the user lacks; exit 1 when anything is missing.
func (o *MigrateOptions) runCheckPermissions(ctx context.Context, conn *kube.Connection) error {
	ns := o.namespace
	if ns == "" {
		ns = "flux-system"
	}
	required := permissions.RequiredPermissions(ns)
	if inst, err := installation.DetectInstallation(ctx, conn.Client); err == nil && inst.Helm != nil {
		hrNS := ""
		if m := inst.Helm.ManagedBy; m != nil {
			hrNS = m.Namespace
		}
		required = append(required, permissions.HelmPermissions(inst.Helm.StorageNamespace(), hrNS)...)
	}
	missing, err := permissions.Check(ctx, conn.Client, required)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		fmt.Fprintf(o.Out, "You have every permission migrate needs for namespace %q.\n", ns)
		return nil
	}
	fmt.Fprintf(o.Out, "migrate needs these permissions, which you do not have:\n%s\n", permissions.FormatMissing(missing, 0))
	return fmt.Errorf("%d permissions missing for migrate in namespace %q", len(missing), ns)
}

func (o *MigrateOptions) runRollback(ctx context.Context, conn *kube.Connection) error {
	ns := o.namespace
	if ns == "" {
		var err error
		if ns, err = adopt.RecordNamespace(ctx, conn.Client); err != nil {
			return err
		}
	}
	if !o.dryRun.Changes() {
		o.info("Would give the Flux objects in namespace %q back to their installer (`flux bootstrap`'s kustomize-controller, `flux install`'s flux field manager, or the Helm release, as the migration record says).", ns)
		return nil
	}
	if err := o.confirm(fmt.Sprintf("Give the Flux objects in namespace %q back to their installer?", ns)); err != nil {
		return err
	}
	var res *adopt.RollbackResult
	inst := kube.Instance{Client: conn.Client, Name: fluxinstance.RequiredName, Namespace: ns}
	err := o.withLock(ctx, inst, "migrate --rollback", o.ErrOut, func(ctx context.Context) (err error) {
		res, err = adopt.Rollback(ctx, conn.Client, ns)
		return err
	})
	if err != nil {
		return err
	}
	if res.Installer == installation.ManagedByHelm {
		o.info("Restored %d Helm release records and Helm's ownership of %d objects in namespace %q: `helm upgrade` manages them again.", len(res.HelmRecords), len(res.Restored), ns)
		if res.Resumed != "" {
			o.info("Resumed HelmRelease %s (spec.suspend removed).", res.Resumed)
		}
		return nil
	}
	if res.Installer == installation.ManagedByFluxInstall {
		o.info("Restored `flux install` ownership (field manager %s) of %d objects in namespace %q: `flux install` manages them again.", ownership.FluxCLIFieldManager, len(res.Restored), ns)
		return nil
	}
	o.info("Restored bootstrap ownership of %d objects in namespace %q: kustomize-controller applies the bootstrap files (still in Git) again on its next reconcile.", len(res.Restored), ns)
	return nil
}
