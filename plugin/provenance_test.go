package plugin

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// A record is data anyone with ConfigMap rights can edit: prune and delete remove a listed object
// only when a rendering could have produced it, it carries the owner labels and the plugin applied
// it. Reproduces the reliability issue's findings: a labelled Deployment in another namespace, a
// labelled non-Flux CRD (with --with-crds) and the record itself, all added to the record.
func TestPruneAndDeleteOnlyWhatThePluginApplied(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	// The smallest instance, spelled out here: the test is about the record, not the rendering.
	file := writeFile(t, t.TempDir(), "flux.yaml", `apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "2.7.5"
    registry: ghcr.io/fluxcd
  components: [source-controller, kustomize-controller]
`)
	plugin := func(args ...string) result {
		return runPlugin(t, "", append(args, "--kubeconfig", env.Kubeconfig, "--distribution", dist)...)
	}
	r := plugin("apply", "-f", file, "--wait=false")
	require.Equal(t, 0, r.Code, r.Stderr)

	owner := map[string]string{"fluxcd.controlplane.io/name": "flux", "fluxcd.controlplane.io/namespace": "flux-system"}
	env.CreateNamespace(t, "victim")
	victim := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "victim", Name: "app", Labels: owner},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}},
			},
		},
	}
	require.NoError(t, c.Create(ctx, victim))
	widgets := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.example.com", "labels": map[string]any{"fluxcd.controlplane.io/name": "flux", "fluxcd.controlplane.io/namespace": "flux-system"}},
		"spec": map[string]any{
			"group": "example.com", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
	require.NoError(t, c.Create(ctx, widgets))

	// The record gains the three entries, as a hostile or mistaken edit would add them.
	record := &corev1.ConfigMap{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "kubectl-fluxinstance-inventory"}, record))
	var body struct {
		Entries []map[string]string `json:"entries"`
	}
	require.NoError(t, json.Unmarshal([]byte(record.Data["inventory"]), &body))
	body.Entries = append(body.Entries,
		map[string]string{"id": "victim_app_apps_Deployment", "v": "v1"},
		map[string]string{"id": "_widgets.example.com_apiextensions.k8s.io_CustomResourceDefinition", "v": "v1"},
		map[string]string{"id": "flux-system_kubectl-fluxinstance-inventory__ConfigMap", "v": "v1"},
	)
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	record.Data["inventory"] = string(raw)
	require.NoError(t, c.Update(ctx, record))

	// An apply prunes what the new rendering dropped: none of the three.
	r = plugin("apply", "-f", file, "--wait=false")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Warning: Deployment/victim/app is listed in ConfigMap/flux-system/kubectl-fluxinstance-inventory but was not pruned: it is in namespace victim, not the instance's (flux-system)")
	assert.Contains(t, r.Stderr, "Warning: CustomResourceDefinition/widgets.example.com is listed in ConfigMap/flux-system/kubectl-fluxinstance-inventory but was not pruned: it is not a Flux CustomResourceDefinition (*.fluxcd.io)")
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(victim), &appsv1.Deployment{}))
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(widgets), crdStub()))
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(record), &corev1.ConfigMap{}))
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(record), record))
	assert.NotContains(t, record.Data["inventory"], "kubectl-fluxinstance-inventory", "the record never lists itself")

	// The same entries again, then delete with everything: still none of them.
	record.Data["inventory"] = string(raw)
	require.NoError(t, c.Update(ctx, record))
	r = runPlugin(t, "", "delete", "-n", "flux-system", "--with-crds", "--yes-i-know", "--remove-finalizers", "--kubeconfig", env.Kubeconfig)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Warning: Deployment/victim/app is listed in ConfigMap/flux-system/kubectl-fluxinstance-inventory but was not deleted: it is in namespace victim")
	assert.Contains(t, r.Stderr, "Warning: CustomResourceDefinition/widgets.example.com is listed in ConfigMap/flux-system/kubectl-fluxinstance-inventory but was not deleted: it is not a Flux CustomResourceDefinition")
	assert.Contains(t, r.Stderr, "Warning: ConfigMap/flux-system/kubectl-fluxinstance-inventory is listed in ConfigMap/flux-system/kubectl-fluxinstance-inventory but was not deleted: it is the plugin's own record")
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(victim), &appsv1.Deployment{}))
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(widgets), crdStub()))
	// What the plugin did apply is gone.
	err = c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "source-controller"}, &appsv1.Deployment{})
	assert.True(t, client.IgnoreNotFound(err) == nil && err != nil, "source-controller deleted: %v", err)
}

func crdStub() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("apiextensions.k8s.io/v1")
	u.SetKind("CustomResourceDefinition")
	return u
}
