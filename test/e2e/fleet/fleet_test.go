// Package fleet_test proves `status --all-contexts` against several real API servers at once, in
// the states a fleet has: empty, bootstrapped with an old Flux, installed with `flux install`,
// applied by the plugin and drifted since, managed by the real Flux Operator, locked away from the
// user, refusing connections and never answering.
package fleet_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/plugin"
	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/operatorenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/pluginrun"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var runPlugin = pluginrun.With(plugin.Run, plugin.BuildInfo{Version: "v0.0.0-e2e-fleet"}).Run

// requestTimeout bounds each cluster in these runs; the silent server must be reported with it.
const requestTimeout = 5 * time.Second

// fleetStates starts the API servers in parallel and brings each to its state; it returns the
// merged kubeconfig whose contexts name them.
func fleetStates(t *testing.T) string {
	dist := testenv.DistributionDir(t)
	operatorenv.Require(t)
	envs := testenv.StartMany(t, 5)
	empty, bootstrapped, applied, operated, installed := envs[0], envs[1], envs[2], envs[3], envs[4]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var wg sync.WaitGroup
	var bootstrapErr, installErr error
	var applyResult pluginrun.Result
	wg.Add(3)
	go func() {
		defer wg.Done()
		bootstrapErr = bootstrapWithBlockers(ctx, bootstrapped, dist)
	}()
	go func() {
		defer wg.Done()
		_, installErr = installed.InstallFluxFrom(ctx, dist, testenv.FluxInstall{Version: "v2.8.8"})
	}()
	go func() {
		defer wg.Done()
		file := filepath.Join(t.TempDir(), "flux.yaml")
		if err := os.WriteFile(file, []byte(fixtures.Instance(t, "tests/all-components-no-sync-2.9.x")), 0o600); err != nil {
			applyResult = pluginrun.Result{Code: -1, Stderr: err.Error()}
			return
		}
		applyResult = runPlugin(t, "", "apply", "-f", file, "--distribution", dist, "--wait=false", "--kubeconfig", applied.Kubeconfig)
	}()
	// The operator in this goroutine: its helpers fail the test themselves.
	op := operatorenv.Start(t, operated, operatorenv.Options{Namespace: "flux-system", Distribution: dist})
	fi := fixtures.Object(t, "tests/all-components-no-sync-2.9.x")
	// No kubelet runs the controllers here: the operator would wait for them forever.
	require.NoError(t, unstructured.SetNestedField(fi.Object, false, "spec", "wait"))
	require.NoError(t, operatorenv.ApplyInstance(ctx, operated.Client(t), fi, "kubectl"))
	_, err := op.WaitInstanceReady(ctx, op.InstanceKey())
	require.NoError(t, err, op.LogTail(30))
	wg.Wait()
	require.NoError(t, bootstrapErr)
	require.NoError(t, installErr)
	require.Equal(t, 0, applyResult.Code, applyResult.Stderr)
	drift(t, applied.Client(t))

	return testenv.Kubeconfigs(t, t.TempDir(), map[string]string{
		"empty":            empty.Kubeconfig,
		"bootstrap-2.6":    bootstrapped.Kubeconfig,
		"plugin-2.9":       applied.Kubeconfig,
		"operator":         operated.Kubeconfig,
		"flux-install-2.8": installed.Kubeconfig,
		// A user the empty cluster knows and grants nothing.
		"forbidden": empty.UserKubeconfig(t, "nobody"),
	}, map[string]string{
		"closed-port": testenv.ClosedPort(t),
		"silent":      testenv.SilentServer(t),
	})
}

// bootstrapWithBlockers simulates `flux bootstrap` of Flux 2.6.4, then leaves what an old cluster
// upgraded over the years has: GitRepositories once stored at v1beta2 (still in the CRD's
// status.storedVersions) and a Kustomization that applies a HelmRepository at v1beta2, a version
// Flux 2.8 removed.
func bootstrapWithBlockers(ctx context.Context, env *testenv.Env, dist string) error {
	if _, err := env.SimulateBootstrapFrom(ctx, dist, testenv.Bootstrap{Version: "v2.6.4"}); err != nil {
		return err
	}
	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		return err
	}
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := c.Get(ctx, client.ObjectKey{Name: "gitrepositories.source.toolkit.fluxcd.io"}, crd); err != nil {
		return err
	}
	if err := unstructured.SetNestedStringSlice(crd.Object, []string{"v1beta2", "v1"}, "status", "storedVersions"); err != nil {
		return err
	}
	if err := c.Status().Update(ctx, crd); err != nil {
		return err
	}
	ks := &unstructured.Unstructured{}
	ks.SetGroupVersionKind(schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"})
	if err := c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "flux-system"}, ks); err != nil {
		return err
	}
	entries, _, _ := unstructured.NestedSlice(ks.Object, "status", "inventory", "entries")
	entries = append(entries, map[string]any{"id": "apps_podinfo_source.toolkit.fluxcd.io_HelmRepository", "v": "v1beta2"})
	if err := unstructured.SetNestedSlice(ks.Object, entries, "status", "inventory", "entries"); err != nil {
		return err
	}
	return c.Status().Update(ctx, ks)
}

