package fleet_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// instanceYAML is a FluxInstance without sync (no custom resources: nothing waits for a
// controller that no kubelet runs) of version with components.
func instanceYAML(version string, components ...string) string {
	return `apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "` + version + `"
    registry: ghcr.io/fluxcd
  components: [` + strings.Join(components, ", ") + `]
`
}

// fleetRepo writes the fleet-repository layout: clusters/<context>/flux-instance.yaml.
func fleetRepo(t *testing.T, instances map[string]string) string {
	dir := filepath.Join(t.TempDir(), "clusters")
	for name, yaml := range instances {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "flux-instance.yaml"), []byte(yaml), 0o600))
	}
	return dir
}

// controllers lists the Flux Deployments of a cluster as name@version.
func controllers(t *testing.T, c client.Client) []string {
	t.Helper()
	var list appsv1.DeploymentList
	require.NoError(t, c.List(context.Background(), &list, client.InNamespace("flux-system")))
	var out []string
	for _, d := range list.Items {
		out = append(out, d.Name+"@"+d.Labels["app.kubernetes.io/version"])
	}
	sort.Strings(out)
	return out
}

// summaryRow finds a context's row in a summary table printed after the per-cluster output.
func summaryRow(t *testing.T, out, header, context string) []string {
	t.Helper()
	_, table, ok := strings.Cut(out, header)
	require.True(t, ok, "no summary table %q in:\n%s", header, out)
	return row(t, table, context)
}

