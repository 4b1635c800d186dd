package operator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blang/semver/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/test/operatorenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// storageInstance is a FluxInstance at version with the controllers whose CRDs hold
// testenv.CreateOldFluxObjects' kinds (wait off: no kubelet runs their pods here).
func storageInstance(t *testing.T, version string) *unstructured.Unstructured {
	t.Helper()
	objs, err := testenv.DecodeYAML([]byte(fmt.Sprintf(`apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "%s"
    registry: ghcr.io/fluxcd
  components: [source-controller, kustomize-controller, helm-controller, notification-controller, image-reflector-controller]
  wait: false
`, version)))
	require.NoError(t, err)
	return objs[0]
}

// storageInstanceFile writes storageInstance at version to a file, for the plugin's -f.
func storageInstanceFile(t *testing.T, version string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "flux-instance.yaml")
	data, err := storageInstance(t, version).MarshalJSON()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, data, 0o600))
	return file
}

// The Flux Operator alone cannot upgrade Flux 2.2.3 to 2.9.4 while users' objects are stored at
// versions 2.9.4 removes: the API server refuses its CRDs. `apply --mode=operator` migrates them
// first, with the user's permissions, and the operator's reconcile then succeeds (#12).
func TestOperatorApplyAcrossRemovedVersions(t *testing.T) {
	dist := testenv.DistributionDir(t)
	operatorenv.Require(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	op := operatorenv.Start(t, env, operatorenv.Options{Namespace: "flux-system", Distribution: dist})
	kc := "--kubeconfig=" + env.Kubeconfig
	waitCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	// 1. The operator installs Flux 2.2.3; teams create their objects at its versions.
	require.NoError(t, operatorenv.ApplyInstance(ctx, c, storageInstance(t, "2.2.3"), "kubectl"))
	_, err := op.WaitInstanceReady(waitCtx, op.InstanceKey())
	require.NoError(t, err)
	objs := testenv.CreateOldFluxObjects(t, c, "team-a", "team-b")

	// 2. Applied straight to 2.9.4 (as with kubectl), the operator fails on the CRDs and nothing
	// of the users' is lost.
	require.NoError(t, operatorenv.ApplyInstance(ctx, c, storageInstance(t, "2.9.4"), "kubectl"))
	_, cond, err := op.WaitInstanceReconciled(waitCtx, op.InstanceKey())
	require.NoError(t, err)
	t.Logf("the operator alone: Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
	assert.Equal(t, metav1.ConditionFalse, cond.Status)
	assert.Contains(t, cond.Message, "storedVersions")
	assertKept(t, env, objs, false)

	file := storageInstanceFile(t, "2.9.4")
	apply := func(args ...string) (int, string, string) {
		r := runPlugin(t, "", append([]string{"apply", "-f", file, "--mode=operator", "--distribution", dist, kc}, args...)...)
		return r.Code, r.Stdout, r.Stderr
	}

	// 3. A dry run shows the migration and changes nothing; the apply migrates, then the
	// operator's reconcile succeeds.
	snapshot := func() map[string]string {
		return testenv.ListResourceVersions(t, env.Client(t),
			schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"},
			schema.GroupVersionKind{Group: "helm.toolkit.fluxcd.io", Version: "v2beta1", Kind: "HelmReleaseList"},
			schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "KustomizationList"})
	}
	before := snapshot()
	code, _, stderr := apply("--dry-run=server")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "storage migration: would migrate (server dry run) the stored objects of")
	assert.Contains(t, stderr, "helmreleases.helm.toolkit.fluxcd.io: 2 objects from v2beta2 to v2")
	assert.Equal(t, before, snapshot(), "a dry run changes nothing")

	start := time.Now()
	code, stdout, stderr := apply("--timeout=2m")
	t.Logf("apply --mode=operator in %s:\n%s%s", time.Since(start).Round(10*time.Millisecond), stdout, stderr)
	require.Equal(t, 0, code, "stderr: %s\noperator log:\n%s", stderr, op.LogTail(40))
	assert.Contains(t, stderr, "storage migration: migrating the stored objects of")
	assert.Contains(t, stderr, "migrating 2 helmreleases.helm.toolkit.fluxcd.io to v2: 2/2")
	assert.Regexp(t, `FluxInstance flux-system/flux ready after \d+s: applied v2\.9\.4@sha256:[0-9a-f]{64}`, stderr)
	fi, err := op.WaitInstanceReady(waitCtx, op.InstanceKey())
	require.NoError(t, err)
	applied, _, _ := unstructured.NestedString(fi.Object, "status", "lastAppliedRevision")
	assert.True(t, strings.HasPrefix(applied, "v2.9.4@"), applied)
	assertKept(t, env, objs, true)
	assertStoredAtStorageVersion(t, env.Client(t))

	// 4. Nothing is left to migrate.
	code, stdout, stderr = apply("--wait=false")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "storage migration")
	assert.Equal(t, "fluxinstance.fluxcd.controlplane.io/flux unchanged\n", stdout)
}