// drift changes the plugin's installation behind its back: one Deployment deleted, another's
// arguments edited by someone else.
func drift(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	helm := &appsv1.Deployment{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "helm-controller"}, helm))
	require.NoError(t, c.Delete(ctx, helm))
	source := &appsv1.Deployment{}
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "source-controller"}, source))
	container := &source.Spec.Template.Spec.Containers[0]
	container.Args = append(container.Args, "--concurrent=20")
	require.NoError(t, c.Update(ctx, source, client.FieldOwner("someone-else")))
}

// row finds a context's line in the table and splits its columns (runs of two spaces or more).
func row(t *testing.T, table, context string) []string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, context+" ") {
			return regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
		}
	}
	t.Fatalf("no row for context %s in:\n%s", context, table)
	return nil
}

func TestStatusFleet(t *testing.T) {
	kubeconfig := fleetStates(t)
	t.Run("all contexts, one row each", func(t *testing.T) { allContextsTable(t, kubeconfig) })
	t.Run("json holds each cluster's full report", func(t *testing.T) { allContextsJSON(t, kubeconfig) })
	t.Run("markdown, contexts in the order given", func(t *testing.T) {
		r := runPlugin(t, "", "status", "--contexts", "plugin-2.9,bootstrap-2.6", "-o", "markdown", "--kubeconfig", kubeconfig)
		require.Equal(t, 0, r.Code, r.Stderr)
		t.Logf("\n%s", r.Stdout)
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		require.Len(t, lines, 4)
		assert.Equal(t, "| context | reachable | version | managed-by | components | sync | drift | upgrade-blockers | adoption |", lines[0])
		assert.True(t, strings.HasPrefix(lines[2], "| plugin-2.9 | yes | v2.9.4 | kubectl-fluxinstance |"), lines[2])
		assert.True(t, strings.HasPrefix(lines[3], "| bootstrap-2.6 | yes | v2.6.4 | flux bootstrap |"), lines[3])
		// The comment lists every blocker, one per line of the cell.
		assert.Contains(t, lines[3], "gitrepositories.source.toolkit.fluxcd.io stores objects at v1beta2, which Flux 2.8 removes: an apply of 2.8 or later migrates them first<br>upgrading to Flux v2.9.4: Kustomization flux-system/flux-system applies HelmRepository apps/podinfo as source.toolkit.fluxcd.io/v1beta2")
	})
	t.Run("an unknown context is a usage error listing the known ones", func(t *testing.T) {
		r := runPlugin(t, "", "status", "--contexts", "operator,prod", "--kubeconfig", kubeconfig)
		assert.Equal(t, 2, r.Code)
		assert.Contains(t, r.Stderr, `error: the kubeconfig has no context named "prod"; its contexts are: bootstrap-2.6, closed-port, empty, flux-install-2.8, forbidden, operator, plugin-2.9, silent`)
		assert.Empty(t, r.Stdout)
	})
}

