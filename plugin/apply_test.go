package plugin

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// resourceVersions snapshots every object the plugin could have touched.
func resourceVersions(t *testing.T, c client.Client) map[string]string {
	t.Helper()
	return testenv.ListResourceVersions(t, c,
		schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"},
		schema.GroupVersionKind{Version: "v1", Kind: "NamespaceList"},
		schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DeploymentList"},
		schema.GroupVersionKind{Version: "v1", Kind: "ConfigMapList"},
		schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleList"})
}

func TestApplyDiffStatusDelete(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	dir := t.TempDir()
	applyInstance := fixtures.Instance(t, "tests/sync-git-pull-secret-2.7.5")
	file := writeFile(t, dir, "flux.yaml", applyInstance)
	kc := []string{"--kubeconfig", env.Kubeconfig, "--distribution", dist}
	plugin := func(stdin string, args ...string) result {
		return runPlugin(t, stdin, append(args, kc...)...)
	}

	t.Run("an invalid instance changes nothing", func(t *testing.T) {
		before := resourceVersions(t, c)
		// The variant is built here, next to the assertion on the misspelt field.
		bad := writeFile(t, dir, "bad.yaml", strings.Replace(applyInstance, "pullSecret:", "pulSecret:", 1))
		r := plugin("", "apply", "-f", bad, "--wait=false")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "pulSecret")
		assert.Equal(t, before, resourceVersions(t, c))
	})

	t.Run("dry runs change nothing", func(t *testing.T) {
		before := resourceVersions(t, c)
		for _, mode := range []string{"client", "server"} {
			r := plugin("", "apply", "-f", file, "--dry-run="+mode)
			require.Equal(t, 0, r.Code, r.Stderr)
			assert.Contains(t, r.Stdout, "deployment.apps/source-controller created ("+mode+" dry run)\n")
		}
		assert.Equal(t, before, resourceVersions(t, c))
	})

	t.Run("diff before the first apply", func(t *testing.T) {
		r := plugin("", "diff", "-f", file)
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "Deployment/flux-system/source-controller")
	})

	t.Run("first apply creates everything", func(t *testing.T) {
		r := plugin("", "apply", "-f", file, "--wait=false")
		require.Equal(t, 0, r.Code, r.Stderr)
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		assert.Greater(t, len(lines), 20)
		for _, l := range lines {
			assert.True(t, strings.HasSuffix(l, " created"), l)
		}
		assert.Equal(t, "customresourcedefinition.apiextensions.k8s.io/alerts.notification.toolkit.fluxcd.io created", lines[0])
		assert.Contains(t, lines, "gitrepository.source.toolkit.fluxcd.io/flux-system created")
	})

	t.Run("re-apply reports everything unchanged, as JSON too", func(t *testing.T) {
		before := resourceVersions(t, c)
		r := plugin("", "apply", "-f", file, "--wait=false", "-o", "json")
		require.Equal(t, 0, r.Code, r.Stderr)
		var report ChangeReport
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &report))
		require.NotEmpty(t, report.Changes)
		for _, ch := range report.Changes {
			assert.Equal(t, "unchanged", ch.Action, ch.Kind+"/"+ch.Name)
		}
		// Only the inventory record is rewritten.
		after := resourceVersions(t, c)
		delete(before, "ConfigMap/flux-system/kubectl-fluxinstance-inventory")
		delete(after, "ConfigMap/flux-system/kubectl-fluxinstance-inventory")
		assert.Equal(t, before, after)

		r = plugin("", "diff", "-f", file)
		assert.Equal(t, 0, r.Code, r.Stdout+r.Stderr)
		assert.Empty(t, r.Stdout)
	})

	t.Run("version and status say the plugin manages it", func(t *testing.T) {
		r := runPlugin(t, "", "version", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "Managed By: kubectl-fluxinstance\n")

		r = runPlugin(t, "", "status", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Regexp(t, `Managed By:\s+kubectl-fluxinstance`, r.Stdout)
		assert.Regexp(t, `Last Applied:\s+\S+ by testenv-admin \(field manager kubectl-fluxinstance, plugin v1.2.3-test\)`, r.Stdout)
		assert.Regexp(t, `Revision:\s+v2.7.5@sha256:[0-9a-f]{64}`, r.Stdout)
		assert.Regexp(t, `Drift:\s+none`, r.Stdout)
		assert.Regexp(t, `source-controller\s+false\s+0/1\s+ghcr.io/fluxcd/source-controller:v`, r.Stdout)
		assert.Regexp(t, `GitRepository/flux-system\s+Unknown`, r.Stdout)
	})

	t.Run("a field owned by another manager is a conflict until forced", func(t *testing.T) {
		patch := &unstructured.Unstructured{}
		patch.SetAPIVersion("apps/v1")
		patch.SetKind("Deployment")
		patch.SetNamespace("flux-system")
		patch.SetName("source-controller")
		patch.Object["spec"] = map[string]any{"replicas": int64(2)}
		require.NoError(t, c.Patch(ctx, patch, client.Apply, client.FieldOwner("user-tool"), client.ForceOwnership))

		r := plugin("", "apply", "-f", file, "--wait=false")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "user-tool")
		assert.Contains(t, r.Stderr, "--force-conflicts")

		r = plugin("", "apply", "-f", file, "--wait=false", "--force-conflicts")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "deployment.apps/source-controller configured\n")
	})

	t.Run("wait times out naming what is not ready, then succeeds", func(t *testing.T) {
		r := plugin("", "apply", "-f", file, "--timeout=3s")
		assert.Equal(t, 1, r.Code)
		assert.Contains(t, r.Stderr, "Deployment/flux-system/source-controller")
		for _, d := range []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"} {
			require.NoError(t, testenv.MarkAvailable(ctx, c, "flux-system", d))
		}
		// Without controllers the sync objects never become ready: wait for everything but them
		// is not what apply does, so the test makes them ready as source- and kustomize-controller would.
		markReady(t, c, "source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system")
		markReady(t, c, "kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system")
		r = plugin("", "apply", "-f", file, "--timeout=30s")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "objects ready after")
	})

	t.Run("drift is reported", func(t *testing.T) {
		d := &appsv1.Deployment{}
		require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "helm-controller"}, d))
		require.NoError(t, c.Delete(ctx, d))
		r := runPlugin(t, "", "status", "--kubeconfig", env.Kubeconfig, "-o", "json")
		require.Equal(t, 0, r.Code, r.Stderr)
		var report StatusReport
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &report))
		require.NotNil(t, report.Drift)
		assert.True(t, report.Drift.Checked, report.Drift.Reason)
		assert.Equal(t, []string{"Deployment/flux-system/helm-controller"}, report.Drift.Missing)
	})

	t.Run("removing a component prunes it; diff shows it first", func(t *testing.T) {
		// The variant without helm-controller is built here, next to the assertions on its pruning.
		smaller := writeFile(t, dir, "smaller.yaml", strings.Replace(applyInstance, ", helm-controller", "", 1))
		r := plugin("", "diff", "-f", smaller)
		assert.Equal(t, 1, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "ServiceAccount/flux-system/helm-controller")

		// A user's HelmRelease keeps the HelmRelease CRD alive.
		hr := &unstructured.Unstructured{}
		hr.SetAPIVersion("helm.toolkit.fluxcd.io/v2")
		hr.SetKind("HelmRelease")
		hr.SetNamespace("default")
		hr.SetName("podinfo")
		hr.Object["spec"] = map[string]any{"interval": "5m", "chart": map[string]any{"spec": map[string]any{"chart": "podinfo", "sourceRef": map[string]any{"kind": "HelmRepository", "name": "podinfo"}}}}
		require.NoError(t, c.Create(ctx, hr))

		r = plugin("", "apply", "-f", smaller, "--wait=false")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "serviceaccount/helm-controller deleted\n")
		assert.Contains(t, r.Stderr, "helmreleases.helm.toolkit.fluxcd.io")
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "helmreleases.helm.toolkit.fluxcd.io"}, crd))
		assert.Equal(t, "true", crd.GetLabels()["fluxcd.controlplane.io/orphaned"])
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(hr), hr), "the user's HelmRelease survives")
	})

	t.Run("diff honours KUBECTL_EXTERNAL_DIFF", func(t *testing.T) {
		out := filepath.Join(dir, "external.txt")
		script := writeFile(t, dir, "mydiff.sh", "#!/bin/sh\necho \"$1 $2\" > "+out+"\nexit 1\n")
		require.NoError(t, os.Chmod(script, 0o755))
		t.Setenv("KUBECTL_EXTERNAL_DIFF", script)
		r := plugin("", "diff", "-f", file)
		assert.Equal(t, 1, r.Code, r.Stderr)
		args, err := os.ReadFile(out)
		require.NoError(t, err)
		assert.Regexp(t, `/live /.*/merged\n`, string(args))
	})

	t.Run("diff errors exit 2", func(t *testing.T) {
		r := runPlugin(t, "", "diff", "-f", file, "--distribution", dist, "--kubeconfig", env.ExpiredKubeconfig(t))
		assert.Equal(t, 2, r.Code)
		assert.Contains(t, r.Stderr, "rejected the credentials")
	})

	t.Run("a user without permissions gets the verb, resource and namespace", func(t *testing.T) {
		r := runPlugin(t, "", "apply", "-f", file, "--distribution", dist, "--wait=false", "--kubeconfig", env.UserKubeconfig(t, "bob"))
		assert.Equal(t, 1, r.Code)
		assert.Regexp(t, `User "bob" cannot (get|list|patch) resource "\w+"`, r.Stderr)
	})

	t.Run("delete keeps CRDs and users' objects", func(t *testing.T) {
		before := resourceVersions(t, c)
		r := runPlugin(t, "", "delete", "--kubeconfig", env.Kubeconfig, "--dry-run")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "deployment.apps/source-controller deleted (client dry run)\n")
		assert.Equal(t, before, resourceVersions(t, c))

		r = runPlugin(t, "", "delete", "--kubeconfig", env.Kubeconfig, "--with-crds")
		assert.Equal(t, 2, r.Code, "--with-crds needs its confirmation")

		r = runPlugin(t, "", "delete", "--kubeconfig", env.Kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stdout, "deployment.apps/source-controller deleted\n")
		assert.Contains(t, r.Stderr, "kept")
		err := c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "source-controller"}, &appsv1.Deployment{})
		assert.True(t, apierrors.IsNotFound(err), "the controller is gone: %v", err)
		require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "flux-system"}, &corev1.Namespace{}), "the namespace stays")
		crd := &metav1.PartialObjectMetadata{}
		crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "gitrepositories.source.toolkit.fluxcd.io"}, crd), "CRDs stay")
	})
}

// markReady sets a Ready=True condition on a Flux object, as its controller would.
func markReady(t *testing.T, c client.Client, apiVersion, kind, name string) {
	t.Helper()
	obj := &unstructured.Unstructured{}
	obj.SetAPIVersion(apiVersion)
	obj.SetKind(kind)
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: name}, obj))
	now := time.Now().UTC().Format(time.RFC3339)
	obj.Object["status"] = map[string]any{
		"observedGeneration": obj.GetGeneration(),
		"conditions":         []any{map[string]any{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok", "lastTransitionTime": now, "observedGeneration": obj.GetGeneration()}},
	}
	require.NoError(t, c.Status().Update(context.Background(), obj))
}
