// Package lock keeps one writer per instance: `apply`, `delete`, `migrate` and `handoff` hold a
// coordination.k8s.io Lease in the instance namespace while they change anything, renew it while
// they run, and release it when they end. A second command fails fast naming the holder (user,
// host, command, since when), or waits for it (Options.Wait). A holder that dies leaves a claim
// that expires Duration after its last renewal; the next command then takes the Lease over and
// finishes the interrupted work from the Pending record (inventory).
//
// Hand-written on purpose rather than client-go's leaderelection: that package elects among
// long-running replicas, so a candidate must watch a claim stay unrenewed for a full lease
// duration before taking it (every command would start by waiting), and its record has no place
// for what a person needs to see in "locked by". The Lease object, its fields and the
// compare-and-swap on its resourceVersion are the same.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
)

const (
	// LeaseName is the Lease in the instance namespace. One per namespace, like the record it
	// guards (inventory.ConfigMapName).
	LeaseName = "kubectl-fluxinstance-lock"
	// DefaultDuration is how long a claim lasts after its last renewal: the longest a killed
	// command blocks the next one.
	DefaultDuration = 30 * time.Second

	// What a person needs to know about the holder, beside the Lease's own times.
	annotationUser    = ownership.PluginName + "/user"
	annotationHost    = ownership.PluginName + "/host"
	annotationCommand = ownership.PluginName + "/command"
	annotationPID     = ownership.PluginName + "/pid"

	// pollInterval is how often a waiting command looks at the Lease again.
	pollInterval = time.Second
	// releaseTimeout bounds the release, which runs on its own context: the command's may be
	// cancelled (Ctrl-C) by then, and the claim should still end at once rather than expire.
	releaseTimeout = 5 * time.Second
)

// ErrLost is the cause of the context a Lock hands out once it could not renew its claim before
// the claim expired: another command may hold the instance now, so this one must stop writing.
var ErrLost = errors.New("lost the lock on the instance: it could not be renewed in time (is the API server reachable?); re-run the command")

// Options describes the command taking the lock.
type Options struct {
	// Command is what the holder runs ("apply", "delete", ...), shown to the next command.
	Command string
	// User is who runs it (kube.WhoAmI when empty).
	User string
	// Wait is how long to wait for another holder to release or lose its claim; 0 fails at once.
	Wait time.Duration
	// Duration of a claim (default DefaultDuration).
	Duration time.Duration
	// Progress, if set, is told once when the command starts waiting.
	Progress func(string)
}

// Holder is who holds an instance.
type Holder struct {
	User      string        `json:"user"`
	Host      string        `json:"host"`
	Command   string        `json:"command"`
	PID       int           `json:"pid"`
	Since     time.Time     `json:"since"`
	RenewedAt time.Time     `json:"renewedAt"`
	Duration  time.Duration `json:"-"`
}

// Expires is when the claim ends unless renewed.
func (h Holder) Expires() time.Time { return h.RenewedAt.Add(h.Duration) }

func (h Holder) String() string {
	who := h.User
	if who == "" {
		who = "an unknown user"
	}
	return fmt.Sprintf("%s on host %s (kubectl fluxinstance %s, pid %d) since %s", who, h.Host, h.Command, h.PID, h.Since.UTC().Format(time.RFC3339))
}

// HeldError is returned when another command holds the instance.
type HeldError struct {
	Namespace string
	Holder    Holder
	// Waited is how long this command waited (0: it did not).
	Waited time.Duration

	version string // the Lease's resourceVersion when read
}

func (e *HeldError) Error() string {
	ref := fmt.Sprintf("Lease %s/%s", e.Namespace, LeaseName)
	msg := fmt.Sprintf("the Flux instance in namespace %q is locked by %s", e.Namespace, e.Holder)
	if e.Waited > 0 {
		msg += fmt.Sprintf("; waited %s", e.Waited.Round(time.Second))
	}
	return fmt.Sprintf("%s (%s); its claim expires at %s unless renewed: wait for that command, or re-run with --wait-lock=%s to wait for it",
		msg, ref, e.Holder.Expires().UTC().Format(time.RFC3339), waitHint(e.Holder.Duration))
}

func waitHint(d time.Duration) string {
	if d < time.Minute {
		return "1m"
	}
	return (2 * d).String()
}

// NamespaceNotFoundError: there is no namespace to hold the Lease, so no instance to change.
type NamespaceNotFoundError struct {
	Namespace string
	Err       error
}

func (e *NamespaceNotFoundError) Error() string {
	return fmt.Sprintf("namespace %q not found: there is no Flux instance there to change (pass -n for another namespace): %v", e.Namespace, e.Err)
}

func (e *NamespaceNotFoundError) Unwrap() error { return e.Err }