func allContextsTable(t *testing.T, kubeconfig string) {
	start := time.Now()
	r := runPlugin(t, "", "status", "--all-contexts", "--kubeconfig", kubeconfig, "--request-timeout", requestTimeout.String())
	took := time.Since(start)
	t.Logf("status --all-contexts over 8 contexts in %s:\n%s%s", took.Round(time.Millisecond), r.Stdout, r.Stderr)
	assert.Equal(t, 1, r.Code, "clusters that could not be read make the exit code 1")
	// The silent cluster is bounded by its own deadline: the run is not held (10x margin, shared CI).
	assert.Less(t, took, 10*requestTimeout)

	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	require.Len(t, lines, 9)
	assert.Regexp(t, `^CONTEXT\s+REACHABLE\s+VERSION\s+MANAGED-BY\s+COMPONENTS\s+SYNC\s+DRIFT\s+UPGRADE-BLOCKERS\s+ADOPTION\s+ERROR$`, lines[0])
	var order []string
	for _, l := range lines[1:] {
		order = append(order, strings.Fields(l)[0])
	}
	assert.Equal(t, []string{"bootstrap-2.6", "closed-port", "empty", "flux-install-2.8", "forbidden", "operator", "plugin-2.9", "silent"}, order, "sorted by name")

	// The simulated kustomize-controller writes the revision and no Ready condition.
	assert.Equal(t, []string{"bootstrap-2.6", "yes", "v2.6.4", "flux bootstrap", "0/4", "Unknown/main@sha1:0123456", "-", "2 (see -o json)", "adoptable (flux bootstrap)", "-"}, row(t, r.Stdout, "bootstrap-2.6"))
	assert.Equal(t, []string{"empty", "yes", "-", "not installed", "0/0", "-", "-", "none", "no: no Flux installation made by `flux bootstrap`, `flux install` or Helm was found", "-"}, row(t, r.Stdout, "empty"))
	assert.Equal(t, []string{"plugin-2.9", "yes", "v2.9.4", "kubectl-fluxinstance", "0/6", "-", "1 missing, 1 changed", "none", `no: Flux in namespace "flux-system" is already managed by this plugin`, "-"}, row(t, r.Stdout, "plugin-2.9"))
	assert.Equal(t, []string{"operator", "yes", "v2.9.4", "flux-operator", "0/7", "-", "none", "none", `no: Flux in namespace "flux-system" is already managed by the Flux Operator`, "-"}, row(t, r.Stdout, "operator"))
	assert.Equal(t, []string{"flux-install-2.8", "yes", "v2.8.8", "flux install", "0/7", "-", "-", "none", "adoptable (flux install)", "-"}, row(t, r.Stdout, "flux-install-2.8"))
	assert.Equal(t, []string{"closed-port", "no", "-", "-", "-", "-", "-", "-", "-", "connection refused"}, row(t, r.Stdout, "closed-port"))
	assert.Equal(t, []string{"silent", "no", "-", "-", "-", "-", "-", "-", "-", "no answer within 5s"}, row(t, r.Stdout, "silent"))
	forbidden := row(t, r.Stdout, "forbidden")
	assert.Equal(t, []string{"forbidden", "yes"}, forbidden[:2])
	assert.Regexp(t, `^forbidden: User "nobody" cannot `, forbidden[len(forbidden)-1])
	assert.Contains(t, r.Stderr, "error: 3 of 8 clusters could not be read: closed-port (connection refused), forbidden (forbidden: User \"nobody\"")
	assert.Contains(t, r.Stderr, "silent (no answer within 5s)")
}

func allContextsJSON(t *testing.T, kubeconfig string) {
	r := runPlugin(t, "", "status", "--contexts", "silent,operator,closed-port,bootstrap-2.6", "-o", "json", "--kubeconfig", kubeconfig, "--request-timeout", "2s")
	assert.Equal(t, 1, r.Code, r.Stderr)
	var rows []plugin.ClusterStatus
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &rows), r.Stdout)
	require.Len(t, rows, 4)
	silent, operator, closed, bootstrapped := rows[0], rows[1], rows[2], rows[3]
	assert.Equal(t, "silent", silent.Context)
	assert.False(t, silent.Reachable)
	assert.Equal(t, `context "silent": no answer within 2s (raise --request-timeout for a slow cluster)`, silent.Error)
	assert.Nil(t, silent.Status)

	assert.Equal(t, "closed-port", closed.Context)
	assert.False(t, closed.Reachable)
	assert.Regexp(t, `^unable to reach the cluster at https://127\.0\.0\.1:\d+: connection refused$`, closed.Error)

	require.NotNil(t, operator.Status, operator.Error)
	assert.True(t, operator.Reachable)
	assert.Equal(t, "flux-operator", operator.Status.Installation.ManagedBy)
	require.NotNil(t, operator.Status.Operator)
	assert.True(t, operator.Status.Operator.ManagesInstance)
	require.NotNil(t, operator.Adoption)
	assert.False(t, operator.Adoption.Adoptable)
	assert.Contains(t, operator.Adoption.Reason, "already managed by the Flux Operator")

	require.NotNil(t, bootstrapped.Status, bootstrapped.Error)
	assert.Equal(t, &plugin.Adoption{Adoptable: true, Installer: "flux bootstrap"}, bootstrapped.Adoption)
	assert.Equal(t, []string{
		"gitrepositories.source.toolkit.fluxcd.io stores objects at v1beta2, which Flux 2.8 removes: an apply of 2.8 or later migrates them first",
		"upgrading to Flux v2.9.4: Kustomization flux-system/flux-system applies HelmRepository apps/podinfo as source.toolkit.fluxcd.io/v1beta2, which the target removes (removed in Flux 2.8)",
	}, bootstrapped.UpgradeBlockers)
	assert.Equal(t, bootstrapped.Status.UpgradeWarnings, bootstrapped.UpgradeBlockers[:1], "the single-cluster report is inside")
	require.Len(t, bootstrapped.Status.Sync, 2)
	assert.Equal(t, testenv.BootstrapRevision, bootstrapped.Status.Sync[1].Revision)
}
