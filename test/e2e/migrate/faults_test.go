package migrate_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
)

// TestMigrateKilledAtEveryStep interrupts migrate after its Nth API call, for N over a complete
// run, with the real controllers syncing the fleet repository, and re-runs it without faults:
// it always converges, deletes nothing (no DELETE reaches the API server, every UID is the same),
// changes no pod template, and the Kustomization stays Ready. Between kill points, --rollback
// and a reconcile of the bootstrap files (still in Git) give the installation back to
// `flux bootstrap`. The last migrated state then goes through the next step for real.
func TestMigrateKilledAtEveryStep(t *testing.T) {
	t.Parallel()
	s := bootstrapped(t, fluxenv.Options{}, defaultApps...)
	f, env, repo, c := s.f, s.f.Env, s.f.Repo, s.c
	before := takeSnapshot(t, c, f.Kustomization(t), secretKey(f))
	head := repo.Head(t)
	proxy, proxyConfig := faultproxy.Start(t, env)
	migrateArgs := func(kubeconfig string) []string {
		return []string{"migrate", "--kubeconfig=" + kubeconfig, "--distribution", s.dist, "--yes", "--output-file", filepath.Join(t.TempDir(), "fi.yaml")}
	}
	converged := func(t *testing.T, what string) {
		t.Helper()
		proxy.Reset(-1)
		faultproxy.ClearKilledLock(t, c, "flux-system")
		r := runPlugin(t, "", migrateArgs(proxyConfig)...)
		require.Equal(t, 0, r.Code, "%s: the re-run failed:\n%s", what, r.Stderr)
		// Either it finished the takeover, or the interrupted run had (but for its output).
		if !assert.Regexp(t, "Verified: kustomize-controller's garbage collection would delete none|Nothing to do", r.Stderr, what) {
			t.Log(r.Stderr)
		}
		assert.Empty(t, proxy.Deleted(), "%s: no DELETE reached the API server", what)
		before.assertSurvived(t, c)
		before.assertTemplates(t, c, nil)
		// kustomize-controller reconciles the migrated objects (skipping them) and is Ready.
		f.Reconcile(t, head)
		settle(t, f)
	}
	rollback := func(t *testing.T) {
		t.Helper()
		r := runPlugin(t, "", "migrate", "--kubeconfig="+s.kubeconfig, "--rollback", "--yes")
		require.Equal(t, 0, r.Code, "rollback: %s", r.Stderr)
		f.Reconcile(t, head)
		settle(t, f)
		before.assertSurvived(t, c)
		before.assertTemplates(t, c, nil)
	}

	// A complete run through the proxy counts the calls.
	start := time.Now()
	proxy.Reset(-1)
	r := runPlugin(t, "", migrateArgs(proxyConfig)...)
	require.Equal(t, 0, r.Code, r.Stderr)
	total := proxy.Count()
	require.Greater(t, total, 20)
	assert.Empty(t, proxy.Deleted())
	rollback(t)
	t.Logf("a complete migrate makes %d API calls; run and rollback: %s", total, time.Since(start).Round(10*time.Millisecond))

	// 3.5-6 s per point (kill, re-run, reconcile, rollback, reconcile): about 30 points.
	points := faultproxy.KillPoints(total, 30)
	failed := 0
	states := map[string]int{} // the migration record's state after each kill
	start = time.Now()
	for i, n := range points {
		proxy.Reset(n)
		r := runPlugin(t, "", migrateArgs(proxyConfig)...)
		if r.Code != 0 {
			failed++
		}
		states[recordState(t, s)]++
		converged(t, "killed after call "+strconv.Itoa(n))
		if t.Failed() {
			t.Fatalf("stopping at kill point %d; the killed run printed:\n%s", n, r.Stderr)
		}
		if i < len(points)-1 {
			rollback(t)
		}
	}
	t.Logf("%d kill points (%v) in %s; %d of the killed runs failed; migration record after the kill: %v",
		len(points), points, time.Since(start).Round(10*time.Millisecond), failed, states)
	assert.Greater(t, failed, len(points)/2, "the kills do interrupt migrate")
	assert.GreaterOrEqual(t, states["InProgress"], 5, "kills leave half-done takeovers for the re-run to resume")
	assert.Positive(t, states["none"], "some kills happen before the first change")

	// The state the last re-run left goes through the next step: the files leave Git.
	s.migrateRepoOnly(t)
	ks := f.Reconcile(t, f.Push(t, "Replace the Flux bootstrap files with a FluxInstance"))
	ready, msg := fluxenv.Ready(ks)
	assert.True(t, ready, msg)
	before.assertSurvived(t, c)
	before.assertTemplates(t, c, nil)
}

// settle waits until the sync objects are at rest: the GitRepository observed its spec (the
// takeover writes spec.ref.name, a rollback's reconcile the branch again: either makes a new
// artifact revision for the same commit) and the Kustomization applied that artifact and is Ready.
// Until then migrate rightly refuses: a reconciliation is in progress.
func settle(t *testing.T, f *fluxenv.Flux) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		gr, ks := f.GitRepository(t), f.Kustomization(t)
		revision := fluxenv.Status(gr, "artifact", "revision")
		grReady, _ := fluxenv.Ready(gr)
		ksReady, msg := fluxenv.Ready(ks)
		if grReady && observedGeneration(gr) == gr.GetGeneration() && ksReady && observedGeneration(ks) == ks.GetGeneration() &&
			fluxenv.Status(ks, "lastAppliedRevision") == revision && fluxenv.Status(ks, "lastAttemptedRevision") == revision {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sync objects did not settle: GitRepository at %q (generation %d, observed %d), Kustomization applied %q, attempted %q, Ready: %s\n%s",
				revision, gr.GetGeneration(), observedGeneration(gr), fluxenv.Status(ks, "lastAppliedRevision"), fluxenv.Status(ks, "lastAttemptedRevision"), msg, f.Controllers.Logs(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func observedGeneration(u *unstructured.Unstructured) int64 {
	g, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	return g
}

// recordState is the state of the migration record ("none" without one).
func recordState(t *testing.T, s *scenario) string {
	t.Helper()
	var cm corev1.ConfigMap
	err := s.c.Get(context.Background(), client.ObjectKey{Namespace: s.f.Options.Namespace, Name: "kubectl-fluxinstance-migration"}, &cm)
	if apierrors.IsNotFound(err) {
		return "none"
	}
	require.NoError(t, err)
	return cm.Data["state"]
}

// migrateRepoOnly runs migrate on an already migrated cluster with --repo-dir: nothing to do in
// the cluster, the bootstrap files replaced in the work tree.
func (s *scenario) migrateRepoOnly(t *testing.T) {
	t.Helper()
	r := runPlugin(t, "", "migrate", "--kubeconfig="+s.kubeconfig, "--distribution", s.dist, "--repo-dir", s.f.Repo.Dir, "--output-file", filepath.Join(t.TempDir(), "fi.yaml"))
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "Nothing to do")
	s.checkWorkTree(t)
}
