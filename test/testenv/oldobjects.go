package testenv

import (
	"context"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// OldObjectsManager is the field manager that server-side applies half of CreateOldFluxObjects'
// objects at the old versions.
const OldObjectsManager = "old-applier"

// CreateOldFluxObjects creates, in each namespace (created when absent), users' Flux objects at
// the API versions Flux 2.2.3 served and later releases removed: HelmRepository and GitRepository
// source v1beta2, Kustomization kustomize v1beta2, HelmRelease helm v2beta1, ImageRepository
// image v1beta2, Provider and Alert notification v1beta2. Even-numbered namespaces get them by
// server-side apply (managedFields of OldObjectsManager at the old version), the others by create.
// It returns the objects as the API server answered.
func CreateOldFluxObjects(t testing.TB, c client.Client, namespaces ...string) []*unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	var out []*unstructured.Unstructured
	for i, ns := range namespaces {
		nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
		if err := c.Create(ctx, nsObj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
		for _, o := range OldFluxObjects(ns) {
			var err error
			if i%2 == 0 {
				err = c.Patch(ctx, o, client.Apply, client.FieldOwner(OldObjectsManager), client.ForceOwnership)
			} else {
				err = c.Create(ctx, o)
			}
			if err != nil {
				t.Fatalf("creating %s %s/%s: %v", o.GetKind(), ns, o.GetName(), err)
			}
			out = append(out, o)
		}
	}
	return out
}

// OldFluxObjects are the objects CreateOldFluxObjects creates in one namespace, not yet created
// (the demo applies them with kubectl).
func OldFluxObjects(ns string) []*unstructured.Unstructured {
	obj := func(apiVersion, kind, name string, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": apiVersion, "kind": kind,
			"metadata": map[string]any{
				"name": name, "namespace": ns,
				"labels":      map[string]any{"team": "apps", "tier": fmt.Sprintf("t-%s", ns)},
				"annotations": map[string]any{"example.com/owner": "alice"},
			},
			"spec": spec,
		}}
	}
	return []*unstructured.Unstructured{
		obj("source.toolkit.fluxcd.io/v1beta2", "HelmRepository", "charts", map[string]any{
			"url": "https://charts.example.com", "interval": "10m"}),
		obj("source.toolkit.fluxcd.io/v1beta2", "GitRepository", "app", map[string]any{
			"url": "https://example.com/org/app.git", "interval": "1m", "ref": map[string]any{"branch": "main"}}),
		obj("kustomize.toolkit.fluxcd.io/v1beta2", "Kustomization", "app", map[string]any{
			"interval": "10m", "path": "./deploy", "prune": true,
			"sourceRef": map[string]any{"kind": "GitRepository", "name": "app"}}),
		obj("helm.toolkit.fluxcd.io/v2beta1", "HelmRelease", "podinfo", map[string]any{
			"interval": "5m",
			"chart": map[string]any{"spec": map[string]any{"chart": "podinfo", "version": "6.x",
				"sourceRef": map[string]any{"kind": "HelmRepository", "name": "charts"}}}}),
		obj("image.toolkit.fluxcd.io/v1beta2", "ImageRepository", "app", map[string]any{
			"image": "ghcr.io/org/app", "interval": "5m"}),
		obj("notification.toolkit.fluxcd.io/v1beta2", "Provider", "hook", map[string]any{
			"type": "generic", "address": "https://hooks.example.com/flux"}),
		obj("notification.toolkit.fluxcd.io/v1beta2", "Alert", "all", map[string]any{
			"providerRef":  map[string]any{"name": "hook"},
			"eventSources": []any{map[string]any{"kind": "GitRepository", "name": "*"}}}),
	}
}
