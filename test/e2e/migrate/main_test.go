// Package migrate_test proves `kubectl fluxinstance migrate` end to end against the real Flux
// controllers (test/fluxenv): a fleet repository bootstrapped like `flux bootstrap` does, with user
// apps in it, is migrated, the bootstrap files leave Git exactly as the command's next step says,
// and kustomize-controller's next reconcile deletes nothing of Flux, restarts nothing, stays Ready
// and still prunes the users' apps. Older Flux versions, whose CRDs the controllers cannot serve,
// are reconciled by simulation; faults interrupt migrate after every API call. A 2.2.3 bootstrap
// whose users' manifests are at versions 2.9.4 removes is migrated, its repository rewritten
// with upgrade-repo and the instance applied at 2.9.4, then the real controllers reconcile it.
package migrate_test

import (
	"context"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/plugin"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/helmenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/pluginrun"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestMain lets the test binary serve as helm's post-renderer too (helmenv.Release.Labels: the
// stand-in for helm-controller's origin labels).
func TestMain(m *testing.M) { helmenv.Main(m) }

// Ownership metadata (facts of kustomize-controller and of the takeover).
const (
	labelOwnerName      = "kustomize.toolkit.fluxcd.io/name"
	labelOwnerNamespace = "kustomize.toolkit.fluxcd.io/namespace"
	annotationSSA       = "kustomize.toolkit.fluxcd.io/ssa"
	annotationPrune     = "kustomize.toolkit.fluxcd.io/prune"
	pluginFieldManager  = "kubectl-fluxinstance"
)

// runPlugin runs the plugin in-process as main does, args as typed after `kubectl fluxinstance`.
var runPlugin = pluginrun.With(plugin.Run, plugin.BuildInfo{Version: "v0.0.0-e2e-migrate"}).Run

// scenario is one bootstrapped fleet repository and what the test remembers about it.
type scenario struct {
	f *fluxenv.Flux
	// c is an admin client without client-go's default 5 QPS limit (the checks read every object).
	c          client.Client
	kubeconfig string
	dist       string
	apps       []fluxenv.App
}

func newScenario(t testing.TB, f *fluxenv.Flux, apps ...fluxenv.App) *scenario {
	t.Helper()
	c := fastClient(t, f.Env)
	f.Client = c // Reconcile's polling then shares no rate limiter with KeepDeploymentsAvailable
	return &scenario{f: f, c: c, kubeconfig: f.Env.Kubeconfig, dist: testenv.DistributionDir(t), apps: apps}
}

// fastClient is an admin client that is not rate-limited to client-go's default 5 QPS.
func fastClient(t testing.TB, env *testenv.Env) client.Client {
	t.Helper()
	return testenv.FastClient(t, env.Config, 200, 400)
}

// migrate runs `migrate --yes --repo-dir <work tree> --output-file F` and checks what it printed:
// the verification, the next step naming <path>/<namespace>/, and the `git status`-like lines. It
// returns the stderr and the generated FluxInstance.
func (s *scenario) migrate(t testing.TB, extra ...string) (string, *fluxinstance.FluxInstance) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "flux-instance.yaml")
	args := append([]string{"migrate", "--kubeconfig=" + s.kubeconfig, "--distribution", s.dist, "--yes",
		"--repo-dir", s.f.Repo.Dir, "--output-file", out}, extra...)
	r := runPlugin(t, "", args...)
	require.Equal(t, 0, r.Code, "migrate failed:\n%s", r.Stderr)
	dir := s.f.Options.Dir()
	assert.Contains(t, r.Stderr, "Verified: kustomize-controller's garbage collection would delete none")
	assert.Contains(t, r.Stderr, "Next step: in the Git repository, remove "+dir+"/ (gotk-components.yaml, gotk-sync.yaml, kustomization.yaml)")
	for _, line := range []string{" D " + dir + "/gotk-components.yaml", " D " + dir + "/gotk-sync.yaml", " M " + dir + "/kustomization.yaml", "?? " + dir + "/flux-instance.yaml"} {
		assert.Contains(t, r.Stderr, line, "--repo-dir reports the change")
	}
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	inst, err := fluxinstance.Decode(data, out)
	require.NoError(t, err, "the generated FluxInstance")
	assert.Equal(t, s.f.Options.Namespace, inst.Namespace)
	assert.Equal(t, s.f.Options.Version, inst.Spec.Distribution.Version)
	return r.Stderr, inst
}

