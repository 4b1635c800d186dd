package migrate_test

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// migrateWithControllers is the whole user journey on a cluster whose controllers run: migrate
// (with --repo-dir on the fleet repository's work tree), check the takeover, commit and push the
// work tree as the next step says, let kustomize-controller reconcile the commit without the
// bootstrap files, and prune the first user app. It returns migrate's stderr and the FluxInstance.
func (s *scenario) migrateWithControllers(t *testing.T) (string, *fluxinstance.FluxInstance) {
	t.Helper()
	f, c := s.f, s.c
	ks := f.Kustomization(t)
	inventory := fluxenv.Inventory(ks)
	before := takeSnapshot(t, c, ks, secretKey(f))
	var fluxKeys []objectKey
	for k := range before.uids {
		if k.id.GroupKind.Kind != "Secret" && isFlux(t, c, k) {
			fluxKeys = append(fluxKeys, k)
		}
	}
	require.NotEmpty(t, fluxKeys)

	start := time.Now()
	stderr, inst := s.migrate(t)
	t.Logf("migrate: %s", time.Since(start).Round(10*time.Millisecond))
	allowed := unexpressed(stderr)
	if len(allowed) > 0 {
		t.Logf("the plan says the takeover changes the pod templates of %v", allowed)
	}

	// The takeover: ownership moved on every Flux object, nothing deleted or restarted, and the
	// Kustomization keeps its inventory and stays Ready.
	for _, k := range fluxKeys {
		assertTakenOver(t, c, k)
	}
	// The takeover writes spec.ref.name on the GitRepository in place of the branch or tag (the
	// same commits), so source-controller's artifact revision changes and kustomize-controller
	// reconciles the same commit again, skipping the Flux objects (ssa: Ignore): forced here, it
	// must end Ready with the inventory unchanged.
	ks = f.Reconcile(t, f.Repo.Head(t))
	assert.ElementsMatch(t, inventory, fluxenv.Inventory(ks), "the Kustomization keeps its status.inventory")
	before.assertSurvived(t, c)
	before.assertTemplates(t, c, allowed)

	// The next step: the bootstrap files leave Git, kustomize-controller reconciles that commit.
	s.checkWorkTree(t)
	commit := f.Push(t, "Replace the Flux bootstrap files with a FluxInstance")
	start = time.Now()
	ks = f.Reconcile(t, commit)
	t.Logf("reconcile of the commit without the bootstrap files: %s", time.Since(start).Round(10*time.Millisecond))
	after := fluxenv.Inventory(ks)
	for _, k := range fluxKeys {
		assert.NotContains(t, after, k.String(), "%s left the inventory with the files", k)
	}
	before.assertSurvived(t, c)
	before.assertTemplates(t, c, allowed)

	// Pruning users' apps still works.
	gone := s.apps[0]
	s.f.Repo.RemoveApp(t, f.Options.Path, gone)
	ks = f.Reconcile(t, f.Push(t, "Remove "+gone.Name))
	for _, k := range appKeys(gone) {
		assert.False(t, exists(t, c, k), "%s was pruned", k)
		assert.NotContains(t, fluxenv.Inventory(ks), k.String())
	}
	before.assertSurvived(t, c, appKeys(gone)...)
	before.assertTemplates(t, c, allowed, gone.Namespace+"/"+gone.Name)
	return stderr, inst
}

