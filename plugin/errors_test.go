package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The errors that reach the top, as the packages below wrap them, and the one line each becomes.
func TestTranslateOnce(t *testing.T) {
	host := func() string { return "https://10.0.0.1:6443" }
	dial := &url.Error{Op: "Get", URL: "https://10.0.0.1:6443/api", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}}
	cancelled := &url.Error{Op: "Get", URL: "https://10.0.0.1:6443/api", Err: context.Canceled}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "inventory", errors.New(`User "bob" cannot patch resource "configmaps" in API group "" in the namespace "flux-system"`))
	lock := apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "inventory", errors.New("the object has been modified"))
	ssaConflict := &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonConflict, Code: 409,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: metav1.CauseTypeFieldManagerConflict, Field: ".spec.replicas", Message: `conflict with "someone"`}}}}}

	for name, tc := range map[string]struct {
		err         error
		interrupted bool
		want        string
	}{
		"unreachable, wrapped by a package below": {
			err:  fmt.Errorf("ConfigMap/flux-system/x: reading the inventory: %w", dial),
			want: "unable to reach the cluster at https://10.0.0.1:6443: connect: connection refused",
		},
		"interrupted inside a request (a url.Error around context.Canceled)": {
			err: fmt.Errorf("applying: %w", cancelled), interrupted: true,
			want: "interrupted: run the command again to finish (whatever this run may have created is recorded; the next run completes or prunes it)",
		},
		"a cancelled request without a signal stays a transport error": {
			err:  cancelled,
			want: "unable to reach the cluster at https://10.0.0.1:6443: context canceled",
		},
		"expired credentials": {
			err:  fmt.Errorf("reading: %w", apierrors.NewUnauthorized("Unauthorized")),
			want: "the cluster at https://10.0.0.1:6443 rejected the credentials (expired or invalid): refresh them in your kubeconfig",
		},
		"forbidden keeps the object, the action and the API server's verb and resource": {
			err:  fmt.Errorf("ConfigMap/flux-system/inventory: writing the inventory: %w", forbidden),
			want: `ConfigMap/flux-system/inventory: writing the inventory: configmaps "inventory" is forbidden: User "bob" cannot patch resource "configmaps" in API group "" in the namespace "flux-system"`,
		},
		"an optimistic-lock conflict says to re-run": {
			err:  lock,
			want: `Operation cannot be fulfilled on configmaps "inventory": the object has been modified: another client changed the object meanwhile; run the command again`,
		},
		"a field-manager conflict passes through (its own error explains --force-conflicts)": {
			err:  ssaConflict,
			want: ssaConflict.Error(),
		},
		"a -f URL that cannot be read is not the cluster": {
			err:  fmt.Errorf("reading http://127.0.0.1:9/x.yaml: %w", &url.Error{Op: "Get", URL: "http://127.0.0.1:9/x.yaml", Err: errors.New("EOF")}),
			want: `reading http://127.0.0.1:9/x.yaml: Get "http://127.0.0.1:9/x.yaml": EOF`,
		},
		"a file error is not a network error (syscall.Errno has Timeout and Temporary too)": {
			err:  fmt.Errorf("--private-key-file /tmp/x: cannot read the file: %w", &fs.PathError{Op: "read", Path: "/tmp/x", Err: syscall.EISDIR}),
			want: "--private-key-file /tmp/x: cannot read the file: read /tmp/x: is a directory",
		},
		"anything else passes through": {
			err:  errors.New("rendering: spec.distribution.version: no match"),
			want: "rendering: spec.distribution.version: no match",
		},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, translate(tc.err, tc.interrupted, host).Error())
		})
	}
	assert.NoError(t, translate(nil, false, host))
}

// Passwords in URLs never reach the terminal, whichever package wrote the URL into the message.
func TestRedactCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"pulling oci://bob:PASS@ghcr.io/x: unauthorized":                 "pulling oci://bob:xxxxx@ghcr.io/x: unauthorized",
		`--url "https://git:tok3n%21@github.com/o/r.git" is not allowed`: `--url "https://git:xxxxx@github.com/o/r.git" is not allowed`,
		"reading http://127.0.0.1:8080/x.yaml: timeout":                  "reading http://127.0.0.1:8080/x.yaml: timeout",
		"ssh://git@github.com/o/r.git and oci://a:b@c/d":                 "ssh://git@github.com/o/r.git and oci://a:xxxxx@c/d",
	} {
		assert.Equal(t, want, redactCredentials(in))
	}
}
