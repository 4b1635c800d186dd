package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/resource"

	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// instanceFlags are the flags of every command that renders a FluxInstance file: where the
// FluxInstance comes from and where the Flux distribution comes from.
type instanceFlags struct {
	resource.FilenameOptions
	distributionFlags
}

func (f *instanceFlags) addFlags(cmd *cobra.Command, verb string) {
	cmd.Flags().StringSliceVarP(&f.Filenames, "filename", "f", nil, "The FluxInstance to "+verb+": a file, a directory, a URL or - for stdin.")
	cmd.Flags().BoolVarP(&f.Recursive, "recursive", "R", false, "Process the directory used in -f, --filename recursively.")
	f.distributionFlags.addFlags(cmd, "render from, overriding spec.distribution.artifact", "the distribution built into the plugin")
	_ = cmd.MarkFlagRequired("filename")
}

// rendering is one FluxInstance rendered against its distribution.
type rendering struct {
	Instance *fluxinstance.FluxInstance
	// File is where the FluxInstance was read from.
	File string
	// Version is the resolved Flux version, e.g. v2.7.5.
	Version string
	// DistributionSource describes where the manifests came from.
	DistributionSource string
	// DistributionRef is the source as given to distribution.Open ("" for the embedded one), kept
	// in the inventory record so that `status` can render the same instance again.
	DistributionRef string
	Objects         []*unstructured.Unstructured
	// Object is the FluxInstance as the user wrote it (before defaults, namespace set): what the
	// operator mode applies for the Flux Operator to reconcile.
	Object *unstructured.Unstructured
}

// readInstance reads exactly one FluxInstance with kubectl's local resource builder (files,
// directories, URLs, stdin) and decodes it strictly. namespace is -n when the user gave it
// (enforced like kubectl: a FluxInstance in another namespace is an error).
func (f *instanceFlags) readInstance(ctx context.Context, stdin io.Reader, namespace string, enforce bool) (*fluxinstance.FluxInstance, string, error) {
	// The builder would read "-" from the process's stdin, and a URL without a context or a
	// timeout: read both here, bounded, and hand the builder the bytes.
	files := f.FilenameOptions
	files.Filenames = nil
	builder := resource.NewLocalBuilder().Unstructured()
	for _, name := range f.Filenames {
		switch {
		case name == "-":
			data, err := readBounded(stdin, "standard input")
			if err != nil {
				return nil, "", err
			}
			builder = builder.Stream(bytes.NewReader(data), "STDIN")
		case isURL(name):
			data, err := fetchURL(ctx, name, f.requestTimeout)
			if err != nil {
				return nil, "", fmt.Errorf("reading %s: %w", name, err)
			}
			builder = builder.Stream(bytes.NewReader(data), name)
		default:
			if err := checkFileSizes(name, f.Recursive); err != nil {
				return nil, "", err
			}
			files.Filenames = append(files.Filenames, name)
		}
	}
	if len(files.Filenames) > 0 {
		builder = builder.FilenameParam(false, &files)
	}
	result := builder.Flatten().Do()
	infos, err := result.Infos()
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", strings.Join(f.Filenames, ", "), err)
	}
	var found []string
	var instances []*resource.Info
	for _, info := range infos {
		gvk := info.Object.GetObjectKind().GroupVersionKind()
		if gvk.Kind == fluxinstance.Kind && gvk.Group == fluxinstance.Group {
			instances = append(instances, info)
		}
		found = append(found, fmt.Sprintf("%s %q in %s", gvk.Kind, info.Name, info.Source))
	}
	if len(instances) != 1 || len(infos) != 1 {
		what := "nothing"
		if len(found) > 0 {
			what = summarize(found, 5)
		}
		return nil, "", fmt.Errorf("expected exactly one FluxInstance (%s) in %s, found %s", fluxinstance.APIVersion, strings.Join(f.Filenames, ", "), what)
	}
	info := instances[0]
	// Re-decode strictly with our own types: the builder accepts any field, we must not.
	data, err := json.Marshal(info.Object)
	if err != nil {
		return nil, "", err
	}
	inst, err := fluxinstance.Decode(data, info.Source)
	if err != nil {
		return nil, "", err
	}
	switch {
	case inst.Namespace == "" && namespace != "":
		inst.Namespace = namespace
	case inst.Namespace == "":
		inst.Namespace = fluxinstance.DefaultNamespace
	case enforce && namespace != "" && inst.Namespace != namespace:
		return nil, "", fmt.Errorf("the namespace of FluxInstance %q in %s is %q, which does not match the namespace %q: pass --namespace=%s or remove the namespace from the file",
			inst.Name, info.Source, inst.Namespace, namespace, inst.Namespace)
	}
	return inst, info.Source, nil
}

