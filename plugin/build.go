package plugin

import (
	"context"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
)

const buildExample = `  # Print the manifests the Flux Operator would apply for a FluxInstance
  kubectl fluxinstance build -f flux-instance.yaml

  # Render against a distribution artifact in a private registry
  kubectl fluxinstance build -f flux-instance.yaml --distribution oci://registry.example.com/flux-operator-manifests:latest

  # Render offline from a Flux release's manifests.tar.gz, listing only the object names
  kubectl fluxinstance build -f flux-instance.yaml --distribution ./manifests.tar.gz -o name`

// BuildOptions holds the flags of `kubectl fluxinstance build`.
type BuildOptions struct {
	instanceFlags
	outputFlag

	configFlags *genericclioptions.ConfigFlags
	namespace   string
	enforceNS   bool
	printer     printers.ResourcePrinter
	genericiooptions.IOStreams
}

// NewCmdBuild returns the `build` command.
func NewCmdBuild(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &BuildOptions{configFlags: configFlags, outputFlag: outputFlag{Output: "yaml"}, IOStreams: streams}
	cmd := &cobra.Command{
		Use:     "build -f FILENAME",
		Short:   "Print the objects a FluxInstance renders to, without contacting a cluster",
		Long:    "Render a FluxInstance into the exact objects the Flux Operator would apply (CRDs, Namespace, RBAC, controllers, network policies, the sync source and Kustomization), sorted the operator's way. Never contacts a cluster.",
		Example: buildExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	o.addFlags(cmd, "render")
	o.outputFlag.addFlag(cmd, "", "yaml", "json", "name")
	return cmd
}

// Complete reads -n without consulting the kubeconfig's context: build is offline, and only an
// explicit --namespace overrides the FluxInstance's.
func (o *BuildOptions) Complete(cmd *cobra.Command) error {
	o.namespace, o.enforceNS = explicitNamespace(cmd)
	var err error
	if o.requestTimeout, err = requestTimeout(o.configFlags); err != nil {
		return usageError(cmd, "%v", err)
	}
	o.printer, err = objectPrinter(o.Output)
	return err
}

// Validate checks the flags.
func (o *BuildOptions) Validate(cmd *cobra.Command) error {
	if len(o.Filenames) == 0 {
		return usageError(cmd, "-f, --filename is required")
	}
	return o.outputFlag.validate(cmd)
}

// Run renders and prints.
func (o *BuildOptions) Run(ctx context.Context) error {
	r, err := o.render(ctx, o.In, o.namespace, o.enforceNS, warnTo(o.ErrOut))
	if err != nil {
		return err
	}
	return printObjects(o.printer, o.Output, r.Objects, o.Out)
}

// objectPrinter returns cli-runtime's printer for -o, like kubectl's.
func objectPrinter(output string) (printers.ResourcePrinter, error) {
	switch output {
	case "json":
		return &printers.JSONPrinter{}, nil
	case "name":
		return &printers.NamePrinter{}, nil
	default:
		return &printers.YAMLPrinter{}, nil
	}
}

// printObjects prints objects as a multi-document YAML stream, a JSON List (one parseable
// document, like `kubectl get -o json`) or kind/name lines.
func printObjects(p printers.ResourcePrinter, output string, objs []*unstructured.Unstructured, out interface{ Write([]byte) (int, error) }) error {
	if output == "json" {
		list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}}
		for _, obj := range objs {
			list.Items = append(list.Items, *obj)
		}
		return p.PrintObj(list, out)
	}
	for _, obj := range objs {
		if err := p.PrintObj(runtime.Object(obj), out); err != nil {
			return err
		}
	}
	return nil
}