// assertKept checks that every object exists with its UID, spec, labels, annotations and
// generation; migrated, also that its managedFields name no version but the one it is read at.
func assertKept(t *testing.T, env *testenv.Env, objs []*unstructured.Unstructured, migrated bool) {
	t.Helper()
	c := env.Client(t) // a fresh REST mapper: the removed versions are gone after the upgrade
	for _, o := range objs {
		ref := kube.Ref(o)
		// Before the migration, read at the version it was written at (the preferred one may be
		// an older version whose schema prunes fields); after it, at the one served.
		live, state, err := kube.Get(context.Background(), c, o)
		if migrated {
			live, state, err = kube.GetByID(context.Background(), c, kube.ID(o))
		}
		require.NoError(t, err, ref)
		require.Equal(t, kube.Found, state, ref)
		assert.Equal(t, o.GetUID(), live.GetUID(), ref)
		assert.Equal(t, o.GetGeneration(), live.GetGeneration(), ref)
		assert.Equal(t, o.Object["spec"], live.Object["spec"], ref)
		assert.Equal(t, o.GetLabels(), live.GetLabels(), ref)
		assert.Equal(t, o.GetAnnotations(), live.GetAnnotations(), ref)
		if !migrated {
			continue
		}
		for _, e := range live.GetManagedFields() {
			assert.Equal(t, live.GetAPIVersion(), e.APIVersion, "%s: managedFields of %s", ref, e.Manager)
		}
	}
}

// assertStoredAtStorageVersion checks that each Flux CRD records its storage version alone in
// status.storedVersions, and that its spec is the operator's alone.
func assertStoredAtStorageVersion(t *testing.T, c client.Client) {
	t.Helper()
	crds := &unstructured.UnstructuredList{}
	crds.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"})
	require.NoError(t, c.List(context.Background(), crds))
	checked := 0
	for _, crd := range crds.Items {
		if !strings.HasSuffix(crd.GetName(), ".toolkit.fluxcd.io") {
			continue
		}
		checked++
		var storage string
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			if vm, ok := v.(map[string]any); ok && vm["storage"] == true {
				storage, _ = vm["name"].(string)
			}
		}
		for _, mf := range crd.GetManagedFields() {
			if mf.Subresource == "" {
				assert.Equal(t, "flux-operator", mf.Manager, "%s: the migration's update left the plugin's fields on the operator's CRD", crd.GetName())
			}
		}
		stored, _, _ := unstructured.NestedStringSlice(crd.Object, "status", "storedVersions")
		assert.Equal(t, []string{storage}, stored, crd.GetName())
	}
	assert.NotZero(t, checked)
}

