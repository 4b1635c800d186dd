package migrate_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/helmenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

const (
	helmReleaseName = "flux2"
	// managingHelmRelease is the Flux HelmRelease that runs the chart's release (helm-controller's
	// labels on every object come from helmenv's post-renderer, its stand-in).
	managingHelmRelease = "flux"
)

// helmInstalled installs Flux with the real Helm CLI from the community chart, values changed as a
// pipeline would, run by a Flux HelmRelease that is not suspended (helm-controller's labels and
// field manager, as it writes them).
func helmInstalled(t *testing.T) (*installed, *helmenv.Helm) {
	t.Helper()
	h := helmenv.Require(t)
	env := testenv.Start(t)
	h.Install(t, env, helmenv.Release{Name: helmReleaseName, Namespace: "flux-system",
		Values: map[string]any{"logLevel": "debug", "imageAutomationController": map[string]any{"create": false}},
		Labels: map[string]string{"helm.toolkit.fluxcd.io/name": managingHelmRelease, "helm.toolkit.fluxcd.io/namespace": "flux-system"},
	})
	helmenv.AsHelmController(t, fastClient(t, env), installKinds)
	in := newInstalled(t, env)
	in.assertInstalledBy(t, "helm-controller", metav1.ManagedFieldsOperationUpdate)
	hr := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": managingHelmRelease, "namespace": "flux-system"},
		"spec": map[string]any{"interval": "1h", "releaseName": helmReleaseName,
			"chart": map[string]any{"spec": map[string]any{"chart": helmenv.ChartName, "version": helmenv.ChartVersion,
				"sourceRef": map[string]any{"kind": "HelmRepository", "name": "fluxcd-community"}}}},
	}}
	hr.SetGroupVersionKind(installation.FluxHelmReleaseGVK)
	require.NoError(t, in.c.Create(context.Background(), hr))
	return in, h
}

func helmReleaseSuspended(t *testing.T, c client.Client) bool {
	t.Helper()
	hr := &unstructured.Unstructured{}
	hr.SetGroupVersionKind(installation.FluxHelmReleaseGVK)
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: managingHelmRelease}, hr))
	s, _, _ := unstructured.NestedBool(hr.Object, "spec", "suspend")
	return s
}

// keptNote lists the objects the plan keeps outside the FluxInstance ("kept as they are ...: A, B").
var keptNote = regexp.MustCompile(`kept as they are[^:]*: ([^\n]+)`)

