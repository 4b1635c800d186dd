package fluxenv_test

import (
	"context"
	"net/http"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestBootstrapReconcilePrune bootstraps a fleet repository holding a user app with the real
// controllers, checks what kustomize-controller did to the Flux objects, and prunes the app.
func TestBootstrapReconcilePrune(t *testing.T) {
	fluxenv.BinDir(t, false)
	env := testenv.Start(t)
	repo := fluxenv.StartGitServer(t).CreateRepo(t, "fleet")
	app := fluxenv.App{Namespace: "apps", Name: "podinfo"}
	other := fluxenv.App{Namespace: "apps", Name: "other"}
	repo.AddApp(t, "clusters/test", app)
	repo.AddApp(t, "clusters/test", other)

	start := time.Now()
	f := fluxenv.Bootstrap(t, env, repo, fluxenv.Options{})
	t.Logf("bootstrap (generate, push, apply, start controllers) to Kustomization Ready: %s", time.Since(start).Round(100*time.Millisecond))

	ks := f.Kustomization(t)
	inventory := fluxenv.Inventory(ks)
	for _, id := range []string{
		"flux-system_source-controller_apps_Deployment",
		"flux-system_kustomize-controller_apps_Deployment",
		"_gitrepositories.source.toolkit.fluxcd.io_apiextensions.k8s.io_CustomResourceDefinition",
		"flux-system_flux-system_source.toolkit.fluxcd.io_GitRepository",
		"flux-system_flux-system_kustomize.toolkit.fluxcd.io_Kustomization",
		"_flux-system__Namespace",
		"_apps__Namespace",
		"apps_podinfo__ConfigMap",
		"apps_podinfo_apps_Deployment",
	} {
		assert.Contains(t, inventory, id, "status.inventory of the Kustomization")
	}
	assert.Equal(t, "main@sha1:"+repo.Head(t), fluxenv.Status(ks, "lastAppliedRevision"))

	ctx := context.Background()
	c := f.Client
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	for _, o := range []struct {
		obj client.Object
		key client.ObjectKey
	}{
		{&appsv1.Deployment{}, client.ObjectKey{Namespace: "flux-system", Name: "kustomize-controller"}},
		{crd, client.ObjectKey{Name: "kustomizations.kustomize.toolkit.fluxcd.io"}},
		{&corev1.ConfigMap{}, client.ObjectKey{Namespace: "apps", Name: "podinfo"}},
	} {
		require.NoError(t, c.Get(ctx, o.key, o.obj))
		assert.Equal(t, "flux-system", o.obj.GetLabels()["kustomize.toolkit.fluxcd.io/name"], o.key.String())
		assert.Equal(t, "flux-system", o.obj.GetLabels()["kustomize.toolkit.fluxcd.io/namespace"], o.key.String())
		assert.Contains(t, applyManagers(o.obj), "kustomize-controller", "%s is applied by kustomize-controller", o.key)
	}
	var d appsv1.Deployment
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "source-controller"}, &d))
	assert.Equal(t, int32(1), d.Status.AvailableReplicas, "the Deployment status is written for want of a kubelet")
	assert.Equal(t, d.Generation, d.Status.ObservedGeneration)

	repo.RemoveApp(t, "clusters/test", app)
	commit := f.Push(t, "Remove podinfo")
	start = time.Now()
	ks = f.Reconcile(t, commit)
	t.Logf("reconcile of a commit (request to Ready): %s", time.Since(start).Round(100*time.Millisecond))
	assert.NotContains(t, fluxenv.Inventory(ks), "apps_podinfo__ConfigMap")
	assert.NotContains(t, fluxenv.Inventory(ks), "apps_podinfo_apps_Deployment")
	assert.True(t, apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "podinfo"}, &corev1.ConfigMap{})), "the ConfigMap was pruned")
	assert.True(t, apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "podinfo"}, &appsv1.Deployment{})), "the Deployment was pruned")
	assert.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "other"}, &corev1.ConfigMap{}), "the app still in Git stays")
	assert.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "kustomize-controller"}, &appsv1.Deployment{}))
}