// checkWorkTree checks that the work tree is what the next step asks for: the two generated files
// gone, kustomization.yaml without them (and without patches), the FluxInstance beside it, and
// git agreeing with what migrate printed.
func (s *scenario) checkWorkTree(t testing.TB) {
	t.Helper()
	dir := s.f.Options.Dir()
	for _, gone := range []string{"gotk-components.yaml", "gotk-sync.yaml"} {
		_, err := os.Stat(filepath.Join(s.f.Repo.Dir, filepath.FromSlash(path.Join(dir, gone))))
		assert.True(t, os.IsNotExist(err), "%s/%s is removed", dir, gone)
	}
	kust := s.f.Repo.ReadFile(t, path.Join(dir, "kustomization.yaml"))
	assert.NotContains(t, kust, "gotk-")
	assert.NotContains(t, kust, "patches")
	assert.Contains(t, s.f.Repo.ReadFile(t, path.Join(dir, "flux-instance.yaml")), "kind: FluxInstance")
	status := s.f.Repo.Git(t, "status", "--porcelain", "--untracked-files=all")
	for _, line := range []string{"D " + dir + "/gotk-components.yaml", "D " + dir + "/gotk-sync.yaml", "M " + dir + "/kustomization.yaml", "?? " + dir + "/flux-instance.yaml"} {
		assert.Contains(t, status, line)
	}
}

// objectKey identifies an object across the checks: the cli-utils id and its API version.
type objectKey struct {
	id      object.ObjMetadata
	version string
}

func (k objectKey) String() string { return k.id.String() }

func (k objectKey) gvk() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: k.id.GroupKind.Group, Version: k.version, Kind: k.id.GroupKind.Kind}
}

// inventoryKeys parses the Kustomization's status.inventory.
func inventoryKeys(t testing.TB, ks *unstructured.Unstructured) []objectKey {
	t.Helper()
	entries, _, _ := unstructured.NestedSlice(ks.Object, "status", "inventory", "entries")
	require.NotEmpty(t, entries, "Kustomization %s/%s has an inventory", ks.GetNamespace(), ks.GetName())
	keys := make([]objectKey, 0, len(entries))
	for _, e := range entries {
		m, _ := e.(map[string]any)
		idStr, _ := m["id"].(string)
		v, _ := m["v"].(string)
		id, err := object.ParseObjMetadata(idStr)
		require.NoError(t, err, idStr)
		keys = append(keys, objectKey{id: id, version: v})
	}
	return keys
}

// snapshot is what must survive a migration: the UID of every object (Flux's and the users'),
// and every Deployment's pod template.
type snapshot struct {
	uids      map[objectKey]types.UID
	templates map[string]string // namespace/name -> spec.template as JSON
}

// takeSnapshot records the objects of the Kustomization's inventory, the extra keys (e.g. the Git
// secret, which is not in Git) and every Deployment of the cluster.
func takeSnapshot(t testing.TB, c client.Client, ks *unstructured.Unstructured, extra ...objectKey) *snapshot {
	t.Helper()
	s := &snapshot{uids: map[objectKey]types.UID{}, templates: map[string]string{}}
	for _, k := range append(inventoryKeys(t, ks), extra...) {
		m, err := getMeta(c, k)
		require.NoError(t, err, k.String())
		s.uids[k] = m.GetUID()
	}
	s.templates = templates(t, c)
	return s
}

func getMeta(c client.Client, k objectKey) (*metav1.PartialObjectMetadata, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(k.gvk())
	err := c.Get(context.Background(), client.ObjectKey{Namespace: k.id.Namespace, Name: k.id.Name}, m)
	return m, err
}