// TestMigrateCLIBootstrap: the default `flux bootstrap git` of the real Flux CLI.
func TestMigrateCLIBootstrap(t *testing.T) {
	t.Parallel()
	fluxenv.BinDir(t, true)
	env := testenv.Start(t)
	apps := defaultApps
	repo := fleetWithApps(t, "clusters/test", apps...)
	repo.CommitAndPush(t, "Add the apps")
	start := time.Now()
	f := fluxenv.BootstrapWithCLI(t, env, repo, fluxenv.Options{})
	t.Logf("flux bootstrap git: %s", time.Since(start).Round(10*time.Millisecond))
	s := newScenario(t, f, apps...)

	// A dry run changes nothing and prints the same plan.
	rvBefore := resourceVersions(t, s.c, f.Kustomization(t))
	r := runPlugin(t, "", "migrate", "--kubeconfig="+s.kubeconfig, "--distribution", s.dist, "--dry-run")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, `installed by `+"`flux bootstrap`"+` in namespace "flux-system"`)
	assert.Contains(t, r.Stdout, "kind: FluxInstance")
	assert.Equal(t, rvBefore, resourceVersions(t, s.c, f.Kustomization(t)), "--dry-run changed nothing")

	stderr, inst := s.migrateWithControllers(t)
	assert.Contains(t, stderr, "Not expressible: nothing", "a default bootstrap is reproduced exactly")
	assert.Equal(t, "refs/heads/main", inst.Spec.Sync.Ref)
	assert.Equal(t, repo.URL, inst.Spec.Sync.URL)
	assert.Equal(t, "flux-system", inst.Spec.Sync.PullSecret)

	// A second run, the files gone from Git and their Kustomization reconciled: nothing to do.
	r = runPlugin(t, "", "migrate", "--kubeconfig="+s.kubeconfig, "--distribution", s.dist, "--repo-dir", repo.Dir, "--output-file", t.TempDir()+"/fi.yaml")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Nothing to do")
	assert.Contains(t, r.Stderr, "the bootstrap files are already replaced")

	// Then the Flux Operator takes the migrated instance over.
	s.handoff(t)
}

// TestMigrateOtherNamespaceOnTag: Flux in another namespace, at another path, following a tag.
func TestMigrateOtherNamespaceOnTag(t *testing.T) {
	t.Parallel()
	s := bootstrapped(t, fluxenv.Options{Namespace: "gitops", Tag: "v1", Path: "clusters/prod"},
		fluxenv.App{Namespace: "team", Name: "web"}, fluxenv.App{Namespace: "team", Name: "api"})
	f := s.f

	_, inst := s.migrateWithControllers(t)
	assert.Equal(t, "gitops", inst.Namespace)
	assert.Equal(t, "refs/tags/v1", inst.Spec.Sync.Ref)
	assert.Equal(t, "clusters/prod", strings.TrimPrefix(inst.Spec.Sync.Path, "./"))
	ref, _, _ := unstructured.NestedString(f.GitRepository(t).Object, "spec", "ref", "name")
	assert.Equal(t, "refs/tags/v1", ref, "the GitRepository follows the same tag by its full name")
}

// TestMigrateExtraComponentsMirror: image automation, a registry mirror with an image pull
// secret, no network policies. No pod runs, so the registry only matters to the rendering.
func TestMigrateExtraComponentsMirror(t *testing.T) {
	t.Parallel()
	s := bootstrapped(t, fluxenv.Options{
		ComponentsExtra: []string{"image-reflector-controller", "image-automation-controller"},
		Registry:        "registry.example.com/fluxcd", ImagePullSecret: "regcred", NoNetworkPolicy: true,
	}, defaultApps...)

	_, inst := s.migrateWithControllers(t)
	assert.Subset(t, inst.Spec.Components, []string{"image-reflector-controller", "image-automation-controller"})
	assert.Equal(t, "registry.example.com/fluxcd", inst.Spec.Distribution.Registry)
	assert.Equal(t, "regcred", inst.Spec.Distribution.ImagePullSecret)
	require.NotNil(t, inst.Spec.Cluster)
	require.NotNil(t, inst.Spec.Cluster.NetworkPolicy)
	assert.False(t, *inst.Spec.Cluster.NetworkPolicy)
	var pols networkingv1.NetworkPolicyList
	require.NoError(t, s.c.List(context.Background(), &pols, client.InNamespace("flux-system")))
	assert.Empty(t, pols.Items, "the takeover creates no network policy")
	var d appsv1.Deployment
	require.NoError(t, s.c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: "image-automation-controller"}, &d))
	assert.True(t, strings.HasPrefix(d.Spec.Template.Spec.Containers[0].Image, "registry.example.com/fluxcd/image-automation-controller:"))
	assert.Equal(t, []corev1.LocalObjectReference{{Name: "regcred"}}, d.Spec.Template.Spec.ImagePullSecrets)
}

