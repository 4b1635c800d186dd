// Command demo shows the plugin's main job against a real, local kube-apiserver: it starts the
// test environment, installs Flux the way users' clusters have it and drives `kubectl fluxinstance`
// through the real kubectl, which discovers the plugin on PATH. Run it with `make demo`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/blang/semver/v4"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func main() {
	pluginDir := flag.String("plugin-dir", "bin", "directory holding the kubectl-fluxinstance binary")
	stateDir := flag.String("state-dir", "tmp/demo", "directory for the API server's data, certificates and logs")
	keep := flag.Bool("keep", false, "leave the API server running at the end and print how to use it")
	flag.Parse()
	if err := run(*pluginDir, *stateDir, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func run(pluginDir, stateDir string, keep bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	distDir := os.Getenv("FLUX_DISTRIBUTION_DIR")
	if distDir == "" {
		return fmt.Errorf("FLUX_DISTRIBUTION_DIR is not set: point it at the Flux distribution data (make demo sets it from ../shared/flux-distribution)")
	}
	pluginDir, err := filepath.Abs(pluginDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(pluginDir, "kubectl-fluxinstance")); err != nil {
		return fmt.Errorf("no kubectl-fluxinstance in %s: run `make build` first", pluginDir)
	}
	if err := os.RemoveAll(stateDir); err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	stateDir, err = filepath.Abs(stateDir)
	if err != nil {
		return err
	}

	step("Starting etcd and kube-apiserver on 127.0.0.1")
	start := time.Now()
	env, err := testenv.StartDetached(stateDir)
	if err != nil {
		return err
	}
	if !keep {
		defer env.Stop()
	}
	fmt.Printf("API server %s ready in %.1fs\n", env.Host, time.Since(start).Seconds())

	// kubectl finds plugins on PATH: put ours first, and nothing else of the machine's matters
	// because the demo calls the harness's own kubectl by path.
	path := "PATH=" + pluginDir + string(os.PathListSeparator) + os.Getenv("PATH")
	kubectl := func(args ...string) error {
		fmt.Printf("\n$ kubectl %s\n", strings.Join(args, " "))
		// "> FILE" as the last two arguments sends stdout to FILE, as a shell would.
		stdout := io.Writer(os.Stdout)
		if n := len(args); n > 2 && args[n-2] == ">" {
			f, err := os.Create(args[n-1])
			if err != nil {
				return err
			}
			defer f.Close()
			stdout, args = f, args[:n-2]
		}
		cmd := exec.CommandContext(ctx, filepath.Join(env.BinDir, "kubectl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, path)
		cmd.Stdout, cmd.Stderr = stdout, os.Stderr
		return cmd.Run()
	}

	step("kubectl discovers the plugin")
	if err := kubectl("plugin", "list"); err != nil {
		return err
	}
	if err := kubectl("fluxinstance", "version"); err != nil {
		return err
	}

	step("Rendering examples/flux-instance.yaml offline (the embedded distribution)")
	if err := kubectl("fluxinstance", "build", "-f", "examples/flux-instance.yaml", "-o", "name"); err != nil {
		return err
	}

	if err := demoUpgrade(ctx, stateDir, kubectl); err != nil {
		return err
	}

	step("Dropping image-automation-controller in a copy: diff shows what apply would change and prune")
	smaller := filepath.Join(stateDir, "flux-instance-smaller.yaml")
	if err := writeWithout("examples/flux-instance.yaml", smaller, "    - image-automation-controller\n"); err != nil {
		return err
	}
	// diff exits 1 when there are differences, as kubectl diff does.
	if err := kubectl("fluxinstance", "diff", "-f", smaller); exitCode(err) != 1 {
		return fmt.Errorf("diff should have found differences (exit 1), got %v", err)
	}
	if err := kubectl("fluxinstance", "apply", "-f", smaller, "--wait=false"); err != nil {
		return err
	}
	if err := kubectl("fluxinstance", "status"); err != nil {
		return err
	}

	if err := demoMigrate(ctx, distDir, filepath.Join(stateDir, "bootstrap"), path); err != nil {
		return err
	}

	if keep {
		fmt.Printf("\nThe API server keeps running. Use it with:\n  export KUBECONFIG=%s PATH=%s:$PATH\nStop it with: kill $(pgrep -f %s)\n",
			env.Kubeconfig, pluginDir, stateDir)
	}
	return nil
}

// demoUpgrade installs Flux 2.2.3, has teams create objects at the API versions of that release,
// then upgrades to the newest 2.x in one apply, across the versions 2.7 to 2.9 removed.
func demoUpgrade(ctx context.Context, stateDir string, kubectl func(args ...string) error) error {
	old := filepath.Join(stateDir, "flux-instance-2.2.yaml")
	if err := writeReplaced("examples/flux-instance.yaml", old, `version: "2.x"`, `version: "2.2.3"`); err != nil {
		return err
	}
	step("Applying it pinned at Flux 2.2.3 (no kubelet runs here, so without waiting for the controllers)")
	if err := kubectl("fluxinstance", "apply", "-f", old, "--wait=false"); err != nil {
		return err
	}
	step("Teams create their objects at the API versions of Flux 2.2 (v1beta2 sources, v2beta1 HelmReleases, ...)")
	teams := filepath.Join(stateDir, "team-objects.yaml")
	if err := writeObjects(teams, "team-a", "team-b"); err != nil {
		return err
	}
	if err := kubectl("apply", "--server-side", "--field-manager=team-ci", "-f", teams); err != nil {
		return err
	}
	if err := kubectl("fluxinstance", "status"); err != nil {
		return err
	}
	step("diff to 2.x (Flux 2.7-2.9 removed those versions): the storage migration apply would run, on stderr")
	diffOut := filepath.Join(stateDir, "upgrade.diff")
	if err := kubectl("fluxinstance", "diff", "-f", "examples/flux-instance.yaml", ">", diffOut); exitCode(err) != 1 {
		return fmt.Errorf("diff should have found differences (exit 1), got %v", err)
	}
	if data, err := os.ReadFile(diffOut); err == nil {
		fmt.Printf("(%d lines of diff in %s: the new CRDs, controllers and RBAC)\n", strings.Count(string(data), "\n"), diffOut)
	}
	step("Upgrading to 2.x in one apply: the stored objects are migrated, then the new CRDs and controllers applied")
	if err := kubectl("fluxinstance", "apply", "-f", "examples/flux-instance.yaml", "--wait=false"); err != nil {
		return err
	}
	if err := kubectl("get", "helmreleases.helm.toolkit.fluxcd.io", "-A"); err != nil {
		return err
	}
	return kubectl("fluxinstance", "status")
}

// writeObjects writes the users' objects of testenv.OldFluxObjects, for each namespace, as one
// YAML stream preceded by the namespaces.
func writeObjects(path string, namespaces ...string) error {
	var docs []string
	for _, ns := range namespaces {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", ns))
		for _, o := range testenv.OldFluxObjects(ns) {
			data, err := yaml.Marshal(o.Object)
			if err != nil {
				return err
			}
			docs = append(docs, string(data))
		}
	}
	return os.WriteFile(path, []byte(strings.Join(docs, "---\n")), 0o600)
}

// demoMigrate starts a second API server holding what `flux bootstrap` leaves (simulated: no
// controllers run), and migrates it to a FluxInstance.
func demoMigrate(ctx context.Context, distDir, stateDir, pathEnv string) error {
	version, err := newestVersion(distDir)
	if err != nil {
		return err
	}
	step("A second cluster, bootstrapped with `flux bootstrap` (Flux " + version + ", simulated)")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	env, err := testenv.StartDetached(stateDir)
	if err != nil {
		return err
	}
	defer env.Stop()
	if _, err := env.SimulateBootstrapFrom(ctx, distDir, testenv.Bootstrap{
		Version: version, Tolerations: []string{"dedicated/flux"}, LogLevel: "debug",
	}); err != nil {
		return err
	}
	kubectl := func(args ...string) error {
		fmt.Printf("\n$ kubectl %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, filepath.Join(env.BinDir, "kubectl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, pathEnv)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	if err := kubectl("fluxinstance", "version"); err != nil {
		return err
	}
	step("migrate --dry-run: the plan (stderr) and the FluxInstance that reproduces the cluster (stdout)")
	if err := kubectl("fluxinstance", "migrate", "--dry-run"); err != nil {
		return err
	}
	step("migrate: take the objects over from kustomize-controller, verify, print the next step")
	if err := kubectl("fluxinstance", "migrate", "--yes"); err != nil {
		return err
	}
	return kubectl("fluxinstance", "status")
}

func writeWithout(src, dst, line string) error { return writeReplaced(src, dst, line, "") }

// writeReplaced copies src to dst with the first occurrence of old replaced by new.
func writeReplaced(src, dst, old, new string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if !strings.Contains(string(data), old) {
		return fmt.Errorf("%s has no %q", src, old)
	}
	return os.WriteFile(dst, []byte(strings.Replace(string(data), old, new, 1)), 0o600)
}

func exitCode(err error) int {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

func step(title string) { fmt.Printf("\n==> %s\n", title) }

// newestVersion picks the highest flux/vX.Y.Z directory of the distribution.
func newestVersion(distDir string) (string, error) {
	entries, err := os.ReadDir(filepath.Join(distDir, "flux"))
	if err != nil {
		return "", err
	}
	var versions []semver.Version
	for _, e := range entries {
		if v, err := semver.ParseTolerant(e.Name()); err == nil && e.IsDir() {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		return "", fmt.Errorf("no flux/vX.Y.Z directories in %s", distDir)
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i].LT(versions[j]) })
	return "v" + versions[len(versions)-1].String(), nil
}
