package migrate_test

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// The team's Flux objects in the fleet repository, written for Flux 2.2 at versions 2.9.4 no
// longer serves, and the versions `upgrade-repo` rewrites them to (the ones 2.9.4 stores).
const (
	teamDir       = "clusters/test/team"
	teamFile      = teamDir + "/flux.yaml"
	teamNamespace = "team"
	// upgradeConstraint is the FluxInstance's spec.distribution.version after the upgrade, and
	// upgradeVersion the Flux version it resolves to: the newest of the test distribution.
	upgradeConstraint = "2.x"
	upgradeVersion    = "v2.9.4"
	// teamSecret holds the team GitRepository's credentials; like every secret, it is not in Git.
	teamSecret = "git-auth"
	// tenantsPath is what the team's Kustomization applies: outside clusters/test, so only the
	// real kustomize-controller, never the simulated 2.2.3 one, applies it.
	tenantsPath = "tenants"
)

type teamObject struct {
	kind, name, group, from, to string
	// overlap: Flux 2.2.3 serves the new version too.
	overlap bool
}

var teamObjects = []teamObject{
	{"GitRepository", "fleet", "source.toolkit.fluxcd.io", "v1beta2", "v1", true},
	{"Kustomization", "apps", "kustomize.toolkit.fluxcd.io", "v1beta2", "v1", true},
	{"HelmRepository", "charts", "source.toolkit.fluxcd.io", "v1beta2", "v1", false},
	{"HelmRelease", "podinfo", "helm.toolkit.fluxcd.io", "v2beta1", "v2", false},
	{"HelmRelease", "canary", "helm.toolkit.fluxcd.io", "v2beta2", "v2", false},
	{"Provider", "hook", "notification.toolkit.fluxcd.io", "v1beta2", "v1beta3", true},
	{"Alert", "all", "notification.toolkit.fluxcd.io", "v1beta2", "v1beta3", true},
}

func (o teamObject) key(version string) objectKey {
	return objectKey{id: object.ObjMetadata{Namespace: teamNamespace, Name: o.name,
		GroupKind: schema.GroupKind{Group: o.group, Kind: o.kind}}, version: version}
}

// header is how the object's document starts in teamFile at a version.
func (o teamObject) header(version string) string {
	return "apiVersion: " + o.group + "/" + version + "\nkind: " + o.kind + "\n"
}

// teamApp is the app the team's own Kustomization deploys from tenantsPath.
var teamApp = fluxenv.App{Namespace: "team-apps", Name: "web"}

// teamManifests is teamFile as a user wrote it for Flux 2.2: several documents, comments, and a
// sourceRef naming its API version. Every field is in the schemas of both versions, so the
// upgrade loses nothing but the versions.
func teamManifests(repoURL string) string {
	return `# The team's sources, releases and alerts (written for Flux 2.2).
---
# The fleet repository, read with the team's own credentials.
apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: GitRepository
metadata:
  name: fleet
  namespace: team
spec:
  interval: 1m # the team wants its changes fast
  url: ` + repoURL + `
  ref:
    branch: main
  secretRef:
    name: ` + teamSecret + `
---
apiVersion: kustomize.toolkit.fluxcd.io/v1beta2
kind: Kustomization
metadata:
  name: apps
  namespace: team
spec:
  interval: 10m
  path: ./` + tenantsPath + `
  prune: true
  sourceRef:
    apiVersion: source.toolkit.fluxcd.io/v1beta2
    kind: GitRepository
    name: fleet
---
apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: HelmRepository
metadata:
  name: charts
  namespace: team
spec:
  type: oci
  interval: 10m
  url: oci://ghcr.io/stefanprodan/charts
---
apiVersion: helm.toolkit.fluxcd.io/v2beta1
kind: HelmRelease
metadata:
  name: podinfo
  namespace: team
spec:
  interval: 5m
  chart:
    spec:
      chart: podinfo
      version: "6.x"
      sourceRef:
        kind: HelmRepository
        name: charts
  values:
    replicaCount: 2 # two replicas in every cluster
---
# The canary, written after Flux 2.2 moved HelmRelease to v2beta2.
apiVersion: helm.toolkit.fluxcd.io/v2beta2
kind: HelmRelease
metadata:
  name: canary
  namespace: team
spec:
  interval: 5m
  chart:
    spec:
      chart: podinfo
      version: ">=6.9.0"
      sourceRef:
        kind: HelmRepository
        name: charts
---
apiVersion: notification.toolkit.fluxcd.io/v1beta2
kind: Provider
metadata:
  name: hook
  namespace: team
spec:
  type: generic
  address: https://hooks.example.com/flux
---
# Every Kustomization's events go to the hook.
apiVersion: notification.toolkit.fluxcd.io/v1beta2
kind: Alert
metadata:
  name: all
  namespace: team
spec:
  providerRef:
    name: hook
  eventSources:
  - kind: Kustomization
    name: '*'
`
}

