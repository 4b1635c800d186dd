package apply_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

const testVersion = "v2.7.5"

var defaultComponents = []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}

func TestMain(m *testing.M) { testenv.Main(m) }

// newTestManager connects like Connect does (raised client-side rate limits) as the admin.
func newTestManager(t *testing.T, env *testenv.Env, ns string) (*apply.Manager, client.Client) {
	t.Helper()
	return newManagerFor(t, env.Config, ns)
}

func newManagerFor(t *testing.T, cfg *rest.Config, ns string) (*apply.Manager, client.Client) {
	t.Helper()
	c := testenv.FastClient(t, cfg, 100, 200)
	return apply.NewManager(kube.Instance{Client: c, Name: "flux", Namespace: ns}), c
}

// renderInstance stands in for the renderer: the Flux objects of the distribution for the given
// components, carrying the operator's labels and annotations, plus the Namespace.
func renderInstance(t *testing.T, ns string, components ...string) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(testenv.DistributionDir(t), "flux", testVersion)
	files := []string{"rbac.yaml", "policies.yaml"}
	for _, c := range components {
		files = append(files, c+".yaml")
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		decoded, err := testenv.DecodeYAML(data)
		require.NoError(t, err)
		objs = append(objs, decoded...)
	}
	nsObj := &unstructured.Unstructured{}
	nsObj.SetAPIVersion("v1")
	nsObj.SetKind("Namespace")
	nsObj.SetName(ns)
	nsObj.SetAnnotations(map[string]string{render.AnnotationOperatorPrune: "disabled"})
	objs = append(objs, nsObj)
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition":
		default:
			o.SetNamespace(ns)
		}
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		for k, v := range map[string]string{
			render.LabelManagedBy: "flux-operator", "app.kubernetes.io/instance": ns, render.LabelVersion: testVersion,
			"app.kubernetes.io/part-of": "flux", render.LabelOwnerName: "flux", render.LabelOwnerNamespace: ns,
		} {
			labels[k] = v
		}
		o.SetLabels(labels)
	}
	ownership.SetOwnershipMetadata(objs)
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func without(objs []*unstructured.Unstructured, kind, name string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			continue
		}
		out = append(out, o)
	}
	return out
}

func actions(cs *ssa.ChangeSet) map[string]ssa.Action {
	out := map[string]ssa.Action{}
	for _, e := range cs.Entries {
		out[e.Subject] = e.Action
	}
	return out
}

func countActions(cs *ssa.ChangeSet) map[ssa.Action]int {
	out := map[ssa.Action]int{}
	for _, e := range cs.Entries {
		out[e.Action]++
	}
	return out
}

func exists(t *testing.T, c client.Client, gvk schema.GroupVersionKind, ns, name string) bool {
	t.Helper()
	u := &metav1.PartialObjectMetadata{}
	u.SetGroupVersionKind(gvk)
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
	if err == nil {
		return u.GetDeletionTimestamp() == nil
	}
	require.True(t, strings.Contains(err.Error(), "not found") || kube.IsNoMatch(err), "unexpected error: %v", err)
	return false
}

// gone tells whether an object no longer exists at all (not even terminating).
func gone(t *testing.T, c client.Client, gvk schema.GroupVersionKind, ns, name string) bool {
	t.Helper()
	u := &metav1.PartialObjectMetadata{}
	u.SetGroupVersionKind(gvk)
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
	return err != nil && (strings.Contains(err.Error(), "not found") || kube.IsNoMatch(err))
}

var (
	deploymentGVK = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	crdGVKTest    = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	helmRelGVK    = schema.GroupVersionKind{Group: "helm.toolkit.fluxcd.io", Version: "v2", Kind: "HelmRelease"}
	gitRepoGVK    = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
)

// createCR creates a minimal Flux custom resource as a user would.
func createCR(t *testing.T, c client.Client, gvk schema.GroupVersionKind, ns, name string, spec map[string]any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(ns)
	u.SetName(name)
	require.NoError(t, c.Create(context.Background(), u))
}

// markAvailable sets a Deployment's status as if its pods ran (no kubelet in the test environment).
func markAvailable(t *testing.T, c client.Client, ns, name string) {
	t.Helper()
	require.NoError(t, testenv.MarkAvailable(context.Background(), c, ns, name))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
