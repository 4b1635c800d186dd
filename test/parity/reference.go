// Package parity compares kubectl-fluxinstance's `build` with the Flux Operator CLI's
// `build instance` (the reference renderer) over the fidelity corpus, and gives the benchmarks
// (test/bench) the same processes to run: the plugin binary, the reference CLI and a loopback
// registry serving the distribution artifact.
//
// The reference CLI (AGPL-3.0) is built by test/binaries/flux-operator-cli/build.sh in a module
// of its own and only ever run as a separate process.
package parity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/fluxinstance/kubectl-fluxinstance/test/distribution/distdata"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// ReferenceCLIEnv names a flux-operator binary to use instead of the cached build.
const ReferenceCLIEnv = "FLUX_OPERATOR_CLI"

// ReferenceCLIHint says how to get the reference CLI.
const ReferenceCLIHint = "build it with test/binaries/flux-operator-cli/build.sh (cached under ~/.cache/kubectl-fluxinstance-testenv; " +
	"cold: about 9.5 minutes on 2 cores, 190 MB from the Go module proxy including the go1.27.3 toolchain), " +
	"or set " + ReferenceCLIEnv + " to a flux-operator v0.59.0 binary"

// RepoRoot is the directory of the plugin's go.mod.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// FindReferenceCLI returns the reference CLI without building it: $FLUX_OPERATOR_CLI, else the
// binary cached by build.sh. ok is false when there is none.
func FindReferenceCLI(tb testing.TB) (path string, ok bool) {
	tb.Helper()
	if p := os.Getenv(ReferenceCLIEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("%s=%s: %v", ReferenceCLIEnv, p, err)
		}
		return p, true
	}
	dir, err := testenv.RunBuildScript("flux-operator-cli", "--check")
	if err != nil {
		return "", false
	}
	return filepath.Join(dir, "flux-operator"), true
}

// BuildReferenceCLI builds (or reuses) the reference CLI with build.sh, which can take minutes.
func BuildReferenceCLI(tb testing.TB) (string, error) {
	tb.Helper()
	start := time.Now()
	dir, err := testenv.RunBuildScript("flux-operator-cli")
	if err != nil {
		return "", err
	}
	tb.Logf("reference CLI ready in %s", time.Since(start).Round(time.Second))
	return filepath.Join(dir, "flux-operator"), nil
}

// PluginBinary builds cmd/kubectl-fluxinstance like `make build` does (testenv.BuildPlugin) (the default distribution
// is embedded when render/distribution/embedded/data holds it, see `make embed`) into a temporary
// directory, unless $KUBECTL_FLUXINSTANCE names a binary to use.
func PluginBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("KUBECTL_FLUXINSTANCE"); p != "" {
		return p
	}
	out := filepath.Join(tb.TempDir(), "kubectl-fluxinstance")
	if err := testenv.BuildPlugin(out, "-s -w"); err != nil {
		tb.Fatal(err)
	}
	return out
}

// HasEmbeddedDistribution tells whether the plugin binary was built with a default distribution.
func HasEmbeddedDistribution(tb testing.TB) bool {
	tb.Helper()
	fi, err := os.Stat(filepath.Join(RepoRoot(tb), "render", "distribution", "embedded", "data", "distribution.tar.gz"))
	return err == nil && fi.Size() > 0
}

// DistributionArgs are the plugin's arguments for its distribution: none for the embedded one (what
// users run), or --distribution dir when the binary has none (no `make embed`); label says which.
func DistributionArgs(tb testing.TB, dir string) (args []string, label string) {
	tb.Helper()
	if HasEmbeddedDistribution(tb) {
		return nil, "embedded distribution"
	}
	return []string{"--distribution", dir}, "distribution directory " + dir
}

// ServeDistribution serves the distribution data (FLUX_DISTRIBUTION_DIR) as the operator's OCI
// artifact on a loopback registry for the rest of the test, and returns its oci:// URL.
func ServeDistribution(tb testing.TB) string {
	tb.Helper()
	dir := distdata.Dir(tb)
	// Not distdata.StartRegistry: its registry logs every request, which would drown the
	// benchmark's table and the test's findings.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	tb.Cleanup(srv.Close)
	ref := srv.Listener.Addr().String() + "/flux-operator-manifests:latest"
	distdata.PushArtifact(tb, ref, distdata.TarGz(tb, dir), distdata.ConfigMediaType, distdata.ContentMediaType, true)
	return "oci://" + ref
}