// writeTeam writes the team's directory (a kustomization.yaml, its namespace and teamFile) and
// the app its Kustomization deploys into the work tree.
func writeTeam(t *testing.T, repo *fluxenv.Repo) {
	t.Helper()
	repo.WriteFile(t, teamDir+"/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- namespace.yaml\n- flux.yaml\n")
	repo.WriteFile(t, teamDir+"/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+teamNamespace+"\n")
	repo.WriteFile(t, teamFile, teamManifests(repo.URL))
	repo.AddApp(t, tenantsPath, teamApp)
}

// copyGitSecret gives the team GitRepository the Git server's credentials (those of the bootstrap
// secret), as a user would with `flux create secret git`.
func copyGitSecret(t *testing.T, s *scenario) objectKey {
	t.Helper()
	ctx := context.Background()
	var boot corev1.Secret
	require.NoError(t, s.c.Get(ctx, client.ObjectKey{Namespace: s.f.Options.Namespace, Name: s.f.Options.SecretName}, &boot))
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: teamNamespace, Name: teamSecret}, Data: boot.Data}
	require.NoError(t, s.c.Create(ctx, secret))
	return objectKey{id: object.ObjMetadata{Namespace: teamNamespace, Name: teamSecret, GroupKind: schema.GroupKind{Kind: "Secret"}}, version: "v1"}
}

// servedMeta reads an object's metadata at the version the API server now prefers for its kind:
// the version a snapshot recorded may be one the upgrade removed. c must be a client created
// after the upgrade (a REST mapper caches the versions it discovered).
func servedMeta(c client.Client) func(objectKey) (*metav1.PartialObjectMetadata, error) {
	return func(k objectKey) (*metav1.PartialObjectMetadata, error) {
		mapping, err := c.RESTMapper().RESTMapping(k.id.GroupKind)
		if err != nil {
			return nil, err
		}
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(mapping.GroupVersionKind)
		err = c.Get(context.Background(), client.ObjectKey{Namespace: k.id.Namespace, Name: k.id.Name}, m)
		return m, err
	}
}

// fluxDeployments are the Deployments of the Flux namespace, whose pod templates the upgrade
// changes (new images); the users' must not change.
func fluxDeployments(t *testing.T, c client.Client, ns string) map[string]bool {
	t.Helper()
	var list appsv1.DeploymentList
	require.NoError(t, c.List(context.Background(), &list, client.InNamespace(ns)))
	out := map[string]bool{}
	for _, d := range list.Items {
		out[ns+"/"+d.Name] = true
	}
	return out
}

// inventoryVersions maps the Kustomization's inventory ids to the versions it applied them at.
func inventoryVersions(t *testing.T, ks *unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range inventoryKeys(t, ks) {
		out[k.String()] = k.version
	}
	return out
}

