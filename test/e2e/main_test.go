// Package e2e runs the built plugin binary the way users do: through the real kubectl (built by the
// harness), which discovers `kubectl-fluxinstance` on PATH.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// pluginDir holds the plugin binary built once for the whole package by TestMain.
type pluginBinary struct{ dir string }

func buildPlugin(dir string) (pluginBinary, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return pluginBinary{}, err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version=v9.9.9-e2e",
		"-o", filepath.Join(dir, "kubectl-fluxinstance"), "./cmd/kubectl-fluxinstance")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return pluginBinary{}, fmt.Errorf("building the plugin: %v\n%s", err, out)
	}
	return pluginBinary{dir: dir}, nil
}

// kubectl runs the harness's kubectl with the plugin first on PATH.
func (p pluginBinary) kubectl(ctx context.Context, env *testenv.Env, args ...string) (string, error) {
	out, err := env.Kubectl(ctx, []string{"PATH=" + p.dir + string(os.PathListSeparator) + os.Getenv("PATH")}, args...)
	return string(out), err
}

func newPlugin(t *testing.T) pluginBinary {
	t.Helper()
	p, err := buildPlugin(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