// render reads, defaults, validates and renders the FluxInstance. warn receives non-fatal
// messages (e.g. a registry that fell back to its cache).
func (f *instanceFlags) render(ctx context.Context, stdin io.Reader, namespace string, enforce bool, warn func(string)) (*rendering, error) {
	inst, file, err := f.readInstance(ctx, stdin, namespace, enforce)
	if err != nil {
		return nil, err
	}
	obj, err := instanceObject(inst)
	if err != nil {
		return nil, err
	}
	source := f.Distribution
	if source == "" {
		source = inst.Spec.Distribution.Artifact
	}
	opts := f.distributionFlags.options(warn)
	r, err := renderInstance(ctx, inst, file, source, opts)
	var unresolved *unresolvedVersionError
	if errors.As(err, &unresolved) {
		unresolved.partial.Object = obj
	}
	if err != nil {
		return nil, err
	}
	r.Object = obj
	return r, nil
}

// unresolvedVersionError is renderInstance's error when the distribution has no version matching
// the instance: it carries the instance, read, defaulted and validated but not rendered, for the
// operator mode of apply, which lets the Flux Operator resolve the version from its own distribution.
type unresolvedVersionError struct {
	partial *rendering
	err     error
}

func (e *unresolvedVersionError) Error() string { return e.err.Error() }
func (e *unresolvedVersionError) Unwrap() error { return e.err }

// instanceObject is the FluxInstance as an API object: only what the user gives (name, namespace,
// labels, annotations, spec), never status or server-set metadata. Call it before Default, so the
// operator's CRD applies its own defaults.
func instanceObject(inst *fluxinstance.FluxInstance) (*unstructured.Unstructured, error) {
	spec, err := json.Marshal(inst.Spec)
	if err != nil {
		return nil, err
	}
	var specMap map[string]any
	if err := json.Unmarshal(spec, &specMap); err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{Object: map[string]any{"spec": specMap}}
	obj.SetAPIVersion(fluxinstance.APIVersion)
	obj.SetKind(fluxinstance.Kind)
	obj.SetName(inst.Name)
	obj.SetNamespace(inst.Namespace)
	obj.SetLabels(inst.Labels)
	obj.SetAnnotations(inst.Annotations)
	return obj, nil
}

// renderInstance defaults, validates and renders a decoded FluxInstance read from file, against
// the distribution named by source ("" for the embedded one). opts.Warn receives the warnings of
// both the distribution and the rendering.
func renderInstance(ctx context.Context, inst *fluxinstance.FluxInstance, file, source string, opts distribution.Options) (*rendering, error) {
	inst.Default()
	if err := inst.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	dist, err := distribution.Open(ctx, source, opts)
	if err != nil {
		return nil, fmt.Errorf("opening the Flux distribution: %w", err)
	}
	version, err := dist.Resolve(inst.Spec.Distribution.Version)
	if err != nil {
		err = fmt.Errorf("%s: spec.distribution.version: %w", file, err)
		var none *distribution.NoMatchingVersionError
		if errors.As(err, &none) {
			err = &unresolvedVersionError{partial: &rendering{Instance: inst, File: file, DistributionSource: dist.Source(), DistributionRef: source}, err: err}
		}
		return nil, err
	}
	if err := inst.ValidateForVersion(version); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	release, err := dist.Release(version)
	if err != nil {
		return nil, err
	}
	objs, err := render.Build(inst, release, opts.Warn)
	if err != nil {
		return nil, fmt.Errorf("rendering %s with Flux %s: %w", file, version, err)
	}
	return &rendering{Instance: inst, File: file, Version: version, DistributionSource: dist.Source(), DistributionRef: source, Objects: objs}, nil
}
