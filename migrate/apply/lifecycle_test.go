package apply_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/pkg/ssa"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/diff"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/uninstall"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/wait"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func secretObject(ns, value string) *unstructured.Unstructured {
	s := &unstructured.Unstructured{}
	s.SetAPIVersion("v1")
	s.SetKind("Secret")
	s.SetNamespace(ns)
	s.SetName("flux-test-credentials")
	s.SetLabels(map[string]string{render.LabelOwnerName: "flux", render.LabelOwnerNamespace: ns})
	s.Object["data"] = map[string]any{"password": base64.StdEncoding.EncodeToString([]byte(value))}
	return s
}

// TestLifecycle runs apply, re-apply, dry runs, diff, conflicts, prune, wait and delete in order
// on one API server: each step starts from the state the previous one left.
func TestLifecycle(t *testing.T) {
	env := testenv.Start(t)
	const ns = "flux-system"
	m, c := newTestManager(t, env, ns)
	full := append(renderInstance(t, ns, defaultComponents...), secretObject(ns, "s3cr3t-one"))

	t.Run("first apply creates everything and records the inventory", func(t *testing.T) {
		var progressed []string
		res, err := m.Reconcile(ctxT(t), full, apply.ReconcileOptions{
			Options: apply.Options{Progress: func(e ssa.ChangeSetEntry) { progressed = append(progressed, e.Subject) }},
			Prune:   true,
			Record:  inventory.RecordInfo{PluginVersion: "v0.0.1-test", Distribution: "test", FluxVersion: testVersion, Digest: "v2.7.5@sha256:abc"},
		})
		require.NoError(t, err)
		assert.Equal(t, map[ssa.Action]int{ssa.CreatedAction: len(full)}, countActions(res.ChangeSet))
		assert.Len(t, progressed, len(full))
		// Stages: CRDs and the Namespace come before anything namespaced.
		assert.True(t, strings.HasPrefix(progressed[0], "CustomResourceDefinition/"), progressed[0])

		inv, err := m.Store().Read(ctxT(t))
		require.NoError(t, err)
		require.NotNil(t, inv)
		assert.Equal(t, inventory.StateApplied, inv.State)
		assert.Len(t, inv.Entries, len(full))
		assert.Equal(t, "v0.0.1-test", inv.PluginVersion)
		assert.Equal(t, ownership.PluginFieldManager, inv.FieldManager)
		assert.Equal(t, "testenv-admin", inv.User)
		assert.WithinDuration(t, time.Now(), inv.AppliedAt, time.Minute)
		ids := map[string]string{}
		for _, e := range inv.Entries {
			ids[e.ID] = e.Version
		}
		assert.Equal(t, "v1", ids["flux-system_source-controller_apps_Deployment"])
		assert.Equal(t, "v1", ids["_gitrepositories.source.toolkit.fluxcd.io_apiextensions.k8s.io_CustomResourceDefinition"])

		install, err := installation.DetectInstallation(ctxT(t), c)
		require.NoError(t, err)
		assert.Equal(t, installation.ManagedByPlugin, install.ManagedBy)
		assert.Equal(t, ns, install.Namespace)
	})

	t.Run("re-apply reports everything unchanged and diff finds nothing", func(t *testing.T) {
		before := testenv.ResourceVersions(t, c, full)
		res, err := m.Reconcile(ctxT(t), full, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		assert.Equal(t, map[ssa.Action]int{ssa.UnchangedAction: len(full)}, countActions(res.ChangeSet))
		assert.Equal(t, before, testenv.ResourceVersions(t, c, full))

		entries, err := diff.Objects(ctxT(t), m, full, nil, diff.Options{})
		require.NoError(t, err)
		assert.False(t, diff.HasChanges(entries))
	})

	t.Run("re-apply reads objects by list and writes only the inventory", func(t *testing.T) {
		counter := &requestCounter{}
		cfg := rest.CopyConfig(env.Config)
		cfg.WrapTransport = counter.wrap
		cm, _ := newManagerFor(t, cfg, ns)
		res, err := cm.Reconcile(ctxT(t), full, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		assert.Equal(t, map[ssa.Action]int{ssa.UnchangedAction: len(full)}, countActions(res.ChangeSet))
		reads, dryRuns, writes := counter.counts()
		// The record's fingerprints prove every object unchanged: no dry run at all; the objects
		// are read by kind, not one by one.
		assert.Equal(t, 0, dryRuns)
		assert.Less(t, reads-counter.admissionReads, len(full)/2, "objects must be listed by kind, not read one by one")
		assert.LessOrEqual(t, counter.admissionReads, 3, "one list per mutating admission kind")
		assert.Equal(t, []string{"/api/v1/namespaces/flux-system/configmaps/" + inventory.ConfigMapName}, writes)
	})

	t.Run("re-apply after changes behind its back dry-runs exactly the changed objects", func(t *testing.T) {
		// Another apply by the same field manager that never recorded its fingerprints (an
		// interrupted run of another rendering): a spec change (new generation), a ClusterRole
		// (fingerprinted by resourceVersion) and a label-only change (same generation).
		reapply := func(kind, name string, change func(u *unstructured.Unstructured)) {
			u := find(full, kind, name).DeepCopy()
			change(u)
			require.NoError(t, c.Patch(ctxT(t), u, client.Apply, client.FieldOwner(ownership.PluginFieldManager), client.ForceOwnership))
		}
		reapply("Deployment", "kustomize-controller", func(u *unstructured.Unstructured) {
			require.NoError(t, unstructured.SetNestedField(u.Object, int64(3), "spec", "replicas"))
		})
		reapply("ClusterRole", "crd-controller", func(u *unstructured.Unstructured) { u.Object["rules"] = []any{} })
		reapply("Deployment", "helm-controller", func(u *unstructured.Unstructured) {
			labels := u.GetLabels()
			labels["example.com/extra"] = "yes"
			u.SetLabels(labels)
		})
		// Someone else adds an annotation the rendering does not set: not a change for apply, but
		// the fingerprint cannot tell, so it is dry-run (and conflict-checked: a new manager).
		other := &unstructured.Unstructured{}
		other.SetGroupVersionKind(deploymentGVK)
		other.SetNamespace(ns)
		other.SetName("notification-controller")
		require.NoError(t, c.Patch(ctxT(t), other, client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"example.com/note":"hi"}}}`)), client.FieldOwner("hand-edit")))

		counter := &requestCounter{}
		cfg := rest.CopyConfig(env.Config)
		cfg.WrapTransport = counter.wrap
		cm, _ := newManagerFor(t, cfg, ns)
		res, err := cm.Reconcile(ctxT(t), full, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		got := actions(res.ChangeSet)
		assert.Equal(t, ssa.ConfiguredAction, got["Deployment/flux-system/kustomize-controller"])
		assert.Equal(t, ssa.ConfiguredAction, got["ClusterRole/crd-controller"])
		assert.Equal(t, ssa.ConfiguredAction, got["Deployment/flux-system/helm-controller"])
		assert.Equal(t, ssa.UnchangedAction, got["Deployment/flux-system/notification-controller"])
		assert.Equal(t, map[ssa.Action]int{ssa.UnchangedAction: len(full) - 3, ssa.ConfiguredAction: 3}, countActions(res.ChangeSet))
		_, dryRuns, _ := counter.counts()
		assert.Equal(t, 3+2, dryRuns, "only the changed objects are dry-run (the annotated one twice: conflicts, then changes)")
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(deploymentGVK)
		require.NoError(t, c.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "kustomize-controller"}, live))
		replicas, _, _ := unstructured.NestedInt64(live.Object, "spec", "replicas")
		assert.Equal(t, int64(1), replicas)

		// The record now holds the fingerprints of the objects as they are: nothing to do again.
		counter = &requestCounter{}
		cfg.WrapTransport = counter.wrap
		cm, _ = newManagerFor(t, cfg, ns)
		res, err = cm.Reconcile(ctxT(t), full, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		assert.Equal(t, map[ssa.Action]int{ssa.UnchangedAction: len(full)}, countActions(res.ChangeSet))
		_, dryRuns, _ = counter.counts()
		assert.Equal(t, 0, dryRuns)
	})

	// The next rendering: helm-controller removed, a source-controller arg changed, the Secret
	// value changed.
	next := without(renderInstance(t, ns, "source-controller", "kustomize-controller", "notification-controller"), "", "")
	sc := find(next, "Deployment", "source-controller")
	require.NotNil(t, sc)
	containers, _, _ := unstructured.NestedSlice(sc.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	for i, a := range args {
		if strings.HasPrefix(a, "--log-level=") {
			args[i] = "--log-level=debug"
		}
	}
	require.NoError(t, unstructured.SetNestedStringSlice(containers[0].(map[string]any), args, "args"))
	require.NoError(t, unstructured.SetNestedSlice(sc.Object, containers, "spec", "template", "spec", "containers"))
	next = append(next, secretObject(ns, "s3cr3t-two"))

	t.Run("dry runs change nothing", func(t *testing.T) {
		all := append(append([]*unstructured.Unstructured{}, full...), next...)
		before := testenv.ResourceVersions(t, c, all)
		for _, mode := range []kube.DryRun{kube.DryRunClient, kube.DryRunServer} {
			res, err := m.Reconcile(ctxT(t), next, apply.ReconcileOptions{Options: apply.Options{DryRun: mode}, Prune: true})
			require.NoError(t, err, mode)
			got := actions(res.ChangeSet)
			assert.Equal(t, ssa.ConfiguredAction, got["Deployment/flux-system/source-controller"], mode)
			assert.Equal(t, ssa.ConfiguredAction, got["Secret/flux-system/flux-test-credentials"], mode)
			assert.Equal(t, ssa.UnchangedAction, got["Deployment/flux-system/kustomize-controller"], mode)
			assert.Equal(t, ssa.DeletedAction, got["Deployment/flux-system/helm-controller"], mode)
			assert.Nil(t, res.Inventory, mode)
			assert.Equal(t, before, testenv.ResourceVersions(t, c, all), "dry-run=%s changed the cluster", mode)
		}
	})

	t.Run("diff shows changes, prunes and masks secrets", func(t *testing.T) {
		inv, err := m.Store().Read(ctxT(t))
		require.NoError(t, err)
		prunable, _, err := m.PruneCandidates(ctxT(t), inv, next)
		require.NoError(t, err)
		entries, err := diff.Objects(ctxT(t), m, next, prunable, diff.Options{})
		require.NoError(t, err)
		assert.True(t, diff.HasChanges(entries))
		byName := map[string]diff.Entry{}
		for _, e := range entries {
			byName[e.Subject] = e
		}
		d := byName["Deployment/flux-system/source-controller"]
		assert.Equal(t, ssa.ConfiguredAction, d.Action)
		assert.Contains(t, d.Text, "--- live/Deployment/flux-system/source-controller")
		assert.Contains(t, d.Text, "-        - --log-level=info")
		assert.Contains(t, d.Text, "+        - --log-level=debug")
		assert.NotContains(t, d.Text, "managedFields")
		assert.NotContains(t, d.Text, "resourceVersion")
		assert.Equal(t, ssa.DeletedAction, byName["Deployment/flux-system/helm-controller"].Action)
		assert.Contains(t, byName["Deployment/flux-system/helm-controller"].Text, "-kind: Deployment")
		assert.Equal(t, ssa.UnchangedAction, byName["Deployment/flux-system/kustomize-controller"].Action)
		assert.Empty(t, byName["Deployment/flux-system/kustomize-controller"].Text)

		s := byName["Secret/flux-system/flux-test-credentials"]
		assert.Equal(t, ssa.ConfiguredAction, s.Action)
		assert.Contains(t, s.Text, "*** (before)")
		assert.Contains(t, s.Text, "*** (after)")
		for _, v := range []string{"s3cr3t", base64.StdEncoding.EncodeToString([]byte("s3cr3t-one")), base64.StdEncoding.EncodeToString([]byte("s3cr3t-two"))} {
			assert.NotContains(t, s.Text, v)
		}

		dir := t.TempDir()
		liveDir, mergedDir, err := diff.WriteDiffDirs(entries, dir)
		require.NoError(t, err)
		live, err := os.ReadFile(filepath.Join(liveDir, "apps.Deployment.flux-system.source-controller"))
		require.NoError(t, err)
		merged, err := os.ReadFile(filepath.Join(mergedDir, "apps.Deployment.flux-system.source-controller"))
		require.NoError(t, err)
		assert.Contains(t, string(live), "--log-level=info")
		assert.Contains(t, string(merged), "--log-level=debug")
		_, err = os.Stat(filepath.Join(mergedDir, "apps.Deployment.flux-system.helm-controller"))
		assert.True(t, os.IsNotExist(err), "a pruned object has no merged file")
		_, err = os.Stat(filepath.Join(liveDir, "apps.Deployment.flux-system.kustomize-controller"))
		assert.True(t, os.IsNotExist(err), "unchanged objects are not written")
		secret, err := os.ReadFile(filepath.Join(liveDir, "Secret.flux-system.flux-test-credentials"))
		require.NoError(t, err)
		assert.NotContains(t, string(secret), base64.StdEncoding.EncodeToString([]byte("s3cr3t-one")))
	})

	t.Run("a foreign field manager is a conflict until --force-conflicts", func(t *testing.T) {
		// Someone else applies the log level the next rendering changes.
		other := &unstructured.Unstructured{}
		other.SetGroupVersionKind(deploymentGVK)
		other.SetNamespace(ns)
		other.SetName("source-controller")
		other.Object["spec"] = map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{
			map[string]any{"name": "manager", "args": []any{"--log-level=info"}},
		}}}}
		// Changing replicas away from the rendered value also conflicts.
		other.Object["spec"].(map[string]any)["replicas"] = int64(2)
		require.NoError(t, c.Patch(ctxT(t), other, client.Apply, client.FieldOwner("user-tool"), client.ForceOwnership))
		before := testenv.ResourceVersions(t, c, next)

		_, err := m.Reconcile(ctxT(t), next, apply.ReconcileOptions{Prune: true})
		require.Error(t, err)
		var conflict *apply.ConflictError
		require.ErrorAs(t, err, &conflict)
		assert.Contains(t, err.Error(), "Deployment/flux-system/source-controller")
		assert.Contains(t, err.Error(), `"user-tool"`)
		assert.Contains(t, err.Error(), ".spec.replicas")
		assert.Contains(t, err.Error(), "--force-conflicts")
		assert.NotContains(t, err.Error(), "kustomize-controller")
		assert.Equal(t, before, testenv.ResourceVersions(t, c, next), "a conflict must change nothing")

		// The server dry run reports it the same way.
		_, err = m.Apply(ctxT(t), next, apply.Options{DryRun: kube.DryRunServer})
		require.ErrorAs(t, err, &conflict)

		res, err := m.Reconcile(ctxT(t), next, apply.ReconcileOptions{Options: apply.Options{ForceConflicts: true}, Prune: true})
		require.NoError(t, err)
		got := actions(res.ChangeSet)
		assert.Equal(t, ssa.ConfiguredAction, got["Deployment/flux-system/source-controller"])
		assert.Equal(t, ssa.DeletedAction, got["Deployment/flux-system/helm-controller"])

		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(deploymentGVK)
		require.NoError(t, c.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "source-controller"}, live))
		replicas, _, _ := unstructured.NestedInt64(live.Object, "spec", "replicas")
		assert.Equal(t, int64(1), replicas)
		for _, mf := range live.GetManagedFields() {
			if mf.Manager == "user-tool" {
				assert.NotContains(t, string(mf.FieldsV1.Raw), `"f:replicas"`)
			}
		}
	})

	t.Run("prune keeps a CRD with custom resources, labels it orphaned, deletes it once empty", func(t *testing.T) {
		// State: helm-controller pruned above; its CRD was empty then and got deleted. Bring it
		// back, add a user's HelmRelease, and drop helm-controller again.
		withHelm := append(renderInstance(t, ns, defaultComponents...), secretObject(ns, "s3cr3t-two"))
		withHelm = applyArgs(withHelm, next)
		// The CRD pruned in the previous step must finish terminating before it comes back.
		require.Eventually(t, func() bool {
			return gone(t, c, crdGVKTest, "", "helmreleases.helm.toolkit.fluxcd.io")
		}, 30*time.Second, 100*time.Millisecond)
		_, err := m.Reconcile(ctxT(t), withHelm, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		env.CreateNamespace(t, "apps")
		createCR(t, c, helmRelGVK, "apps", "podinfo", map[string]any{
			"interval": "5m",
			"chart":    map[string]any{"spec": map[string]any{"chart": "podinfo", "sourceRef": map[string]any{"kind": "HelmRepository", "name": "podinfo"}}},
		})

		res, err := m.Reconcile(ctxT(t), next, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		got := actions(res.ChangeSet)
		assert.Equal(t, ssa.DeletedAction, got["Deployment/flux-system/helm-controller"])
		assert.Equal(t, ssa.SkippedAction, got["CustomResourceDefinition/helmreleases.helm.toolkit.fluxcd.io"])
		require.Len(t, res.Prune.Orphaned, 1)
		assert.Equal(t, apply.OrphanedCRD{Name: "helmreleases.helm.toolkit.fluxcd.io", Count: 1}, res.Prune.Orphaned[0])
		require.Len(t, res.Warnings(), 1)
		assert.Contains(t, res.Warnings()[0], "CustomResourceDefinition/helmreleases.helm.toolkit.fluxcd.io")
		assert.Contains(t, res.Warnings()[0], "1 custom resource")
		assert.False(t, exists(t, c, deploymentGVK, ns, "helm-controller"))
		assert.True(t, exists(t, c, helmRelGVK, "apps", "podinfo"), "the user's HelmRelease must survive")

		crd := &metav1.PartialObjectMetadata{}
		crd.SetGroupVersionKind(crdGVKTest)
		require.NoError(t, c.Get(ctxT(t), client.ObjectKey{Name: "helmreleases.helm.toolkit.fluxcd.io"}, crd))
		assert.Equal(t, "true", crd.Labels[ownership.LabelOrphaned])
		inv, err := m.Store().Read(ctxT(t))
		require.NoError(t, err)
		assert.Contains(t, entryIDs(inv), "_helmreleases.helm.toolkit.fluxcd.io_apiextensions.k8s.io_CustomResourceDefinition")
		assert.NotContains(t, entryIDs(inv), "flux-system_helm-controller_apps_Deployment")

		// Bringing helm-controller back adopts the CRD again: the orphaned label goes away.
		_, err = m.Reconcile(ctxT(t), withHelm, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		require.NoError(t, c.Get(ctxT(t), client.ObjectKey{Name: "helmreleases.helm.toolkit.fluxcd.io"}, crd))
		assert.NotContains(t, crd.Labels, ownership.LabelOrphaned)
		res, err = m.Reconcile(ctxT(t), next, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		require.Len(t, res.Prune.Orphaned, 1)

		// The user removes the HelmRelease: the next apply deletes the CRD.
		hr := &unstructured.Unstructured{}
		hr.SetGroupVersionKind(helmRelGVK)
		hr.SetNamespace("apps")
		hr.SetName("podinfo")
		require.NoError(t, c.Delete(ctxT(t), hr))
		res, err = m.Reconcile(ctxT(t), next, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		assert.Equal(t, ssa.DeletedAction, actions(res.ChangeSet)["CustomResourceDefinition/helmreleases.helm.toolkit.fluxcd.io"])
		assert.Empty(t, res.Warnings())
		assert.False(t, exists(t, c, crdGVKTest, "", "helmreleases.helm.toolkit.fluxcd.io"))
		inv, err = m.Store().Read(ctxT(t))
		require.NoError(t, err)
		assert.NotContains(t, entryIDs(inv), "_helmreleases.helm.toolkit.fluxcd.io_apiextensions.k8s.io_CustomResourceDefinition")
	})

	t.Run("prune honours fluxcd.controlplane.io/prune: disabled", func(t *testing.T) {
		sa := &corev1.ServiceAccount{}
		require.NoError(t, c.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "notification-controller"}, sa))
		sa.Annotations[render.AnnotationOperatorPrune] = "Disabled"
		require.NoError(t, c.Update(ctxT(t), sa))

		smaller := without(without(without(next, "Deployment", "notification-controller"), "ServiceAccount", "notification-controller"), "Service", "notification-controller")
		res, err := m.Reconcile(ctxT(t), smaller, apply.ReconcileOptions{Prune: true})
		require.NoError(t, err)
		got := actions(res.ChangeSet)
		assert.Equal(t, ssa.DeletedAction, got["Deployment/flux-system/notification-controller"])
		assert.Equal(t, ssa.SkippedAction, got["ServiceAccount/flux-system/notification-controller"])
		inv, err := m.Store().Read(ctxT(t))
		require.NoError(t, err)
		pr, err := m.Prune(ctxT(t), inv, without(smaller, "Namespace", ns), apply.PruneOptions{DryRun: kube.DryRunServer})
		require.NoError(t, err)
		assert.Equal(t, ssa.SkippedAction, actions(pr.ChangeSet)["Namespace/flux-system"], "never prune the namespace")
		assert.True(t, exists(t, c, corev1.SchemeGroupVersion.WithKind("ServiceAccount"), ns, "notification-controller"))
		assert.False(t, exists(t, c, deploymentGVK, ns, "notification-controller"))
		assert.True(t, exists(t, c, corev1.SchemeGroupVersion.WithKind("Namespace"), "", ns))
		next = smaller
	})

	t.Run("wait times out naming objects, then succeeds once deployments are available", func(t *testing.T) {
		deployments := []*unstructured.Unstructured{find(next, "Deployment", "source-controller"), find(next, "Deployment", "kustomize-controller")}
		err := wait.UntilReady(ctxT(t), m.Client, deployments, 2*time.Second, nil, wait.Options{PollInterval: 200 * time.Millisecond})
		require.Error(t, err)
		var nr *wait.NotReadyError
		require.ErrorAs(t, err, &nr)
		assert.Contains(t, err.Error(), "Deployment/flux-system/source-controller: InProgress")
		assert.Contains(t, err.Error(), "Deployment/flux-system/kustomize-controller: InProgress")

		var calls int
		var lastReady int
		done := make(chan error, 1)
		go func() {
			done <- wait.UntilReady(context.Background(), m.Client, deployments, time.Minute, func(ready, total int, notReady []string) {
				calls++
				lastReady = ready
				assert.Equal(t, 2, total)
				assert.Len(t, notReady, total-ready)
			}, wait.Options{PollInterval: 200 * time.Millisecond, ProgressInterval: 300 * time.Millisecond})
		}()
		time.Sleep(700 * time.Millisecond)
		markAvailable(t, c, ns, "source-controller")
		markAvailable(t, c, ns, "kustomize-controller")
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("Wait did not return after the deployments became available")
		}
		assert.GreaterOrEqual(t, calls, 2)
		assert.Equal(t, 2, lastReady)
	})

	t.Run("delete keeps CRDs, the namespace and users' objects", func(t *testing.T) {
		createCR(t, c, gitRepoGVK, "apps", "podinfo", map[string]any{"interval": "1m", "url": "https://github.com/stefanprodan/podinfo"})
		inv, err := m.Store().Read(ctxT(t))
		require.NoError(t, err)
		all := append([]*unstructured.Unstructured{}, full...)
		before := testenv.ResourceVersions(t, c, all)
		res, err := uninstall.Run(ctxT(t), m, inv, uninstall.Options{DryRun: kube.DryRunClient})
		require.NoError(t, err)
		cs := res.ChangeSet
		assert.Equal(t, ssa.DeletedAction, actions(cs)["Deployment/flux-system/source-controller"])
		assert.Equal(t, ssa.SkippedAction, actions(cs)["CustomResourceDefinition/gitrepositories.source.toolkit.fluxcd.io"])
		assert.Equal(t, before, testenv.ResourceVersions(t, c, all), "delete --dry-run changed the cluster")

		res, err = uninstall.Run(ctxT(t), m, inv, uninstall.Options{})
		require.NoError(t, err)
		cs = res.ChangeSet
		assert.Equal(t, ssa.DeletedAction, actions(cs)["Deployment/flux-system/source-controller"])
		assert.Equal(t, ssa.SkippedAction, actions(cs)["Namespace/flux-system"])
		assert.False(t, exists(t, c, deploymentGVK, ns, "source-controller"))
		assert.False(t, exists(t, c, deploymentGVK, ns, "kustomize-controller"))
		assert.True(t, exists(t, c, crdGVKTest, "", "gitrepositories.source.toolkit.fluxcd.io"))
		assert.True(t, exists(t, c, crdGVKTest, "", "kustomizations.kustomize.toolkit.fluxcd.io"))
		assert.True(t, exists(t, c, gitRepoGVK, "apps", "podinfo"), "the user's GitRepository must survive")
		assert.True(t, exists(t, c, corev1.SchemeGroupVersion.WithKind("Namespace"), "", ns))
		inv, err = m.Store().Read(ctxT(t))
		require.NoError(t, err)
		assert.Equal(t, inventory.StateDeleted, inv.State)
		assert.Contains(t, entryIDs(inv), "_gitrepositories.source.toolkit.fluxcd.io_apiextensions.k8s.io_CustomResourceDefinition")
		assert.NotContains(t, entryIDs(inv), "flux-system_source-controller_apps_Deployment")
	})
}

// requestCounter counts a client's requests: reads (GET, LIST), dry-run patches, and the paths
// of other writes.
type requestCounter struct {
	mu             sync.Mutex
	reads, dryRuns int
	// admissionReads (part of reads) list the mutating admission configuration.
	admissionReads int
	writes         []string
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		c.mu.Lock()
		switch {
		case r.Method == http.MethodGet:
			c.reads++
			if strings.HasPrefix(r.URL.Path, "/apis/admissionregistration.k8s.io/") {
				c.admissionReads++
			}
		case r.URL.Query().Get("dryRun") != "":
			c.dryRuns++
		case r.URL.Path != "/apis/authentication.k8s.io/v1/selfsubjectreviews" &&
			r.URL.Path != "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
			c.writes = append(c.writes, r.URL.Path)
		}
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

func (c *requestCounter) counts() (int, int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads, c.dryRuns, append([]string(nil), c.writes...)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func entryIDs(inv *inventory.Inventory) []string {
	var out []string
	for _, e := range inv.Entries {
		out = append(out, e.ID)
	}
	return out
}

// applyArgs copies the objects of src over the same objects in dst (keeps the modified
// source-controller when re-adding components).
func applyArgs(dst, src []*unstructured.Unstructured) []*unstructured.Unstructured {
	for i, o := range dst {
		if s := find(src, o.GetKind(), o.GetName()); s != nil && s.GetNamespace() == o.GetNamespace() {
			dst[i] = s.DeepCopy()
		}
	}
	return dst
}
