package plugin

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/permissions"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/uninstall"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

const deleteExample = `  # See what would be removed
  kubectl fluxinstance delete --dry-run

  # Remove the Flux controllers this plugin applied, keeping the CRDs and every Flux object of users
  kubectl fluxinstance delete

  # Remove everything, CRDs included: this deletes every GitRepository, Kustomization, HelmRelease...
  kubectl fluxinstance delete --with-crds --yes-i-know`

// DeleteOptions holds the flags of `kubectl fluxinstance delete`.
type DeleteOptions struct {
	lockFlag
	outputFlag
	WithCRDs         bool
	YesIKnow         bool
	RemoveFinalizers bool

	dryRun      kube.DryRun
	namespace   string
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
}

// NewCmdDelete returns the `delete` command.
func NewCmdDelete(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &DeleteOptions{configFlags: configFlags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Remove the Flux installation this plugin applied, keeping the CRDs and users' objects",
		Long: `Remove what the last apply recorded in the inventory: controllers, RBAC, services, network policies
and the sync source and Kustomization (suspended first, so that nothing they applied is garbage-collected).
The CRDs, and with them every Flux object of users, stay unless --with-crds is given together with
--yes-i-know. The Namespace always stays.`,
		Example: deleteExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	flags := cmd.Flags()
	addDryRunFlag(cmd)
	flags.BoolVar(&o.WithCRDs, "with-crds", false, "Also delete the Flux CRDs, and so every Flux object in the cluster. Needs --yes-i-know.")
	flags.BoolVar(&o.YesIKnow, "yes-i-know", false, "Confirm --with-crds.")
	flags.BoolVar(&o.RemoveFinalizers, "remove-finalizers", false, "Clear the finalizers of the Flux objects being deleted, for when the controllers are already gone.")
	o.outputFlag.addFlag(cmd, "one line per object", "json", "yaml")
	o.lockFlag.addFlag(cmd)
	return cmd
}

// Complete reads the namespace: -n, else flux-system (where a FluxInstance lives by convention).
func (o *DeleteOptions) Complete(cmd *cobra.Command) error {
	ns, explicit := explicitNamespace(cmd)
	if !explicit {
		ns = fluxinstance.DefaultNamespace
	}
	o.namespace = ns
	var err error
	o.dryRun, err = dryRunMode(cmd)
	return err
}

// Validate refuses --with-crds without its confirmation.
func (o *DeleteOptions) Validate(cmd *cobra.Command) error {
	if err := o.outputFlag.validate(cmd); err != nil {
		return err
	}
	if o.WithCRDs && !o.YesIKnow && o.dryRun.Changes() {
		return usageError(cmd, "--with-crds deletes every Flux object in the cluster (all GitRepositories, Kustomizations, HelmReleases...): add --yes-i-know to confirm, or --dry-run to see the list")
	}
	return nil
}

// Run deletes what the inventory lists.
func (o *DeleteOptions) Run(ctx context.Context) error {
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return err
	}
	m := apply.NewManager(kube.Instance{Client: conn.Client, Name: fluxinstance.RequiredName, Namespace: o.namespace})
	inv, err := m.Store().Read(ctx)
	if err != nil {
		return err
	}
	if inv == nil || !strings.HasPrefix(inv.Source, "ConfigMap/") {
		inst, err := installation.DetectInstallation(ctx, conn.Client)
		if err != nil {
			return err
		}
		how := "no Flux is installed"
		if inst.Installed {
			how = fmt.Sprintf("Flux %s there is managed by %s", inst.Version, inst.ManagedByText())
		}
		if inst.ManagedBy == installation.ManagedByOperator {
			// The operator's finalizer uninstalls what the FluxInstance applied; deleting the objects
			// here instead would only have the operator apply them again.
			return fmt.Errorf("nothing to delete by this plugin in namespace %q: %s; to uninstall, delete the FluxInstance and let the operator remove what it applied: kubectl delete fluxinstance -n %s %s",
				o.namespace, how, o.namespace, fluxinstance.RequiredName)
		}
		return fmt.Errorf("nothing to delete: this plugin never applied Flux in namespace %q (%s); pass -n for another namespace", o.namespace, how)
	}
	opts := uninstall.Options{WithCRDs: o.WithCRDs, RemoveFinalizers: o.RemoveFinalizers, DryRun: o.dryRun}
	var res *uninstall.Result
	if o.dryRun.Changes() {
		if err := o.checkPermissions(ctx, m, inv, opts); err != nil {
			return err
		}
		err = o.withLock(ctx, m.Instance, "delete", o.ErrOut, func(ctx context.Context) error {
			// Read again under the lock: the record this delete works from is the one no other
			// command is changing.
			if inv, err = m.Store().Read(ctx); err != nil {
				return err
			}
			res, err = uninstall.Run(ctx, m, inv, opts)
			return err
		})
	} else {
		res, err = uninstall.Run(ctx, m, inv, opts)
	}
	if err != nil {
		return err
	}
	dry := ""
	if !o.dryRun.Changes() {
		dry = string(o.dryRun)
	}
	var notes []string
	if !o.WithCRDs {
		if crds, err := uninstall.CRDs(inv); err == nil && len(crds) > 0 {
			notes = append(notes, fmt.Sprintf("kept %d Flux CRDs and every Flux object of users; delete them with --with-crds --yes-i-know", len(crds)))
		}
	}
	if err := printChanges(o.Out, o.Output, newChangeReport(res.ChangeSet, dry, append(res.Warnings, notes...))); err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(o.ErrOut, "Warning: %s\n", w)
	}
	for _, n := range notes {
		fmt.Fprintf(o.ErrOut, "Note: %s\n", n)
	}
	return nil
}

// checkPermissions refuses the delete before anything is deleted when the user lacks a permission
// it needs: a refusal halfway would leave the controllers running without their RBAC.
func (o *DeleteOptions) checkPermissions(ctx context.Context, m *apply.Manager, inv *inventory.Inventory, opts uninstall.Options) error {
	fi, err := operator.GetFluxInstance(ctx, m.Instance)
	if err != nil {
		return err
	}
	perms, err := permissions.ForDelete(m.Client.RESTMapper(), permissions.DeletePlan{
		Name: m.Name, Namespace: m.Namespace, Record: inv, Options: opts, FluxInstance: fi != nil,
	})
	if err != nil {
		return err
	}
	return checkPermissions(ctx, m.Client, "delete", perms, o.ErrOut)
}
