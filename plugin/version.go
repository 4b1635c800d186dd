package plugin

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

const versionExample = `  # Print the plugin version and the Flux installed in the current context
  kubectl fluxinstance version

  # Print the plugin version only, without contacting a cluster
  kubectl fluxinstance version --client

  # For scripts
  kubectl fluxinstance version -o json`

// defaultClusterTimeout bounds how long `version` waits for an unresponsive server, and each
// cluster of a fleet command (`status --all-contexts`), when the user did not set
// --request-timeout: client-go has no timeout by default, and a dead context must not hold the
// answer (or, in a fleet, the whole table). Several times what a healthy API server needs.
const defaultClusterTimeout = 15 * time.Second

// VersionOptions holds the flags and inputs of `kubectl fluxinstance version`.
type VersionOptions struct {
	ClientOnly bool
	outputFlag

	configFlags *genericclioptions.ConfigFlags
	info        BuildInfo
	genericiooptions.IOStreams
}

// VersionReport is what `version -o json|yaml` prints; the field names mirror `kubectl version`.
type VersionReport struct {
	ClientVersion BuildInfo                  `json:"clientVersion"`
	Flux          *installation.Installation `json:"flux,omitempty"`
}

// NewCmdVersion returns the `version` command.
func NewCmdVersion(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, info BuildInfo) *cobra.Command {
	o := &VersionOptions{configFlags: configFlags, info: info, IOStreams: streams}
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the plugin version and the Flux version installed in the cluster",
		Long:    "Print the plugin version and, unless --client is set, the Flux version installed in the current context and how it is managed (flux bootstrap, flux install, the Flux Operator, Helm or this plugin).",
		Example: versionExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	cmd.Flags().BoolVar(&o.ClientOnly, "client", false, "If true, shows the client version only (no cluster required).")
	o.outputFlag.addFlag(cmd, "lines in words", "json", "yaml")
	return cmd
}

// Complete fills in what the binary knows about itself.
func (o *VersionOptions) Complete(*cobra.Command) error {
	if o.info.GoVersion == "" {
		o.info.GoVersion = runtime.Version()
	}
	if o.info.Platform == "" {
		o.info.Platform = runtime.GOOS + "/" + runtime.GOARCH
	}
	return nil
}

// Validate checks the flags.
func (o *VersionOptions) Validate(cmd *cobra.Command) error {
	return o.outputFlag.validate(cmd)
}

// Run prints the client version, then asks the cluster. The client version is printed even when
// the cluster cannot be reached, so a user always learns which plugin they run.
func (o *VersionOptions) Run(ctx context.Context) error {
	report := VersionReport{ClientVersion: o.info}
	var clusterErr error
	if !o.ClientOnly {
		inst, err := o.detect(ctx)
		if err != nil {
			clusterErr = err
		} else {
			report.Flux = &inst
		}
	}
	if err := o.print(report); err != nil {
		return err
	}
	return clusterErr
}

func (o *VersionOptions) detect(ctx context.Context) (installation.Installation, error) {
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return installation.Installation{}, err
	}
	if conn.Config.Timeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultClusterTimeout)
		defer cancel()
	}
	inst, err := installation.DetectInstallation(ctx, conn.Client)
	return inst, err
}

func (o *VersionOptions) print(r VersionReport) error {
	if ok, err := printStructured(o.Out, o.Output, r); ok {
		return err
	}
	fmt.Fprintf(o.Out, "Client Version: %s\n", r.ClientVersion.Version)
	if r.Flux == nil {
		return nil
	}
	if !r.Flux.Installed {
		fmt.Fprintln(o.Out, "Flux Version: not installed")
		return nil
	}
	version := r.Flux.Version
	if version == "" {
		version = "unknown (the CRD has no app.kubernetes.io/version label)"
	}
	fmt.Fprintf(o.Out, "Flux Version: %s\n", version)
	fmt.Fprintf(o.Out, "Managed By: %s\n", r.Flux.ManagedByText())
	if r.Flux.Namespace != "" {
		fmt.Fprintf(o.Out, "Namespace: %s\n", r.Flux.Namespace)
	}
	return nil
}