// Env is the environment of a rendering process: an empty Docker config (no credential helper
// of the user's is consulted) and cacheDir as the user cache directory (the plugin's OCI cache).
func Env(tb testing.TB, cacheDir string) []string {
	tb.Helper()
	docker := filepath.Join(tb.TempDir(), "docker")
	if err := os.MkdirAll(docker, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(docker, "config.json"), []byte("{}"), 0o644); err != nil {
		tb.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_CONFIG=") && !strings.HasPrefix(kv, "XDG_CACHE_HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "DOCKER_CONFIG="+docker, "XDG_CACHE_HOME="+cacheDir)
}

// Result is one finished process.
type Result struct {
	Stdout, Stderr []byte
	// Wall is the elapsed time from start to exit.
	Wall time.Duration
	// CPU is user + system time of the process (its rusage).
	CPU time.Duration
	// MaxRSS is the peak resident set size in bytes (rusage ru_maxrss).
	MaxRSS int64
	// Err is the start or exit error.
	Err error
}

// gnuTime is GNU time, which Run measures peak RSS through.
const gnuTime = "/usr/bin/time"

// Run runs name with args and env and measures it. The peak RSS is the one GNU time reports when
// /usr/bin/time exists (Linux): the child's own rusage is no measure of it, since Linux charges a
// process the RSS high-water mark of the memory it replaced at exec, which for os/exec's vfork is
// this test process's (a /bin/true spawned from a 300 MB process reports 302 MB); time is a 1 MB
// process, so its child's figure is the command's own. Without it, MaxRSS is the rusage figure,
// at least this process's RSS. CPU is the rusage of both (time's own is negligible).
func Run(ctx context.Context, env []string, name string, args ...string) Result {
	var stdout, stderr bytes.Buffer
	cmdName, cmdArgs, rssFile := name, args, ""
	if _, err := os.Stat(gnuTime); err == nil && runtime.GOOS == "linux" {
		if f, err := os.CreateTemp("", "parity-rss-*"); err == nil {
			rssFile = f.Name()
			f.Close()
			defer os.Remove(rssFile)
			cmdName, cmdArgs = gnuTime, append([]string{"-f", "%M", "-o", rssFile, name}, args...)
		}
	}
	cmd := exec.CommandContext(ctx, cmdName, cmdArgs...)
	// A canceled context kills the command too, not only time: they share a process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := Result{Wall: time.Since(start), Err: err}
	if cmd.ProcessState != nil {
		res.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.MaxRSS = ru.Maxrss * 1024 // kilobytes on Linux
		}
	}
	if kb, ok := timeMaxRSS(rssFile); ok {
		res.MaxRSS = kb * 1024
	}
	res.Stdout, res.Stderr = stdout.Bytes(), stderr.Bytes()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		res.Err = fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, testenv.Last(string(res.Stderr), 2000))
	}
	return res
}

// timeMaxRSS reads the kilobytes GNU time wrote to file: the last line (a failed command's
// "Command exited with non-zero status N" comes before it).
func timeMaxRSS(file string) (int64, bool) {
	if file == "" {
		return 0, false
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	kb, err := strconv.ParseInt(strings.TrimSpace(lines[len(lines)-1]), 10, 64)
	return kb, err == nil && kb > 0
}

// ReferenceArgs are the arguments of the reference CLI rendering file from the artifact at ociURL.
func ReferenceArgs(file, ociURL string) []string {
	return []string{"build", "instance", "-f", file, "--distribution-artifact", ociURL}
}

// PluginArgs are the arguments of the plugin rendering file; distribution "" is the embedded one.
func PluginArgs(file, distribution string) []string {
	args := []string{"build", "-f", file}
	if distribution != "" {
		args = append(args, "--distribution", distribution)
		if strings.HasPrefix(distribution, "oci://127.0.0.1:") {
			args = append(args, "--insecure-registry")
		}
	}
	return args
}
