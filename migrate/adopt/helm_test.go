package adopt

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/helmstorage"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/test/helmenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

const helmRelease = "flux2"

// helmValues change the rendering the way a pipeline's values do: a log level (every
// controller's args), components left out.
func helmValues() map[string]any {
	return map[string]any{
		"logLevel":                  "debug",
		"imageAutomationController": map[string]any{"create": false},
		"imageReflectionController": map[string]any{"create": false},
	}
}

// TestMigrateHelm adopts a Flux installed by the real Helm CLI from the community chart: the plan
// reproduces the running controllers (the changed values become patches), the takeover deletes
// and restarts nothing, the release records are set aside last, so that the real `helm uninstall`
// then deletes nothing; a second run has nothing to do; the rollback gives the release back, and
// the real `helm upgrade` manages it again.
func TestMigrateHelm(t *testing.T) {
	h := helmenv.Require(t)
	env := testenv.Start(t)
	ctx := context.Background()
	c := adminClient(t, env)
	h.Install(t, env, helmenv.Release{Name: helmRelease, Namespace: "flux-system", Values: helmValues()})
	objs := releaseObjects(t, c)
	before := snapshot(t, c, objs)
	specsBefore := deploymentSpecs(t, c, "flux-system")

	in, err := Detect(ctx, c, "")
	require.NoError(t, err)
	assert.Equal(t, installation.ManagedByHelm, in.Installer)
	assert.Equal(t, "v"+helmenv.AppVersion, in.Version)
	assert.Equal(t, []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}, in.Components)
	assert.True(t, in.NetworkPolicy, "the chart's policies.create defaults to true")
	assert.Nil(t, in.Sync)
	require.NotNil(t, in.Helm)
	assert.Equal(t, helmRelease, in.Helm.Name)
	assert.Error(t, CheckRepoDir(in), "--repo-dir has no bootstrap files to replace")

	p, err := BuildPlan(ctx, c, in, release(t, in.Version))
	require.NoError(t, err)
	summary := strings.Join(p.Summary(), "\n")
	t.Log(summary)
	assert.Contains(t, summary, "Helm release: release flux2 in flux-system, chart flux2-"+helmenv.ChartVersion+", revision 1, deployed")
	assert.Contains(t, summary, "values set: imageAutomationController.create, imageReflectionController.create, logLevel")
	assert.Contains(t, summary, "--log-level=debug", "the changed value is a patch")
	assert.Contains(t, summary, "records of Helm release flux2 (in flux-system) are set aside")
	assert.Empty(t, p.Unexpressed)

	_, err = Takeover(ctx, apply.NewManager(kube.Instance{Client: c, Name: "flux", Namespace: in.Namespace}), p, TakeoverOptions{})
	require.NoError(t, err)
	after := snapshot(t, c, objs)
	for k, s := range before {
		assert.Equal(t, s.uid, after[k].uid, "%s was recreated", k)
	}
	assert.Equal(t, specsBefore, deploymentSpecs(t, c, "flux-system"), "no pod template changed")
	for _, o := range p.Objects {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(o), live))
		assert.False(t, ownership.HeldByHelm(live), "%s still carries Helm's ownership", kube.Ref(o))
	}
	st := helmstorage.Release{Name: helmRelease, StorageNamespace: "flux-system"}
	records, err := helmstorage.Records(ctx, c, st)
	require.NoError(t, err)
	assert.Empty(t, records, "Helm sees no record of the release")

	out, err := h.Run(ctx, env, nil, "uninstall", helmRelease, "--namespace", "flux-system")
	require.Error(t, err, "%s", out)
	assert.Contains(t, string(out), "not found")
	assert.Equal(t, after, snapshot(t, c, objs), "`helm uninstall` deleted and changed nothing")
	// The old pipeline running again: no release, so a fresh install, which Helm refuses on the
	// existing objects before it writes anything (no record: a later uninstall has nothing to delete).
	out, err = h.Run(ctx, env, nil, "upgrade", "--install", helmRelease, h.Chart, "--namespace", "flux-system", "--no-hooks")
	require.Error(t, err, "%s", out)
	assert.Contains(t, string(out), "exists and cannot be imported into the current release")
	assert.Equal(t, after, snapshot(t, c, objs), "the refused install changed nothing")
	records, err = helmstorage.Records(ctx, c, st)
	require.NoError(t, err)
	assert.Empty(t, records, "the refused install left no record")

	_, res, err := migrateOnce(ctx, c, "", in.Version, t)
	require.NoError(t, err)
	assert.True(t, res.NothingToDo)

	rb, err := Rollback(ctx, c, "flux-system")
	require.NoError(t, err)
	assert.Equal(t, installation.ManagedByHelm, rb.Installer)
	assert.Len(t, rb.HelmRecords, 1)
	for _, o := range objs {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(o), live))
		assert.Equal(t, helmRelease, live.GetAnnotations()[ownership.AnnotationHelmReleaseName], kube.Ref(o))
		assert.Equal(t, ownership.ManagedByHelmValue, live.GetLabels()["app.kubernetes.io/managed-by"], kube.Ref(o))
	}
	h.Upgrade(t, env, helmenv.Release{Name: helmRelease, Namespace: "flux-system", Values: helmValues()})
	for k, s := range before {
		assert.Equal(t, s.uid, snapshot(t, c, objs)[k].uid, "%s was recreated by the upgrade after the rollback", k)
	}
	in, err = Detect(ctx, c, "")
	require.NoError(t, err)
	assert.Nil(t, in.Record)
	require.NotNil(t, in.Helm)
	assert.Equal(t, 2, in.Helm.Revision, "`helm upgrade` made revision 2 of the restored release")
}