// Lock is a claim this process holds; Release ends it.
type Lock struct {
	c        client.Client
	duration time.Duration
	cancel   context.CancelCauseFunc
	stop     chan struct{}
	done     chan struct{}
	// lease is the last version written; only the renewal goroutine touches it until done.
	lease *coordinationv1.Lease
}

// Acquire claims the instance's namespace (which must exist) for the command. It returns a
// context derived from ctx that is cancelled with cause ErrLost if the claim cannot be renewed
// before it expires; do the work under it, then Release.
func Acquire(ctx context.Context, inst kube.Instance, opts Options) (context.Context, *Lock, error) {
	if opts.Duration <= 0 {
		opts.Duration = DefaultDuration
	}
	if opts.User == "" {
		opts.User = kube.WhoAmI(ctx, inst.Client)
	}
	host, _ := os.Hostname()
	me := claim{identity: holderIdentity(opts.User, host), user: opts.User, host: host, command: opts.Command, duration: opts.Duration}
	start := time.Now()
	// A claim seen unchanged (same resourceVersion) for a full duration of this process's own
	// clock is expired whatever the holder's clock says: clock skew cannot keep a dead claim
	// alive for a command that waits.
	var seenVersion string
	var seenAt time.Time
	told := false
	for {
		stale := seenVersion != "" && time.Since(seenAt) >= opts.Duration
		lease, err := me.try(ctx, inst, stale)
		if err == nil {
			lockCtx, l := hold(ctx, inst.Client, lease, opts.Duration)
			if ctx.Err() != nil {
				// Interrupted while the claim was being written: it was written, so end it now
				// rather than leave it to block the re-run until it expires.
				_ = l.Release()
				return nil, nil, ctx.Err()
			}
			return lockCtx, l, nil
		}
		var held *HeldError
		if !errors.As(err, &held) {
			return nil, nil, err
		}
		if held.version != seenVersion {
			seenVersion, seenAt = held.version, time.Now()
		}
		if time.Since(start) >= opts.Wait {
			held.Waited = time.Since(start).Truncate(time.Second)
			return nil, nil, held
		}
		if !told && opts.Progress != nil {
			opts.Progress(fmt.Sprintf("waiting up to %s for the lock held by %s", opts.Wait, held.Holder))
		}
		told = true
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// Current is who holds the instance now: nil when nobody does (no Lease, or its claim expired).
func Current(ctx context.Context, inst kube.Instance) (*Holder, error) {
	lease := &coordinationv1.Lease{}
	err := inst.Client.Get(ctx, client.ObjectKey{Namespace: inst.Namespace, Name: LeaseName}, lease)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("%s: reading the lock: %w", ref(inst.Namespace), err)
	}
	h := holderOf(lease)
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" || !time.Now().Before(h.Expires()) {
		return nil, nil
	}
	return &h, nil
}

// claim is what this process writes into the Lease.
type claim struct {
	identity, user, host, command string
	duration                      time.Duration
}

// holderIdentity tells processes apart, even two with one pid on two hosts.
func holderIdentity(user, host string) string {
	return fmt.Sprintf("%s@%s/%d/%s", user, host, os.Getpid(), rand.String(8))
}

// try creates the Lease, or takes it over when its claim expired (stale: this process saw it
// unchanged for a full duration), with a compare-and-swap on the resourceVersion it read: of two
// commands trying at once, one wins and the other sees the winner's claim.
//
// The write itself is not cancelled with ctx: a Create cut off by Ctrl-C may still reach the
// API server after this process gave up on it, leaving a claim nobody knows it holds (the re-run
// would wait for it to expire). Finishing the short write tells this process that it holds the
// claim, and Acquire then releases it at once.
func (me claim) try(ctx context.Context, inst kube.Instance, stale bool) (*coordinationv1.Lease, error) {
	writeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: inst.Namespace, Name: LeaseName}
	err := inst.Client.Get(ctx, key, lease)
	switch {
	case apierrors.IsNotFound(err):
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: inst.Namespace, Name: LeaseName}}
		me.write(lease, now)
		if err := inst.Client.Create(writeCtx, lease, client.FieldOwner(ownership.PluginFieldManager)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return me.try(ctx, inst, false) // someone was faster: report them
			}
			if apierrors.IsNotFound(err) {
				return nil, &NamespaceNotFoundError{Namespace: inst.Namespace, Err: err}
			}
			return nil, fmt.Errorf("%s: taking the lock: %w", ref(inst.Namespace), err)
		}
		return lease, nil
	case err != nil:
		return nil, fmt.Errorf("%s: reading the lock: %w", ref(inst.Namespace), err)
	}
	h := holderOf(lease)
	free := lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == ""
	if !free && !stale && time.Now().Before(h.Expires()) {
		return nil, &HeldError{Namespace: inst.Namespace, Holder: h, version: lease.ResourceVersion}
	}
	me.write(lease, now)
	if err := inst.Client.Update(writeCtx, lease, client.FieldOwner(ownership.PluginFieldManager)); err != nil {
		if apierrors.IsConflict(err) {
			return me.try(ctx, inst, false)
		}
		return nil, fmt.Errorf("%s: taking the lock: %w", ref(inst.Namespace), err)
	}
	return lease, nil
}