// TestMigrateHelm: a Flux installed by the real Helm CLI from the community chart (2.18.3, Flux
// 2.8.5) and run by a Flux HelmRelease is adopted: the dry run changes nothing; the takeover
// suspends the HelmRelease first, deletes and restarts nothing, and sets the release records aside
// last, after which the real `helm uninstall` finds no release and deletes nothing; the generated
// FluxInstance applies without a write, and an apply at 2.9.4 upgrades it, every object keeping
// its UID.
func TestMigrateHelm(t *testing.T) {
	t.Parallel()
	in, h := helmInstalled(t)
	rv := in.resourceVersions(t)
	generated, stderr := in.run(t, "migrate", "--dry-run")
	assert.Contains(t, stderr, "Flux v"+helmenv.AppVersion+" installed by `Helm` in namespace \"flux-system\"")
	assert.Contains(t, stderr, "Helm release: release flux2 in flux-system, chart flux2-"+helmenv.ChartVersion+", revision 1, deployed; managed by HelmRelease flux-system/flux, reconciled by helm-controller")
	assert.Contains(t, stderr, "HelmRelease flux-system/flux, whose helm-controller runs the release, is suspended")
	assert.Contains(t, stderr, "Not expressible: nothing", "the plan reproduces the chart's controllers")
	assert.Contains(t, stderr, "Then, on your side (printed again once verified): keep the FluxInstance", "the plan says what to remove from the pipeline")
	assert.Contains(t, stderr, "Terraform's helm_release for it (`terraform state rm` it first")
	assert.Equal(t, rv, in.resourceVersions(t), "--dry-run changed nothing")
	assert.False(t, helmReleaseSuspended(t, in.c))
	assertHelmPermissionsListed(t, in)
	assertApplyRefused(t, in, generated)
	kept := keptNote.FindStringSubmatch(stderr)
	require.Len(t, kept, 2, "the chart's RBAC is named otherwise than the rendering's:\n%s", stderr)

	file := filepath.Join(t.TempDir(), "flux-instance.yaml")
	start := time.Now()
	_, stderr = in.run(t, "migrate", "--yes", "--output-file", file)
	t.Logf("migrate: %s\n%s", time.Since(start).Round(10*time.Millisecond), stderr)
	assert.Contains(t, stderr, "set aside 1 Helm release records (Secret/flux-system/sh.helm.release.v1.flux2.v1)")
	assert.Contains(t, stderr, "Remove the release flux2 (chart flux2-"+helmenv.ChartVersion+") from what installs it")
	assert.True(t, helmReleaseSuspended(t, in.c), "the HelmRelease is suspended")
	in.assertUnchanged(t)
	adopted := 0
	for k, m := range fluxObjects(t, in.c) {
		if m.GetAnnotations()[annotationSSA] != "Ignore" {
			assert.Contains(t, kept[1], k.id.GroupKind.Kind+"/"+k.id.Name, "%s is neither adopted nor listed as kept", k)
			continue
		}
		assertAdopted(t, in.c, k)
		assert.NotContains(t, m.GetAnnotations(), "meta.helm.sh/release-name", k.String())
		assert.NotContains(t, m.GetLabels(), "helm.toolkit.fluxcd.io/name", k.String())
		adopted++
	}
	assert.Greater(t, adopted, 25)

	out, err := h.Run(context.Background(), in.env, nil, "uninstall", helmReleaseName, "--namespace", "flux-system")
	require.Error(t, err, "%s", out)
	assert.Contains(t, string(out), "release: not found")
	in.assertUnchanged(t)

	stdout, _ := in.run(t, "status", "-n", "flux-system")
	assert.Regexp(t, `Managed By: +kubectl-fluxinstance\n`, stdout)
	_, stderr = in.run(t, "migrate", "--yes", "--output-file", file)
	assert.Contains(t, stderr, "Nothing to do")
	rv = in.resourceVersions(t)
	in.run(t, "apply", "-f", file, "--wait=false")
	assert.Equal(t, rv, in.resourceVersions(t), "apply of the generated FluxInstance writes nothing")

	data, err := os.ReadFile(file)
	require.NoError(t, err)
	upgraded := filepath.Join(t.TempDir(), "upgraded.yaml")
	require.NoError(t, os.WriteFile(upgraded, []byte(upgradedInstance(t, string(data), fluxenv.FluxVersion, false)), 0o600))
	_, stderr = in.run(t, "apply", "-f", upgraded, "--wait=false")
	t.Logf("apply at %s:\n%s", fluxenv.FluxVersion, stderr)
	now := fluxObjects(t, in.c)
	for k, was := range in.objects {
		if m, ok := now[k]; assert.True(t, ok, "%s still exists", k) {
			assert.Equal(t, was.UID, m.UID, "%s was not re-created", k)
		}
	}
	components := fluxenv.Options{Components: []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller", "image-reflector-controller"}}.WithDefaults()
	assertControllersAt(t, in.c, &scenario{dist: in.dist, f: &fluxenv.Flux{Options: components}}, fluxenv.FluxVersion)
}

// TestMigrateHelmKilledAtEveryStep interrupts the adoption of a Helm installation after its Nth
// API call and re-runs it without faults: it always converges, the only DELETEs that reach the
// API server are of the release records once copied aside, every object keeps its UID and no pod
// template changes. Between kill points, --rollback gives the release back to Helm (records,
// annotations, the HelmRelease resumed).
func TestMigrateHelmKilledAtEveryStep(t *testing.T) {
	t.Parallel()
	in, _ := helmInstalled(t)
	proxy, proxyConfig := faultproxy.Start(t, in.env)
	migrateArgs := []string{"migrate", "--kubeconfig=" + proxyConfig, "--distribution", in.dist, "--yes", "--output-file", filepath.Join(t.TempDir(), "fi.yaml")}
	rollback := func(t *testing.T) {
		t.Helper()
		in.run(t, "migrate", "--rollback", "--yes", "-n", "flux-system")
		in.assertUnchanged(t)
		assert.False(t, helmReleaseSuspended(t, in.c), "the rollback resumes the HelmRelease")
		for k, m := range fluxObjects(t, in.c) {
			managers := map[string]bool{}
			for _, mf := range m.ManagedFields {
				managers[mf.Manager] = true
			}
			assert.True(t, managers["helm-controller"] && !managers[pluginFieldManager], "%s: the fields are helm-controller's again: %v", k, managers)
		}
	}
	// About 3.5 s per point (kill, re-run, rollback): the first and last ten calls (the last ones
	// set the records aside and complete the record) and 2 inside the takeover, whose kill
	// points TestMigrateFluxInstallKilledAtEveryStep covers with the same code path.
	killAtEveryStep(t, in, proxy, migrateArgs, 22, rollback, func(t *testing.T, n int, stderr string) {
		assert.Regexp(t, "set aside 1 Helm release records|Nothing to do", stderr)
		assert.NotContains(t, stderr, "(chart -)", "a resumed migration names the release without a chart it does not know")
		for _, d := range proxy.Deleted() {
			assert.Contains(t, d, "/secrets/", "killed after call %d: only release records are deleted", n)
			assert.Contains(t, d, "sh.helm.release.v1.flux2.v1", "killed after call %d: only release records are deleted", n)
		}
		assert.True(t, helmReleaseSuspended(t, in.c))
	})
}

// assertHelmPermissionsListed: --check-permissions of a user who may only read the CRDs lists, for
// a Helm installation, what setting the records aside and suspending the HelmRelease need.
func assertHelmPermissionsListed(t *testing.T, in *installed) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "crd-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "dave-crd-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "crd-reader"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "dave", APIGroup: "rbac.authorization.k8s.io"}}}
	require.NoError(t, in.c.Create(ctx, role))
	require.NoError(t, in.c.Create(ctx, binding))
	r := runPlugin(t, "", "migrate", "--check-permissions", "-n", "flux-system", "--kubeconfig", in.env.UserKubeconfig(t, "dave"))
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "delete secrets in namespace flux-system (the Helm release records")
	assert.Contains(t, r.Stdout, "patch helmreleases.helm.toolkit.fluxcd.io in namespace flux-system (suspending the HelmRelease that runs the release)")
}

// assertApplyRefused: `apply` of a FluxInstance over a Flux that the Helm release still owns is
// refused, changing nothing (it would leave the release, whose uninstall deletes the CRDs); a
// dry run warns.
func assertApplyRefused(t *testing.T, in *installed, instance string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "hand-written.yaml")
	require.NoError(t, os.WriteFile(file, []byte(instance), 0o600))
	rv := in.resourceVersions(t)
	args := []string{"apply", "-f", file, "--wait=false", "--kubeconfig=" + in.env.Kubeconfig, "--distribution", in.dist}
	r := runPlugin(t, "", args...)
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "error: Flux is installed by Helm (release flux2 in flux-system, chart flux2-"+helmenv.ChartVersion)
	assert.Contains(t, r.Stderr, "adopt it with `kubectl fluxinstance migrate` instead")
	assert.Equal(t, rv, in.resourceVersions(t), "the refused apply changed nothing")
	r = runPlugin(t, "", append(args, "--dry-run=server")...)
	assert.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Warning: Flux is installed by Helm")
	assert.Equal(t, rv, in.resourceVersions(t), "the dry run changed nothing")
}
