package migrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/operatorenv"
)

// handoff is the step after a migration: the team installs the Flux Operator and hands it the
// migrated instance. Nothing may be deleted, recreated or restarted, users' apps included, and
// kustomize-controller keeps reconciling the fleet repository.
func (s *scenario) handoff(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	ns := s.f.Options.Namespace
	ks := s.f.Kustomization(t)
	apps := takeSnapshot(t, s.c, ks)
	flux := s.pluginObjects(t, ns)
	require.NotEmpty(t, flux)

	op := operatorenv.Start(t, s.f.Env, operatorenv.Options{Namespace: ns, Distribution: s.dist})
	reportCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err := op.WaitReport(reportCtx)
	require.NoError(t, err)

	start := time.Now()
	r := runPlugin(t, "", "handoff", "-n", ns, "--kubeconfig="+s.kubeconfig, "--distribution", s.dist, "--timeout=3m")
	t.Logf("handoff in %s:\n%s%s", time.Since(start).Round(10*time.Millisecond), r.Stderr, r.Stdout)
	require.Equal(t, 0, r.Code, "handoff failed:\n%s\noperator log:\n%s", r.Stderr, op.LogTail(40))
	assert.Contains(t, r.Stderr, "its first reconcile may create 0 and delete 0\n")
	assert.Contains(t, r.Stdout, "(created 0, deleted 0, none recreated or restarted, as planned)")

	for key, was := range flux {
		now := &metav1.PartialObjectMetadata{}
		now.SetGroupVersionKind(key.gvk())
		require.NoError(t, s.c.Get(ctx, client.ObjectKey{Namespace: key.id.Namespace, Name: key.id.Name}, now), "%s after the hand-off", key)
		assert.Equal(t, was.UID, now.UID, "%s was recreated", key)
		assert.Equal(t, was.Generation, now.Generation, "%s changed generation", key)
	}
	apps.assertSurvived(t, s.c)
	apps.assertTemplates(t, s.c, nil)
	err = s.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: operatorenv.PluginInventoryName}, &corev1.ConfigMap{})
	assert.True(t, apierrors.IsNotFound(err), "the plugin's record moved to the FluxInstance: %v", err)

	// kustomize-controller, now fed by the operator's GitRepository and Kustomization, still
	// reconciles the fleet repository.
	ks = s.f.Reconcile(t, s.f.Repo.Head(t))
	assert.ElementsMatch(t, fluxenv.Inventory(s.f.Kustomization(t)), fluxenv.Inventory(ks))
	apps.assertSurvived(t, s.c)

	r = runPlugin(t, "", "status", "-n", ns, "--kubeconfig="+s.kubeconfig)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Regexp(t, `Managed By: +flux-operator\n`, r.Stdout)
	assert.Regexp(t, `FluxInstance: +`+ns+`/flux, reconciled by the operator: Ready=True`, r.Stdout)
}

// pluginObjects reads the metadata of every object in the plugin's inventory record.
func (s *scenario) pluginObjects(t *testing.T, ns string) map[objectKey]*metav1.PartialObjectMetadata {
	t.Helper()
	record, err := operatorenv.PluginInventory(context.Background(), s.c, ns)
	require.NoError(t, err)
	out := map[objectKey]*metav1.PartialObjectMetadata{}
	for _, e := range record.Entries {
		id, err := object.ParseObjMetadata(e.ID)
		require.NoError(t, err, e.ID)
		key := objectKey{id: id, version: e.Version}
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(key.gvk())
		require.NoError(t, s.c.Get(context.Background(), client.ObjectKey{Namespace: key.id.Namespace, Name: key.id.Name}, obj), e.ID)
		out[key] = obj
	}
	return out
}