// TestUpgradeAcrossRemovedVersions is the whole journey of a fleet repository bootstrapped at
// Flux 2.2.3 whose users' manifests are at versions 2.9.4 removes (#12): migrate, rewrite the
// repository with upgrade-repo, apply "2.x" (2.9.4, the newest), push, then the real controllers
// (v1.9.4) reconcile the new commit keeping every user object, and still prune an app removed
// from Git.
//
// No commit suits both releases: 2.2.3's CRDs serve neither the rewritten HelmRelease (v2) nor
// HelmRepository (v1), and 2.9.4's serve none of the old versions. The README's order is followed:
// the apply, then the push. While the sync Kustomization's status.inventory still says it applies
// the team's objects at removed versions, the apply refuses (naming them) unless --force, which
// the user passes once the rewritten repository is ready. In between, the new kustomize-controller
// fails the old commit and deletes nothing (its apply fails before its garbage collection); after
// the push, garbage collection compares inventory ids without versions, so it deletes none of the
// rewritten objects either.
func TestUpgradeAcrossRemovedVersions(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s, all, users := bootstrapTeamAt223(t)
	f, repo := s.f, s.f.Repo
	t.Logf("bootstrap of v2.2.3 and the simulated reconcile: %s", time.Since(start).Round(10*time.Millisecond))

	// migrate adopts the bootstrap; the work tree goes to Git; 2.2.3 reconciles that commit.
	step := time.Now()
	stderr, _ := s.migrate(t)
	assert.Contains(t, stderr, "Flux v2.2.3 installed by `flux bootstrap`")
	s.checkWorkTree(t)
	repo.CommitAndPush(t, "Replace the Flux bootstrap files with a FluxInstance")
	f.SimulateReconcile(t)
	all.assertSurvived(t, s.c)
	t.Logf("migrate and its commit: %s", time.Since(step).Round(10*time.Millisecond))

	step = time.Now()
	instance := upgradeRepository(t, s)
	t.Logf("upgrade-repo: %s", time.Since(step).Round(10*time.Millisecond))

	step = time.Now()
	c := upgradeCluster(t, s, instance)
	users.assertSurvivedAs(t, servedMeta(c))
	t.Logf("apply of 2.9.4: %s", time.Since(step).Round(10*time.Millisecond))

	step = time.Now()
	startOnOldCommit(t, s, c, users)
	t.Logf("the real controllers fail the old commit: %s", time.Since(step).Round(10*time.Millisecond))

	step = time.Now()
	commit := f.Push(t, "Upgrade to Flux 2.9.4: the manifests at the versions it serves")
	reconcileUpgraded(t, s, c, users, commit)
	t.Logf("the real controllers reconcile the rewritten commit: %s", time.Since(step).Round(10*time.Millisecond))

	// Pruning still works: an app removed from Git is deleted, the rest kept.
	step = time.Now()
	gone := s.apps[0]
	repo.RemoveApp(t, f.Options.Path, gone)
	ks := f.Reconcile(t, f.Push(t, "Remove "+gone.Name))
	for _, k := range appKeys(gone) {
		assert.False(t, exists(t, c, k), "%s was pruned", k)
		assert.NotContains(t, fluxenv.Inventory(ks), k.String())
	}
	users.assertSurvivedAs(t, servedMeta(c), appKeys(gone)...)
	users.assertTemplates(t, c, fluxDeployments(t, c, f.Options.Namespace), gone.Namespace+"/"+gone.Name)
	t.Logf("prune: %s; whole journey: %s", time.Since(step).Round(10*time.Millisecond), time.Since(start).Round(10*time.Millisecond))
}