// TestBootstrapOtherNamespaceOnTag runs Flux from another namespace, following a tag, without
// network policies and with a user's patch in the bootstrap kustomization.yaml: the options reach
// the generated files, the patch reaches the cluster, and the controllers sync it all.
func TestBootstrapOtherNamespaceOnTag(t *testing.T) {
	fluxenv.BinDir(t, false)
	env := testenv.Start(t)
	repo := fluxenv.StartGitServer(t).CreateRepo(t, "fleet")
	app := fluxenv.App{Namespace: "team", Name: "web"}
	repo.AddApp(t, "clusters/prod", app)
	o := fluxenv.Options{Namespace: "gitops", Tag: "v1", Path: "clusters/prod", NoNetworkPolicy: true, TolerationKeys: []string{"dedicated"}}
	dir := fluxenv.WriteBootstrapFiles(t, repo, o)
	require.Equal(t, "clusters/prod/gitops", dir)
	repo.WriteFile(t, path.Join(dir, "kustomization.yaml"), `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- gotk-components.yaml
- gotk-sync.yaml
patches:
- patch: |
    - op: replace
      path: /spec/template/spec/containers/0/args/2
      value: --log-level=debug
  target:
    kind: Deployment
    name: kustomize-controller
`)
	commit := repo.CommitAndPush(t, "Bootstrap with a log-level patch")
	repo.Tag(t, "v1")
	f := fluxenv.Install(t, env, repo, o)

	components := repo.ReadFile(t, path.Join(dir, "gotk-components.yaml"))
	assert.NotContains(t, components, "kind: NetworkPolicy")
	assert.Contains(t, components, "key: dedicated")
	sync := repo.ReadFile(t, path.Join(dir, "gotk-sync.yaml"))
	assert.Contains(t, sync, "tag: v1")
	assert.Contains(t, sync, "path: ./clusters/prod")

	ks := f.Kustomization(t)
	assert.Equal(t, "gitops", ks.GetNamespace())
	assert.Equal(t, "v1@sha1:"+commit, fluxenv.Status(ks, "lastAppliedRevision"))
	assert.Contains(t, fluxenv.Inventory(ks), "team_web_apps_Deployment")
	assert.Contains(t, fluxenv.Inventory(ks), "gitops_kustomize-controller_apps_Deployment")
	var kc appsv1.Deployment
	require.NoError(t, f.Client.Get(context.Background(), client.ObjectKey{Namespace: "gitops", Name: "kustomize-controller"}, &kc))
	assert.Equal(t, "--log-level=debug", kc.Spec.Template.Spec.Containers[0].Args[2], "the patch of kustomization.yaml")
	assert.Equal(t, "gitops", kc.Labels["kustomize.toolkit.fluxcd.io/namespace"])

	// A commit is not synced until the tag moves; Push moves it.
	repo.RemoveApp(t, "clusters/prod", app)
	ks = f.Reconcile(t, f.Push(t, "Remove web"))
	assert.NotContains(t, fluxenv.Inventory(ks), "team_web_apps_Deployment")
	assert.True(t, apierrors.IsNotFound(f.Client.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "web"}, &appsv1.Deployment{})))
}

// TestSimulateReconcileMatchesController: what SimulateReconcile leaves (inventory, owner labels,
// apply managers) is what the real kustomize-controller leaves, so tests of versions whose
// controllers cannot run see a faithful cluster.
func TestSimulateReconcileMatchesController(t *testing.T) {
	fluxenv.BinDir(t, false)
	repo := fluxenv.StartGitServer(t).CreateRepo(t, "fleet")
	repo.AddApp(t, "clusters/test", fluxenv.App{Namespace: "apps", Name: "podinfo"})
	real := fluxenv.Bootstrap(t, testenv.Start(t), repo, fluxenv.Options{})
	realIDs := fluxenv.Inventory(real.Kustomization(t))
	real.Controllers.Stop()

	simulated := fluxenv.ApplyBootstrap(t, testenv.Start(t), repo, fluxenv.Options{})
	simulatedIDs := simulated.SimulateReconcile(t)
	assert.ElementsMatch(t, realIDs, simulatedIDs)
	ks := simulated.Kustomization(t)
	assert.ElementsMatch(t, realIDs, fluxenv.Inventory(ks))
	ready, msg := fluxenv.Ready(ks)
	assert.True(t, ready, msg)
	assert.Equal(t, "main@sha1:"+repo.Head(t), fluxenv.Status(ks, "lastAppliedRevision"))

	for _, id := range realIDs {
		want, got := ownership(t, real, id), ownership(t, simulated, id)
		assert.Equal(t, want, got, id)
	}
	assert.Equal(t, []string{"flux", "kustomize-controller", "kustomize.toolkit.fluxcd.io/name=flux-system", "kustomize.toolkit.fluxcd.io/namespace=flux-system"},
		ownership(t, simulated, "flux-system_kustomize-controller_apps_Deployment"))
}

// TestSimulateOldVersion: files of an old Flux generated with its distribution data, applied like
// bootstrap, and reconciled by simulation (its CRDs cannot serve the running controllers).
func TestSimulateOldVersion(t *testing.T) {
	fluxenv.BinDir(t, false)
	repo := fluxenv.StartGitServer(t).CreateRepo(t, "fleet")
	o := fluxenv.Options{
		Version: "v2.2.3", ComponentsExtra: []string{"image-reflector-controller", "image-automation-controller"},
		Registry: "registry.example.com/fluxcd", ImagePullSecret: "regcred",
	}
	fluxenv.WriteBootstrapFiles(t, repo, o)
	repo.CommitAndPush(t, "Bootstrap Flux v2.2.3")
	f := fluxenv.ApplyBootstrap(t, testenv.Start(t), repo, o)
	ids := f.SimulateReconcile(t)
	assert.Contains(t, ids, "flux-system_image-automation-controller_apps_Deployment")
	assert.Contains(t, ids, "flux-system_flux-system_kustomize.toolkit.fluxcd.io_Kustomization")

	var d appsv1.Deployment
	require.NoError(t, f.Client.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: "image-automation-controller"}, &d))
	assert.Equal(t, "v2.2.3", d.Labels["app.kubernetes.io/version"])
	assert.Equal(t, "flux-system", d.Labels["kustomize.toolkit.fluxcd.io/name"])
	assert.True(t, strings.HasPrefix(d.Spec.Template.Spec.Containers[0].Image, "registry.example.com/fluxcd/image-automation-controller:"), d.Spec.Template.Spec.Containers[0].Image)
	assert.Equal(t, []corev1.LocalObjectReference{{Name: "regcred"}}, d.Spec.Template.Spec.ImagePullSecrets)
}

