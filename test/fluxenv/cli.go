package fluxenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// BootstrapWithCLI runs the real `flux bootstrap git --token-auth --allow-insecure-http` (Flux CLI
// FluxVersion) against the repository: the CLI generates, commits and pushes the bootstrap files,
// installs the components, stores the credentials in the Options.SecretName secret, applies the
// sync objects and waits for them. The controllers start as soon as the CRDs exist, and the Deployments are kept
// Available for the CLI's health checks. Commit user apps before: bootstrap clones the branch.
// Options.Version must be FluxVersion (the CLI's embedded manifests) and Options.Tag is not
// supported (bootstrap pushes to a branch). The work tree is updated to what the CLI pushed.
func BootstrapWithCLI(t testing.TB, env *testenv.Env, repo *Repo, o Options) *Flux {
	t.Helper()
	o = o.WithDefaults()
	if o.Version != FluxVersion || o.Tag != "" {
		t.Fatalf("BootstrapWithCLI runs the Flux CLI %s on a branch; got version %s, tag %q", FluxVersion, o.Version, o.Tag)
	}
	bin := BinDir(t, true)
	f := &Flux{Env: env, Client: NewClient(t, env), Repo: repo, Options: o}
	KeepDeploymentsAvailable(t, f.Client)

	args := []string{
		"bootstrap", "git", "--silent", "--timeout=3m",
		"--url=" + repo.URL, "--allow-insecure-http", "--token-auth",
		"--username=" + repo.server.Username, "--password=" + repo.server.Password,
		"--branch=" + o.Branch, "--path=" + o.Path, "--namespace=" + o.Namespace,
		"--author-name=fluxenv", "--author-email=fluxenv@example.invalid",
		"--components=" + strings.Join(o.Components, ","), "--registry=" + o.Registry,
		"--log-level=" + o.LogLevel, "--cluster-domain=" + o.ClusterDomain,
		fmt.Sprintf("--network-policy=%t", !o.NoNetworkPolicy), "--interval=" + o.Interval.String(), "--secret-name=" + o.SecretName,
	}
	if len(o.ComponentsExtra) > 0 {
		args = append(args, "--components-extra="+strings.Join(o.ComponentsExtra, ","))
	}
	if o.ImagePullSecret != "" {
		args = append(args, "--image-pull-secret="+o.ImagePullSecret)
	}
	if len(o.TolerationKeys) > 0 {
		args = append(args, "--toleration-keys="+strings.Join(o.TolerationKeys, ","))
	}
	logPath := filepath.Join(env.Dir, "flux-bootstrap.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	home := filepath.Join(env.Dir, "flux-cli-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, FluxCLI), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting flux bootstrap: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// The controllers need their CRDs, which the CLI installs first.
	if err := waitCRDs(ctx, f.Client, exited); err != nil {
		t.Fatalf("flux bootstrap did not install the Flux CRDs: %v\n%s", err, testenv.Tail(logPath, 40))
	}
	c, err := startControllers(BinDir(t, false), env, ControllerOptions{Namespace: o.Namespace})
	if err != nil {
		cancel()
		<-exited
		t.Fatalf("starting the Flux controllers: %v", err)
	}
	t.Cleanup(c.Stop)
	f.Controllers = c
	if err := <-exited; err != nil {
		t.Fatalf("flux bootstrap git failed: %v\n%s\n%s", err, testenv.Tail(logPath, 60), c.Logs(20))
	}
	f.WaitReady(t, repo.Pull(t))
	return f
}

// waitCRDs waits until the GitRepository and Kustomization CRDs are Established, or the CLI exited.
func waitCRDs(ctx context.Context, c client.Client, exited chan error) error {
	names := []string{"gitrepositories.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io"}
	for {
		ready := 0
		for _, name := range names {
			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				continue
			}
			conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, cond := range conditions {
				if m, _ := cond.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
					ready++
				}
			}
		}
		if ready == len(names) {
			return nil
		}
		select {
		case err := <-exited:
			exited <- err // the caller reports the exit status
			return fmt.Errorf("the CLI exited first (%v)", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// InstallWithCLI runs the real `flux install` (Flux CLI FluxVersion) with the Options' component,
// registry, pull secret, network policy, domain, log level, namespace and toleration flags: the
// objects are applied server-side by the `flux` field manager and no sync objects exist. With
// viaKubectl, it runs `flux install --export` and applies the output with the harness's kubectl
// client-side instead (`kubectl apply -f -`: the kubectl-client-side-apply manager and the
// last-applied annotation). No controller runs: the Deployments are kept Available, which is all
// `flux install` waits for. It returns an admin client.
func InstallWithCLI(t testing.TB, env *testenv.Env, o Options, viaKubectl bool) client.Client {
	t.Helper()
	o = o.WithDefaults()
	if o.Version != FluxVersion {
		t.Fatalf("InstallWithCLI runs the Flux CLI %s; got version %s", FluxVersion, o.Version)
	}
	bin := BinDir(t, true)
	c := NewClient(t, env)
	KeepDeploymentsAvailable(t, c)
	args := []string{
		"install", "--timeout=3m", "--namespace=" + o.Namespace,
		"--components=" + strings.Join(o.Components, ","), "--registry=" + o.Registry,
		"--log-level=" + o.LogLevel, "--cluster-domain=" + o.ClusterDomain,
		fmt.Sprintf("--network-policy=%t", !o.NoNetworkPolicy),
	}
	if len(o.ComponentsExtra) > 0 {
		args = append(args, "--components-extra="+strings.Join(o.ComponentsExtra, ","))
	}
	if o.ImagePullSecret != "" {
		args = append(args, "--image-pull-secret="+o.ImagePullSecret)
	}
	if len(o.TolerationKeys) > 0 {
		args = append(args, "--toleration-keys="+strings.Join(o.TolerationKeys, ","))
	}
	if viaKubectl {
		args = append(args, "--export")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := runFluxCLI(ctx, env, bin, args...)
	if err != nil {
		t.Fatalf("flux %s failed: %v\n%s", strings.Join(args, " "), err, tailBytes(out, 4000))
	}
	if !viaKubectl {
		return c
	}
	manifests := filepath.Join(env.Dir, "flux-install-export.yaml")
	if err := os.WriteFile(manifests, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(ctx, nil, "apply", "-f", manifests); err != nil {
		t.Fatalf("kubectl apply -f (flux install --export): %v\n%s", err, out)
	}
	return c
}

// runFluxCLI runs the Flux CLI with the environment's kubeconfig and a private HOME; stdout only
// is returned on success (what --export prints), stdout and stderr on failure.
func runFluxCLI(ctx context.Context, env *testenv.Env, bin string, args ...string) ([]byte, error) {
	home := filepath.Join(env.Dir, "flux-cli-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, FluxCLI), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, "HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), err
	}
	return stdout.Bytes(), nil
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
