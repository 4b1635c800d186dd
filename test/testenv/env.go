package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Env is one running etcd + kube-apiserver.
type Env struct {
	// Dir holds certificates, logs, etcd data and kubeconfigs; it is removed on Stop.
	Dir string
	// BinDir holds the harness binaries (kubectl among them).
	BinDir string
	// Host is the API server URL, https://127.0.0.1:PORT.
	Host string
	// Kubeconfig is the path of an admin (system:masters) kubeconfig.
	Kubeconfig string
	// Config is the admin REST config.
	Config *rest.Config

	pki   *pki
	procs []*Process
}

// Start starts a fresh environment and stops it when the test ends. It skips the test when the
// binaries are missing on a developer machine and fails it in CI.
func Start(t testing.TB) *Env {
	t.Helper()
	binDir := RequireBinDir(t)
	env, err := start(binDir, t.TempDir())
	if err != nil {
		t.Fatalf("starting the test API server: %v", err)
	}
	t.Cleanup(env.Stop)
	return env
}

// StartDetached starts an environment that the caller stops with Stop: for TestMain, benchmarks and
// the demo, which outlive a single test.
func StartDetached(dir string) (*Env, error) {
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	return start(binDir, dir)
}

func start(binDir, dir string) (_ *Env, err error) {
	// Not the named result: `return nil, err` would nil it before the deferred Stop, which must
	// end the processes already started.
	env := &Env{Dir: dir, BinDir: binDir}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	if env.pki, err = newPKI(filepath.Join(dir, "pki")); err != nil {
		return nil, fmt.Errorf("generating certificates: %w", err)
	}
	ports, err := FreePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	dataDir := filepath.Join(dir, "etcd-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	if err := env.run("etcd",
		"--name=default", "--data-dir="+dataDir,
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		// Test data is disposable: skipping fsync makes every write several times faster.
		"--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return nil, err
	}

	servingCert, servingKey, err := env.pki.issue("kube-apiserver", nil, true, time.Now().Add(24*time.Hour))
	if err != nil {
		return nil, err
	}
	certFile, keyFile, err := env.pki.writePair("apiserver", servingCert, servingKey)
	if err != nil {
		return nil, err
	}
	saPub, saKey, err := env.pki.writeServiceAccountKey()
	if err != nil {
		return nil, err
	}
	env.Host = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	if err := env.run("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		// Kubernetes 1.37 refuses a loopback advertise address unless the endpoint reconciler is off.
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--secure-port="+strconv.Itoa(ports[2]),
		"--tls-cert-file="+certFile, "--tls-private-key-file="+keyFile,
		"--client-ca-file="+filepath.Join(env.pki.dir, "ca.crt"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		// No controller manager creates tokens or default service accounts here.
		"--disable-admission-plugins=ServiceAccount",
		"--cert-dir="+filepath.Join(dir, "apiserver-certs"),
	); err != nil {
		return nil, err
	}
	if env.Kubeconfig, err = env.writeKubeconfig("admin", "testenv-admin", []string{"system:masters"}, time.Now().Add(24*time.Hour)); err != nil {
		return nil, err
	}
	if env.Config, err = clientcmd.BuildConfigFromFlags("", env.Kubeconfig); err != nil {
		return nil, err
	}
	if err := env.waitReady(90 * time.Second); err != nil {
		return nil, err
	}
	return env, nil
}

// run starts one binary of the environment, logging into its directory.
func (e *Env) run(name string, args ...string) error {
	p, err := StartProcess(e.Dir, name, filepath.Join(e.BinDir, name), nil, args...)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)
	return nil
}

func (e *Env) waitReady(timeout time.Duration) error {
	tlsConfig, err := rest.TLSConfigFor(e.Config)
	if err != nil {
		return err
	}
	httpClient := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer httpClient.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := httpClient.Get(e.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		for _, p := range e.procs {
			if err := p.Exited(); err != nil {
				return fmt.Errorf("during start-up: %w", err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after %s; last log lines:\n%s", timeout, Tail(filepath.Join(e.Dir, "kube-apiserver.log"), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Stop ends every process (in reverse start order) and waits for them.
func (e *Env) Stop() {
	StopAll(e.procs)
	e.procs = nil
}

// CPUTime is the CPU time etcd and the API server (and the controller manager) have used so far.
func (e *Env) CPUTime() (time.Duration, error) {
	var total time.Duration
	for _, p := range e.procs {
		d, err := p.CPUTime()
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// Client returns an admin controller-runtime client.
func (e *Env) Client(t testing.TB) client.Client {
	t.Helper()
	c, err := client.New(e.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FastClient is a client for cfg (the admin's env.Config, or a user's) with client-go's default
// rate limit of 5 QPS raised to qps and burst, for tests that read or write many objects.
func FastClient(t testing.TB, cfg *rest.Config, qps float32, burst int) client.Client {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = qps, burst
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// UserKubeconfig writes a kubeconfig for a user authenticated by a client certificate with the
// given name and groups, who has no permissions until the test grants them with RBAC.
func (e *Env) UserKubeconfig(t testing.TB, user string, groups ...string) string {
	t.Helper()
	path, err := e.writeKubeconfig("user-"+user, user, groups, time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// ExpiredKubeconfig writes a kubeconfig whose client certificate expired an hour ago, the way
// stale credentials look to the API server.
func (e *Env) ExpiredKubeconfig(t testing.TB) string {
	t.Helper()
	path, err := e.writeKubeconfig("expired", "testenv-admin", []string{"system:masters"}, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *Env) writeKubeconfig(file, user string, groups []string, notAfter time.Time) (string, error) {
	certPEM, keyPEM, err := e.pki.issue(user, groups, false, notAfter)
	if err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testenv"] = &clientcmdapi.Cluster{Server: e.Host, CertificateAuthorityData: e.pki.caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "testenv"
	path := filepath.Join(e.Dir, file+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// Kubectl runs the harness's kubectl with the admin kubeconfig (unless args set another) and
// returns its combined output. Extra environment entries (e.g. PATH for plugins) go in env.
func (e *Env) Kubectl(ctx context.Context, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubectl"), args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+e.Kubeconfig), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// CACertPool returns the pool that trusts this environment's servers.
func (e *Env) CACertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.pki.caPEM)
	return pool
}

// TLSConfig is a client TLS configuration trusting the environment's CA (for tests' own servers).
func (e *Env) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: e.CACertPool(), MinVersion: tls.VersionTLS12}
}

func FreePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func Tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