// bootstrapTeamAt223 bootstraps Flux v2.2.3 from a fleet repository holding the default apps and
// the team's objects, reconciled by simulation: 2.2.3's kustomize-controller applies the team's
// objects at their versions. It returns the snapshot of the sync Kustomization's inventory (and
// of the two Git secrets) and the part of it that is the users'.
func bootstrapTeamAt223(t *testing.T) (s *scenario, all, users *snapshot) {
	t.Helper()
	fluxenv.BinDir(t, false)
	env := testenv.Start(t)
	o := fluxenv.Options{Version: "v2.2.3"}
	repo := fleetWithApps(t, o.WithDefaults().Path, defaultApps...)
	writeTeam(t, repo)
	fluxenv.WriteBootstrapFiles(t, repo, o)
	repo.CommitAndPush(t, "Add Flux v2.2.3 sync manifests")
	f := fluxenv.ApplyBootstrap(t, env, repo, o)
	s = newScenario(t, f, defaultApps...)

	f.SimulateReconcile(t)
	gitAuth := copyGitSecret(t, s)
	applied := inventoryVersions(t, f.Kustomization(t))
	for _, obj := range teamObjects {
		assert.Equal(t, obj.from, applied[obj.key("").String()], "%s is applied at %s", obj.kind, obj.from)
		assert.True(t, exists(t, s.c, obj.key(obj.from)), "%s %s exists", obj.kind, obj.name)
	}
	all = takeSnapshot(t, s.c, f.Kustomization(t), secretKey(f), gitAuth)
	users = &snapshot{uids: map[objectKey]types.UID{}, templates: all.templates}
	for k, uid := range all.uids {
		if !isFlux(t, s.c, k) {
			users.uids[k] = uid
		}
	}
	recorded := append(appKeys(defaultApps[0]), gitAuth)
	for _, obj := range teamObjects {
		recorded = append(recorded, obj.key(obj.from))
	}
	for _, k := range recorded {
		require.Contains(t, users.uids, k, "the users' objects are recorded")
	}
	return s, all, users
}

// upgradeRepository sets the FluxInstance in the work tree to 2.x (2.9.4) and rewrites the team's
// manifests for it with `upgrade-repo` (a dry run first, which writes nothing). It checks what it
// printed and that teamFile changed in its apiVersion lines only (the objects' and the
// sourceRef's). It returns the FluxInstance file's path.
func upgradeRepository(t *testing.T, s *scenario) string {
	t.Helper()
	repo := s.f.Repo
	rel := path.Join(s.f.Options.Dir(), "flux-instance.yaml")
	file := filepath.Join(repo.Dir, filepath.FromSlash(rel))
	migrated := repo.ReadFile(t, rel)
	// Only the version changed: the rendering warns of each controller the patches keep at 2.2.3.
	repo.WriteFile(t, rel, upgradedInstance(t, migrated, upgradeConstraint, true))
	r := runPlugin(t, "", "build", "-f", file, "--distribution", s.dist, "-o", "name")
	require.Equal(t, 0, r.Code, r.Stderr)
	for _, controller := range []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"} {
		assert.Regexp(t, `Warning: spec.kustomize.patches set Deployment `+controller+` container manager to ghcr.io/fluxcd/`+controller+`:v[0-9.]+, not Flux `+upgradeVersion+`'s v[0-9.]+: that controller stays at another release`, r.Stderr)
	}
	repo.WriteFile(t, rel, upgradedInstance(t, migrated, upgradeConstraint, false))

	old := teamManifests(repo.URL)
	want := old
	var lines []string
	for _, obj := range teamObjects {
		i := strings.Index(old, obj.header(obj.from))
		require.GreaterOrEqual(t, i, 0, obj.kind)
		lines = append(lines, fmt.Sprintf("%s:%d: %s %s/%s: %s/%s → %s", teamFile, strings.Count(old[:i], "\n")+1,
			obj.kind, teamNamespace, obj.name, obj.group, obj.from, obj.to))
		want = strings.Replace(want, obj.header(obj.from), obj.header(obj.to), 1)
	}
	// The Kustomization's sourceRef names the GitRepository's version too: rewritten as well.
	ref, refTo := "    apiVersion: source.toolkit.fluxcd.io/v1beta2\n    kind: GitRepository\n", "    apiVersion: source.toolkit.fluxcd.io/v1\n    kind: GitRepository\n"
	i := strings.Index(old, ref)
	require.GreaterOrEqual(t, i, 0, "the sourceRef")
	lines = append(lines, fmt.Sprintf("%s:%d: Kustomization %s/apps spec.sourceRef (GitRepository): source.toolkit.fluxcd.io/v1beta2 → v1",
		teamFile, strings.Count(old[:i], "\n")+1, teamNamespace))
	want = strings.Replace(want, ref, refTo, 1)
	for _, dryRun := range []bool{true, false} {
		args := []string{"upgrade-repo", "-f", file, "--repo-dir", repo.Dir}
		if dryRun {
			args = append(args, "--dry-run")
		}
		r := runPlugin(t, "", args...)
		require.Equal(t, 0, r.Code, "upgrade-repo --dry-run=%t:\n%s", dryRun, r.Stderr)
		files, objects := reportedChanges(r.Stdout)
		assert.Equal(t, []string{" M " + teamFile}, files, "--dry-run=%t: the changed files", dryRun)
		assert.ElementsMatch(t, lines, objects, "--dry-run=%t: the rewritten objects", dryRun)
		if dryRun {
			assert.Equal(t, old, repo.ReadFile(t, teamFile), "--dry-run writes nothing")
		}
	}
	assert.Equal(t, want, repo.ReadFile(t, teamFile), "only the apiVersion lines changed")
	assert.Equal(t, rel+"\n"+teamFile, repo.Git(t, "diff", "--name-only"), "upgrade-repo changed teamFile alone")
	return file
}

