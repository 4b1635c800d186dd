package operator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/operatorenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/pluginrun"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// handoffCase is a cluster ready for a hand-off: Flux applied directly by the plugin, the operator
// running, and a proxy in front of the API server to interrupt the plugin.
type handoffCase struct {
	env    *testenv.Env
	c      client.Client
	proxy  *faultproxy.Proxy
	viaKC  string // kubeconfig through the proxy
	ours   []operatorenv.InventoryEntry
	before map[string]facts
}

func newHandoffCase(t *testing.T, dist string) *handoffCase {
	t.Helper()
	env := testenv.Start(t)
	file := filepath.Join(t.TempDir(), "flux.yaml")
	require.NoError(t, os.WriteFile(file, []byte(instance(t, "2.7.x")), 0o600))
	r := runPlugin(t, "", "apply", "-f", file, "--distribution", dist, "--wait=false", "--kubeconfig="+env.Kubeconfig)
	require.Equal(t, 0, r.Code, r.Stderr)
	op := operatorenv.Start(t, env, operatorenv.Options{Namespace: "flux-system", Distribution: dist})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := op.WaitReport(ctx)
	require.NoError(t, err)
	hc := &handoffCase{env: env, c: env.Client(t)}
	hc.proxy, hc.viaKC = faultproxy.Start(t, env)
	hc.ours = pluginInventory(t, hc.c)
	hc.before = liveFacts(t, hc.c, hc.ours)
	return hc
}

func (hc *handoffCase) handoff(t *testing.T, kubeconfig, dist string) pluginrun.Result {
	t.Helper()
	return runPlugin(t, "", "handoff", "-n", "flux-system", "--distribution", dist, "--timeout=2m", "--kubeconfig="+kubeconfig)
}

// assertHandedOff checks the end state: the operator reconciled the instance with the plugin's
// inventory, every object kept its UID and generation, no field is the plugin's any more, and the
// plugin's record is gone. The only DELETE the plugin may send is the one of its record.
func (hc *handoffCase) assertHandedOff(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	fi := &unstructured.Unstructured{}
	fi.SetGroupVersionKind(operatorenv.FluxInstanceGVK)
	require.NoError(t, hc.c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "flux"}, fi))
	ready, _ := operatorenv.Condition(fi, "Ready")
	assert.Equal(t, "True", string(ready.Status), ready.Message)
	theirs, err := operatorenv.InventoryEntries(fi)
	require.NoError(t, err)
	assert.ElementsMatch(t, ids(hc.ours), ids(theirs))
	assert.Equal(t, hc.before, liveFacts(t, hc.c, hc.ours), "nothing recreated or rolled")
	objs, err := operatorenv.Inventory(ctx, hc.c, fi)
	require.NoError(t, err)
	for _, obj := range objs {
		for _, mf := range obj.GetManagedFields() {
			assert.False(t, mf.Manager == "kubectl-fluxinstance" && mf.Subresource == "", "%s/%s still has fields of the plugin", obj.GetKind(), obj.GetName())
		}
	}
	err = hc.c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: operatorenv.PluginInventoryName}, &corev1.ConfigMap{})
	assert.True(t, apierrors.IsNotFound(err), "the plugin's record is gone: %v", err)
	for _, d := range hc.proxy.Deleted() {
		assert.True(t, strings.Contains(d, "/configmaps/"+operatorenv.PluginInventoryName), "unexpected DELETE: %s", d)
	}
}

// TestHandoffKilledAtEveryStep interrupts handoff after its Nth API call, at points spread over a
// complete run (reads, the disabled FluxInstance, its status, the field moves, the enabling, the
// wait, the check, the removal of the record), and re-runs it without faults: it always converges
// to the same hand-off, recreating, restarting and deleting nothing. Each point gets a fresh API
// server and operator, so no run can lean on what an earlier one left.
func TestHandoffKilledAtEveryStep(t *testing.T) {
	operatorenv.Require(t)
	dist := testenv.DistributionDir(t)

	// A complete run through the proxy counts the calls.
	hc := newHandoffCase(t, dist)
	hc.proxy.Reset(-1)
	r := hc.handoff(t, hc.viaKC, dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	total := hc.proxy.Count()
	t.Logf("a complete handoff makes %d API calls", total)
	hc.assertHandedOff(t)

	// Numbered points up to 8/9 of the run; the very end is the DELETE of the plugin's record,
	// killed by method: the number of calls varies by a few with the operator's status polls.
	points := []int{1, 3}
	for i := 1; i <= 8; i++ {
		points = append(points, i*total/9)
	}
	points = append(points, -1)
	for _, n := range points {
		name := fmt.Sprintf("killed after call %d of about %d", n, total)
		if n < 0 {
			name = "killed on its last call (the DELETE of the plugin record)"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			hc := newHandoffCase(t, dist)
			if n < 0 {
				hc.proxy.KillAtFirst("DELETE")
			} else {
				hc.proxy.Reset(n)
			}
			killed := hc.handoff(t, hc.viaKC, dist)
			if n < 0 || hc.proxy.Count() > n {
				assert.NotEqual(t, 0, killed.Code, "the interrupted run fails:\n%s", killed.Stderr)
			} else {
				t.Logf("this run made %d calls and finished before the kill", hc.proxy.Count())
			}
			hc.proxy.Reset(-1)
			faultproxy.ClearKilledLock(t, hc.c, "flux-system")
			r := hc.handoff(t, hc.viaKC, dist)
			require.Equal(t, 0, r.Code, "the re-run after a kill at call %d:\n%s\nthe killed run:\n%s", n, r.Stderr, killed.Stderr)
			hc.assertHandedOff(t)
		})
	}
}