// The case a "2.x" FluxInstance meets in the field: the operator installed the newest Flux its
// distribution held (2.2.3 here); upgraded, the operator's distribution holds 2.9.4, which "2.x"
// admits, so it tries 2.9.4 on its own and the API server refuses the CRDs (the stored
// versions). `apply --mode=operator` of the unchanged FluxInstance repairs it: the version comes
// from the operator's status.lastAttemptedRevision, the plugin migrates for it, and the
// operator's next reconcile succeeds (#12).
func TestOperatorUpgradeOfARangeStuckOnStoredVersions(t *testing.T) {
	dist := testenv.DistributionDir(t)
	operatorenv.Require(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	waitCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	// 1. An operator whose distribution ends at 2.2.3 installs "2.x"; teams create their objects.
	op := operatorenv.Start(t, env, operatorenv.Options{Namespace: "flux-system", Distribution: distributionUpTo(t, dist, "v2.2.3")})
	require.NoError(t, operatorenv.ApplyInstance(ctx, c, storageInstance(t, "2.x"), "kubectl"))
	fi, err := op.WaitInstanceReady(waitCtx, op.InstanceKey())
	require.NoError(t, err)
	applied, _, _ := unstructured.NestedString(fi.Object, "status", "lastAppliedRevision")
	require.True(t, strings.HasPrefix(applied, "v2.2.3@"), applied)
	objs := testenv.CreateOldFluxObjects(t, c, "team-a", "team-b")

	// 2. The operator is upgraded (its distribution now holds 2.9.4): it tries 2.9.4 on its own
	// and fails on the CRDs, changing none of them and losing nothing.
	crdList := schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"}
	crds := testenv.ListResourceVersions(t, c, crdList)
	op.Stop()
	op = operatorenv.Start(t, env, operatorenv.Options{Namespace: "flux-system", Distribution: dist})
	var attempted, message string
	require.Eventually(t, func() bool {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(operatorenv.FluxInstanceGVK)
		if c.Get(ctx, op.InstanceKey(), live) != nil {
			return false
		}
		attempted, _, _ = unstructured.NestedString(live.Object, "status", "lastAttemptedRevision")
		cond, _ := operatorenv.Condition(live, "Ready")
		message = cond.Message
		return strings.HasPrefix(attempted, "v2.9.4@") && cond.Status == metav1.ConditionFalse
	}, 2*time.Minute, 500*time.Millisecond, "the upgraded operator tries 2.9.4: lastAttemptedRevision %q, %s\n%s", attempted, message, op.LogTail(20))
	t.Logf("the upgraded operator alone: %s", message)
	assert.Contains(t, message, "storedVersions")
	assert.Equal(t, crds, testenv.ListResourceVersions(t, c, crdList), "the refused upgrade changed no CRD")
	assertKept(t, env, objs, false)

	// 3. The unchanged FluxInstance applied with the plugin: migrated for 2.9.4, then Ready.
	file := storageInstanceFile(t, "2.x")
	start := time.Now()
	r := runPlugin(t, "", "apply", "-f", file, "--mode=operator", "--distribution", dist, "--timeout=2m", "--kubeconfig="+env.Kubeconfig)
	t.Logf("apply --mode=operator in %s:\n%s%s", time.Since(start).Round(10*time.Millisecond), r.Stdout, r.Stderr)
	require.Equal(t, 0, r.Code, "stderr: %s\noperator log:\n%s", r.Stderr, op.LogTail(40))
	assert.Contains(t, r.Stderr, `storage migration: the Flux Operator resolves "2.x" to v2.9.4 (its status.lastAttemptedRevision)`)
	assert.Contains(t, r.Stderr, "migrating 2 helmreleases.helm.toolkit.fluxcd.io to v2: 2/2")
	assert.Regexp(t, `FluxInstance flux-system/flux ready after \d+s: applied v2\.9\.4@sha256:[0-9a-f]{64}`, r.Stderr)
	assertKept(t, env, objs, true)
	assertStoredAtStorageVersion(t, env.Client(t))
}

// distributionUpTo is a copy of the distribution data dist holding its releases up to last
// alone, as the built-in distribution of an older Flux Operator would.
func distributionUpTo(t *testing.T, dist, last string) string {
	t.Helper()
	dir := t.TempDir()
	upTo := semver.MustParse(strings.TrimPrefix(last, "v"))
	for _, tree := range []string{"flux", "flux-images"} {
		entries, err := os.ReadDir(filepath.Join(dist, tree))
		require.NoError(t, err)
		for _, e := range entries {
			v, err := semver.ParseTolerant(e.Name())
			if !e.IsDir() || err != nil || v.GT(upTo) {
				continue
			}
			require.NoError(t, os.CopyFS(filepath.Join(dir, tree, e.Name()), os.DirFS(filepath.Join(dist, tree, e.Name()))))
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "flux-images", "VERSION"), []byte(last+"\n"), 0o644))
	return dir
}