var rewriteLine = regexp.MustCompile(`^\S+:\d+: `)

// reportedChanges splits upgrade-repo's output into its changed-file lines (" M path") and its
// rewritten-object lines (path:LINE: ...); other lines (a summary) are left out.
func reportedChanges(stdout string) (files, objects []string) {
	for _, line := range strings.Split(stdout, "\n") {
		switch {
		case strings.HasPrefix(line, " M "):
			files = append(files, line)
		case rewriteLine.MatchString(line):
			objects = append(objects, line)
		}
	}
	return files, objects
}

// upgradedInstance is the migrated FluxInstance at another version, with or without the patches
// migrate wrote to keep the running 2.2.3 pod templates (the bootstrap's images have no digest,
// the rendering's do): they set the controllers' images, args and version labels to 2.2.3's, so
// kept at 2.9.4 they would run the 2.2.3 controllers against 2.9.4's CRDs (assertControllersAt
// fails then). The rendering warns of them (see upgradeRepository); the user drops them.
func upgradedInstance(t *testing.T, migrated, version string, keepPatches bool) string {
	t.Helper()
	var inst map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(migrated), &inst))
	require.NoError(t, unstructured.SetNestedField(inst, version, "spec", "distribution", "version"))
	if !keepPatches {
		unstructured.RemoveNestedField(inst, "spec", "kustomize")
	}
	data, err := yaml.Marshal(inst)
	require.NoError(t, err)
	return string(data)
}

// assertControllersAt checks that every Flux controller's Deployment runs the image of the
// distribution's version (the rendering may add a digest).
func assertControllersAt(t *testing.T, c client.Client, s *scenario, version string) {
	t.Helper()
	dist, err := testenv.ReadManifests(filepath.Join(s.dist, "flux", version))
	require.NoError(t, err)
	checked := 0
	for _, obj := range dist {
		if obj.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		err := c.Get(context.Background(), client.ObjectKey{Namespace: s.f.Options.Namespace, Name: obj.GetName()}, &d)
		if apierrors.IsNotFound(err) {
			continue // a component the instance does not install
		}
		require.NoError(t, err, obj.GetName())
		containers, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
		require.NotEmpty(t, containers, obj.GetName())
		image, _ := containers[0].(map[string]any)["image"].(string)
		want := "ghcr.io/" + image
		assert.True(t, strings.HasPrefix(d.Spec.Template.Spec.Containers[0].Image, want),
			"Deployment %s runs %s, want %s", d.Name, d.Spec.Template.Spec.Containers[0].Image, want)
		checked++
	}
	assert.Equal(t, len(s.f.Options.Components), checked, "one Deployment per component")
}

