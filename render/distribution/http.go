package distribution

import (
	"net"
	"net/http"
	"time"
)

// The per-request bounds of every HTTP request the plugin makes outside the cluster: an OCI pull
// here, a -f URL in the plugin. Without --request-timeout they are all that stop a server that
// accepts a connection and never answers from hanging the command; with it they still apply,
// since a single stalled step should fail well before a generous overall bound.
const (
	DialTimeout           = 30 * time.Second
	TLSHandshakeTimeout   = 10 * time.Second
	ResponseHeaderTimeout = 30 * time.Second
)

// BoundedTransport sets the per-request bounds on t and returns it. It keeps t's other settings
// (proxy, TLS configuration, connection pool), so that each caller starts from the transport its
// client library expects.
func BoundedTransport(t *http.Transport) *http.Transport {
	// KeepAlive as net/http's and go-containerregistry's default transports: a clone of either
	// must not lose it when the dialer is replaced.
	t.DialContext = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = TLSHandshakeTimeout
	t.ResponseHeaderTimeout = ResponseHeaderTimeout
	return t
}
