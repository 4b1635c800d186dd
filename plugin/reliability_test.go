package plugin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// One writer per instance: while another command holds the instance, apply, delete and handoff
// refuse at once naming the holder and change nothing; --wait-lock waits for it.
func TestOneWriterPerInstance(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	ctx := context.Background()
	file := writeFile(t, t.TempDir(), "flux.yaml", `apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
spec:
  distribution:
    version: "2.7.5"
    registry: ghcr.io/fluxcd
  components: [source-controller]
`)
	plugin := func(args ...string) result {
		return runPlugin(t, "", append(args, "--kubeconfig", env.Kubeconfig)...)
	}
	r := plugin("apply", "-f", file, "--wait=false", "--distribution", dist)
	require.Equal(t, 0, r.Code, r.Stderr)
	assertNoLease(t, c)

	// Another command, elsewhere, holds the instance.
	holder := func() *coordinationv1.Lease {
		now := metav1.NewMicroTime(time.Now())
		identity, seconds := "alice@laptop/4242/abc", int32(30)
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: lock.LeaseName, Annotations: map[string]string{
				"kubectl-fluxinstance/user": "alice", "kubectl-fluxinstance/host": "laptop",
				"kubectl-fluxinstance/command": "apply", "kubectl-fluxinstance/pid": "4242",
			}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &identity, LeaseDurationSeconds: &seconds, AcquireTime: &now, RenewTime: &now},
		}
	}
	lease := holder()
	require.NoError(t, c.Create(ctx, lease))

	for name, args := range map[string][]string{
		"apply":   {"apply", "-f", file, "--wait=false", "--distribution", dist},
		"delete":  {"delete"},
		"handoff": {"handoff"},
	} {
		t.Run(name+" refuses at once, naming the holder, and changes nothing", func(t *testing.T) {
			before := resourceVersions(t, c)
			start := time.Now()
			r := plugin(args...)
			assert.Equal(t, 1, r.Code, r.Stderr)
			assert.Less(t, time.Since(start), 20*time.Second)
			assert.Contains(t, r.Stderr, `error: the Flux instance in namespace "flux-system" is locked by alice on host laptop (kubectl fluxinstance apply, pid 4242) since `)
			assert.Contains(t, r.Stderr, "--wait-lock")
			assert.Equal(t, before, resourceVersions(t, c))
		})
	}

	t.Run("status names the holder", func(t *testing.T) {
		r := plugin("status")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Regexp(t, `Locked By:\s+alice on host laptop \(kubectl fluxinstance apply, pid 4242\) since \S+ \(claim expires \S+ unless renewed\)\n`, r.Stdout)
	})

	t.Run("a dry run needs no lock", func(t *testing.T) {
		r := plugin("apply", "-f", file, "--dry-run=server", "--distribution", dist)
		assert.Equal(t, 0, r.Code, r.Stderr)
	})

	t.Run("--wait-lock waits until the holder is done", func(t *testing.T) {
		go func() {
			time.Sleep(2 * time.Second)
			_ = c.Delete(context.Background(), lease)
		}()
		r := plugin("apply", "-f", file, "--wait=false", "--wait-lock=1m", "--distribution", dist)
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.Contains(t, r.Stderr, "waiting up to 1m0s for the lock held by alice on host laptop")
		assertNoLease(t, c)
		r = plugin("status")
		require.Equal(t, 0, r.Code, r.Stderr)
		assert.NotContains(t, r.Stdout, "Locked By")
	})
}

func assertNoLease(t *testing.T, c client.Client) {
	t.Helper()
	err := c.Get(context.Background(), client.ObjectKey{Namespace: "flux-system", Name: lock.LeaseName}, &coordinationv1.Lease{})
	assert.True(t, apierrors.IsNotFound(err), "a command releases the lock when it ends: %v", err)
}

// A FluxInstance whose record cannot fit in a ConfigMap is refused before anything is created,
// naming what is too large (the finding: CRDs, the Namespace and ClusterRoles were created,
// then "Request entity too large").
func TestRecordTooLargeChangesNothing(t *testing.T) {
	dist := testenv.DistributionDir(t)
	env := testenv.Start(t)
	c := env.Client(t)
	file := writeFile(t, t.TempDir(), "flux.yaml", `apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata:
  name: flux
  namespace: flux-system
  annotations:
    note: "`+strings.Repeat("x", 1200*1024)+`"
spec:
  distribution:
    version: "2.7.5"
    registry: ghcr.io/fluxcd
  components: [source-controller]
`)
	before := resourceVersions(t, c)
	r := runPlugin(t, "", "apply", "-f", file, "--wait=false", "--kubeconfig", env.Kubeconfig, "--distribution", dist)
	assert.Equal(t, 1, r.Code, r.Stderr)
	assert.Contains(t, r.Stderr, "error: ConfigMap/flux-system/kubectl-fluxinstance-inventory: the inventory record would be 1.")
	assert.Contains(t, r.Stderr, "over the 1.00 MiB a ConfigMap holds; its largest part is the FluxInstance (data.instance)")
	assert.Equal(t, before, resourceVersions(t, c), "nothing created, not even the namespace")
}