// TestFleetRollout runs diff, apply and migrate --dry-run across contexts: two empty clusters
// (east, west), one bootstrapped with Flux 2.6 (legacy), a user who may do nothing (forbidden, on
// east) and a closed port.
func TestFleetRollout(t *testing.T) {
	dist := testenv.DistributionDir(t)
	envs := testenv.StartMany(t, 3)
	east, west, legacy := envs[0], envs[1], envs[2]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := legacy.SimulateBootstrapFrom(ctx, dist, testenv.Bootstrap{Version: "v2.6.4"})
	require.NoError(t, err)
	kubeconfig := testenv.Kubeconfigs(t, t.TempDir(), map[string]string{
		"east": east.Kubeconfig, "west": west.Kubeconfig, "legacy": legacy.Kubeconfig,
		"forbidden": east.UserKubeconfig(t, "nobody"),
	}, map[string]string{"closed-port": testenv.ClosedPort(t), "silent": testenv.SilentServer(t)})
	run := func(args ...string) (string, string, int) {
		start := time.Now()
		r := runPlugin(t, "", append(args, "--kubeconfig", kubeconfig, "--distribution", dist, "--request-timeout", "5s")...)
		t.Logf("%s (exit %d, %s)\nstdout (end):\n%s\nstderr:\n%s", strings.Join(args, " "), r.Code, time.Since(start).Round(time.Millisecond), tail(r.Stdout, 1500), r.Stderr)
		return r.Stdout, r.Stderr, r.Code
	}
	repo := fleetRepo(t, map[string]string{
		"east":        instanceYAML("2.9.x", "source-controller", "kustomize-controller"),
		"west":        instanceYAML("2.8.x", "source-controller", "kustomize-controller", "helm-controller"),
		"forbidden":   instanceYAML("2.9.x", "source-controller"),
		"closed-port": instanceYAML("2.9.x", "source-controller"),
	})

	t.Run("diff: a missing file is named before any cluster is touched", func(t *testing.T) {
		stdout, stderr, code := run("diff", "-f", repo, "--contexts", "east,legacy")
		assert.Equal(t, 2, code)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, filepath.Join(repo, "legacy", "flux-instance.yaml")+` (context "legacy")`)
	})
	t.Run("diff: changes on the empty clusters, under headers in order", func(t *testing.T) {
		stdout, _, code := run("diff", "-f", repo, "--contexts", "west,east")
		assert.Equal(t, 1, code)
		w, e := strings.Index(stdout, "=== context west ==="), strings.Index(stdout, "=== context east ===")
		require.True(t, w >= 0 && e > w, "headers in the order given")
		// Each cluster is diffed against its own FluxInstance: west's version and components.
		assert.Regexp(t, `\+\+\+ merged/Deployment/flux-system/helm-controller`, stdout[w:e])
		assert.Contains(t, stdout[w:e], "app.kubernetes.io/version: v2.8.8")
		assert.NotRegexp(t, `merged/Deployment/flux-system/helm-controller`, stdout[e:])
		assert.NotContains(t, stdout[e:], "app.kubernetes.io/version: v2.8.8")
		assert.Contains(t, stdout[e:], "app.kubernetes.io/version: v2.9.4")
		assert.Equal(t, []string{"west", "changes"}, summaryRow(t, stdout, "CONTEXT  DIFF", "west"))
		assert.Equal(t, []string{"east", "changes"}, summaryRow(t, stdout, "CONTEXT  DIFF", "east"))
	})
	t.Run("apply stops at the first failure", func(t *testing.T) {
		stdout, stderr, code := run("apply", "-f", repo, "--contexts", "east,closed-port,west", "--wait=false")
		assert.Equal(t, 1, code)
		header := "CONTEXT      RESULT"
		assert.Equal(t, "applied", summaryRow(t, stdout, header, "east")[1])
		assert.Equal(t, "failed: connection refused", summaryRow(t, stdout, header, "closed-port")[1])
		assert.Equal(t, []string{"west", "not started", "-"}, summaryRow(t, stdout, header, "west"))
		assert.Contains(t, stderr, "error: 1 of 3 clusters applied; failed: closed-port (connection refused); not started: west")
		assert.Contains(t, stdout, "[east] ")
		assert.Equal(t, []string{"kustomize-controller@v2.9.4", "source-controller@v2.9.4"}, controllers(t, east.Client(t)))
		err := west.Client(t).Get(ctx, client.ObjectKey{Name: "flux-system"}, &corev1.Namespace{})
		assert.True(t, apierrors.IsNotFound(err), "west was not touched: %v", err)
	})
	t.Run("apply --continue-on-error goes on after a refusal", func(t *testing.T) {
		stdout, stderr, code := run("apply", "-f", repo, "--contexts", "forbidden,west", "--wait=false", "--continue-on-error")
		assert.Equal(t, 1, code)
		header := "CONTEXT    RESULT"
		assert.Regexp(t, `^failed: forbidden: User "nobody" cannot `, summaryRow(t, stdout, header, "forbidden")[1])
		assert.Equal(t, "applied", summaryRow(t, stdout, header, "west")[1])
		assert.Contains(t, stderr, "[forbidden] error: applying "+filepath.Join(repo, "forbidden", "flux-instance.yaml"))
		assert.Equal(t, []string{"helm-controller@v2.8.8", "kustomize-controller@v2.8.8", "source-controller@v2.8.8"}, controllers(t, west.Client(t)))
	})
	t.Run("diff: no changes after the rollout, a failure exits 2", func(t *testing.T) {
		stdout, _, code := run("diff", "-f", repo, "--contexts", "east,west")
		assert.Equal(t, 0, code)
		assert.Equal(t, []string{"east", "no changes"}, summaryRow(t, stdout, "CONTEXT  DIFF", "east"))
		stdout, stderr, code := run("diff", "-f", repo, "--contexts", "east,forbidden")
		assert.Equal(t, 2, code)
		assert.Regexp(t, `^failed: forbidden: User "nobody" cannot `, summaryRow(t, stdout, "CONTEXT    DIFF", "forbidden")[1])
		assert.Contains(t, stderr, `error: context "forbidden": diffing `+filepath.Join(repo, "forbidden", "flux-instance.yaml"))
	})
	t.Run("diff: a cluster that never answers is reported within --request-timeout", func(t *testing.T) {
		start := time.Now()
		stdout, stderr, code := run("diff", "-f", filepath.Join(repo, "east", "flux-instance.yaml"), "--contexts", "silent,east")
		assert.Less(t, time.Since(start), 25*time.Second, "bounded by the 5s request timeout (shared CI margin)")
		assert.Equal(t, 2, code)
		assert.Equal(t, []string{"east", "no changes"}, summaryRow(t, stdout, "CONTEXT  DIFF", "east"), "the other cluster is diffed")
		assert.Contains(t, stderr, "error: context \"silent\": no answer within 5s (raise --request-timeout for a slow cluster)\n")
		assert.Equal(t, "failed: no answer within 5s", summaryRow(t, stdout, "CONTEXT  DIFF", "silent")[1])
	})
	t.Run("apply --dry-run=server, one file for all", func(t *testing.T) {
		file := filepath.Join(repo, "east", "flux-instance.yaml")
		stdout, _, code := run("apply", "-f", file, "--contexts", "east,west", "--dry-run=server")
		assert.Equal(t, 0, code)
		assert.Equal(t, "applied (dry run: server)", summaryRow(t, stdout, "CONTEXT  RESULT", "west")[1])
		assert.Contains(t, stdout, "[west] ")
		assert.Contains(t, controllers(t, west.Client(t)), "helm-controller@v2.8.8", "a dry run changes nothing")
	})
	t.Run("migrate --dry-run: one row per cluster", func(t *testing.T) {
		stdout, stderr, code := run("migrate", "--dry-run", "--contexts", "legacy,west,closed-port")
		assert.Equal(t, 1, code, "closed-port could not be planned")
		header := "CONTEXT      INSTALLER"
		// One patch per Deployment: each keeps the running release's image, labels and arguments.
		assert.Equal(t, []string{"legacy", "flux bootstrap", "v2.6.4", "yes", "4"}, summaryRow(t, stdout, header, "legacy"))
		assert.Equal(t, []string{"west", "-", "-", `no: Flux in namespace "flux-system" is already managed by this plugin`, "0"}, summaryRow(t, stdout, header, "west"))
		assert.Equal(t, "failed: connection refused", summaryRow(t, stdout, header, "closed-port")[3])
		assert.Regexp(t, `error: context "closed-port": unable to reach the cluster at https://127\.0\.0\.1:\d+: connection refused`, stderr)
		assert.Contains(t, stderr, "=== context legacy ===\nFlux v2.6.4 installed by `flux bootstrap`")
		assert.Contains(t, stderr, "=== context west ===\nnot adoptable: Flux in namespace \"flux-system\" is already managed by this plugin (applied with `kubectl fluxinstance apply`)")
		_, stderr, code = run("migrate", "--contexts", "legacy,west")
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr, "migrate changes one cluster at a time: run it per context")
	})
}

// tail is the end of s, for logs: a diff of Flux's CRDs runs to thousands of lines.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