// TestMigrateUserPatches: tolerations and --log-level patches in flux-system/kustomization.yaml
// become spec.kustomize.patches, so the takeover restarts nothing.
func TestMigrateUserPatches(t *testing.T) {
	t.Parallel()
	fluxenv.BinDir(t, false)
	env := testenv.Start(t)
	apps := defaultApps
	repo := fleetWithApps(t, "clusters/test", apps...)
	o := fluxenv.Options{}
	dir := fluxenv.WriteBootstrapFiles(t, repo, o)
	components, err := testenv.DecodeYAML([]byte(repo.ReadFile(t, path.Join(dir, "gotk-components.yaml"))))
	require.NoError(t, err)
	logLevelArg := func(name string) int {
		for _, obj := range components {
			if obj.GetKind() != "Deployment" || obj.GetName() != name {
				continue
			}
			var d appsv1.Deployment
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d))
			if i := slices.Index(d.Spec.Template.Spec.Containers[0].Args, "--log-level=info"); i >= 0 {
				return i
			}
		}
		t.Fatalf("no --log-level=info in Deployment %s of gotk-components.yaml", name)
		return -1
	}
	// The patches the Flux docs show for bootstrap customization.
	repo.WriteFile(t, path.Join(dir, "kustomization.yaml"), fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- gotk-components.yaml
- gotk-sync.yaml
patches:
- patch: |
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: all
    spec:
      template:
        spec:
          tolerations:
          - key: dedicated
            operator: Equal
            value: flux
            effect: NoSchedule
  target:
    kind: Deployment
    labelSelector: app.kubernetes.io/part-of=flux
- patch: |
    - op: replace
      path: /spec/template/spec/containers/0/args/%d
      value: --log-level=debug
  target:
    kind: Deployment
    name: kustomize-controller
- patch: |
    - op: replace
      path: /spec/template/spec/containers/0/args/%d
      value: --log-level=error
  target:
    kind: Deployment
    name: source-controller
`, logLevelArg("kustomize-controller"), logLevelArg("source-controller")))
	repo.CommitAndPush(t, "Bootstrap with tolerations and log levels")
	f := fluxenv.Install(t, env, repo, o)
	s := newScenario(t, f, apps...)

	stderr, inst := s.migrateWithControllers(t)
	assert.Contains(t, stderr, "Patches (spec.kustomize.patches) that keep the running configuration (remove those of images")
	assert.Contains(t, stderr, "Not expressible: nothing")
	require.NotNil(t, inst.Spec.Kustomize)
	patches := ""
	for _, p := range inst.Spec.Kustomize.Patches {
		patches += p.Patch
	}
	assert.Contains(t, patches, "--log-level=debug")
	assert.Contains(t, patches, "--log-level=error")
	assert.Contains(t, patches, "dedicated")

	var list appsv1.DeploymentList
	require.NoError(t, s.c.List(context.Background(), &list, client.InNamespace("flux-system")))
	require.NotEmpty(t, list.Items)
	for _, d := range list.Items {
		assert.Equal(t, []corev1.Toleration{{Key: "dedicated", Operator: "Equal", Value: "flux", Effect: "NoSchedule"}},
			d.Spec.Template.Spec.Tolerations, "Deployment %s keeps its tolerations", d.Name)
		args := d.Spec.Template.Spec.Containers[0].Args
		switch d.Name {
		case "kustomize-controller":
			assert.Contains(t, args, "--log-level=debug")
		case "source-controller":
			assert.Contains(t, args, "--log-level=error")
		default:
			assert.Contains(t, args, "--log-level=info")
		}
	}
}
