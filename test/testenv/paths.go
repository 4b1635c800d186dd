// Package testenv starts a real etcd and kube-apiserver on 127.0.0.1 for tests, with generated
// certificates, RBAC authorization, an admin kubeconfig and kubeconfigs for limited users. The
// binaries are built from the Go module proxy by test/binaries (make testenv) and found through
// KUBEBUILDER_ASSETS or the repository's bin/testenv.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RepoRoot finds the plugin's repository root by walking up to the go.mod that declares the module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/fluxinstance/kubectl-fluxinstance\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of github.com/fluxinstance/kubectl-fluxinstance) not found above the working directory")
		}
		dir = parent
	}
}

// InCI reports whether the tests run in CI, where nothing may be skipped for want of binaries or data.
func InCI() bool { return os.Getenv("CI") == "true" }

// missing skips the test on a developer machine and fails it in CI: a real-cluster test that does
// not run in CI is a silent gap.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("CI=true but %s", msg)
	}
	t.Skip(msg)
}

// BinDir returns the directory holding etcd, kube-apiserver and kubectl.
func BinDir() (string, error) {
	dir, err := BinaryDir("KUBEBUILDER_ASSETS", "testenv")
	if err != nil {
		return "", err
	}
	if err := CheckBinaries(dir, "etcd", "kube-apiserver", "kubectl"); err != nil {
		return dir, fmt.Errorf("%w: run `make testenv` to build the test binaries", err)
	}
	return dir, nil
}

// BinaryDir is where a harness's binaries are: $envVar when set, else the repository's bin/<sub>.
func BinaryDir(envVar, sub string) (string, error) {
	if dir := os.Getenv(envVar); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", sub), nil
}

// CheckBinaries reports the first of names missing from dir. Stat follows the symlinks the build
// scripts make, so a dangling link (cache wiped) counts as missing.
func CheckBinaries(dir string, names ...string) error {
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("%s not found in %s", name, dir)
		}
	}
	return nil
}

// RequireBinDir returns BinDir or skips (fails in CI).
func RequireBinDir(t testing.TB) string {
	t.Helper()
	dir, err := BinDir()
	if err != nil {
		missing(t, "%v", err)
	}
	return dir
}

// DistributionDir returns the Flux distribution data (FLUX_DISTRIBUTION_DIR, by default
// ../shared/flux-distribution beside the repository) or skips (fails in CI).
func DistributionDir(t testing.TB) string {
	t.Helper()
	return SharedDir(t, "FLUX_DISTRIBUTION_DIR", "flux-distribution", "flux", "the Flux distribution data")
}

// SharedDir returns the directory $envVar names, by default ../shared/<rel> beside the repository
// (where CI lays the shared data too), holding probe; when probe is missing it skips the test on a
// developer machine and fails it in CI. what names the data in that message.
func SharedDir(t testing.TB, envVar, rel, probe, what string) string {
	t.Helper()
	dir := os.Getenv(envVar)
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "..", "shared", rel)
	}
	if _, err := os.Stat(filepath.Join(dir, probe)); err != nil {
		missing(t, "%s is not at %s: set %s", what, dir, envVar)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// RunBuildScript runs test/binaries/<name>/build.sh with args (e.g. --check) from the repository
// root and returns the directory it prints. Its error ends with the script's last standard error.
func RunBuildScript(name string, args ...string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "test", "binaries", name, "build.sh")
	cmd := exec.Command(script, args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, Last(stderr.String(), 4000))
	}
	return strings.TrimSpace(string(out)), nil
}

// Last returns the last n bytes of s, marked with "…" when it is cut.
func Last(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// BuildPlugin builds cmd/kubectl-fluxinstance into out with ldflags, compiled as a release is
// (CGO_ENABLED=0 and -trimpath, like krew/release.mk and `make build`): the tests that run the
// binary then test what users run, and they and the krew test's release build share every
// compiled package in Go's build cache (with other flags, each compiles the plugin's whole
// dependency graph again: minutes apiece on a cold cache).
func BuildPlugin(out, ldflags string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./cmd/kubectl-fluxinstance")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/kubectl-fluxinstance: %w\n%s", err, b)
	}
	return nil
}