// upgradeCluster applies the FluxInstance at 2.x (2.9.4): refused first, naming every team object the
// sync Kustomization's inventory still applies at a removed version and changing nothing, then
// forced. It returns a client created after the upgrade.
func upgradeCluster(t *testing.T, s *scenario, instance string) client.Client {
	t.Helper()
	args := []string{"apply", "-f", instance, "--kubeconfig=" + s.kubeconfig, "--distribution", s.dist, "--wait=false"}
	ks := s.f.Kustomization(t)
	crds := schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinitionList"}
	rv, crdRV := resourceVersions(t, s.c, ks), testenv.ListResourceVersions(t, s.c, crds)
	assertServed(t, s.c, false)
	r := runPlugin(t, "", args...)
	require.Equal(t, 1, r.Code, "apply without --force:\n%s", r.Stderr)
	assert.Contains(t, r.Stderr, "error: the upgrade would lose what these lines name (nothing was changed):\n")
	for _, obj := range teamObjects {
		assert.Contains(t, r.Stderr, fmt.Sprintf("  Kustomization %[1]s/%[1]s applies %s %s/%s as %s/%s, which the target removes",
			s.f.Options.Namespace, obj.kind, teamNamespace, obj.name, obj.group, obj.from))
	}
	assert.Contains(t, r.Stderr, "re-run with --force to upgrade anyway")
	assert.Contains(t, r.Stderr, "kubectl fluxinstance upgrade-repo -f FILE --repo-dir DIR", "the refusal names the fix")
	assert.Equal(t, rv, resourceVersions(t, s.c, ks), "the refused apply changed no user object")
	assert.Equal(t, crdRV, testenv.ListResourceVersions(t, s.c, crds), "the refused apply changed no CRD")

	r = runPlugin(t, "", append(args, "--force")...)
	require.Equal(t, 0, r.Code, "apply --force:\n%s", r.Stderr)
	t.Logf("apply --force:\n%s", r.Stderr)
	assert.Contains(t, r.Stderr, "migrating 2 helmreleases.helm.toolkit.fluxcd.io to v2: 2/2")
	assert.Contains(t, r.Stderr, "migrating 1 helmrepositories.source.toolkit.fluxcd.io to v1: 1/1")

	c := fastClient(t, s.f.Env)
	assertControllersAt(t, c, s, upgradeVersion)
	assertServed(t, c, true)
	for _, obj := range teamObjects {
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		mapping, err := c.RESTMapper().RESTMapping(schema.GroupKind{Group: obj.group, Kind: obj.kind})
		require.NoError(t, err, obj.kind)
		require.NoError(t, c.Get(context.Background(), client.ObjectKey{Name: mapping.Resource.GroupResource().String()}, crd))
		stored, _, _ := unstructured.NestedStringSlice(crd.Object, "status", "storedVersions")
		assert.Equal(t, []string{obj.to}, stored, "%s stores %s alone", crd.GetName(), obj.to)
	}
	return c
}

