package fluxenv_test

import (
	"context"
	"net/http"
	"path"
	"slices"
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
// network policies: the options reach the generated files and the controllers sync them.
func TestBootstrapOtherNamespaceOnTag(t *testing.T) {
	fluxenv.BinDir(t, false)
	env := testenv.Start(t)
	repo := fluxenv.StartGitServer(t).CreateRepo(t, "fleet")
	app := fluxenv.App{Namespace: "team", Name: "web"}
	repo.AddApp(t, "clusters/prod", app)
	o := fluxenv.Options{Namespace: "gitops", Tag: "v1", Path: "clusters/prod", NoNetworkPolicy: true, TolerationKeys: []string{"dedicated"}}
	f := fluxenv.Bootstrap(t, env, repo, o)

	components := repo.ReadFile(t, path.Join(o.Dir(), "gotk-components.yaml"))
	assert.NotContains(t, components, "kind: NetworkPolicy")
	assert.Contains(t, components, "key: dedicated")
	sync := repo.ReadFile(t, path.Join(o.Dir(), "gotk-sync.yaml"))
	assert.Contains(t, sync, "tag: v1")
	assert.Contains(t, sync, "path: ./clusters/prod")

	ks := f.Kustomization(t)
	assert.Equal(t, "gitops", ks.GetNamespace())
	assert.Equal(t, "v1@sha1:"+repo.Head(t), fluxenv.Status(ks, "lastAppliedRevision"))
	assert.Contains(t, fluxenv.Inventory(ks), "team_web_apps_Deployment")

	// A commit is not synced until the tag moves; Push moves it.
	repo.RemoveApp(t, "clusters/prod", app)
	ks = f.Reconcile(t, f.Push(t, "Remove web"))
	assert.NotContains(t, fluxenv.Inventory(ks), "team_web_apps_Deployment")
	assert.True(t, apierrors.IsNotFound(f.Client.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "web"}, &appsv1.Deployment{})))
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
