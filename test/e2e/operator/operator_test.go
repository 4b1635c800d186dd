// Package operator_test proves the hand-off to the real Flux Operator (v0.59.0, run out of cluster
// by test/operatorenv) end to end: an instance applied directly by the plugin is handed to the
// operator with nothing recreated or restarted, the operator upgrades it to a newer minor when
// the plugin applies the FluxInstance in operator mode, and `status` and `diff` stay right.
package operator_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/plugin"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/operatorenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/pluginrun"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// runPlugin runs the plugin in-process as main does, args as typed after `kubectl fluxinstance`.
var runPlugin = pluginrun.With(plugin.Run, plugin.BuildInfo{Version: "v0.0.0-e2e-operator"}).Run

// instance is the FluxInstance of the journey (wait is off: no kubelet runs the controllers' pods
// here, and the operator would wait for them forever) at version, with extra components: the
// steps build these variants of the fixture here, next to what they assert.
func instance(t *testing.T, version string, extra ...string) string {
	t.Helper()
	obj := fixtures.Object(t, "tests/sync-git-no-wait-2.7.x")
	require.NoError(t, unstructured.SetNestedField(obj.Object, version, "spec", "distribution", "version"))
	components, _, _ := unstructured.NestedStringSlice(obj.Object, "spec", "components")
	require.NoError(t, unstructured.SetNestedStringSlice(obj.Object, append(components, extra...), "spec", "components"))
	data, err := yaml.Marshal(obj.Object)
	require.NoError(t, err)
	return string(data)
}

// facts are what a hand-off must not change about an object.
type facts struct {
	uid        string
	generation int64
}

// liveFacts reads the objects of the plugin's or the operator's inventory.
func liveFacts(t *testing.T, c client.Client, ids []operatorenv.InventoryEntry) map[string]facts {
	t.Helper()
	out := map[string]facts{}
	for _, e := range ids {
		ref, err := operatorenv.ParseInventoryEntry(e)
		require.NoError(t, err)
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(ref.GVK)
		err = c.Get(context.Background(), client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, obj)
		if apierrors.IsNotFound(err) {
			continue
		}
		require.NoError(t, err, e.ID)
		out[e.ID] = facts{uid: string(obj.UID), generation: obj.Generation}
	}
	return out
}

// pluginInventory reads the plugin's inventory record.
func pluginInventory(t *testing.T, c client.Client) []operatorenv.InventoryEntry {
	t.Helper()
	record, err := operatorenv.PluginInventory(context.Background(), c, "flux-system")
	require.NoError(t, err)
	return record.Entries
}