// ownership summarizes an inventory object: its Apply managers and kustomize owner labels.
func ownership(t *testing.T, f *fluxenv.Flux, id string) []string {
	t.Helper()
	parts := strings.Split(id, "_") // namespace_name_group_kind; names here have no "_"
	require.Len(t, parts, 4, id)
	obj := &unstructured.Unstructured{}
	obj.SetAPIVersion(apiVersion(parts[2]))
	obj.SetKind(parts[3])
	require.NoError(t, f.Client.Get(context.Background(), client.ObjectKey{Namespace: parts[0], Name: parts[1]}, obj), id)
	summary := applyManagers(obj)
	slices.Sort(summary)
	for _, k := range []string{"kustomize.toolkit.fluxcd.io/name", "kustomize.toolkit.fluxcd.io/namespace"} {
		summary = append(summary, k+"="+obj.GetLabels()[k])
	}
	return summary
}

// apiVersion maps an inventory group to an API version: every kind of the bootstrap files is v1.
func apiVersion(group string) string {
	if group == "" {
		return "v1"
	}
	return group + "/v1"
}

// TestBootstrapWithCLI bootstraps with the real `flux bootstrap git`.
func TestBootstrapWithCLI(t *testing.T) {
	fluxenv.BinDir(t, true)
	env := testenv.Start(t)
	repo := fluxenv.StartGitServer(t).CreateRepo(t, "fleet")
	app := fluxenv.App{Namespace: "apps", Name: "podinfo"}
	repo.AddApp(t, "clusters/test", app)
	seeded := repo.CommitAndPush(t, "Add podinfo")

	start := time.Now()
	f := fluxenv.BootstrapWithCLI(t, env, repo, fluxenv.Options{})
	t.Logf("flux bootstrap git to Kustomization Ready: %s", time.Since(start).Round(100*time.Millisecond))

	assert.NotEqual(t, seeded, repo.Head(t), "bootstrap pushed its commits")
	for _, file := range []string{"gotk-components.yaml", "gotk-sync.yaml", "kustomization.yaml"} {
		assert.NotEmpty(t, repo.ReadFile(t, path.Join("clusters/test/flux-system", file)))
	}
	ks := f.Kustomization(t)
	assert.Contains(t, fluxenv.Inventory(ks), "apps_podinfo_apps_Deployment")
	var secret corev1.Secret
	require.NoError(t, f.Client.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: "flux-system"}, &secret))
	url, _, _ := unstructured.NestedString(f.GitRepository(t).Object, "spec", "url")
	assert.Equal(t, repo.URL, url, "--token-auth keeps the http URL")
	assert.Equal(t, "flux", string(secret.Data["username"]), "--token-auth stores the Git credentials")

	repo.RemoveApp(t, "clusters/test", app)
	ks = f.Reconcile(t, f.Push(t, "Remove podinfo"))
	assert.NotContains(t, fluxenv.Inventory(ks), "apps_podinfo_apps_Deployment")
}

// TestGitServerRequiresCredentials: the credentials in the flux-system secret are what lets
// source-controller in, so the server must refuse other clients.
func TestGitServerRequiresCredentials(t *testing.T) {
	server := fluxenv.StartGitServer(t)
	repo := server.CreateRepo(t, "fleet")
	repo.WriteFile(t, "README.md", "fleet\n")
	head := repo.CommitAndPush(t, "init")
	for password, want := range map[string]int{"": http.StatusUnauthorized, "wrong": http.StatusUnauthorized, server.Password: http.StatusOK} {
		req, err := http.NewRequest(http.MethodGet, repo.URL+"/info/refs?service=git-upload-pack", nil)
		require.NoError(t, err)
		if password != "" {
			req.SetBasicAuth(server.Username, password)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode)
	}
	assert.Contains(t, repo.Git(t, "ls-remote", "origin", "refs/heads/main"), head)
}

func applyManagers(obj client.Object) []string {
	var managers []string
	for _, mf := range obj.GetManagedFields() {
		if mf.Operation == "Apply" && !slices.Contains(managers, mf.Manager) {
			managers = append(managers, mf.Manager)
		}
	}
	return managers
}
