// Package wait waits until objects are ready by their kstatus (the same status rules as kubectl
// wait, kustomize-controller and the Flux Operator), reporting progress while it waits and naming
// every object that is not ready when it gives up.
package wait

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
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
func UntilReady(ctx context.Context, c client.Client, objects []*unstructured.Unstructured, timeout time.Duration, progress Progress, opts ...Options) error {
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
	set := object.UnstructuredSetToObjMetadataSet(objects)
	if len(set) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	poller := polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{})
	events := poller.Poll(ctx, set, polling.PollOptions{PollInterval: o.PollInterval})

	statuses := map[object.ObjMetadata]*event.ResourceStatus{}
	ticker := time.NewTicker(o.ProgressInterval)
	defer ticker.Stop()
	report := func() (ready int, notReady []string, failed bool, allSettled bool) {
		allSettled = true
		for _, id := range set {
			rs := statuses[id]
			switch {
			case rs != nil && rs.Status == status.CurrentStatus:
				ready++
				continue
			case rs != nil && rs.Status == status.FailedStatus:
				failed = true
			default:
				allSettled = false
			}
			notReady = append(notReady, describeStatus(id, rs))
		}
		sort.Strings(notReady)
		return ready, notReady, failed, allSettled
	}
	for {
		select {
		case e, ok := <-events:
			if !ok {
				// The poller stops when ctx ends.
				_, notReady, _, _ := report()
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return &NotReadyError{Timeout: timeout, NotReady: notReady}
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("status polling stopped; not ready: %s", strings.Join(notReady, "; "))
			}
			switch e.Type {
			case event.ErrorEvent:
				// The deadline hit mid-read: client-go's rate limiter refuses a request that would
				// end after the deadline, before the context itself expires.
				deadline, _ := ctx.Deadline()
				if ctx.Err() != nil || strings.Contains(e.Error.Error(), "would exceed context deadline") || time.Until(deadline) < o.PollInterval {
					<-ctx.Done()
					_, notReady, _, _ := report()
					if errors.Is(ctx.Err(), context.DeadlineExceeded) {
						return &NotReadyError{Timeout: timeout, NotReady: notReady}
					}
					return ctx.Err()
				}
				return fmt.Errorf("reading status: %w", e.Error)
			case event.ResourceUpdateEvent:
				statuses[e.Resource.Identifier] = e.Resource
			}
			ready, notReady, failed, settled := report()
			if ready == len(set) {
				if progress != nil {
					progress(ready, len(set), nil)
				}
				return nil
			}
			if settled && failed {
				return &NotReadyError{Timeout: timeout, NotReady: notReady, Failed: true}
			}
		case <-ticker.C:
			if progress != nil {
				ready, notReady, _, _ := report()
				progress(ready, len(set), notReady)
			}
		}
	}
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
