// Package kube is the small layer every cluster-facing package shares: building a client from
// kubectl's flags, naming objects the way kubectl and ssa do, reading one live object, listing
// page by page, and the facts of a CustomResourceDefinition. It holds no rule of the plugin's
// own: those live in ownership, inventory, apply and the packages beside them.
//
// Errors are returned wrapped (%w) and untranslated: the plugin turns them into one line for
// people, once, at the top.
package kube

import (
	"fmt"
	"net/http"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultConcurrency is how many objects are read, dry-run or deleted in parallel. The API
// server handles far more; the limit keeps a laptop's kubectl-like burst polite.
const DefaultConcurrency = 10

// Connection is what commands need to talk to the cluster named by the kubeconfig flags.
type Connection struct {
	Config *rest.Config
	Client client.Client
	// httpClient is Client's: Unthrottled shares its connections.
	httpClient *http.Client
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
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating client for %s: %w", cfg.Host, err)
	}
	c, err := client.New(cfg, client.Options{HTTPClient: httpClient})
	if err != nil {
		return nil, fmt.Errorf("creating client for %s: %w", cfg.Host, err)
	}
	return &Connection{Config: cfg, Client: c, httpClient: httpClient}, nil
}

// Unthrottled returns a client of the same cluster, connections and REST mapper without
// client-go's client-side rate limit, for work that bounds itself by how many requests it has in
// flight: the storage migration writes every object of a kind, DefaultConcurrency at a time, and
// at Connect's 100 QPS 10,000 objects would take 100 s however fast the API server answers (twice
// what the same server needs when it is idle). The API server's priority and fairness still
// apply to it.
func (c *Connection) Unthrottled() (client.Client, error) {
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = -1, 0 // client-go: no token bucket below zero
	uc, err := client.New(cfg, client.Options{HTTPClient: c.httpClient, Mapper: c.Client.RESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("creating client for %s: %w", cfg.Host, err)
	}
	return uc, nil
}

// Instance names one FluxInstance on one cluster: every package that reads or writes what an
// instance owns takes one.
type Instance struct {
	Client client.Client
	// Name and Namespace identify the FluxInstance ("flux" and where Flux runs).
	Name      string
	Namespace string
}

// DryRun selects how much a command may change, like kubectl's --dry-run.
type DryRun string

const (
	// DryRunNone changes the cluster.
	DryRunNone DryRun = "none"
	// DryRunClient only reads the cluster (GET) and compares locally: no mutating API is called.
	DryRunClient DryRun = "client"
	// DryRunServer sends server-side dry-run requests: the API server validates, defaults and
	// merges, and persists nothing.
	DryRunServer DryRun = "server"
)

// Changes tells whether the mode writes to the cluster ("" counts as none).
func (d DryRun) Changes() bool { return d == "" || d == DryRunNone }
