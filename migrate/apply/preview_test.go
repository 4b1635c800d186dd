package apply_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/fluxcd/pkg/ssa"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// PreviewRecorded finds the same changes as Preview, and dry-runs only the objects the record's
// fingerprints cannot prove unchanged: here the Deployment someone else edited and the one
// someone deleted.
func TestPreviewRecordedDryRunsOnlyWhatChanged(t *testing.T) {
	env := testenv.Start(t)
	const ns = "flux-system"
	m, c := newTestManager(t, env, ns)
	objs := renderInstance(t, ns, defaultComponents...)
	_, err := m.Reconcile(ctxT(t), objs, apply.ReconcileOptions{})
	require.NoError(t, err)
	record, err := m.Store().Read(ctxT(t))
	require.NoError(t, err)
	require.NotEmpty(t, record.Fingerprints)

	source := &appsv1.Deployment{}
	require.NoError(t, c.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "source-controller"}, source))
	source.Spec.Template.Spec.Containers[0].Args = append(source.Spec.Template.Spec.Containers[0].Args, "--concurrent=20")
	require.NoError(t, c.Update(ctxT(t), source, client.FieldOwner("someone-else")))
	kustomize := &appsv1.Deployment{}
	require.NoError(t, c.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "kustomize-controller"}, kustomize))
	require.NoError(t, c.Delete(ctxT(t), kustomize))

	var dryRuns atomic.Int32
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 100, 200
	base, err := client.NewWithWatch(cfg, client.Options{})
	require.NoError(t, err)
	counting := interceptor.NewClient(base, interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			dryRuns.Add(1)
			return cl.Patch(ctx, obj, patch, opts...)
		},
	})
	counted := apply.NewManager(kube.Instance{Client: counting, Name: "flux", Namespace: ns})
	actionsOf := func(plans []apply.Planned) map[string]ssa.Action {
		out := map[string]ssa.Action{}
		for _, p := range plans {
			out[kube.Ref(p.Object)] = p.Action
		}
		return out
	}

	full, err := counted.Preview(ctxT(t), objs, ownership.PluginFieldManager, 0)
	require.NoError(t, err)
	fullDryRuns := dryRuns.Swap(0)
	recorded, err := counted.PreviewRecorded(ctxT(t), objs, ownership.PluginFieldManager, 0, record)
	require.NoError(t, err)

	assert.Equal(t, actionsOf(full), actionsOf(recorded))
	assert.Equal(t, ssa.ConfiguredAction, actionsOf(recorded)["Deployment/flux-system/source-controller"])
	assert.Equal(t, ssa.CreatedAction, actionsOf(recorded)["Deployment/flux-system/kustomize-controller"])
	assert.Equal(t, int32(len(objs)), fullDryRuns, "Preview dry-runs every object")
	assert.Equal(t, int32(2), dryRuns.Load(), "PreviewRecorded dry-runs the two changed objects only")
	for i, p := range recorded {
		assert.Equal(t, kube.Ref(full[i].Object), kube.Ref(p.Object), "the same apply order")
	}
}