func TestDirectApplyHandoffOperatorUpgrade(t *testing.T) {
	dist := testenv.DistributionDir(t)
	operatorenv.Require(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	dir := t.TempDir()
	v27 := filepath.Join(dir, "flux-2.7.yaml")
	v28 := filepath.Join(dir, "flux-2.8.yaml")
	require.NoError(t, os.WriteFile(v27, []byte(instance(t, "2.7.x")), 0o600))
	require.NoError(t, os.WriteFile(v28, []byte(instance(t, "2.8.x")), 0o600))
	kc := "--kubeconfig=" + env.Kubeconfig
	pluginRun := func(args ...string) pluginrun.Result { return runPlugin(t, "", append(args, kc)...) }

	// 1. The plugin applies Flux directly: there is no operator yet. An image component, removed
	// again without pruning, stays in the plugin's inventory: the operator must garbage-collect it
	// after the hand-off, which only the inventory handed over tells it to do.
	withImages := filepath.Join(dir, "flux-2.7-images.yaml")
	require.NoError(t, os.WriteFile(withImages, []byte(instance(t, "2.7.x", "image-reflector-controller")), 0o600))
	r := pluginRun("apply", "-f", withImages, "--distribution", dist, "--wait=false")
	require.Equal(t, 0, r.Code, r.Stderr)

	// 2. The team installs the Flux Operator; auto mode keeps applying directly (here without
	// pruning the image component) and points to handoff.
	op := operatorenv.Start(t, env, operatorenv.Options{Namespace: "flux-system", Distribution: dist})
	reportCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := op.WaitReport(reportCtx)
	require.NoError(t, err)
	r = pluginRun("apply", "-f", v27, "--distribution", dist, "--wait=false", "--prune=false")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "kubectl fluxinstance handoff -n flux-system")
	ours := pluginInventory(t, c)
	reflector := "flux-system_image-reflector-controller_apps_Deployment"
	require.Contains(t, ids(ours), reflector)
	before := liveFacts(t, c, ours)
	require.NotEmpty(t, before)
	r = pluginRun("apply", "-f", v27, "--distribution", dist, "--mode=operator")
	assert.Equal(t, 1, r.Code, "operator mode without a hand-off")

	// 3. The hand-off, as re-run after a first attempt was interrupted right after it created the
	// FluxInstance with reconciliation disabled (the operator must not have touched anything).
	interrupted, err := testenv.DecodeYAML([]byte(instance(t, "2.7.x")))
	require.NoError(t, err)
	interrupted[0].SetAnnotations(map[string]string{"fluxcd.controlplane.io/reconcile": "disabled"})
	require.NoError(t, operatorenv.ApplyInstance(ctx, c, interrupted[0], "kubectl-fluxinstance"))
	time.Sleep(2 * time.Second) // time for the operator to (not) act on it
	assert.Equal(t, before, liveFacts(t, c, ours), "a disabled FluxInstance changes nothing")
	start := time.Now()
	r = pluginRun("handoff", "-n", "flux-system", "--distribution", dist, "--timeout=2m")
	require.Equal(t, 0, r.Code, "handoff failed:\nstdout: %s\nstderr: %s\noperator log:\n%s", r.Stdout, r.Stderr, op.LogTail(40))
	t.Logf("handoff in %s:\n%s%s", time.Since(start).Round(10*time.Millisecond), r.Stderr, r.Stdout)
	assert.Contains(t, r.Stderr, "Resuming an interrupted hand-off: the FluxInstance exists with reconciliation disabled\n")
	assert.Regexp(t, `its first reconcile may create 0 and delete [1-9]\d*\n`, r.Stderr)
	assert.Contains(t, r.Stderr, "  delete: Deployment/flux-system/image-reflector-controller\n")
	assert.Contains(t, r.Stdout, "handed off: the Flux Operator applied v2.7.5@sha256:")
	assert.Regexp(t, `\(created 0, deleted [1-9]\d*, none recreated or restarted, as planned\)`, r.Stdout)

	fi := &unstructured.Unstructured{}
	fi.SetGroupVersionKind(operatorenv.FluxInstanceGVK)
	require.NoError(t, c.Get(ctx, op.InstanceKey(), fi))
	theirs, err := operatorenv.InventoryEntries(fi)
	require.NoError(t, err)
	assert.NotContains(t, ids(theirs), reflector)
	assert.Subset(t, ids(ours), ids(theirs), "the operator's inventory is the plugin's, less what the plan deletes")
	err = c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "image-reflector-controller"}, &appsv1.Deployment{})
	assert.True(t, apierrors.IsNotFound(err), "the operator garbage-collected the planned deletion: %v", err)
	kept := map[string]facts{}
	for _, id := range ids(theirs) {
		kept[id] = before[id]
	}
	assert.Equal(t, kept, liveFacts(t, c, theirs), "no object recreated, no Deployment rolled")
	before = kept
	err = c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: operatorenv.PluginInventoryName}, &corev1.ConfigMap{})
	assert.True(t, apierrors.IsNotFound(err), "the plugin's record is gone: %v", err)
	objs, err := operatorenv.Inventory(ctx, c, fi)
	require.NoError(t, err)
	for _, obj := range objs {
		for _, mf := range obj.GetManagedFields() {
			if mf.Subresource == "" {
				assert.NotEqual(t, "kubectl-fluxinstance", mf.Manager, "%s/%s still has fields of the plugin", obj.GetKind(), obj.GetName())
			}
		}
		assert.Equal(t, "flux-operator", obj.GetLabels()["app.kubernetes.io/managed-by"], obj.GetKind()+"/"+obj.GetName())
	}

	// A second handoff has nothing to do.
	r = pluginRun("handoff", "-n", "flux-system")
	assert.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "Nothing to do: FluxInstance flux-system/flux is already managed by the Flux Operator (its inventory is in FluxInstance/flux-system/flux): there is nothing to hand off\n", r.Stderr)

	// 4. status and diff after the hand-off.
	r = pluginRun("status", "-n", "flux-system")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Regexp(t, `Flux Version: +v2\.7\.5\n`, r.Stdout)
	assert.Regexp(t, `Managed By: +flux-operator\n`, r.Stdout)
	assert.Regexp(t, `Flux Operator: +running \(FluxReport flux-system/flux updated \d+s ago\)`, r.Stdout)
	assert.Regexp(t, `FluxInstance: +flux-system/flux, reconciled by the operator: Ready=True`, r.Stdout)
	assert.Regexp(t, `Drift: +none\n`, r.Stdout)
	r = pluginRun("diff", "-f", v27, "--distribution", dist)
	assert.Equal(t, 0, r.Code, "no difference after the hand-off:\n%s%s", r.Stdout, r.Stderr)
	r = pluginRun("apply", "-f", v27, "--distribution", dist, "--mode=direct", "--wait=false")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "would start a fight")
	r = pluginRun("delete", "-n", "flux-system")
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "to uninstall, delete the FluxInstance and let the operator remove what it applied: kubectl delete fluxinstance -n flux-system flux")

	// 5. Upgrade to the next minor through the operator.
	r = pluginRun("diff", "-f", v28, "--distribution", dist)
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "ghcr.io/fluxcd/source-controller:v1.8")
	// The plugin's own distribution need not have the version: here it knows only 2.7.5, and
	// the operator resolves 2.8.x from its distribution.
	only275 := distributionWith(t, dist, "v2.7.5")
	start = time.Now()
	r = pluginRun("apply", "-f", v28, "--distribution", only275, "--timeout=2m")
	t.Logf("upgrade through the operator: %s\n%s", time.Since(start).Round(10*time.Millisecond), r.Stderr)
	require.Equal(t, 0, r.Code, "upgrade failed:\nstdout: %s\nstderr: %s\noperator log:\n%s", r.Stdout, r.Stderr, op.LogTail(40))
	assert.Equal(t, "fluxinstance.fluxcd.controlplane.io/flux configured\n", r.Stdout)
	assert.Contains(t, r.Stderr, `Note: `+v28+`: spec.distribution.version: no Flux version in `)
	assert.Contains(t, r.Stderr, `the Flux Operator resolves it from its own distribution`)
	assert.Regexp(t, `FluxInstance flux-system/flux ready after \d+s: applied v2\.8\.\d+@sha256:[0-9a-f]{64}, \d+ objects in its inventory`, r.Stderr)

	require.NoError(t, c.Get(ctx, op.InstanceKey(), fi))
	upgraded, err := operatorenv.InventoryEntries(fi)
	require.NoError(t, err)
	after := liveFacts(t, c, theirs)
	stays := map[string]bool{}
	for _, id := range ids(upgraded) {
		stays[id] = true
	}
	for id, was := range before {
		if !stays[id] {
			continue // the new version dropped it: the operator's garbage collection
		}
		now, ok := after[id]
		if assert.True(t, ok, "%s was deleted by the upgrade", id) {
			assert.Equal(t, was.uid, now.uid, "%s was recreated", id)
		}
	}

	r = pluginRun("status", "-n", "flux-system", "-o", "json")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, `"version": "v2.8.`)
	assert.Contains(t, r.Stdout, `"managedBy": "flux-operator"`)
	r = pluginRun("status", "-n", "flux-system")
	assert.Regexp(t, `Drift: +none\n`, r.Stdout)
	r = pluginRun("diff", "-f", v28, "--distribution", dist)
	assert.Equal(t, 0, r.Code, "no difference after the upgrade:\n%s%s", r.Stdout, r.Stderr)

	// A version nobody has: the plugin hands it to the operator, whose failure ends the wait at
	// once with its message; direct mode refuses before connecting to anything.
	v299 := filepath.Join(dir, "flux-2.99.yaml")
	require.NoError(t, os.WriteFile(v299, []byte(instance(t, "2.99.x")), 0o600))
	start = time.Now()
	r = pluginRun("apply", "-f", v299, "--distribution", dist, "--timeout=2m")
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Less(t, time.Since(start), time.Minute, "a failed reconcile ends the wait")
	assert.Contains(t, r.Stderr, "error: the Flux Operator failed to reconcile FluxInstance/flux-system/flux: Ready=False")
	t.Logf("a version the operator lacks:\n%s", r.Stderr)
}

// distributionWith copies the given versions of the distribution data into a new directory.
func distributionWith(t *testing.T, dist string, versions ...string) string {
	t.Helper()
	out := t.TempDir()
	for _, v := range versions {
		for _, sub := range []string{"flux", "flux-images"} {
			from, to := filepath.Join(dist, sub, v), filepath.Join(out, sub, v)
			require.NoError(t, os.MkdirAll(to, 0o755))
			entries, err := os.ReadDir(from)
			require.NoError(t, err)
			for _, e := range entries {
				data, err := os.ReadFile(filepath.Join(from, e.Name()))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(to, e.Name()), data, 0o644))
			}
		}
	}
	return out
}

func ids(entries []operatorenv.InventoryEntry) []string {
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.ID)
	}
	return out
}
