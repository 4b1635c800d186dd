// Package fleet runs one function per kubeconfig context, many at once: the fleet view of a
// command. It knows nothing of Flux: `status --contexts` passes a function that gathers one
// cluster's report, and diff, apply or migrate --dry-run can pass theirs.
//
// What it guarantees, because a fleet always has a cluster that is down, slow or locked away:
//   - at most MaxParallel functions run at a time (each one holds its own connections and, for
//     status, renders Flux in memory: unbounded, a hundred contexts would open a hundred);
//   - each context has its own deadline (Timeout), and its result is recorded when the deadline
//     passes even if the function has not returned yet: one cluster that accepts a connection and
//     never answers cannot hold the others or the table;
//   - results come back in the order the contexts were given, whatever order they finished in;
//   - cancelling the caller's context (Ctrl-C) stops every function, and the contexts not started
//     yet are reported as not run, so the caller can still print what it has.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxParallel is how many contexts are worked on at once unless told otherwise. Eight keeps
// a laptop's file descriptors, memory (one client and, for status, one in-memory rendering of Flux
// each) and the two to eight cores of a CI runner busy without queueing them, while a fleet of a
// hundred clusters still takes about twelve rounds of the slowest cluster rather than a hundred.
const DefaultMaxParallel = 8

// Options bound a run.
type Options struct {
	// MaxParallel is how many functions run at once; 0 or less means DefaultMaxParallel.
	MaxParallel int
	// Timeout bounds each context's function, from the moment it starts; 0 means no bound.
	Timeout time.Duration
}

// Result is what the function returned for one context.
type Result[T any] struct {
	Context string
	Value   T
	// Err is the function's error, a *TimeoutError when its deadline passed first, or a
	// *NotRunError when the run was cancelled before it started or finished.
	Err error
	// Elapsed is how long the context took, up to its deadline.
	Elapsed time.Duration
}

// TimeoutError says a context's function did not finish within its deadline.
type TimeoutError struct {
	Context string
	Timeout time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("context %q: no answer within %s (raise --request-timeout for a slow cluster)", e.Context, e.Timeout)
}

// NotRunError says the run was cancelled (Ctrl-C) before this context's function finished.
type NotRunError struct {
	Context string
	Started bool
	Err     error
}

func (e *NotRunError) Error() string {
	if e.Started {
		return fmt.Sprintf("context %q: interrupted before it finished", e.Context)
	}
	return fmt.Sprintf("context %q: not checked, interrupted before it started", e.Context)
}

func (e *NotRunError) Unwrap() error { return e.Err }

// Run calls fn once per context, at most o.MaxParallel at a time, each with a context bounded by
// o.Timeout, and returns the results in the order of contexts.
func Run[T any](ctx context.Context, contexts []string, o Options, fn func(ctx context.Context, name string) (T, error)) []Result[T] {
	limit := o.MaxParallel
	if limit <= 0 {
		limit = DefaultMaxParallel
	}
	results := make([]Result[T], len(contexts))
	slots := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, name := range contexts {
		results[i].Context = name
		if !acquire(ctx, slots) {
			results[i].Err = &NotRunError{Context: name, Err: ctx.Err()}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			results[i] = runOne(ctx, name, o.Timeout, fn)
		}()
	}
	wg.Wait()
	return results
}

// acquire waits for a free slot; false when ctx was cancelled first (a slot freed at the same
// moment is given back: nothing starts after Ctrl-C).
func acquire(ctx context.Context, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	if ctx.Err() != nil {
		<-slots
		return false
	}
	return true
}

// runOne runs fn for one context and returns when it does, when its deadline passes or when ctx
// is cancelled, whichever comes first. A function still running then is left to notice its
// cancelled context on its own (client-go requests do, bounded by their own --request-timeout):
// its late result is dropped, and its slot is free for the next context.
func runOne[T any](ctx context.Context, name string, timeout time.Duration, fn func(context.Context, string) (T, error)) Result[T] {
	start := time.Now()
	cctx, cancel := context.WithCancel(ctx)
	if timeout > 0 {
		cancel() // replaced by the bounded one
		cctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	done := make(chan Result[T], 1) // buffered: an abandoned function does not block on sending
	go func() {
		v, err := fn(cctx, name)
		done <- Result[T]{Context: name, Value: v, Err: err}
	}()
	var r Result[T]
	got := false
	select {
	case r = <-done:
		got = true
	case <-cctx.Done():
		// A result that arrived at the same moment as the deadline still counts.
		select {
		case r = <-done:
			got = true
		default:
		}
	}
	r.Context, r.Elapsed = name, time.Since(start)
	if got && (r.Err == nil || !errors.Is(r.Err, context.Canceled) && !errors.Is(r.Err, context.DeadlineExceeded)) {
		return r
	}
	// Without a result, or with an error that may only be the cancellation's echo, the cause is
	// said once: the user's interrupt, else the deadline, else the function's own error.
	switch {
	case ctx.Err() != nil:
		r.Err = &NotRunError{Context: name, Started: true, Err: ctx.Err()}
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		r.Err = &TimeoutError{Context: name, Timeout: timeout}
	}
	return r
}
