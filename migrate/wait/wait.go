// Package wait waits until objects are ready by their kstatus (the same status rules as kubectl
// wait, kustomize-controller and the Flux Operator), reporting progress while it waits and naming
// every object that is not ready when it gives up.
//
// It is built from cli-utils' poller, status collector and aggregator like fluxcd/pkg/ssa's
// WaitForSetWithContext, rather than calling that: ssa reports nothing while it waits, its error
// is a string with each object's status but not the status message the user needs to act on, and
// it fails on the rate limiter's refusal at the deadline instead of reporting a timeout.
package wait

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/aggregator"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/collector"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/event"
	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Progress is called every few seconds while waiting: how many objects are ready, out of
// how many, and the not-ready ones as "Kind/namespace/name: Status: message".
type Progress func(ready, total int, notReady []string)

// Options tunes UntilReady; zero values are fine.
type Options struct {
	// PollInterval between status reads (default 1s).
	PollInterval time.Duration
	// ProgressInterval between progress callbacks (default 5s).
	ProgressInterval time.Duration
}

// NotReadyError is returned when objects did not become ready in time (or failed).
type NotReadyError struct {
	Timeout  time.Duration
	NotReady []string
	// Failed is true when a failed object ended the wait early.
	Failed bool
}

func (e *NotReadyError) Error() string {
	head := fmt.Sprintf("timed out after %s waiting for %d object(s) to become ready", e.Timeout, len(e.NotReady))
	if e.Failed {
		head = fmt.Sprintf("%d object(s) failed", len(e.NotReady))
	}
	return head + ": " + strings.Join(e.NotReady, "; ")
}

// UntilReady polls the objects' kstatus until every one is Current, the timeout expires (a
// *NotReadyError naming every object not ready with its status message), or only Current and
// Failed objects remain (Failed never recovers by itself, so waiting longer is pointless).
//
// It is cli-utils' status poller feeding its collector, stopped by the aggregated status, the way
// ssa's WaitForSetWithContext (and so kustomize-controller) waits; what is added is the progress
// callback and the error that names each object.
func UntilReady(ctx context.Context, c client.Client, objects []*unstructured.Unstructured, timeout time.Duration, progress Progress, opts ...Options) error {
	o := withDefaults(opts)
	set := object.UnstructuredSetToObjMetadataSet(objects)
	if len(set) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w := newWatch(set, cancel)
	poller := polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{})
	events := poller.Poll(ctx, set, polling.PollOptions{PollInterval: o.PollInterval})
	done := w.collector.ListenWithObserver(events, collector.ObserverFunc(w.observe))
	ticker := time.NewTicker(o.ProgressInterval)
	defer ticker.Stop()
	for {
		select {
		case res, ok := <-done:
			if !ok { // the poller stops when ctx ends, and so when observe cancels it
				return w.outcome(ctx, timeout, progress)
			}
			if !deadlineHit(ctx, res.Err, o.PollInterval) {
				return fmt.Errorf("reading status: %w", res.Err)
			}
			<-ctx.Done()
			for range done { // the poller stops after an error: let the collector finish
			}
			return w.outcome(ctx, timeout, progress)
		case <-ticker.C:
			if progress != nil {
				ready, total, notReady := w.summary(w.collector.LatestObservation().ResourceStatuses)
				progress(ready, total, notReady)
			}
		}
	}
}

func withDefaults(opts []Options) Options {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Second
	}
	return o
}

// deadlineHit tells whether a poller error is the deadline arriving mid-read rather than a
// failure: client-go's rate limiter refuses a request that would end after the deadline, before
// the context itself expires.
func deadlineHit(ctx context.Context, err error, pollInterval time.Duration) bool {
	deadline, _ := ctx.Deadline()
	return ctx.Err() != nil || strings.Contains(err.Error(), "would exceed context deadline") || time.Until(deadline) < pollInterval
}

// watch is one UntilReady: the collector of the latest status of each object, and the statuses
// that stopped the wait early (all Current, or only Current and Failed).
type watch struct {
	collector *collector.ResourceStatusCollector
	// unread are the collector's placeholders: an object whose status is still one of them was
	// never read.
	unread  map[object.ObjMetadata]*event.ResourceStatus
	cancel  context.CancelFunc
	stopped atomic.Bool
	// final is written by observe before the collector's done channel closes, read after.
	final []*event.ResourceStatus
}

func newWatch(set object.ObjMetadataSet, cancel context.CancelFunc) *watch {
	c := collector.NewResourceStatusCollector(set)
	return &watch{collector: c, unread: maps.Clone(c.ResourceStatuses), cancel: cancel}
}

// observe runs on the collector's goroutine after each event and stops the poller once waiting
// longer cannot change the outcome, keeping the statuses that decided it (the poller may still
// deliver a read that was in flight).
func (w *watch) observe(c *collector.ResourceStatusCollector, e event.Event) {
	if e.Type != event.ResourceUpdateEvent || w.stopped.Load() {
		return
	}
	// Read on the collector's own goroutine, like ssa: no lock needed, none taken.
	statuses := slices.Collect(maps.Values(c.ResourceStatuses))
	switch aggregator.AggregateStatus(statuses, status.CurrentStatus) {
	case status.CurrentStatus:
	case status.FailedStatus:
		if !onlyCurrentAndFailed(statuses) {
			return
		}
	default:
		return
	}
	w.final = statuses
	w.stopped.Store(true)
	w.cancel()
}

func onlyCurrentAndFailed(statuses []*event.ResourceStatus) bool {
	for _, rs := range statuses {
		if rs.Status != status.CurrentStatus && rs.Status != status.FailedStatus {
			return false
		}
	}
	return true
}

// outcome is the result once the collector is done: success or failure when observe stopped
// the wait, otherwise the timeout, the caller's cancellation, or a poller that stopped by itself.
func (w *watch) outcome(ctx context.Context, timeout time.Duration, progress Progress) error {
	if w.stopped.Load() {
		ready, total, notReady := w.summary(w.final)
		if ready < total {
			return &NotReadyError{Timeout: timeout, NotReady: notReady, Failed: true}
		}
		if progress != nil {
			progress(ready, total, nil)
		}
		return nil
	}
	_, _, notReady := w.summary(w.collector.LatestObservation().ResourceStatuses)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &NotReadyError{Timeout: timeout, NotReady: notReady}
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("status polling stopped; not ready: %s", strings.Join(notReady, "; "))
}

// summary counts the Current objects and describes the others, sorted.
func (w *watch) summary(statuses []*event.ResourceStatus) (ready, total int, notReady []string) {
	for _, rs := range statuses {
		switch {
		case rs.Status == status.CurrentStatus:
			ready++
		case rs == w.unread[rs.Identifier]:
			notReady = append(notReady, describeStatus(rs.Identifier, nil))
		default:
			notReady = append(notReady, describeStatus(rs.Identifier, rs))
		}
	}
	sort.Strings(notReady)
	return ready, len(statuses), notReady
}

func describeStatus(id object.ObjMetadata, rs *event.ResourceStatus) string {
	ref := kube.RefMeta(id)
	if rs == nil {
		return ref + ": status unknown (not read yet)"
	}
	msg := rs.Message
	if rs.Error != nil {
		msg = rs.Error.Error()
	}
	if msg == "" {
		return fmt.Sprintf("%s: %s", ref, rs.Status)
	}
	return fmt.Sprintf("%s: %s: %s", ref, rs.Status, msg)
}