// write sets the claim into lease: acquired (and renewed) now.
func (me claim) write(lease *coordinationv1.Lease, now metav1.MicroTime) {
	seconds := int32(me.duration / time.Second)
	lease.Spec.HolderIdentity = &me.identity
	lease.Spec.LeaseDurationSeconds = &seconds
	lease.Spec.RenewTime = &now
	lease.Spec.AcquireTime = &now
	transitions := int32(0) // a new Lease; each takeover counts one more
	if lease.ResourceVersion != "" {
		transitions = 1
		if lease.Spec.LeaseTransitions != nil {
			transitions = *lease.Spec.LeaseTransitions + 1
		}
	}
	lease.Spec.LeaseTransitions = &transitions
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[annotationUser] = me.user
	lease.Annotations[annotationHost] = me.host
	lease.Annotations[annotationCommand] = me.command
	lease.Annotations[annotationPID] = strconv.Itoa(os.Getpid())
}

func holderOf(lease *coordinationv1.Lease) Holder {
	a := lease.Annotations
	pid, _ := strconv.Atoi(a[annotationPID])
	h := Holder{User: a[annotationUser], Host: a[annotationHost], Command: a[annotationCommand], PID: pid, Duration: DefaultDuration}
	if t := lease.Spec.AcquireTime; t != nil {
		h.Since = t.Time
	}
	if t := lease.Spec.RenewTime; t != nil {
		h.RenewedAt = t.Time
	}
	if d := lease.Spec.LeaseDurationSeconds; d != nil {
		h.Duration = time.Duration(*d) * time.Second
	}
	return h
}

func ref(ns string) string { return "Lease/" + ns + "/" + LeaseName }

// hold starts renewing the claim every third of its duration.
func hold(ctx context.Context, c client.Client, lease *coordinationv1.Lease, duration time.Duration) (context.Context, *Lock) {
	ctx, cancel := context.WithCancelCause(ctx)
	l := &Lock{c: c, lease: lease, duration: duration, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go l.renew(ctx)
	return ctx, l
}

// renew keeps the claim alive. A failed renewal is retried at the next tick; once the claim has
// expired unrenewed, the work's context is cancelled with ErrLost (another command may hold the
// instance by then).
func (l *Lock) renew(ctx context.Context) {
	defer close(l.done)
	ticker := time.NewTicker(l.duration / 3)
	defer ticker.Stop()
	renewed := time.Now()
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		next := l.lease.DeepCopy()
		now := metav1.NewMicroTime(time.Now())
		next.Spec.RenewTime = &now
		rctx, cancel := context.WithTimeout(ctx, l.duration/3)
		err := l.c.Update(rctx, next, client.FieldOwner(ownership.PluginFieldManager))
		cancel()
		switch {
		case err == nil:
			l.lease, renewed = next, now.Time
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			// Someone took the claim over or removed it: stop writing at once.
			l.cancel(ErrLost)
			return
		case time.Since(renewed) >= l.duration:
			l.cancel(ErrLost)
			return
		}
	}
}

// Release ends the claim: it stops renewing and deletes the Lease if this process still holds
// it (a precondition on its resourceVersion). It runs on its own short context, so that a
// cancelled command still frees the instance at once; if that fails too, the claim expires.
func (l *Lock) Release() error {
	if l == nil {
		return nil
	}
	close(l.stop)
	<-l.done
	l.cancel(context.Canceled)
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	err := l.c.Delete(ctx, l.lease, client.Preconditions{UID: &l.lease.UID, ResourceVersion: &l.lease.ResourceVersion})
	if apierrors.IsConflict(err) {
		// A renewal cut off by a cancelled command may have landed after all, moving the
		// resourceVersion: the claim is still this process's if the Lease names it.
		err = l.deleteIfMine(ctx)
	}
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("%s: releasing the lock (it expires within %s): %w", ref(l.lease.Namespace), l.duration, err)
	}
	return nil
}

// deleteIfMine deletes the Lease when its holder is still this claim, with a compare-and-swap on
// the version read; a Lease that another command took over is left alone.
func (l *Lock) deleteIfMine(ctx context.Context) error {
	live := &coordinationv1.Lease{}
	if err := l.c.Get(ctx, client.ObjectKeyFromObject(l.lease), live); err != nil {
		return err
	}
	mine := l.lease.Spec.HolderIdentity
	if live.UID != l.lease.UID || live.Spec.HolderIdentity == nil || mine == nil || *live.Spec.HolderIdentity != *mine {
		return nil
	}
	return l.c.Delete(ctx, live, client.Preconditions{UID: &live.UID, ResourceVersion: &live.ResourceVersion})
}
