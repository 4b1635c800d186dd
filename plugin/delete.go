package plugin

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/cluster"
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
	DryRun           bool
	WithCRDs         bool
	YesIKnow         bool
	RemoveFinalizers bool
	Output           string

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
	flags.BoolVar(&o.DryRun, "dry-run", false, "List what would be deleted, without deleting.")
	flags.BoolVar(&o.WithCRDs, "with-crds", false, "Also delete the Flux CRDs, and so every Flux object in the cluster. Needs --yes-i-know.")
	flags.BoolVar(&o.YesIKnow, "yes-i-know", false, "Confirm --with-crds.")
	flags.BoolVar(&o.RemoveFinalizers, "remove-finalizers", false, "Clear the finalizers of the Flux objects being deleted, for when the controllers are already gone.")
	flags.StringVarP(&o.Output, "output", "o", "", "Output format. One of: (json, yaml). Default: one line per object.")
	return cmd
}

// Complete reads the namespace: -n, else flux-system (where a FluxInstance lives by convention).
func (o *DeleteOptions) Complete(cmd *cobra.Command) error {
	ns, explicit := explicitNamespace(cmd)
	if !explicit {
		ns = fluxinstance.DefaultNamespace
	}
	o.namespace = ns
	return nil
}

// Validate refuses --with-crds without its confirmation.
func (o *DeleteOptions) Validate(cmd *cobra.Command) error {
	if o.Output != "" && o.Output != "json" && o.Output != "yaml" {
		return usageError(cmd, "--output must be 'json' or 'yaml', got %q", o.Output)
	}
	if o.WithCRDs && !o.YesIKnow && !o.DryRun {
		return usageError(cmd, "--with-crds deletes every Flux object in the cluster (all GitRepositories, Kustomizations, HelmReleases...): add --yes-i-know to confirm, or --dry-run to see the list")
	}
	return nil
}

// Run deletes what the inventory lists.
func (o *DeleteOptions) Run(ctx context.Context) error {
	conn, err := cluster.Connect(o.configFlags)
	if err != nil {
		return err
	}
	m := cluster.NewManager(conn, fluxinstance.RequiredName, o.namespace)
	inv, err := m.ReadInventory(ctx)
	if err != nil {
		return cluster.ExplainError(err, conn.Config.Host)
	}
	if inv == nil || !strings.HasPrefix(inv.Source, "ConfigMap/") {
		inst, err := cluster.DetectInstallation(ctx, conn.Client)
		if err != nil {
			return cluster.ExplainError(err, conn.Config.Host)
		}
		how := "no Flux is installed"
		if inst.Installed {
			how = fmt.Sprintf("Flux %s there is managed by %s", inst.Version, inst.ManagedBy)
		}
		if inst.ManagedBy == cluster.ManagedByOperator {
			// The operator's finalizer uninstalls what the FluxInstance applied; deleting the objects
			// here instead would only have the operator apply them again.
			return fmt.Errorf("nothing to delete by this plugin in namespace %q: %s; to uninstall, delete the FluxInstance and let the operator remove what it applied: kubectl delete fluxinstance -n %s %s",
				o.namespace, how, o.namespace, fluxinstance.RequiredName)
		}
		return fmt.Errorf("nothing to delete: this plugin never applied Flux in namespace %q (%s); pass -n for another namespace", o.namespace, how)
	}
	cs, err := m.Delete(ctx, inv, cluster.DeleteOptions{WithCRDs: o.WithCRDs, RemoveFinalizers: o.RemoveFinalizers, DryRun: o.DryRun})
	if err != nil {
		return cluster.ExplainError(err, conn.Config.Host)
	}
	dry := ""
	if o.DryRun {
		dry = "client"
	}
	var warnings []string
	if !o.WithCRDs {
		if crds, err := cluster.InventoryCRDs(inv); err == nil && len(crds) > 0 {
			warnings = append(warnings, fmt.Sprintf("kept %d Flux CRDs and every Flux object of users; delete them with --with-crds --yes-i-know", len(crds)))
		}
	}
	if err := printChanges(o.Out, o.Output, newChangeReport(cs, dry, warnings)); err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(o.ErrOut, "Note: %s\n", w)
	}
	return nil
}