func templates(t testing.TB, c client.Client) map[string]string {
	t.Helper()
	var list appsv1.DeploymentList
	require.NoError(t, c.List(context.Background(), &list))
	out := map[string]string{}
	for _, d := range list.Items {
		data, err := json.Marshal(d.Spec.Template)
		require.NoError(t, err)
		out[d.Namespace+"/"+d.Name] = string(data)
	}
	return out
}

// assertSurvived checks that every recorded object still exists with the same UID (nothing was
// deleted, not even deleted and re-created), except the keys in gone.
func (s *snapshot) assertSurvived(t testing.TB, c client.Client, gone ...objectKey) {
	t.Helper()
	s.assertSurvivedAs(t, func(k objectKey) (*metav1.PartialObjectMetadata, error) { return getMeta(c, k) }, gone...)
}

// assertSurvivedAs is assertSurvived reading each object with get (e.g. at another version than
// the recorded one, after an upgrade removed it).
func (s *snapshot) assertSurvivedAs(t testing.TB, get func(objectKey) (*metav1.PartialObjectMetadata, error), gone ...objectKey) {
	t.Helper()
	for k, uid := range s.uids {
		if slices.Contains(gone, k) {
			continue
		}
		m, err := get(k)
		if !assert.NoError(t, err, "%s still exists", k) {
			continue
		}
		assert.Equal(t, uid, m.GetUID(), "%s was not re-created", k)
		assert.Nil(t, m.GetDeletionTimestamp(), "%s is not being deleted", k)
	}
}

// assertTemplates checks that no Deployment's pod template changed, except those of allowed
// (what the plan said it could not express) and the pruned ones of gone (namespace/name).
func (s *snapshot) assertTemplates(t testing.TB, c client.Client, allowed map[string]bool, gone ...string) {
	t.Helper()
	now := templates(t, c)
	for name, before := range s.templates {
		if slices.Contains(gone, name) {
			continue
		}
		after, ok := now[name]
		if !assert.True(t, ok, "Deployment %s still exists", name) || allowed[name] {
			continue
		}
		assert.JSONEq(t, before, after, "the pod template of Deployment %s did not change (no restart)", name)
	}
}

var unexpressedDeployment = regexp.MustCompile(`(?m)^  Deployment/([^/\s]+)/([^:\s]+): `)

// unexpressed reads the plan's "Not expressible" section: the Deployments whose pod template the
// takeover will change. The plan says "Not expressible: nothing" when there are none.
func unexpressed(stderr string) map[string]bool {
	out := map[string]bool{}
	i := strings.Index(stderr, "Not expressible (the takeover will change these):")
	if i < 0 {
		return out
	}
	section := stderr[i:]
	if j := strings.Index(section, "\nTakeover: "); j >= 0 {
		section = section[:j]
	}
	for _, m := range unexpressedDeployment.FindAllStringSubmatch(section, -1) {
		out[m[1]+"/"+m[2]] = true
	}
	return out
}

// isFlux tells the Flux objects of an inventory from the users' (labels of `flux bootstrap`).
func isFlux(t testing.TB, c client.Client, k objectKey) bool {
	t.Helper()
	m, err := getMeta(c, k)
	require.NoError(t, err, k.String())
	return m.GetLabels()["app.kubernetes.io/part-of"] == "flux" || (k.id.Namespace == k.id.Name && (k.id.GroupKind.Kind == "GitRepository" || k.id.GroupKind.Kind == "Kustomization"))
}

