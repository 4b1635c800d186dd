package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Connection is what commands need to talk to the cluster named by the kubeconfig flags.
type Connection struct {
	Config *rest.Config
	Client client.Client
}

// Connect builds a controller-runtime client from kubectl's standard flags.
func Connect(getter genericclioptions.RESTClientGetter) (*Connection, error) {
	cfg, err := getter.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	// The plugin sends bursts (staged applies, inventory checks); client-go's default 5 QPS would
	// make an install crawl.
	cfg.QPS, cfg.Burst = 100, 200
	// controller-runtime's default REST mapper discovers one API group at a time, on first use:
	// a command that reads one CRD does not pay for (or log errors from) full discovery.
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, fmt.Errorf("creating client for %s: %w", cfg.Host, err)
	}
	return &Connection{Config: cfg, Client: c}, nil
}

// ExplainError turns transport and authentication failures into one line a user can act on;
// other errors pass through unchanged.
func ExplainError(err error, host string) error {
	if err == nil {
		return nil
	}
	var netErr net.Error
	var urlErr *url.Error
	var opErr *net.OpError
	switch {
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the cluster at %s rejected the credentials (expired or invalid): refresh them in your kubeconfig", host)
	case errors.As(err, &opErr), errors.As(err, &urlErr) && !apierrors.IsForbidden(err), errors.As(err, &netErr):
		return fmt.Errorf("unable to reach the cluster at %s: %s", host, rootCause(err))
	}
	return err
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
