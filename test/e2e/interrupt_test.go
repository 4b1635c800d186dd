package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/faultproxy"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// Ctrl-C (or SIGTERM) in the middle of an apply: the plugin stops promptly, says what to run next,
// releases the instance, and leaves a record that lists every object that exists; running the
// command again finishes the apply.
func TestInterruptedApplyStopsAndResumes(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	plugin := newPlugin(t)
	bin := filepath.Join(plugin.dir, "kubectl-fluxinstance")
	file := filepath.Join(t.TempDir(), "flux.yaml")
	writeInstance(t, file)

	built, err := exec.Command(bin, "build", "-f", file, "--distribution", dist).Output()
	require.NoError(t, err)
	rendered, err := testenv.DecodeYAML(built)
	require.NoError(t, err)

	// The signal is sent when the apply makes its Nth API call, through a proxy: at a known point
	// of its work rather than at a time that a loaded machine makes meaningless. The call then
	// waits a little, so that the cancellation finds requests in flight.
	var calls atomic.Int64
	var target atomic.Int64
	var signal atomic.Value // func()
	proxy := faultproxy.Serve(t, env, func(*http.Request) faultproxy.Fate {
		if calls.Add(1) == target.Load() {
			signal.Load().(func())()
			time.Sleep(200 * time.Millisecond)
		}
		return faultproxy.Pass
	})
	kubeconfig := faultproxy.Kubeconfig(t, proxy)

	for _, tc := range []struct {
		sig  syscall.Signal
		call int64
	}{{syscall.SIGINT, 4}, {syscall.SIGTERM, 25}, {syscall.SIGINT, 45}, {syscall.SIGINT, 70}} {
		t.Run(fmt.Sprintf("%s at call %d", tc.sig, tc.call), func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, "apply", "-f", file, "--distribution", dist, "--kubeconfig", kubeconfig, "--wait=false")
			cmd.Stderr = &stderr
			signalled := make(chan time.Time, 1)
			calls.Store(0)
			target.Store(tc.call)
			signal.Store(func() {
				signalled <- time.Now()
				_ = cmd.Process.Signal(tc.sig)
			})
			require.NoError(t, cmd.Start())
			err := cmd.Wait()
			var stopped time.Duration
			select {
			case at := <-signalled:
				stopped = time.Since(at)
			default:
				t.Fatalf("the apply made only %d API calls: signal it earlier (%s)", calls.Load(), stderr.String())
			}
			t.Logf("stopped %s after the signal, at call %d of the apply", stopped.Round(time.Millisecond), tc.call)
			assert.Less(t, stopped, 10*time.Second, "the README promises 2 s; generous for a shared machine")
			require.Error(t, err, "interrupted")
			assert.Equal(t, 1, exitCode(err), stderr.String())
			assert.Contains(t, stderr.String(), "error: interrupted: run the command again to finish")

			assertLockReleased(t, c)
			assertRecordListsWhatExists(t, c, rendered)

			out, err := exec.Command(bin, "apply", "-f", file, "--distribution", dist, "--kubeconfig", env.Kubeconfig, "--wait=false").CombinedOutput()
			require.NoError(t, err, "%s", out)
			state, listed := readRecord(t, c)
			assert.Equal(t, "Applied", state)
			for _, o := range rendered {
				assert.True(t, listed[id(o)], "%s recorded", id(o))
				assert.True(t, existsLive(t, c, o), "%s exists", id(o))
			}
			// The next case interrupts an apply that creates the controllers again (the CRDs
			// stay: deleting them would leave them terminating under the next apply).
			out, err = exec.Command(bin, "delete", "--kubeconfig", env.Kubeconfig).CombinedOutput()
			require.NoError(t, err, "%s", out)
		})
	}
}

func writeInstance(t *testing.T, file string) {
	t.Helper()
	require.NoError(t, os.WriteFile(file, []byte(`apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "2.7.5"
    registry: ghcr.io/fluxcd
  components: [source-controller, kustomize-controller, helm-controller, notification-controller, image-reflector-controller, image-automation-controller]
`), 0o600))
}

func assertLockReleased(t *testing.T, c client.Client) {
	t.Helper()
	err := c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: "kubectl-fluxinstance-lock"}, &coordinationv1.Lease{})
	assert.True(t, apierrors.IsNotFound(err), "an interrupted command releases the instance: %v", err)
}

// readRecord returns the record's state and the ids it lists ("", nil when there is none).
func readRecord(t *testing.T, c client.Client) (string, map[string]bool) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	err := c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: "kubectl-fluxinstance-inventory"}, cm)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	require.NoError(t, err)
	var body struct {
		Entries []struct {
			ID string `json:"id"`
		} `json:"entries"`
	}
	require.NoError(t, json.Unmarshal([]byte(cm.Data["inventory"]), &body))
	listed := map[string]bool{}
	for _, e := range body.Entries {
		listed[e.ID] = true
	}
	return cm.Data["state"], listed
}

// assertRecordListsWhatExists: every rendered object that exists is in the record (the instance
// Namespace aside, which may come first alone).
func assertRecordListsWhatExists(t *testing.T, c client.Client, rendered []*unstructured.Unstructured) {
	t.Helper()
	state, listed := readRecord(t, c)
	for _, o := range rendered {
		if o.GetKind() == "Namespace" || !existsLive(t, c, o) {
			continue
		}
		assert.True(t, listed[id(o)], "%s exists but the record (state %q) does not list it", id(o), state)
	}
}

// id is the record's id of an object: <namespace>_<name>_<group>_<kind>.
func id(o *unstructured.Unstructured) string {
	return o.GetNamespace() + "_" + o.GetName() + "_" + o.GroupVersionKind().Group + "_" + o.GetKind()
}

func existsLive(t *testing.T, c client.Client, o *unstructured.Unstructured) bool {
	t.Helper()
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(o.GroupVersionKind())
	err := c.Get(context.Background(), client.ObjectKeyFromObject(o), live)
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	return live.GetDeletionTimestamp() == nil
}
