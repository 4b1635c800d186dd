// Package e2e runs the built plugin binary the way users do: through the real kubectl (built by the
// harness), which discovers `kubectl-fluxinstance` on PATH, and (the chaos test) directly as a
// process that the test can interrupt.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestMain silences controller-runtime's unset-logger warning: the chaos test reads the cluster
// with its client.
func TestMain(m *testing.M) { testenv.Main(m) }

// pluginBinary is the plugin built by newPlugin, each test its own (a field, not package state; the
// second build of a package is a link, the compiled packages come from go's cache).
type pluginBinary struct{ dir string }

func buildPlugin(dir string) (pluginBinary, error) {
	if err := testenv.BuildPlugin(pluginBinary{dir: dir}.path(), "-X main.version=v9.9.9-e2e"); err != nil {
		return pluginBinary{}, fmt.Errorf("building the plugin: %w", err)
	}
	return pluginBinary{dir: dir}, nil
}

// path is the plugin binary itself, for tests that run it directly (to signal it).
func (p pluginBinary) path() string { return filepath.Join(p.dir, "kubectl-fluxinstance") }

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
