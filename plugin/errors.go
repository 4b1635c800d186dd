package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spf13/cobra"
)

// UsageError is a mistake in how the command was called: it exits 2 and points at --help instead of
// printing the whole usage text.
type UsageError struct {
	msg string
}

func (e *UsageError) Error() string { return e.msg }

func usageError(cmd *cobra.Command, format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf("%s\nSee '%s -h' for help and examples", fmt.Sprintf(format, args...), cmd.CommandPath())}
}

// ExitError ends the process with Code, printing Err (if any) as "error: ...". Commands use it
// where kubectl uses a specific exit code, like diff's 1 for "differences found".
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// wrapArgsValidation turns cobra's positional-argument errors into UsageErrors, recursively, so that
// every command exits 2 for wrong arguments.
func wrapArgsValidation(cmd *cobra.Command) {
	if validate := cmd.Args; validate != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := validate(c, args); err != nil {
				return usageError(c, "%s", err)
			}
			return nil
		}
	}
	for _, c := range cmd.Commands() {
		wrapArgsValidation(c)
	}
}

// isCobraUsageError recognises the errors cobra itself returns for unknown commands, which do not go
// through the flag or argument hooks.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "required flag(s)")
}

// translate turns an error that reached the top into the one line a person can act on, the way
// kubectl's cmdutil.CheckErr does: the packages below return typed errors wrapped with %w, and
// this is the only place that rewrites them. host names the cluster (it is read only when needed).
//
//   - cancelled by the user (SIGINT/SIGTERM): "interrupted", never a connection error, even when
//     client-go wrapped the cancellation in a url.Error;
//   - credentials rejected (401): expired or invalid, refresh the kubeconfig;
//   - transport failures: the cluster cannot be reached, with the root cause only;
//   - forbidden (403): the API server's message names the user, verb, resource and namespace: kept,
//     with the object and action the chain adds;
//   - an object changed by someone else meanwhile (409 without field-manager causes): re-run.
//
// Anything else passes through unchanged.
func translate(err error, interrupted bool, host func() string) error {
	var urlErr *url.Error
	switch {
	case err == nil:
		return nil
	case interrupted && errors.Is(err, context.Canceled):
		return errors.New("interrupted: run the command again to finish (whatever this run may have created is recorded; the next run completes or prunes it)")
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the cluster at %s rejected the credentials (expired or invalid): refresh them in your kubeconfig", host())
	case apierrors.IsForbidden(err):
		return err
	case errors.As(err, &urlErr) && !sameHost(urlErr.URL, host()):
		return err // a -f URL or a registry, named in the message already
	case isTransport(err):
		return fmt.Errorf("unable to reach the cluster at %s: %s", host(), rootCause(err))
	case apierrors.IsConflict(err) && !hasFieldManagerConflict(err):
		return fmt.Errorf("%w: another client changed the object meanwhile; run the command again", err)
	}
	return err
}

// isTransport tells whether err is a failure to talk to a server at all (dial, TLS, reset). Only
// a url.Error or a net.OpError says "network": a bare net.Error would also match a file error
// (syscall.Errno has Timeout and Temporary).
func isTransport(err error) bool {
	var urlErr *url.Error
	var opErr *net.OpError
	return errors.As(err, &urlErr) || errors.As(err, &opErr)
}

// sameHost tells whether a request URL goes to the cluster's API server (host is its URL from
// the kubeconfig); an unknown cluster counts as the same, the usual case.
func sameHost(requestURL, host string) bool {
	r, err1 := url.Parse(requestURL)
	h, err2 := url.Parse(host)
	if err1 != nil || err2 != nil || host == "" || r.Host == "" {
		return true
	}
	return r.Host == h.Host
}

// rootCause strips the layers of "Get https://...: dial tcp ...:" that make transport errors span
// a terminal line twice.
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.Contains(msg, "dial tcp") {
		return msg[i+2:]
	}
	return msg
}

// hasFieldManagerConflict tells a server-side apply conflict (fields owned by another manager,
// which --force-conflicts resolves) from an optimistic-lock conflict.
func hasFieldManagerConflict(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	for _, c := range status.Status().Details.Causes {
		if c.Type == metav1.CauseTypeFieldManagerConflict {
			return true
		}
	}
	return false
}
