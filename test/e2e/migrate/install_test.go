package migrate_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// installKinds are the kinds of the objects `flux install` creates (all labelled part-of=flux).
var installKinds = []schema.GroupVersionKind{
	{Version: "v1", Kind: "Namespace"},
	{Version: "v1", Kind: "ResourceQuota"},
	{Version: "v1", Kind: "ServiceAccount"},
	{Version: "v1", Kind: "Service"},
	{Group: "apps", Version: "v1", Kind: "Deployment"},
	{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"},
}

// installed is a `flux install` in a test cluster and what the test remembers of it.
type installed struct {
	env  *testenv.Env
	c    client.Client
	dist string
	// objects are the metadata of every object labelled part-of=flux before the migration.
	objects map[objectKey]*metav1.PartialObjectMetadata
	// templates are the Deployments' pod templates before the migration.
	templates map[string]string
}

func fluxObjects(t testing.TB, c client.Client) map[objectKey]*metav1.PartialObjectMetadata {
	t.Helper()
	out := map[objectKey]*metav1.PartialObjectMetadata{}
	for _, gvk := range installKinds {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		require.NoError(t, c.List(context.Background(), &list, client.MatchingLabels{"app.kubernetes.io/part-of": "flux"}))
		for i := range list.Items {
			m := &list.Items[i]
			k := objectKey{id: object.ObjMetadata{Namespace: m.Namespace, Name: m.Name, GroupKind: gvk.GroupKind()}, version: gvk.Version}
			out[k] = m
		}
	}
	return out
}

func newInstalled(t *testing.T, env *testenv.Env) *installed {
	t.Helper()
	c := fastClient(t, env)
	in := &installed{env: env, c: c, dist: testenv.DistributionDir(t)}
	in.settle(t)
	in.objects, in.templates = fluxObjects(t, c), templates(t, c)
	require.NotEmpty(t, in.objects)
	return in
}

// assertInstalledBy checks who wrote every object before the migration: the manager, and for
// kubectl's client-side apply its last-applied annotation too.
func (in *installed) assertInstalledBy(t *testing.T, manager string, op metav1.ManagedFieldsOperationType) {
	t.Helper()
	for k, m := range in.objects {
		found := false
		for _, mf := range m.ManagedFields {
			found = found || (mf.Manager == manager && mf.Operation == op)
		}
		assert.True(t, found, "%s was written by %s (%s): %v", k, manager, op, m.ManagedFields)
		if manager == "kubectl-client-side-apply" {
			assert.Contains(t, m.Annotations, "kubectl.kubernetes.io/last-applied-configuration", k.String())
		}
	}
}

// settle waits until the harness has marked every Deployment Available (its status writes change
// resourceVersions): then an unchanged resourceVersion means nobody wrote the object.
func (in *installed) settle(t *testing.T) {
	t.Helper()
	last := in.resourceVersions(t)
	for range 40 {
		time.Sleep(700 * time.Millisecond)
		now := in.resourceVersions(t)
		if assert.ObjectsAreEqual(last, now) {
			return
		}
		last = now
	}
	t.Fatal("the Flux objects keep changing")
}

// run runs the plugin against the cluster (with the test's distribution, but for status).
func (in *installed) run(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	args = append(args, "--kubeconfig="+in.env.Kubeconfig)
	if args[0] != "status" {
		args = append(args, "--distribution", in.dist)
	}
	r := runPlugin(t, "", args...)
	require.Equal(t, 0, r.Code, "%v:\n%s", args, r.Stderr)
	return r.Stdout, r.Stderr
}

// resourceVersions of every object `flux install` created.
func (in *installed) resourceVersions(t *testing.T) map[objectKey]string {
	t.Helper()
	out := map[objectKey]string{}
	for k, m := range fluxObjects(t, in.c) {
		out[k] = m.ResourceVersion
	}
	return out
}

// assertUnchanged checks that every object survived with its UID and no pod template changed.
func (in *installed) assertUnchanged(t *testing.T) {
	t.Helper()
	now := fluxObjects(t, in.c)
	for k, was := range in.objects {
		m, ok := now[k]
		if assert.True(t, ok, "%s still exists", k) {
			assert.Equal(t, was.UID, m.UID, "%s was not re-created", k)
		}
	}
	s := &snapshot{uids: map[objectKey]types.UID{}, templates: in.templates}
	s.assertTemplates(t, in.c, nil)
}

// adopt is the journey of a `flux install` adoption: a dry run that prints the plan and changes
// nothing, the takeover (every object keeps its UID, no pod template changes, the plugin's field
// manager applies every object and no previous owner's manager or annotation is left), `status`,
// a second run with nothing to do, and `apply` of the generated FluxInstance, which changes
// nothing. It returns the path of the generated FluxInstance.
func (in *installed) adopt(t *testing.T, version string) (string, *fluxinstance.FluxInstance) {
	t.Helper()
	rv := in.resourceVersions(t)
	stdout, stderr := in.run(t, "migrate", "--dry-run")
	assert.Contains(t, stderr, "Flux "+version+" installed by `flux install` in namespace \"flux-system\"")
	assert.Contains(t, stderr, "Not expressible: nothing", "the plan reproduces the running controllers")
	assert.NotContains(t, stderr, "kept as they are", "the rendering covers every object `flux install` made")
	assert.Contains(t, stdout, "kind: FluxInstance")
	assert.Equal(t, rv, in.resourceVersions(t), "--dry-run changed nothing")

	file := filepath.Join(t.TempDir(), "flux-instance.yaml")
	start := time.Now()
	_, stderr = in.run(t, "migrate", "--yes", "--output-file", file)
	t.Logf("migrate: %s\n%s", time.Since(start).Round(10*time.Millisecond), stderr)
	assert.Contains(t, stderr, "Verified: kustomize-controller's garbage collection would delete none")
	assert.Contains(t, stderr, "Next step: keep the FluxInstance")
	in.assertUnchanged(t)
	for k := range fluxObjects(t, in.c) {
		assertAdopted(t, in.c, k)
	}
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	inst, err := fluxinstance.Decode(data, file)
	require.NoError(t, err)
	assert.Equal(t, version, inst.Spec.Distribution.Version)

	stdout, _ = in.run(t, "status", "-n", "flux-system")
	assert.Regexp(t, `Managed By: +kubectl-fluxinstance\n`, stdout)
	_, stderr = in.run(t, "migrate", "--yes", "--output-file", file)
	assert.Contains(t, stderr, "Nothing to do")

	rv = in.resourceVersions(t)
	_, stderr = in.run(t, "apply", "-f", file, "--wait=false")
	t.Logf("apply of the generated FluxInstance:\n%s", stderr)
	assert.Equal(t, rv, in.resourceVersions(t), "apply of the generated FluxInstance writes nothing")
	in.assertUnchanged(t)
	return file, inst
}

// assertAdopted: applied by the plugin alone, no `flux` or kubectl manager, no last-applied
// annotation, and kustomize-controller would neither apply nor prune it.
func assertAdopted(t *testing.T, c client.Client, k objectKey) {
	t.Helper()
	m, err := getMeta(c, k)
	require.NoError(t, err, k.String())
	assert.NotContains(t, m.GetAnnotations(), "kubectl.kubernetes.io/last-applied-configuration", k.String())
	assert.Equal(t, "Ignore", m.GetAnnotations()[annotationSSA], k.String())
	assert.Equal(t, "Disabled", m.GetAnnotations()[annotationPrune], k.String())
	applied := false
	for _, mf := range m.GetManagedFields() {
		if mf.Subresource != "" {
			continue
		}
		assert.NotContains(t, []string{"flux", "kubectl", "kubectl-client-side-apply"}, mf.Manager, "%s: fields of %s moved to the plugin", k, mf.Manager)
		applied = applied || (mf.Manager == pluginFieldManager && mf.Operation == metav1.ManagedFieldsOperationApply)
	}
	assert.True(t, applied, "%s is applied by %s", k, pluginFieldManager)
}

// TestMigrateFluxInstall: the real `flux install` of the Flux CLI (server-side, the `flux` field
// manager) is adopted, then given back with --rollback, after which `flux install` runs again
// without a conflict and changes no pod template.
func TestMigrateFluxInstall(t *testing.T) {
	t.Parallel()
	fluxenv.BinDir(t, true)
	env := testenv.Start(t)
	start := time.Now()
	o := fluxenv.Options{ComponentsExtra: []string{"image-reflector-controller", "image-automation-controller"}}
	fluxenv.InstallWithCLI(t, env, o, false)
	t.Logf("flux install: %s", time.Since(start).Round(10*time.Millisecond))
	in := newInstalled(t, env)
	in.assertInstalledBy(t, "flux", metav1.ManagedFieldsOperationApply)
	_, inst := in.adopt(t, fluxenv.FluxVersion)
	assert.Nil(t, inst.Spec.Sync, "no sync objects: no spec.sync")
	assert.Contains(t, inst.Spec.Components, "image-automation-controller")

	_, stderr := in.run(t, "migrate", "--rollback", "--yes", "-n", "flux-system")
	assert.Contains(t, stderr, "Restored `flux install` ownership")
	for k, m := range fluxObjects(t, in.c) {
		assert.NotContains(t, m.GetAnnotations(), annotationSSA, k.String())
		for _, mf := range m.GetManagedFields() {
			assert.NotEqual(t, pluginFieldManager, mf.Manager, "%s: the plugin's fields went back to flux", k)
		}
	}
	fluxenv.InstallWithCLI(t, env, o, false)
	in.assertUnchanged(t)
	_, stderr = in.run(t, "migrate", "--dry-run")
	assert.Contains(t, stderr, "installed by `flux install`", "after the rollback it is a `flux install` again")
}

// TestMigrateFluxInstallKubectl: `flux install --export | kubectl apply -f -` (client-side: the
// kubectl-client-side-apply manager and the last-applied annotation), with a sync GitRepository
// and Kustomization written by hand, is adopted with spec.sync.
func TestMigrateFluxInstallKubectl(t *testing.T) {
	t.Parallel()
	fluxenv.BinDir(t, true)
	env := testenv.Start(t)
	fluxenv.InstallWithCLI(t, env, fluxenv.Options{}, true)
	sync := filepath.Join(t.TempDir(), "sync.yaml")
	require.NoError(t, os.WriteFile(sync, []byte(handWrittenSync), 0o600))
	out, err := env.Kubectl(context.Background(), nil, "apply", "-f", sync)
	require.NoError(t, err, string(out))
	in := newInstalled(t, env)
	in.assertInstalledBy(t, "kubectl-client-side-apply", metav1.ManagedFieldsOperationUpdate)
	_, inst := in.adopt(t, fluxenv.FluxVersion)
	require.NotNil(t, inst.Spec.Sync)
	assert.Equal(t, "https://git.example.com/fleet.git", inst.Spec.Sync.URL)
	assert.Equal(t, "refs/heads/prod", inst.Spec.Sync.Ref)
	assert.Equal(t, "./clusters/prod", inst.Spec.Sync.Path)
}

const handWrittenSync = `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 1m
  url: https://git.example.com/fleet.git
  ref:
    branch: prod
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 10m
  path: ./clusters/prod
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
`

// TestMigrateFluxInstallUpgrade: a `flux install` of 2.8.8 (the CLI's generator, applied as the
// CLI applies) is adopted, then upgraded to 2.9.4 with `apply` of the generated FluxInstance
// (its patches dropped, as the plan says): nothing is re-created and every controller runs 2.9.4.
func TestMigrateFluxInstallUpgrade(t *testing.T) {
	t.Parallel()
	env := testenv.Start(t)
	fluxenv.InstallGenerated(t, env, fluxenv.Options{Version: "v2.8.8"})
	in := newInstalled(t, env)
	file, _ := in.adopt(t, "v2.8.8")
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	upgraded := filepath.Join(t.TempDir(), "upgraded.yaml")
	require.NoError(t, os.WriteFile(upgraded, []byte(upgradedInstance(t, string(data), fluxenv.FluxVersion, false)), 0o600))
	_, stderr := in.run(t, "apply", "-f", upgraded, "--wait=false")
	t.Logf("apply at %s:\n%s", fluxenv.FluxVersion, stderr)
	now := fluxObjects(t, in.c)
	for k, was := range in.objects {
		if m, ok := now[k]; assert.True(t, ok, "%s still exists", k) {
			assert.Equal(t, was.UID, m.UID, "%s was not re-created", k)
		}
	}
	assertControllersAt(t, in.c, &scenario{dist: in.dist, f: &fluxenv.Flux{Options: fluxenv.Options{}.WithDefaults()}}, fluxenv.FluxVersion)
}

// TestMigrateFluxInstallKilledAtEveryStep interrupts the adoption of a real `flux install` after
// its Nth API call and re-runs it without faults: it always converges, no DELETE reaches the API
// server, every object keeps its UID and no pod template changes. Between kill points, --rollback
// gives the installation back to the `flux` field manager.
func TestMigrateFluxInstallKilledAtEveryStep(t *testing.T) {
	t.Parallel()
	fluxenv.BinDir(t, true)
	env := testenv.Start(t)
	fluxenv.InstallWithCLI(t, env, fluxenv.Options{}, false)
	in := newInstalled(t, env)
	proxy, proxyConfig := faultproxy.Start(t, env)
	migrateArgs := []string{"migrate", "--kubeconfig=" + proxyConfig, "--distribution", in.dist, "--yes", "--output-file", filepath.Join(t.TempDir(), "fi.yaml")}
	rollback := func(t *testing.T) {
		t.Helper()
		in.run(t, "migrate", "--rollback", "--yes", "-n", "flux-system")
		in.assertUnchanged(t)
	}

	// About 2.4 s per point (kill, re-run, rollback): 28 points, 8 of them inside the takeover.
	killAtEveryStep(t, in, proxy, migrateArgs, 28, rollback, func(t *testing.T, n int, stderr string) {
		assert.Regexp(t, "Verified: kustomize-controller's garbage collection would delete none|Nothing to do", stderr)
		assert.Empty(t, proxy.Deleted(), "killed after call %d: no DELETE reached the API server", n)
		for k := range in.objects {
			assertAdopted(t, in.c, k)
		}
	})
}

// killAtEveryStep runs a complete migrate through proxy to count its API calls, rolls it back,
// then for each kill point (faultproxy.KillPoints(total, budget)) kills a migrate after that
// call, re-runs it without faults, which must succeed, checks that every object kept its UID and
// pod template, and calls check with the kill point and the re-run's stderr; rollback runs
// between points.
func killAtEveryStep(t *testing.T, in *installed, proxy *faultproxy.Proxy, migrateArgs []string, budget int, rollback func(*testing.T), check func(t *testing.T, n int, stderr string)) {
	t.Helper()
	proxy.Reset(-1)
	r := runPlugin(t, "", migrateArgs...)
	require.Equal(t, 0, r.Code, r.Stderr)
	total := proxy.Count()
	require.Greater(t, total, 20)
	rollback(t)

	points := faultproxy.KillPoints(total, budget)
	failed := 0
	start := time.Now()
	for i, n := range points {
		proxy.Reset(n)
		if r := runPlugin(t, "", migrateArgs...); r.Code != 0 {
			failed++
		}
		proxy.Reset(-1)
		faultproxy.ClearKilledLock(t, in.c, "flux-system")
		r := runPlugin(t, "", migrateArgs...)
		require.Equal(t, 0, r.Code, "killed after call %d: the re-run failed:\n%s", n, r.Stderr)
		in.assertUnchanged(t)
		check(t, n, r.Stderr)
		if t.Failed() {
			t.Fatalf("stopping at kill point %d", n)
		}
		if i < len(points)-1 {
			rollback(t)
		}
	}
	t.Logf("a complete migrate makes %d API calls; %d kill points (%v) in %s; %d of the killed runs failed",
		total, len(points), points, time.Since(start).Round(10*time.Millisecond), failed)
	assert.Greater(t, failed, len(points)/2, "the kills do interrupt migrate")
}
