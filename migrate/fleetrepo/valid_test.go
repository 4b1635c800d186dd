package fleetrepo_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// assertValidForTarget checks every Flux object of the files: its version is one the target CRD
// serves, and the object passes the CRD's OpenAPI validation at that version, as the API server
// would validate it on create. partial names the files that hold patches (partial objects): only
// their versions are checked.
func assertValidForTarget(t *testing.T, crds []*unstructured.Unstructured, dir string, files, partial []string) {
	t.Helper()
	byKind := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, o := range crds {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, crd))
		byKind[crd.Spec.Group+"/"+crd.Spec.Names.Kind] = crd
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		require.NoError(t, err)
		objs, err := testenv.DecodeYAML(data)
		require.NoError(t, err, f)
		for _, obj := range objs {
			gvk := obj.GroupVersionKind()
			if !storage.IsFluxGroup(gvk.Group) {
				continue
			}
			crd := byKind[gvk.Group+"/"+gvk.Kind]
			require.NotNil(t, crd, "%s: %s", f, gvk)
			if slices.Contains(partial, f) {
				require.NoError(t, servedBy(crd, gvk.Version), f)
				continue
			}
			require.NoError(t, validObject(crd, obj), "%s: %s %s", f, gvk.Kind, obj.GetName())
		}
	}
}

func servedBy(crd *apiextensionsv1.CustomResourceDefinition, version string) error {
	for _, v := range crd.Spec.Versions {
		if v.Name == version && v.Served {
			return nil
		}
	}
	return fmt.Errorf("%s does not serve %s", crd.Name, version)
}

// validObject runs kube-openapi's validation (the validator the API server's CRD validation wraps)
// of obj against the schema of obj's version. The schema goes through JSON into kube-openapi's
// type, as the two share the OpenAPI v3 field names: requiredness, types, enums and patterns are
// what a version change can break, and those come across as they are.
func validObject(crd *apiextensionsv1.CustomResourceDefinition, obj *unstructured.Unstructured) error {
	if err := servedBy(crd, obj.GroupVersionKind().Version); err != nil {
		return err
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != obj.GroupVersionKind().Version {
			continue
		}
		data, err := json.Marshal(v.Schema.OpenAPIV3Schema)
		if err != nil {
			return err
		}
		schema := &spec.Schema{}
		if err := json.Unmarshal(data, schema); err != nil {
			return err
		}
		result := validate.NewSchemaValidator(schema, nil, "", strfmt.Default).Validate(obj.UnstructuredContent())
		if !result.IsValid() {
			var msgs []string
			for _, e := range result.Errors {
				msgs = append(msgs, e.Error())
			}
			return fmt.Errorf("invalid at %s: %s", v.Name, strings.Join(msgs, "; "))
		}
	}
	return nil
}

// The check above must be able to fail: an object the target's schema refuses is refused.
func TestValidObjectRefusesWhatTheSchemaRefuses(t *testing.T) {
	var kustomizations *apiextensionsv1.CustomResourceDefinition
	for _, o := range targetCRDs(t, targetFlux) {
		if o.GetName() == "kustomizations.kustomize.toolkit.fluxcd.io" {
			kustomizations = &apiextensionsv1.CustomResourceDefinition{}
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, kustomizations))
		}
	}
	require.NotNil(t, kustomizations)
	objs, err := testenv.DecodeYAML([]byte("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: a}\nspec: {interval: 1m, prune: true, sourceRef: {kind: GitRepository, name: x}}\n"))
	require.NoError(t, err)
	require.NoError(t, validObject(kustomizations, objs[0]))
	unstructured.RemoveNestedField(objs[0].Object, "spec", "sourceRef")
	require.ErrorContains(t, validObject(kustomizations, objs[0]), "sourceRef")
	objs[0].SetAPIVersion("kustomize.toolkit.fluxcd.io/v1beta2")
	require.ErrorContains(t, validObject(kustomizations, objs[0]), "does not serve v1beta2")
}
