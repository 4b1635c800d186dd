package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// applyResults are the four measured processes of one round.
type applyResults struct {
	oursFirst, oursNoop, kubectlFirst, kubectlNoop parity.Result
}

// BenchmarkApply measures `kubectl fluxinstance apply --wait=false` of a 7-component instance
// against a fresh API server (first apply) and again (no-op re-apply), side by side with the
// harness's `kubectl apply --server-side -f` of the same rendered YAML on another fresh API
// server, `runs` rounds (fresh servers each round), and prints the medians and the ratios of
// issue 4 (first apply ≤ 0.7× kubectl's wall time, no-op re-apply ≤ 0.5×). The first round also
// counts the API requests of each process from the API server's own metrics.
func BenchmarkApply(b *testing.B) {
	plugin := parity.PluginBinary(b)
	distDir := testenv.DistributionDir(b)
	testenv.RequireBinDir(b)
	ctx := context.Background()

	dir := b.TempDir()
	// Every component and no spec.sync: without sync the rendering holds no custom resources, so
	// the harness's kubectl applies it the way a user would, with one `kubectl apply --server-side
	// -f` (a sync's GitRepository and Kustomization would need a second invocation after the CRDs
	// are Established, which would only add a process start to kubectl's side).
	instance := fixtures.Path(b, "tests/all-components-no-sync-2.9.x")
	distArgs, distLabel := parity.DistributionArgs(b, distDir)
	// KUBECACHEDIR: kubectl's discovery cache lives in the benchmark's directory, cold for each
	// fresh server (a new port) and warm for the re-apply, as for a user.
	procEnv := append(parity.Env(b, filepath.Join(dir, "cache")), "KUBECACHEDIR="+filepath.Join(dir, "kube-cache"))
	built := parity.Run(ctx, procEnv, plugin, append([]string{"build", "-f", instance}, distArgs...)...)
	if built.Err != nil {
		b.Fatal(built.Err)
	}
	rendered := filepath.Join(dir, "rendered.yaml")
	if err := os.WriteFile(rendered, built.Stdout, 0o644); err != nil {
		b.Fatal(err)
	}
	objects, err := testenv.DecodeYAML(built.Stdout)
	if err != nil {
		b.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objects {
		kinds[o.GetKind()]++
	}
	if kinds["CustomResourceDefinition"] == 0 || kinds["Deployment"] != 7 {
		b.Fatalf("the rendered instance should hold the Flux CRDs and 7 Deployments, got %v", kinds)
	}

	oursArgs := func(kubeconfig string) []string {
		return append([]string{"apply", "-f", instance, "--wait=false", "--kubeconfig", kubeconfig}, distArgs...)
	}
	kubectlArgs := func(kubeconfig string) []string {
		return []string{"apply", "--server-side", "-f", rendered, "--kubeconfig", kubeconfig}
	}

	var rounds []applyResults
	var oursRequests, kubectlRequests [2]requestCounts
	for i := range runs {
		count := i == 0
		var r applyResults
		// Ours on a fresh server, then kubectl on another fresh one; each server lives only for
		// its own pair of runs so that an idle server does not take CPU from the measured one.
		withFreshServer(b, func(env *testenv.Env) {
			r.oursFirst = runCounted(b, env, count, &oursRequests[0], func() parity.Result {
				return parity.Run(ctx, procEnv, plugin, oursArgs(env.Kubeconfig)...)
			})
			r.oursNoop = runCounted(b, env, count, &oursRequests[1], func() parity.Result {
				return parity.Run(ctx, procEnv, plugin, oursArgs(env.Kubeconfig)...)
			})
			if i == 0 {
				checkNoop(b, "kubectl fluxinstance apply", r.oursNoop.Stdout, "unchanged")
			}
		})
		withFreshServer(b, func(env *testenv.Env) {
			kubectl := filepath.Join(env.BinDir, "kubectl")
			r.kubectlFirst = runCounted(b, env, count, &kubectlRequests[0], func() parity.Result {
				return parity.Run(ctx, procEnv, kubectl, kubectlArgs(env.Kubeconfig)...)
			})
			r.kubectlNoop = runCounted(b, env, count, &kubectlRequests[1], func() parity.Result {
				return parity.Run(ctx, procEnv, kubectl, kubectlArgs(env.Kubeconfig)...)
			})
			if i == 0 {
				checkNoop(b, "kubectl apply --server-side", r.kubectlNoop.Stdout, "serverside-applied")
			}
		})
		for _, res := range []parity.Result{r.oursFirst, r.oursNoop, r.kubectlFirst, r.kubectlNoop} {
			if res.Err != nil {
				b.Fatalf("round %d: %v", i+1, res.Err)
			}
		}
		rounds = append(rounds, r)
	}

	pick := func(f func(applyResults) parity.Result) stats {
		var rs []parity.Result
		for _, r := range rounds {
			rs = append(rs, f(r))
		}
		return resultStats(rs)
	}
	oursFirst := pick(func(r applyResults) parity.Result { return r.oursFirst })
	oursNoop := pick(func(r applyResults) parity.Result { return r.oursNoop })
	kubectlFirst := pick(func(r applyResults) parity.Result { return r.kubectlFirst })
	kubectlNoop := pick(func(r applyResults) parity.Result { return r.kubectlNoop })
	for _, m := range []struct {
		name string
		s    stats
	}{
		{"ours-first-apply", oursFirst}, {"kubectl-first-apply", kubectlFirst},
		{"ours-noop-reapply", oursNoop}, {"kubectl-noop-reapply", kubectlNoop},
	} {
		b.Run(m.name, func(b *testing.B) { report(b, m.s) })
	}

	fmt.Printf("\n%d objects (%s); %s\n", len(objects), kindSummary(kinds), distLabel)
	printTable(os.Stdout, "kubectl fluxinstance apply --wait=false vs kubectl apply --server-side (fresh API servers)", []row{
		{"7-component", "ours first apply", oursFirst},
		{"7-component", "kubectl first apply", kubectlFirst},
		{"7-component", "ours no-op re-apply", oursNoop},
		{"7-component", "kubectl no-op re-apply", kubectlNoop},
	})
	fmt.Println("\nratios (ours / kubectl wall time, lower is better):")
	first := ratio(os.Stdout, "first apply", seconds(oursFirst.Wall), seconds(kubectlFirst.Wall), 0.7)
	noop := ratio(os.Stdout, "no-op re-apply", seconds(oursNoop.Wall), seconds(kubectlNoop.Wall), 0.5)
	b.Logf("first apply ratio %.3f (target ≤ 0.7), no-op re-apply ratio %.3f (target ≤ 0.5)", first, noop)

	fmt.Println("\nAPI requests of round 1 (apiserver_request_total, by verb and resource):")
	printRequests("ours first apply", oursRequests[0])
	printRequests("kubectl first apply", kubectlRequests[0])
	printRequests("ours no-op re-apply", oursRequests[1])
	printRequests("kubectl no-op re-apply", kubectlRequests[1])

	if os.Getenv(applyTraceEnv) == "" {
		fmt.Printf("\n(set %s=1 for a traced extra round: the timeline of every request)\n", applyTraceEnv)
		return
	}
	withFreshServer(b, func(env *testenv.Env) {
		tr := startTracer(b, env)
		for _, what := range []string{"ours first apply", "ours no-op re-apply"} {
			tr.run(what, func(k string) parity.Result { return parity.Run(ctx, procEnv, plugin, oursArgs(k)...) })
		}
	})
	withFreshServer(b, func(env *testenv.Env) {
		tr := startTracer(b, env)
		kubectl := filepath.Join(env.BinDir, "kubectl")
		for _, what := range []string{"kubectl first apply", "kubectl no-op re-apply"} {
			tr.run(what, func(k string) parity.Result { return parity.Run(ctx, procEnv, kubectl, kubectlArgs(k)...) })
		}
	})
}

// withFreshServer starts an etcd + kube-apiserver for f and stops it afterwards.
func withFreshServer(b *testing.B, f func(env *testenv.Env)) {
	b.Helper()
	env, err := testenv.StartDetached(b.TempDir())
	if err != nil {
		b.Fatalf("starting a test API server: %v", err)
	}
	defer env.Stop()
	f(env)
}

// checkNoop fails the benchmark unless every output line of a re-apply says the object is
// unchanged: a "no-op" that changes something would measure the wrong thing.
func checkNoop(b *testing.B, what string, out []byte, want string) {
	b.Helper()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, l := range lines {
		if !strings.HasSuffix(l, want) {
			b.Fatalf("%s re-apply was not a no-op: %q (want every line to end with %q)", what, l, want)
		}
	}
}

// resultStats are the medians of finished processes.
func resultStats(rs []parity.Result) stats {
	var walls, cpus []time.Duration
	var rss []int64
	for _, r := range rs {
		walls, cpus, rss = append(walls, r.Wall), append(cpus, r.CPU), append(rss, r.MaxRSS)
	}
	return stats{Wall: median(walls), CPU: median(cpus), RSS: median(rss)}
}

func kindSummary(kinds map[string]int) string {
	var parts []string
	for k, n := range kinds {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// requestCounts are API requests by "VERB resource" (subresources appended with a slash).
type requestCounts map[string]float64

// runCounted runs f and, when count is set, stores in counts the API requests the server saw
// meanwhile (the difference of apiserver_request_total; the server's own loopback traffic is
// negligible on an idle test server, and the scrape itself is one "GET (non-resource)").
func runCounted(b *testing.B, env *testenv.Env, count bool, counts *requestCounts, f func() parity.Result) parity.Result {
	b.Helper()
	if !count {
		return f()
	}
	before := scrapeRequests(b, env)
	res := f()
	after := scrapeRequests(b, env)
	diff := requestCounts{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			diff[k] = d
		}
	}
	*counts = diff
	return res
}

// scrapeRequests reads apiserver_request_total from the server's /metrics.
func scrapeRequests(b *testing.B, env *testenv.Env) requestCounts {
	b.Helper()
	tlsConfig, err := rest.TLSConfigFor(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	return scrapeRequestsWith(b, env.Host, tlsConfig)
}

func scrapeRequestsWith(b *testing.B, host string, tlsConfig *tls.Config) requestCounts {
	b.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(host + "/metrics")
	if err != nil {
		b.Fatalf("reading the API server's metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("reading the API server's metrics: %s", resp.Status)
	}
	out := requestCounts{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("apiserver_request_total{")) {
			continue
		}
		end := bytes.LastIndexByte(line, '}')
		labels := parseLabels(string(line[len("apiserver_request_total{"):end]))
		v, err := strconv.ParseFloat(strings.TrimSpace(string(line[end+1:])), 64)
		if err != nil {
			continue
		}
		key := labels["verb"] + " " + labels["resource"]
		if labels["resource"] == "" {
			key = labels["verb"] + " (non-resource)"
		}
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		out[key] += v
	}
	return out
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		name := s[:eq]
		rest := s[eq+2:]
		endQuote := strings.IndexByte(rest, '"')
		if endQuote < 0 {
			break
		}
		out[name] = rest[:endQuote]
		s = strings.TrimPrefix(rest[endQuote+1:], ",")
	}
	return out
}

func printRequests(what string, rc requestCounts) {
	var total float64
	keys := make([]string, 0, len(rc))
	for k, v := range rc {
		total += v
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if rc[keys[i]] != rc[keys[j]] {
			return rc[keys[i]] > rc[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, rc[k]))
	}
	fmt.Printf("  %-24s %4.0f: %s\n", what, total, strings.Join(parts, ", "))
}

// applyTraceEnv turns on a traced extra round: each process talks to the API server through a
// loopback proxy that records every request, and the timeline is printed (where the wall time
// goes: start-up before the first request, each phase of requests, the exit after the last).
const applyTraceEnv = "BENCH_APPLY_TRACE"

// traced is one request seen by the proxy.
type traced struct {
	start, dur time.Duration
	method     string
	path       string
	status     int
}

// tracer is a plain-HTTP reverse proxy on 127.0.0.1 in front of the test API server; it
// authenticates upstream as the admin.
type tracer struct {
	mu      sync.Mutex
	t0      time.Time
	reqs    []traced
	srv     *httptest.Server
	kubecfg string
}

func startTracer(b *testing.B, env *testenv.Env) *tracer {
	b.Helper()
	upstream, err := url.Parse(env.Host)
	if err != nil {
		b.Fatal(err)
	}
	transport, err := rest.TransportFor(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	tr := &tracer{}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	proxy.Transport = transport
	proxy.FlushInterval = -1
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		proxy.ServeHTTP(rec, r)
		path := r.URL.Path
		if r.URL.Query().Get("dryRun") != "" {
			path += " (dry run)"
		}
		tr.mu.Lock()
		tr.reqs = append(tr.reqs, traced{start: start.Sub(tr.t0), dur: time.Since(start), method: r.Method, path: path, status: rec.status})
		tr.mu.Unlock()
	}))
	b.Cleanup(tr.srv.Close)
	tr.kubecfg = filepath.Join(b.TempDir(), "traced.kubeconfig")
	cfg := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: traced\n  cluster:\n    server: %s\ncontexts:\n- name: traced\n  context:\n    cluster: traced\n    user: traced\nusers:\n- name: traced\n  user: {}\ncurrent-context: traced\n", tr.srv.URL)
	if err := os.WriteFile(tr.kubecfg, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	return tr
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// run runs the process through the proxy and prints its timeline.
func (tr *tracer) run(what string, f func(kubeconfig string) parity.Result) parity.Result {
	tr.mu.Lock()
	tr.reqs, tr.t0 = nil, time.Now()
	tr.mu.Unlock()
	res := f(tr.kubecfg)
	tr.mu.Lock()
	reqs := append([]traced(nil), tr.reqs...)
	tr.mu.Unlock()
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].start < reqs[j].start })
	fmt.Printf("\ntrace of %s: wall %s, %d requests\n", what, res.Wall.Round(time.Millisecond), len(reqs))
	if len(reqs) == 0 {
		return res
	}
	fmt.Printf("  start-up until the first request: %s; latency = sum of the requests' latencies\n", reqs[0].start.Round(time.Millisecond))
	// Consecutive requests of the same method and resource type form one phase.
	phase := func(r traced) string {
		kind := resourceOf(strings.Split(strings.TrimPrefix(strings.TrimSuffix(r.path, " (dry run)"), "/"), "/"))
		dry := ""
		if strings.HasSuffix(r.path, " (dry run)") {
			dry = " dry-run"
		}
		return r.method + dry + " " + kind
	}
	// Requests grouped by method and resource type (a concurrent client interleaves them),
	// listed by their first start: the span is first start to last end.
	type group struct {
		name             string
		n                int
		first, last, sum time.Duration
	}
	var groups []*group
	byName := map[string]*group{}
	var end time.Duration
	for _, r := range reqs {
		name := phase(r)
		g := byName[name]
		if g == nil {
			g = &group{name: name, first: r.start}
			byName[name] = g
			groups = append(groups, g)
		}
		g.n++
		g.sum += r.dur
		g.last = max(g.last, r.start+r.dur)
		end = max(end, r.start+r.dur)
	}
	fmt.Printf("  %8s  %8s  %8s  %s\n", "first", "last end", "latency", "requests")
	for _, g := range groups {
		fmt.Printf("  %8s  %8s  %8s  %3d × %s\n", g.first.Round(time.Millisecond), g.last.Round(time.Millisecond), g.sum.Round(time.Millisecond), g.n, g.name)
	}
	fmt.Printf("  exit after the last response: %s\n", (res.Wall - end).Round(time.Millisecond))
	return res
}

// resourceOf names the resource type of an API path (the segment after the version, skipping
// namespaces/<ns>), or the path itself for discovery and other non-resource paths.
func resourceOf(parts []string) string {
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		rest = parts[3:]
	default:
		return "/" + strings.Join(parts, "/")
	}
	if len(rest) >= 2 && rest[0] == "namespaces" && len(rest) > 2 {
		rest = rest[2:]
	}
	if len(rest) == 0 {
		return "/" + strings.Join(parts, "/") + " (discovery)"
	}
	res := rest[0]
	if len(rest) >= 3 {
		res += "/" + rest[2]
	}
	return res
}
