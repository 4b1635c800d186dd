package storage

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// DroppedFields returns the paths of the fields the API server would prune from obj when obj is
// written (or read) at targetVersion of targetCRD, the way a `conversion: None` CRD does it: the
// content kept as is, apiVersion changed, then pruned by the target version's structural schema,
// x-kubernetes-preserve-unknown-fields honoured. Paths are dotted with list indexes, e.g.
// "spec.patchesStrategicMerge" or "spec.valuesFrom[0].foo"; a dropped object or list is reported
// once, not field by field. The result is sorted; it is empty when nothing would be dropped.
//
// apiVersion, kind and metadata are never reported: the pruning keeps them at the root whatever
// the schema says (metadata has rules of its own, which no Flux version change touches). A null
// the server would clear (a non-nullable field without a default) is not reported either: it
// carries no data. Status is reported,
// with its "status." prefix, because the server prunes it too; the controller rewrites status on
// its next reconcile, so a caller that only cares about what a person wrote may skip those paths.
//
// obj is not modified. The CRD must serve obj's group and kind (a mismatch is an error, since
// the answer would be meaningless), and targetVersion must be one of its versions.
func DroppedFields(obj *unstructured.Unstructured, targetCRD *unstructured.Unstructured, targetVersion string) ([]string, error) {
	if obj == nil || targetCRD == nil {
		return nil, errors.New("dropped fields: an object and a target CRD are required")
	}
	p, err := newPruner(targetCRD, targetVersion)
	if err != nil {
		return nil, err
	}
	return p.dropped(obj)
}

// pruner is DroppedFields for many objects of one kind: the CRD is decoded and the structural
// schema built once (per object they cost far more than the pruning: most of the CPU time of a
// check of 10,000 objects).
type pruner struct {
	group, kind, version string
	crd                  string
	// preserve is a CRD with spec.preserveUnknownFields: the server prunes nothing.
	preserve bool
	schema   *structuralschema.Structural
}

func newPruner(targetCRD *unstructured.Unstructured, targetVersion string) (*pruner, error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(targetCRD.Object, crd); err != nil {
		return nil, fmt.Errorf("CustomResourceDefinition/%s: decoding: %w", targetCRD.GetName(), err)
	}
	p := &pruner{group: crd.Spec.Group, kind: crd.Spec.Names.Kind, version: targetVersion, crd: crd.Name}
	// v1 CRDs cannot set spec.preserveUnknownFields any more, but a CRD read from a cluster that
	// was upgraded from v1beta1 may still have it: the server then prunes nothing.
	if crd.Spec.PreserveUnknownFields {
		p.preserve = true
		return p, nil
	}
	s, err := structuralFor(crd, targetVersion)
	if err != nil {
		return nil, err
	}
	p.schema = s
	return p, nil
}

// dropped is DroppedFields of obj against the pruner's CRD and version.
func (p *pruner) dropped(obj *unstructured.Unstructured) ([]string, error) {
	gvk := obj.GroupVersionKind()
	if gvk.Group != p.group || gvk.Kind != p.kind {
		return nil, fmt.Errorf("CustomResourceDefinition/%s serves %s.%s, not %s", p.crd, p.kind, p.group, gvk.GroupKind())
	}
	if p.preserve {
		return []string{}, nil
	}
	// Pruning deletes from the map it walks: work on a copy so that the caller's object is intact.
	content := runtime.DeepCopyJSON(obj.Object)
	content["apiVersion"] = p.group + "/" + p.version
	// isResourceRoot as the server passes it: apiVersion, kind and metadata are kept at the root.
	paths := pruning.PruneWithOptions(content, p.schema, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	if paths == nil {
		paths = []string{}
	}
	sort.Strings(paths)
	return paths, nil
}

// structuralFor builds the structural schema of one version the way the API server does
// (customresource_handler.go: v1 validation converted to the internal type, then NewStructural).
// The server also prunes defaults from the schema; that changes no field set, so it is skipped.
func structuralFor(crd *apiextensionsv1.CustomResourceDefinition, version string) (*structuralschema.Structural, error) {
	var found *apiextensionsv1.CustomResourceDefinitionVersion
	names := make([]string, 0, len(crd.Spec.Versions))
	for i := range crd.Spec.Versions {
		names = append(names, crd.Spec.Versions[i].Name)
		if crd.Spec.Versions[i].Name == version {
			found = &crd.Spec.Versions[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("CustomResourceDefinition/%s has no version %q (it has %s)", crd.Name, version, strings.Join(names, ", "))
	}
	// A v1 CRD without a schema is refused by the API server, so this is a broken input rather
	// than "prune everything".
	if found.Schema == nil || found.Schema.OpenAPIV3Schema == nil {
		return nil, fmt.Errorf("CustomResourceDefinition/%s: version %s has no schema", crd.Name, version)
	}
	internal := &apiextensionsinternal.CustomResourceValidation{}
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(found.Schema, internal, nil); err != nil {
		return nil, fmt.Errorf("CustomResourceDefinition/%s: converting the schema of %s: %w", crd.Name, version, err)
	}
	s, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
	if err != nil {
		return nil, fmt.Errorf("CustomResourceDefinition/%s: the schema of %s is not structural: %w", crd.Name, version, err)
	}
	return s, nil
}

// FormatDropped is the one-line message for a person: "Kustomization team-a/apps:
// spec.patchesStrategicMerge, spec.patchesJson6902 would be dropped at
// kustomize.toolkit.fluxcd.io/v1". ref names the object, target the group/version it would be
// written at; paths are listed in the order given. It returns "" when paths is empty, so that a
// caller can print only what is non-empty.
func FormatDropped(ref string, paths []string, target string) string {
	if len(paths) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: %s would be dropped at %s", ref, strings.Join(paths, ", "), target)
}