// assertTakenOver checks the ownership metadata the takeover leaves on a Flux object: no
// kustomize-controller owner labels, ssa: Ignore and prune: Disabled, and no field applied by
// kustomize-controller or the Flux CLI any more.
func assertTakenOver(t testing.TB, c client.Client, k objectKey) {
	t.Helper()
	m, err := getMeta(c, k)
	require.NoError(t, err, k.String())
	assert.NotContains(t, m.GetLabels(), labelOwnerName, k.String())
	assert.NotContains(t, m.GetLabels(), labelOwnerNamespace, k.String())
	assert.Equal(t, "Ignore", m.GetAnnotations()[annotationSSA], k.String())
	assert.Equal(t, "Disabled", m.GetAnnotations()[annotationPrune], k.String())
	applied := false
	for _, mf := range m.GetManagedFields() {
		if mf.Operation != metav1.ManagedFieldsOperationApply {
			continue
		}
		assert.NotContains(t, []string{"kustomize-controller", "flux"}, mf.Manager, "%s: fields applied by %s moved to the plugin", k, mf.Manager)
		applied = applied || mf.Manager == pluginFieldManager
	}
	assert.True(t, applied, "%s is applied by %s", k, pluginFieldManager)
}

// wouldPrune is kustomize-controller's garbage-collection rule (docs/flux-facts.md): an object
// that left Git is deleted only if it still carries both owner labels and is annotated neither
// prune: disabled nor ssa: Ignore (values compared case-insensitively).
func wouldPrune(m metav1.Object) bool {
	l, a := m.GetLabels(), m.GetAnnotations()
	_, name := l[labelOwnerName]
	_, ns := l[labelOwnerNamespace]
	return name && ns && !strings.EqualFold(a[annotationPrune], "disabled") && !strings.EqualFold(a[annotationSSA], "ignore")
}

func appKeys(a fluxenv.App) []objectKey {
	return []objectKey{
		{id: object.ObjMetadata{Namespace: a.Namespace, Name: a.Name, GroupKind: schema.GroupKind{Kind: "ConfigMap"}}, version: "v1"},
		{id: object.ObjMetadata{Namespace: a.Namespace, Name: a.Name, GroupKind: schema.GroupKind{Group: "apps", Kind: "Deployment"}}, version: "v1"},
	}
}

func secretKey(f *fluxenv.Flux) objectKey {
	return objectKey{id: object.ObjMetadata{Namespace: f.Options.Namespace, Name: f.Options.SecretName, GroupKind: schema.GroupKind{Kind: "Secret"}}, version: "v1"}
}

func exists(t testing.TB, c client.Client, k objectKey) bool {
	t.Helper()
	_, err := getMeta(c, k)
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err, k.String())
	return true
}

// resourceVersions of the inventory's objects but the sync objects, whose status the controllers
// keep writing: equal maps mean nothing was written.
func resourceVersions(t testing.TB, c client.Client, ks *unstructured.Unstructured) map[string]string {
	t.Helper()
	var objs []*metav1.PartialObjectMetadata
	for _, k := range inventoryKeys(t, ks) {
		if kind := k.id.GroupKind.Kind; kind == "GitRepository" || kind == "Kustomization" {
			continue
		}
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(k.gvk())
		m.SetNamespace(k.id.Namespace)
		m.SetName(k.id.Name)
		objs = append(objs, m)
	}
	return testenv.ResourceVersions(t, c, objs)
}

// defaultApps are the user apps most scenarios keep in the fleet repository.
var defaultApps = []fluxenv.App{{Namespace: "apps", Name: "podinfo"}, {Namespace: "apps", Name: "other"}}

// bootstrapped serves a fleet repository with the apps under o.Path and bootstraps it into a fresh
// API server with the real controllers syncing it.
func bootstrapped(t *testing.T, o fluxenv.Options, apps ...fluxenv.App) *scenario {
	t.Helper()
	fluxenv.BinDir(t, false)
	env := testenv.Start(t)
	repo := fleetWithApps(t, o.WithDefaults().Path, apps...)
	return newScenario(t, fluxenv.Bootstrap(t, env, repo, o), apps...)
}

// fleetWithApps serves a fleet repository over HTTP on loopback with the apps under clusterPath,
// not yet committed (the bootstrap commits them with its own files).
func fleetWithApps(t *testing.T, clusterPath string, apps ...fluxenv.App) *fluxenv.Repo {
	t.Helper()
	repo := fluxenv.StartGitServer(t).CreateRepo(t, "fleet")
	for _, a := range apps {
		repo.AddApp(t, clusterPath, a)
	}
	return repo
}
