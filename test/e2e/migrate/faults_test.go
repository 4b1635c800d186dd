package migrate_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// killProxy stands between the plugin and the API server (with the admin's credentials) and
// plays a migrate killed after its Nth API call: calls 1..N pass; call N+1, if it writes, reaches
// the API server but its answer is lost (the connection is cut: the process died with the write
// in flight), and if it reads it fails; every later call fails with a 503 (which client-go does
// not retry, so the run ends at once instead of backing off). It counts the calls and records
// every DELETE that passes through.
type killProxy struct {
	mu      sync.Mutex
	calls   int
	killAt  int // N; < 0: never
	deletes []string
}

func (p *killProxy) reset(killAt int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls, p.killAt = 0, killAt
}

func (p *killProxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

func (p *killProxy) deleted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.deletes...)
}

// next numbers a call and tells its fate.
func (p *killProxy) next(r *http.Request) (n int, pass, inFlight bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if r.Method == http.MethodDelete || r.URL.Query().Has("deletecollection") {
		p.deletes = append(p.deletes, r.Method+" "+r.URL.String())
	}
	switch {
	case p.killAt < 0 || p.calls <= p.killAt:
		return p.calls, true, false
	case p.calls == p.killAt+1 && r.Method != http.MethodGet:
		return p.calls, false, true
	}
	return p.calls, false, false
}

// startKillProxy starts the proxy and writes a kubeconfig for it.
func startKillProxy(t *testing.T, env *testenv.Env) (*killProxy, string) {
	t.Helper()
	target, err := url.Parse(env.Host)
	require.NoError(t, err)
	transport, err := rest.TransportFor(env.Config)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = transport
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p := &killProxy{killAt: -1}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pass, inFlight := p.next(r)
		switch {
		case pass:
			rp.ServeHTTP(w, r)
		case inFlight:
			out := r.Clone(r.Context())
			out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = target.Scheme, target.Host, target.Host, ""
			if resp, err := transport.RoundTrip(out); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			http.Error(w, "killed", http.StatusServiceUnavailable)
		default:
			http.Error(w, "killed", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["proxy"] = &clientcmdapi.Cluster{Server: srv.URL}
	cfg.AuthInfos["proxy"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["proxy"] = &clientcmdapi.Context{Cluster: "proxy", AuthInfo: "proxy", Namespace: "default"}
	cfg.CurrentContext = "proxy"
	kubeconfig := filepath.Join(t.TempDir(), "proxy.kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, kubeconfig))
	return p, kubeconfig
}

// killPoints are the N to kill at: each of the first and last ten calls of a complete run of
// total calls, and a stride in between that keeps the number of points near budget.
func killPoints(total, budget int) []int {
	var out []int
	for n := 1; n <= min(10, total); n++ {
		out = append(out, n)
	}
	stride := max(1, (total-20)/max(1, budget-20))
	for n := 11; n <= total-10; n += stride {
		out = append(out, n)
	}
	for n := max(11, total-9); n <= total; n++ {
		out = append(out, n)
	}
	return out
}

// TestMigrateKilledAtEveryStep interrupts migrate after its Nth API call, for N over a complete
// run, with the real controllers syncing the fleet repository, and re-runs it without faults:
// it always converges, deletes nothing (no DELETE reaches the API server, every UID is the same),
// changes no pod template, and the Kustomization stays Ready. Between kill points, --rollback
// and a reconcile of the bootstrap files (still in Git) give the installation back to
// `flux bootstrap`. The last migrated state then goes through the next step for real.
func TestMigrateKilledAtEveryStep(t *testing.T) {
	t.Parallel()
	fluxenv.BinDir(t, false)
	env := testenv.Start(t)
	apps := defaultApps
	repo := fleetWithApps(t, "clusters/test", apps...)
	f := fluxenv.Bootstrap(t, env, repo, fluxenv.Options{})
	s := newScenario(t, f, apps...)
	c := s.c
	before := takeSnapshot(t, c, f.Kustomization(t), secretKey(f))
	head := repo.Head(t)
	proxy, proxyConfig := startKillProxy(t, env)
	migrateArgs := func(kubeconfig string) []string {
		return []string{"migrate", "--kubeconfig=" + kubeconfig, "--distribution", s.dist, "--yes", "--output-file", filepath.Join(t.TempDir(), "fi.yaml")}
	}
	converged := func(t *testing.T, what string) {
		t.Helper()
		proxy.reset(-1)
		r := runPlugin(t, migrateArgs(proxyConfig)...)
		require.Equal(t, 0, r.code, "%s: the re-run failed:\n%s", what, r.stderr)
		// Either it finished the takeover, or the interrupted run had (but for its output).
		if !assert.Regexp(t, "Verified: kustomize-controller's garbage collection would delete none|Nothing to do", r.stderr, what) {
			t.Log(r.stderr)
		}
		assert.Empty(t, proxy.deleted(), "%s: no DELETE reached the API server", what)
		before.assertSurvived(t, c)
		before.assertTemplates(t, c, nil)
		// kustomize-controller reconciles the migrated objects (skipping them) and is Ready.
		f.Reconcile(t, head)
		settle(t, f)
	}
	rollback := func(t *testing.T) {
		t.Helper()
		r := runPlugin(t, "migrate", "--kubeconfig="+s.kubeconfig, "--rollback", "--yes")
		require.Equal(t, 0, r.code, "rollback: %s", r.stderr)
		f.Reconcile(t, head)
		settle(t, f)
		before.assertSurvived(t, c)
		before.assertTemplates(t, c, nil)
	}

	// A complete run through the proxy counts the calls.
	start := time.Now()
	proxy.reset(-1)
	r := runPlugin(t, migrateArgs(proxyConfig)...)
	require.Equal(t, 0, r.code, r.stderr)
	total := proxy.count()
	require.Greater(t, total, 20)
	assert.Empty(t, proxy.deleted())
	rollback(t)
	t.Logf("a complete migrate makes %d API calls; run and rollback: %s", total, time.Since(start).Round(10*time.Millisecond))

	// 3.5-6 s per point (kill, re-run, reconcile, rollback, reconcile): about 30 points.
	points := killPoints(total, 30)
	failed := 0
	states := map[string]int{} // the migration record's state after each kill
	start = time.Now()
	for i, n := range points {
		proxy.reset(n)
		r := runPlugin(t, migrateArgs(proxyConfig)...)
		if r.code != 0 {
			failed++
		}
		states[recordState(t, s)]++
		converged(t, "killed after call "+strconv.Itoa(n))
		if t.Failed() {
			t.Fatalf("stopping at kill point %d; the killed run printed:\n%s", n, r.stderr)
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
	r := runPlugin(t, "migrate", "--kubeconfig="+s.kubeconfig, "--distribution", s.dist, "--repo-dir", s.f.Repo.Dir, "--output-file", filepath.Join(t.TempDir(), "fi.yaml"))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "Nothing to do")
	s.checkWorkTree(t)
}
