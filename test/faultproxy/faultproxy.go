// Package faultproxy injects faults between a client and a test API server: Serve is a reverse
// proxy that passes, fails or cuts each call as a decision function says. Start builds on it the
// kill proxy, which plays a client killed in the middle of its work: it lets the first N calls
// through and fails every later one, cutting the connection of the call in flight as a dying
// process would. The fault tests of migrate and handoff run a command through it at many N and
// check that a re-run converges; the apply machinery's test drops the network instead.
package faultproxy

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// Proxy stands between the plugin and the API server (with the admin's credentials) and
// plays a migrate killed after its Nth API call: calls 1..N pass; call N+1, if it writes, reaches
// the API server but its answer is lost (the connection is cut: the process died with the write
// in flight), and if it reads it fails; every later call fails with a 503 (which client-go does
// not retry, so the run ends at once instead of backing off). It counts the calls and records
// every DELETE that passes through.
type Proxy struct {
	mu     sync.Mutex
	calls  int
	killAt int // N; < 0: never
	// killMethod, when set, sets killAt at the first call with this method.
	killMethod string
	deletes    []string
}

// Reset makes calls 1..killAt pass (all of them when killAt < 0) and clears the counters.
func (p *Proxy) Reset(killAt int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls, p.killAt, p.killMethod = 0, killAt, ""
}

// KillAtFirst makes every call pass until the first one with the given HTTP method, which is cut
// in flight like call N+1 after Reset(N); the calls after it fail. For a kill point defined by
// what a call does rather than by its number, which varies with the number of status polls.
func (p *Proxy) KillAtFirst(method string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls, p.killAt, p.killMethod = 0, -1, method
}

// Count is the number of calls since the last Reset.
func (p *Proxy) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// Deleted lists the DELETE requests (and deletecollections) that reached the API server, but for
// the release of the plugin's own lock (a Lease it created itself, deleted by every command).
func (p *Proxy) Deleted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, d := range p.deletes {
		if !strings.Contains(d, "/leases/"+lock.LeaseName) {
			out = append(out, d)
		}
	}
	return out
}

// ClearKilledLock removes the instance lock that a command killed by the proxy left behind, as a
// person who knows the command died would (kubectl delete lease). Without it a re-run waits until
// the claim expires (30 s), which TestLock and TestChaos prove it does; the fault tests are about
// resuming the interrupted work, at dozens of kill points.
func ClearKilledLock(t testing.TB, c client.Client, namespace string) {
	t.Helper()
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: lock.LeaseName}}
	if err := c.Delete(context.Background(), lease); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("removing the lock a killed command left: %v", err)
	}
}

// fate numbers a call and decides it: calls 1..N pass, call N+1 is cut in flight when it writes
// (and fails when it reads), every later call fails.
func (p *Proxy) fate(r *http.Request) Fate {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.killMethod != "" && p.killAt < 0 && r.Method == p.killMethod {
		p.killAt = p.calls - 1
	}
	if r.Method == http.MethodDelete || r.URL.Query().Has("deletecollection") {
		p.deletes = append(p.deletes, r.Method+" "+r.URL.String())
	}
	switch {
	case p.killAt < 0 || p.calls <= p.killAt:
		return Pass
	case p.calls == p.killAt+1 && r.Method != http.MethodGet:
		return CutInFlight
	}
	return Fail
}

// Fate is what a fault-injecting proxy does with one call.
type Fate int

const (
	// Pass forwards the call and its answer.
	Pass Fate = iota
	// Fail answers 503 without forwarding (client-go does not retry it).
	Fail
	// Cut closes the connection without forwarding or answering: a network drop.
	Cut
	// CutInFlight forwards the call, then closes the connection without its answer: the client
	// died with a write in flight.
	CutInFlight
)

// Serve starts a reverse proxy in front of env (with the admin's credentials) that gives each call
// the fate decide returns, and returns its URL (no authentication needed); it ends with the test.
func Serve(t testing.TB, env *testenv.Env, decide func(*http.Request) Fate) string {
	t.Helper()
	target, err := url.Parse(env.Host)
	require.NoError(t, err)
	transport, err := rest.TransportFor(env.Config)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = transport
	rp.ErrorLog = log.New(io.Discard, "", 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fate := decide(r)
		switch fate {
		case Pass:
			rp.ServeHTTP(w, r)
			return
		case CutInFlight:
			out := r.Clone(r.Context())
			out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = target.Scheme, target.Host, target.Host, ""
			if resp, err := transport.RoundTrip(out); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		if fate != Fail {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
		}
		http.Error(w, "injected failure", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// Start starts a kill proxy in front of env and writes a kubeconfig for it; both end with the test.
func Start(t *testing.T, env *testenv.Env) (*Proxy, string) {
	t.Helper()
	p := &Proxy{killAt: -1}
	return p, Kubeconfig(t, Serve(t, env, p.fate))
}

// Kubeconfig writes a kubeconfig for a proxy Serve started (it needs no credentials).
func Kubeconfig(t *testing.T, proxyURL string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["proxy"] = &clientcmdapi.Cluster{Server: proxyURL}
	cfg.AuthInfos["proxy"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["proxy"] = &clientcmdapi.Context{Cluster: "proxy", AuthInfo: "proxy", Namespace: "default"}
	cfg.CurrentContext = "proxy"
	kubeconfig := filepath.Join(t.TempDir(), "proxy.kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, kubeconfig))
	return kubeconfig
}

// KillPoints are the N to kill at: each of the first and last ten calls of a complete run of
// total calls, and a stride in between that keeps the number of points near budget.
func KillPoints(total, budget int) []int {
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
