package fluxenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// Controllers are a running source-controller and kustomize-controller.
type Controllers struct {
	// Dir holds the logs (source-controller.log, kustomize-controller.log), the artifact storage
	// and the controllers' temporary directories. It is inside the environment's directory.
	Dir string
	// StorageAddr is source-controller's artifact server, 127.0.0.1:PORT.
	StorageAddr string

	procs []*testenv.Process
}

// ControllerOptions tune how the controllers run.
type ControllerOptions struct {
	// Namespace is the controllers' RUNTIME_NAMESPACE, the namespace Flux is installed in
	// (default flux-system).
	Namespace string
	// LogLevel defaults to info.
	LogLevel string
}

// StartControllers starts both controllers against env, watching all namespaces, and waits until
// they serve /readyz and the artifact server answers. The Flux CRDs must be installed first: the
// controllers exit when their kinds are unknown. They are stopped when the test ends.
func StartControllers(t testing.TB, env *testenv.Env, opts ControllerOptions) *Controllers {
	t.Helper()
	bin := BinDir(t, false)
	c, err := startControllers(bin, env, opts)
	if err != nil {
		t.Fatalf("starting the Flux controllers: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

func startControllers(bin string, env *testenv.Env, opts ControllerOptions) (c *Controllers, err error) {
	if opts.Namespace == "" {
		opts.Namespace = "flux-system"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	dir, err := os.MkdirTemp(env.Dir, "flux-controllers-")
	if err != nil {
		return nil, err
	}
	c = &Controllers{Dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	for _, sub := range []string{"sc-data", "sc-tmp", "kc-tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	ports, err := testenv.FreePorts(5)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	c.StorageAddr = addr(0)
	// The in-cluster Deployment args minus leader election (one replica) and events (no
	// notification-controller), with every listener on 127.0.0.1.
	common := []string{
		"--watch-all-namespaces=true", "--log-level=" + opts.LogLevel, "--log-encoding=json",
		"--enable-leader-election=false", "--events-addr=",
	}
	env0 := []string{"KUBECONFIG=" + env.Kubeconfig, "RUNTIME_NAMESPACE=" + opts.Namespace, "HOME=" + dir}
	if err := c.run(bin, SourceController,
		append(env0, "TMPDIR="+filepath.Join(dir, "sc-tmp"), "TUF_ROOT="+filepath.Join(dir, "sc-tmp", ".sigstore")),
		append(common,
			"--storage-path="+filepath.Join(dir, "sc-data"),
			"--storage-addr="+c.StorageAddr, "--storage-adv-addr="+c.StorageAddr,
			"--metrics-addr="+addr(1), "--health-addr="+addr(2))...); err != nil {
		return nil, err
	}
	if err := c.run(bin, KustomizeController,
		append(env0, "TMPDIR="+filepath.Join(dir, "kc-tmp")),
		append(common, "--metrics-addr="+addr(3), "--health-addr="+addr(4))...); err != nil {
		return nil, err
	}
	urls := []string{"http://" + addr(2) + "/readyz", "http://" + addr(4) + "/readyz", "http://" + c.StorageAddr + "/"}
	if err := c.waitReady(urls, 90*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// run starts one controller with its output in <Dir>/<name>.log (see testenv.Process: a crashed
// test leaves no controller writing to the next test's API server).
func (c *Controllers) run(bin, name string, env []string, args ...string) error {
	p, err := testenv.StartProcess(c.Dir, name, filepath.Join(bin, name), env, args...)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

func (c *Controllers) waitReady(urls []string, timeout time.Duration) error {
	httpClient := &http.Client{Timeout: 2 * time.Second}
	defer httpClient.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for _, url := range urls {
		for {
			resp, err := httpClient.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 500 {
					break
				}
			}
			if err := c.exited(); err != nil {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not answer within %s; logs in %s", url, timeout, c.Dir)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// exited returns an error with the last log lines if a controller is no longer running.
func (c *Controllers) exited() error {
	for _, p := range c.procs {
		if err := p.Exited(); err != nil {
			return err
		}
	}
	return nil
}

// Running reports an error naming the controller that is no longer running, with its last log lines.
func (c *Controllers) Running() error { return c.exited() }

// Logs returns the last lines of both controllers' logs, for failure messages.
func (c *Controllers) Logs(lines int) string {
	if c == nil {
		return "(the controllers were not started)"
	}
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "--- %s (%s)\n%s\n", p.Name, p.Log, testenv.Tail(p.Log, lines))
	}
	return b.String()
}

// Stop ends both controllers and waits for them. It may be called more than once.
func (c *Controllers) Stop() {
	testenv.StopAll(c.procs)
	c.procs = nil
}

// waitRunning polls check until it returns true, failing early when a controller exits.
func (c *Controllers) waitRunning(ctx context.Context, interval time.Duration, check func() (bool, error)) error {
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if c != nil {
			if err := c.exited(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