// releaseObjects are the objects the Helm release installed, from its latest record.
func releaseObjects(t *testing.T, c client.Client) []*unstructured.Unstructured {
	t.Helper()
	rel, err := helmstorage.Latest(context.Background(), c, helmstorage.Release{Name: helmRelease, StorageNamespace: "flux-system"})
	require.NoError(t, err)
	mobjs, err := rel.ManifestObjects()
	require.NoError(t, err)
	var out []*unstructured.Unstructured
	for _, m := range mobjs {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(m.APIVersion)
		u.SetKind(m.Kind)
		u.SetName(m.Name)
		u.SetNamespace(m.Namespace)
		gv, err := schema.ParseGroupVersion(m.APIVersion)
		require.NoError(t, err)
		mapping, err := c.RESTMapper().RESTMapping(schema.GroupKind{Group: gv.Group, Kind: m.Kind}, gv.Version)
		require.NoError(t, err)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace && m.Namespace == "" {
			u.SetNamespace(rel.Namespace)
		}
		out = append(out, u)
	}
	require.Greater(t, len(out), 20)
	return out
}

// TestMigrateHelmFailedRelease: a release whose last change failed is refused, naming its status
// and what to do, and nothing is changed.
func TestMigrateHelmFailedRelease(t *testing.T) {
	h := helmenv.Require(t)
	env := testenv.Start(t)
	ctx := context.Background()
	c := adminClient(t, env)
	h.Install(t, env, helmenv.Release{Name: helmRelease, Namespace: "flux-system"})
	// An upgrade the API server rejects (a negative replica count) leaves revision 2 failed.
	out, err := h.Run(ctx, env, nil, "upgrade", helmRelease, h.Chart, "--namespace", "flux-system", "--no-hooks", "--set", "kustomizeController.replicas=-1")
	require.Error(t, err, "%s", out)
	objs := releaseObjects(t, c)
	before := snapshot(t, c, objs)

	_, err = Detect(ctx, c, "")
	var refusal *RefusalError
	require.ErrorAs(t, err, &refusal)
	assert.Contains(t, err.Error(), `the Helm release flux-system/flux2 that installed Flux in namespace "flux-system" is failed, not deployed: finish or roll back that change with helm first`)
	assert.Equal(t, before, snapshot(t, c, objs), "nothing changed")
}