// assertServed checks which of each team object's versions the cluster serves. At 2.2.3 (before
// the upgrade): the old one, and the new one only where the releases overlap, so 2.2.3's
// kustomize-controller could not apply the rewritten commit. At 2.9.4: the new one alone, so the
// new controllers could not apply the old commit.
func assertServed(t *testing.T, c client.Client, upgraded bool) {
	t.Helper()
	for _, obj := range teamObjects {
		gk := schema.GroupKind{Group: obj.group, Kind: obj.kind}
		for v, served := range map[string]bool{obj.from: !upgraded, obj.to: upgraded || obj.overlap} {
			_, err := c.RESTMapper().RESTMapping(gk, v)
			if served {
				assert.NoError(t, err, "%s %s is served (upgraded: %t)", obj.kind, v, upgraded)
			} else {
				assert.True(t, meta.IsNoMatchError(err), "%s %s is not served (upgraded: %t): %v", obj.kind, v, upgraded, err)
			}
		}
	}
}

// startOnOldCommit starts the real controllers (v1.9.4) while Git still holds the 2.2.3
// manifests: the sync Kustomization fails on the removed versions, and nothing is deleted.
func startOnOldCommit(t *testing.T, s *scenario, c client.Client, users *snapshot) {
	t.Helper()
	f := s.f
	fluxenv.KeepDeploymentsAvailable(t, f.Client)
	f.Controllers = fluxenv.StartControllers(t, f.Env, fluxenv.ControllerOptions{Namespace: f.Options.Namespace})
	ks := &unstructured.Unstructured{}
	ks.SetGroupVersionKind(fluxenv.KustomizationKind())
	deadline := time.Now().Add(2 * time.Minute)
	for {
		require.NoError(t, c.Get(context.Background(), f.Key(), ks))
		// The simulation left Ready True; only the controller writes False (first, until
		// source-controller has fetched the commit, ArtifactFailed).
		if _, summary := fluxenv.Ready(ks); strings.HasPrefix(summary, "False ") && !strings.HasPrefix(summary, "False ArtifactFailed") {
			t.Logf("the sync Kustomization on the old commit: %s", summary)
			assert.True(t, slices.ContainsFunc(teamObjects, func(o teamObject) bool {
				return strings.Contains(summary, fmt.Sprintf(`%s/%s/%s dry-run failed: no matches for kind %q in version "%s/%s"`,
					o.kind, teamNamespace, o.name, o.kind, o.group, o.from))
			}), "it fails on a team object at a removed version")
			break
		}
		require.NoError(t, f.Controllers.Running())
		require.True(t, time.Now().Before(deadline), "kustomize-controller did not fail the old commit\n%s", f.Controllers.Logs(20))
		time.Sleep(200 * time.Millisecond)
	}
	users.assertSurvivedAs(t, servedMeta(c))
}

// reconcileUpgraded reconciles the pushed, rewritten commit: the sync Kustomization and the
// team's (whose GitRepository is asked to fetch now) become Ready at it, the sync Kustomization's
// inventory names the team's objects at the new versions, every user object kept its UID and no
// user Deployment's pod template changed.
func reconcileUpgraded(t *testing.T, s *scenario, c client.Client, users *snapshot, commit string) {
	t.Helper()
	f := s.f
	ks := f.Reconcile(t, commit)
	fleet := &unstructured.Unstructured{}
	fleet.SetGroupVersionKind(fluxenv.GitRepositoryKind())
	fleet.SetNamespace(teamNamespace)
	fleet.SetName("fleet")
	require.NoError(t, fluxenv.RequestReconcile(context.Background(), c, fleet, time.Now().Format(time.RFC3339Nano)))
	team := f.WaitKustomizationReady(t, types.NamespacedName{Namespace: teamNamespace, Name: "apps"}, commit)
	applied := inventoryVersions(t, ks)
	for _, obj := range teamObjects {
		assert.Equal(t, obj.to, applied[obj.key("").String()], "%s is applied at %s", obj.kind, obj.to)
	}
	for _, k := range appKeys(teamApp) {
		assert.True(t, exists(t, c, k), "the team's Kustomization applied %s", k)
		assert.Contains(t, fluxenv.Inventory(team), k.String())
	}
	users.assertSurvivedAs(t, servedMeta(c))
	users.assertTemplates(t, c, fluxDeployments(t, c, f.Options.Namespace))
}
