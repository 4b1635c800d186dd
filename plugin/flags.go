package plugin

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/tools/clientcmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
)

// The flags several commands share, declared once each.

// addDryRunFlag adds kubectl's --dry-run=none|client|server flag; dryRunMode reads it.
func addDryRunFlag(cmd *cobra.Command) { cmdutil.AddDryRunFlag(cmd) }

// dryRunMode parses --dry-run the way kubectl does (a bare --dry-run means client, with kubectl's
// deprecation warning), as a usage error when the value is wrong.
func dryRunMode(cmd *cobra.Command) (kube.DryRun, error) {
	strategy, err := cmdutil.GetDryRunStrategy(cmd)
	if err != nil {
		return "", usageError(cmd, "%v", err)
	}
	switch strategy {
	case cmdutil.DryRunClient:
		return kube.DryRunClient, nil
	case cmdutil.DryRunServer:
		return kube.DryRunServer, nil
	}
	return kube.DryRunNone, nil
}

// outputFlag is -o, --output with the structured formats a command prints (printStructured's or
// a resource printer's); without -o a command prints its own human-readable form, unless it has
// none.
type outputFlag struct {
	Output  string
	formats []string
	human   bool
}

// addFlag declares -o; human describes the form printed without it ("" when -o is required).
func (f *outputFlag) addFlag(cmd *cobra.Command, human string, formats ...string) {
	f.formats, f.human = formats, human != ""
	usage := "Output format. One of: (" + strings.Join(formats, ", ") + ")."
	if human != "" {
		usage += " Default: " + human + "."
	}
	cmd.Flags().StringVarP(&f.Output, "output", "o", f.Output, usage)
}

func (f *outputFlag) validate(cmd *cobra.Command) error {
	if (f.Output == "" && f.human) || slices.Contains(f.formats, f.Output) {
		return nil
	}
	return usageError(cmd, "--output must be one of %s; got %q", strings.Join(f.formats, ", "), f.Output)
}

// distributionFlags say where the Flux distribution comes from, for every command that renders.
type distributionFlags struct {
	Distribution     string
	InsecureRegistry bool
	CAFile           string
	// requestTimeout is kubectl's --request-timeout, read in Complete: it bounds the whole of an
	// OCI pull and of reading a -f URL as it bounds each request to the cluster (0: no overall
	// bound, the per-request ones still apply).
	requestTimeout time.Duration
}

// addFlags declares the flags; defaultSource says what is used without --distribution.
func (f *distributionFlags) addFlags(cmd *cobra.Command, purpose, defaultSource string) {
	cmd.Flags().StringVar(&f.Distribution, "distribution", f.Distribution, "The Flux distribution to "+purpose+": oci://REGISTRY/REPO:TAG, a directory in the Flux Operator's layout, a .tar.gz of it, or a Flux release manifests.tar.gz. Default: "+defaultSource+".")
	cmd.Flags().BoolVar(&f.InsecureRegistry, "insecure-registry", false, "Allow plain HTTP for the OCI registry of --distribution.")
	cmd.Flags().StringVar(&f.CAFile, "ca-file", "", "A PEM file of certificate authorities to trust for the OCI registry of --distribution.")
}

// options are the distribution.Open options the flags give.
func (f *distributionFlags) options(warn func(string)) distribution.Options {
	return distribution.Options{Insecure: f.InsecureRegistry, CAFile: f.CAFile, Timeout: f.requestTimeout, Warn: warn}
}

// requestTimeout reads --request-timeout with client-go's own parser ("0" for none, a number of
// seconds or a duration), without loading the kubeconfig: `build` never needs one.
func requestTimeout(flags *genericclioptions.ConfigFlags) (time.Duration, error) {
	if flags == nil || flags.Timeout == nil || *flags.Timeout == "" {
		return 0, nil
	}
	d, err := clientcmd.ParseTimeout(*flags.Timeout)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid --request-timeout %q: use 0, a number of seconds, or a duration such as 30s", *flags.Timeout)
	}
	return d, nil
}
