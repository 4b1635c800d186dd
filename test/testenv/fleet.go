package testenv

import (
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// StartMany starts n environments at once, for the fleet tests and benchmarks: each is its own
// etcd and kube-apiserver on ports of its own, so they run side by side in one process. They are
// stopped when the test ends.
func StartMany(t testing.TB, n int) []*Env {
	t.Helper()
	RequireBinDir(t)
	envs := make([]*Env, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range envs {
		dir := t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			envs[i], errs[i] = StartDetached(dir)
		}()
	}
	wg.Wait()
	for _, env := range envs {
		if env != nil {
			t.Cleanup(env.Stop)
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("starting test API server %d of %d: %v", i+1, n, err)
		}
	}
	return envs
}

// Kubeconfigs merges kubeconfig files into one whose contexts are named by the map's keys (each
// file's current context, with its cluster and user renamed after it), written into dir, and
// returns its path. Servers maps further context names to a bare server URL, for clusters that
// are not API servers (a closed port, a listener that never answers).
func Kubeconfigs(t testing.TB, dir string, files map[string]string, servers map[string]string) string {
	t.Helper()
	merged := clientcmdapi.NewConfig()
	for name, file := range files {
		cfg, err := clientcmd.LoadFromFile(file)
		if err != nil {
			t.Fatalf("reading kubeconfig %s: %v", file, err)
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		if ctx == nil {
			t.Fatalf("kubeconfig %s has no current context", file)
		}
		merged.Clusters[name] = cfg.Clusters[ctx.Cluster]
		merged.AuthInfos[name] = cfg.AuthInfos[ctx.AuthInfo]
		merged.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: ctx.Namespace}
	}
	for name, server := range servers {
		merged.Clusters[name] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
		merged.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: "unused"}
		merged.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	}
	names := make([]string, 0, len(merged.Contexts))
	for name := range merged.Contexts {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) > 0 {
		merged.CurrentContext = names[0]
	}
	path := filepath.Join(dir, "fleet.kubeconfig")
	if err := clientcmd.WriteToFile(*merged, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// ClosedPort is the URL of a loopback port nothing listens on: connections are refused at once.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return "https://127.0.0.1:" + strconv.Itoa(ports[0])
}

// SilentServer listens on a loopback port, accepts every connection and never answers (not even
// the TLS handshake), like a cluster behind a black-holing load balancer. It returns its URL and
// stops when the test ends.
func SilentServer(t testing.TB) string {
	t.Helper()
	return "https://" + StartSilent(t, "")
}

// StartSilent listens on addr ("" for 127.0.0.1:0), accepts every connection and never answers:
// the registry or web server that hangs a client without timeouts. It returns "HOST:PORT"; the
// listener and its connections are closed when the test ends.
func StartSilent(tb testing.TB, addr string) string {
	tb.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("cannot listen on %s: %v", addr, err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	closed := false
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// Kept open, unread and unanswered, until the test ends.
			mu.Lock()
			if closed {
				c.Close()
			} else {
				conns = append(conns, c)
			}
			mu.Unlock()
		}
	}()
	return l.Addr().String()
}
