package lock_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestLock runs on one API server, one namespace per case.
func TestLock(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client(t)
	instance := func(t *testing.T, ns string) kube.Instance {
		env.CreateNamespace(t, ns)
		return kube.Instance{Client: c, Name: "flux", Namespace: ns}
	}
	ctx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("a second command fails at once, naming the holder", func(t *testing.T) {
		inst := instance(t, "held")
		_, first, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", User: "alice"})
		require.NoError(t, err)
		start := time.Now()
		_, _, err = lock.Acquire(ctx(t), inst, lock.Options{Command: "delete", User: "bob"})
		var held *lock.HeldError
		require.ErrorAs(t, err, &held)
		assert.Less(t, time.Since(start), 5*time.Second, "fail fast")
		host, _ := os.Hostname()
		assert.Equal(t, "alice", held.Holder.User)
		assert.Equal(t, "apply", held.Holder.Command)
		assert.Equal(t, host, held.Holder.Host)
		assert.Equal(t, os.Getpid(), held.Holder.PID)
		assert.WithinDuration(t, time.Now(), held.Holder.Since, 10*time.Second)
		assert.Contains(t, err.Error(), `the Flux instance in namespace "held" is locked by alice on host `+host+" (kubectl fluxinstance apply, pid ")
		assert.Contains(t, err.Error(), "--wait-lock")

		require.NoError(t, first.Release())
		_, second, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "delete", User: "bob"})
		require.NoError(t, err, "a released lock is free at once")
		require.NoError(t, second.Release())
		assertNoLease(t, c, "held")
	})

	t.Run("a waiting command gets the lock when the holder releases it", func(t *testing.T) {
		inst := instance(t, "waiting")
		_, first, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", User: "alice"})
		require.NoError(t, err)
		go func() {
			time.Sleep(1500 * time.Millisecond)
			_ = first.Release()
		}()
		var progress []string
		start := time.Now()
		_, second, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", User: "bob", Wait: 30 * time.Second,
			Progress: func(s string) { progress = append(progress, s) }})
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(start), time.Second)
		require.Len(t, progress, 1, "told once")
		assert.Contains(t, progress[0], "waiting up to 30s for the lock held by alice")
		require.NoError(t, second.Release())
	})

	t.Run("a wait that runs out names the holder and how long it waited", func(t *testing.T) {
		inst := instance(t, "timeout")
		_, first, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "handoff", User: "alice"})
		require.NoError(t, err)
		defer first.Release()
		_, _, err = lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", User: "bob", Wait: 2 * time.Second})
		var held *lock.HeldError
		require.ErrorAs(t, err, &held)
		assert.GreaterOrEqual(t, held.Waited, 2*time.Second)
		assert.Contains(t, err.Error(), "waited 2s")
	})

	t.Run("the claim of a holder that died expires", func(t *testing.T) {
		inst := instance(t, "expired")
		// What a killed command leaves: a claim renewed 3 s ago, lasting 2 s.
		renewed := metav1.NewMicroTime(time.Now().Add(-3 * time.Second))
		identity, seconds := "killed@elsewhere/1/x", int32(2)
		require.NoError(t, c.Create(ctx(t), &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: "expired", Name: lock.LeaseName},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &identity, LeaseDurationSeconds: &seconds, AcquireTime: &renewed, RenewTime: &renewed},
		}))
		_, l, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", User: "bob"})
		require.NoError(t, err, "an expired claim is taken over without waiting")
		lease := getLease(t, c, "expired")
		assert.Equal(t, "bob", lease.Annotations["kubectl-fluxinstance/user"])
		assert.Equal(t, int32(1), *lease.Spec.LeaseTransitions)
		require.NoError(t, l.Release())
	})

	t.Run("a claim seen unrenewed for its duration is taken over whatever its clock says", func(t *testing.T) {
		inst := instance(t, "skewed")
		// A holder whose clock runs an hour ahead, then died: its renewTime is in the future.
		future := metav1.NewMicroTime(time.Now().Add(time.Hour))
		identity, seconds := "skewed@elsewhere/1/x", int32(2)
		require.NoError(t, c.Create(ctx(t), &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: "skewed", Name: lock.LeaseName},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &identity, LeaseDurationSeconds: &seconds, AcquireTime: &future, RenewTime: &future},
		}))
		_, _, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", Duration: 2 * time.Second})
		require.ErrorAs(t, err, new(*lock.HeldError), "without waiting, its word is taken")
		_, l, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", Duration: 2 * time.Second, Wait: 20 * time.Second})
		require.NoError(t, err, "waiting, a claim seen unchanged for its duration is dead")
		require.NoError(t, l.Release())
	})

	t.Run("a live holder renews its claim beyond the duration", func(t *testing.T) {
		inst := instance(t, "renewed")
		workCtx, l, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", Duration: 2 * time.Second})
		require.NoError(t, err)
		time.Sleep(4 * time.Second)
		require.NoError(t, workCtx.Err(), "still held")
		_, _, err = lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", Duration: 2 * time.Second})
		require.ErrorAs(t, err, new(*lock.HeldError))
		require.NoError(t, l.Release())
	})

	t.Run("a holder whose claim is taken stops its work", func(t *testing.T) {
		inst := instance(t, "lost")
		workCtx, l, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", Duration: 3 * time.Second})
		require.NoError(t, err)
		// Someone removes the Lease by hand (or a command that bypassed the lock replaced it).
		require.NoError(t, c.Delete(ctx(t), getLease(t, c, "lost")))
		select {
		case <-workCtx.Done():
			assert.True(t, errors.Is(context.Cause(workCtx), lock.ErrLost), "cause: %v", context.Cause(workCtx))
		case <-time.After(10 * time.Second):
			t.Fatal("the work's context was not cancelled after the claim was lost")
		}
		require.NoError(t, l.Release(), "releasing a lost claim deletes nothing of the new holder's")
	})

	t.Run("of two commands at once exactly one gets the lock", func(t *testing.T) {
		inst := instance(t, "race")
		const n = 6
		errs := make(chan error, n)
		locks := make(chan *lock.Lock, n)
		for range n {
			go func() {
				_, l, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply"})
				errs <- err
				locks <- l
			}()
		}
		won := 0
		for range n {
			err := <-errs
			if err == nil {
				won++
			} else {
				require.ErrorAs(t, err, new(*lock.HeldError))
			}
		}
		assert.Equal(t, 1, won)
		for range n {
			require.NoError(t, (<-locks).Release())
		}
	})

	t.Run("interrupted while its claim is written, a command ends the claim", func(t *testing.T) {
		inst := instance(t, "interrupted")
		// Ctrl-C arrives while the Lease's Create is in flight: the request has been sent, so
		// the write lands whatever the client does next; a client that gives up on the call
		// sees only the cancellation.
		cmdCtx, interrupt := context.WithCancel(ctx(t))
		ww, err := client.NewWithWatch(env.Config, client.Options{})
		require.NoError(t, err)
		inst.Client = interceptor.NewClient(ww, interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				err := c.Create(context.WithoutCancel(ctx), obj, opts...)
				interrupt()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			},
		})
		_, l, err := lock.Acquire(cmdCtx, inst, lock.Options{Command: "apply", User: "alice"})
		require.ErrorIs(t, err, context.Canceled)
		assert.Nil(t, l)
		assertNoLease(t, c, "interrupted")
	})

	t.Run("a renewal that landed unseen does not keep the claim after release", func(t *testing.T) {
		inst := instance(t, "renewed-unseen")
		_, l, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", User: "alice"})
		require.NoError(t, err)
		// A renewal cut off by Ctrl-C that reached the API server: same holder, new version.
		lease := getLease(t, c, "renewed-unseen")
		now := metav1.NewMicroTime(time.Now())
		lease.Spec.RenewTime = &now
		require.NoError(t, c.Update(context.Background(), lease))
		require.NoError(t, l.Release())
		assertNoLease(t, c, "renewed-unseen")
	})

	t.Run("a claim taken over is not deleted by the old holder's release", func(t *testing.T) {
		inst := instance(t, "taken-over")
		_, l, err := lock.Acquire(ctx(t), inst, lock.Options{Command: "apply", User: "alice"})
		require.NoError(t, err)
		lease := getLease(t, c, "taken-over")
		other := "bob@elsewhere/1/abcdefgh"
		lease.Spec.HolderIdentity = &other
		require.NoError(t, c.Update(context.Background(), lease))
		require.NoError(t, l.Release())
		assert.Equal(t, other, *getLease(t, c, "taken-over").Spec.HolderIdentity, "bob's claim stays")
	})

	t.Run("no namespace, no instance", func(t *testing.T) {
		_, _, err := lock.Acquire(ctx(t), kube.Instance{Client: c, Name: "flux", Namespace: "absent"}, lock.Options{Command: "delete"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), `namespace "absent" not found: there is no Flux instance there to change`)
	})
}

func getLease(t *testing.T, c client.Client, ns string) *coordinationv1.Lease {
	t.Helper()
	lease := &coordinationv1.Lease{}
	require.NoError(t, c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: lock.LeaseName}, lease))
	return lease
}

func assertNoLease(t *testing.T, c client.Client, ns string) {
	t.Helper()
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: lock.LeaseName}, &coordinationv1.Lease{})
	assert.True(t, apierrors.IsNotFound(err), "the Lease is deleted on release: %v", err)
}
