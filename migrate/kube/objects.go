package kube

import (
	"context"
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa/utils"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CRDGVK is the kind of a CustomResourceDefinition.
var CRDGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// Ref formats an object as Kind/namespace/name (Kind/name when cluster-scoped), the way ssa's
// change sets name subjects.
func Ref(obj *unstructured.Unstructured) string { return utils.FmtUnstructured(obj) }

// RefMeta is Ref for an ObjMetadata.
func RefMeta(id object.ObjMetadata) string { return utils.FmtObjMetadata(id) }

// ID returns the inventory identity of an object.
func ID(obj *unstructured.Unstructured) object.ObjMetadata {
	return object.UnstructuredToObjMetadata(obj)
}

// Stub builds an empty object carrying only the identity, for reads, deletes and waits.
func Stub(id object.ObjMetadata, version string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: id.GroupKind.Group, Version: version, Kind: id.GroupKind.Kind})
	u.SetName(id.Name)
	u.SetNamespace(id.Namespace)
	return u
}

// IsCRD tells whether id names a CustomResourceDefinition.
func IsCRD(id object.ObjMetadata) bool {
	return id.GroupKind.Kind == CRDGVK.Kind && id.GroupKind.Group == CRDGVK.Group
}

// IsNamespace tells whether id names a Namespace.
func IsNamespace(id object.ObjMetadata) bool {
	return id.GroupKind.Kind == "Namespace" && id.GroupKind.Group == ""
}

// IsNoMatch tells whether err says the API server does not serve a kind (yet).
func IsNoMatch(err error) bool {
	if err == nil {
		return false
	}
	// controller-runtime's lazy REST mapper wraps the no-match error in its own types.
	return meta.IsNoMatchError(err) || strings.Contains(err.Error(), "no matches for kind")
}

// ObjectError wraps a cluster error with the object and the action it concerns. Forbidden errors
// keep the API server's message, which names the verb, the resource and the namespace.
func ObjectError(obj *unstructured.Unstructured, action string, err error) error {
	return fmt.Errorf("%s: %s: %w", Ref(obj), action, err)
}

// LiveState is what a read learnt of an object's in-cluster copy.
type LiveState int

const (
	// Found: the object exists.
	Found LiveState = iota
	// Absent: the API server said NotFound.
	Absent
	// NotServed: the kind is not served (yet), so the object cannot exist now but may once a CRD
	// of the same rendering is established.
	NotServed
)

// Get reads the in-cluster copy of obj (same kind, name and namespace). Only NotFound and a kind
// that is not served are states; any other failure is an error naming the object, so that a
// flaky connection never looks like an absent object.
func Get(ctx context.Context, c client.Reader, obj *unstructured.Unstructured) (*unstructured.Unstructured, LiveState, error) {
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(obj.GroupVersionKind())
	err := c.Get(ctx, client.ObjectKeyFromObject(obj), live)
	switch {
	case err == nil:
		return live, Found, nil
	case IsNoMatch(err):
		return nil, NotServed, nil
	case apierrors.IsNotFound(err):
		return nil, Absent, nil
	default:
		return nil, Absent, ObjectError(obj, "reading", err)
	}
}

// GetByID reads an object by identity at the preferred version of its kind.
func GetByID(ctx context.Context, c client.Client, id object.ObjMetadata) (*unstructured.Unstructured, LiveState, error) {
	mapping, err := c.RESTMapper().RESTMapping(id.GroupKind)
	if err != nil {
		if IsNoMatch(err) {
			return nil, NotServed, nil
		}
		return nil, Absent, fmt.Errorf("%s: %w", RefMeta(id), err)
	}
	return Get(ctx, c, Stub(id, mapping.GroupVersionKind.Version))
}

// ListPages lists every object of list's kind page by page (500 at a time, so that a cluster
// with many objects is never read in one response), calling each with every page.
func ListPages(ctx context.Context, c client.Reader, list client.ObjectList, each func() error, opts ...client.ListOption) error {
	cont := ""
	for {
		pageOpts := append(append([]client.ListOption{}, opts...), client.Limit(500))
		if cont != "" {
			pageOpts = append(pageOpts, client.Continue(cont))
		}
		if err := c.List(ctx, list, pageOpts...); err != nil {
			return err
		}
		if err := each(); err != nil {
			return err
		}
		meta, ok := list.(metav1.ListInterface)
		if !ok {
			return nil
		}
		if cont = meta.GetContinue(); cont == "" {
			return nil
		}
	}
}

// CRDNames returns the group and kind a CustomResourceDefinition serves.
func CRDNames(crd *unstructured.Unstructured) schema.GroupKind {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	return schema.GroupKind{Group: group, Kind: kind}
}

// CRDListKind returns the list kind of a CRD at its served storage version (the first served
// version when none is marked storage).
func CRDListKind(crd *unstructured.Unstructured) (schema.GroupVersionKind, error) {
	gk := CRDNames(crd)
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	version := ""
	for _, v := range versions {
		vm, ok := v.(map[string]any)
		if !ok {
			continue
		}
		name, _ := vm["name"].(string)
		served, _ := vm["served"].(bool)
		storage, _ := vm["storage"].(bool)
		if served && (version == "" || storage) {
			version = name
		}
	}
	if gk.Group == "" || gk.Kind == "" || version == "" {
		return schema.GroupVersionKind{}, fmt.Errorf("CustomResourceDefinition/%s: no served version", crd.GetName())
	}
	return schema.GroupVersionKind{Group: gk.Group, Version: version, Kind: gk.Kind + "List"}, nil
}
