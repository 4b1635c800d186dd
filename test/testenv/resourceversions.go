package testenv

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ResourceVersions reads the live resourceVersion of each object (its GVK, namespace and name
// set), keyed Kind/namespace/name. An object that does not exist, or whose kind is not served any
// more, reads "". Equal maps before and after a command mean it wrote none of the objects.
func ResourceVersions[O client.Object](t testing.TB, c client.Client, objs []O) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GetObjectKind().GroupVersionKind())
		err := c.Get(context.Background(), client.ObjectKeyFromObject(o), live)
		if err != nil && !apierrors.IsNotFound(err) && !isNoMatch(err) && !strings.Contains(err.Error(), "not found") {
			t.Fatalf("reading %s: %v", versionKey(live.GetObjectKind().GroupVersionKind(), o), err)
		}
		out[versionKey(live.GetObjectKind().GroupVersionKind(), o)] = live.GetResourceVersion()
	}
	return out
}

// ListResourceVersions is the resourceVersion of every object of the listed kinds (list kinds,
// e.g. apps/v1 DeploymentList), keyed Kind/namespace/name.
func ListResourceVersions(t testing.TB, c client.Client, lists ...schema.GroupVersionKind) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, gvk := range lists {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk)
		if err := c.List(context.Background(), list); err != nil {
			t.Fatalf("listing %s: %v", gvk.Kind, err)
		}
		for _, item := range list.Items {
			out[versionKey(item.GroupVersionKind(), &item)] = item.GetResourceVersion()
		}
	}
	return out
}

func versionKey(gvk schema.GroupVersionKind, o client.Object) string {
	return gvk.Kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

// isNoMatch tells a kind the server does not serve (controller-runtime's lazy REST mapper wraps
// the no-match error in its own types).
func isNoMatch(err error) bool {
	return meta.IsNoMatchError(err) || strings.Contains(err.Error(), "no matches for kind")
}
