package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/adopt"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// ClusterStatus is one cluster of `status --contexts` or `--all-contexts`; -o json|yaml prints a
// list of them, in the order of the table.
type ClusterStatus struct {
	Context string `json:"context"`
	// Server is the API server URL the context names.
	Server string `json:"server,omitempty"`
	// Reachable is false when the API server did not answer (refused, timed out, not checked).
	Reachable bool `json:"reachable"`
	// Error is why the cluster could not be read, in full; the table shows a summary.
	Error   string  `json:"error,omitempty"`
	Elapsed float64 `json:"elapsedSeconds"`
	// errorSummary is Error in one short line, for the table.
	errorSummary string
	// Status is the report `status` prints for this cluster alone.
	Status *StatusReport `json:"status,omitempty"`
	// UpgradeBlockers are the Flux CRDs storing objects at versions a Flux release removes
	// (Status.UpgradeWarnings) and the objects Kustomizations apply at versions the newest Flux
	// this plugin ships no longer serves ("upgrading to Flux vX.Y.Z: ...").
	UpgradeBlockers []string `json:"upgradeBlockers"`
	// Adoption says whether `migrate` would adopt the installation.
	Adoption *Adoption `json:"adoption,omitempty"`
}

// Adoption is what `migrate`'s detection says of a cluster.
type Adoption struct {
	Adoptable bool `json:"adoptable"`
	// Installer is bootstrap or flux-install when adoptable.
	Installer string `json:"installer,omitempty"`
	// Reason is migrate's refusal when not adoptable.
	Reason string `json:"reason,omitempty"`
}

// runFleet reads every selected cluster and prints one row each; a cluster that could not be
// read is reported in its row and makes the exit code 1.
func (o *StatusOptions) runFleet(ctx context.Context) error {
	target, err := newestRelease(ctx)
	if err != nil {
		return err
	}
	results, flags := runFleet(ctx, &o.fleet, o.configFlags, func(ctx context.Context, f *genericclioptions.ConfigFlags) (*ClusterStatus, error) {
		return o.gatherCluster(ctx, f, target)
	})
	rows := make([]*ClusterStatus, len(results))
	var failed []string
	for i, r := range results {
		row := r.Value
		if row == nil || r.Err != nil {
			row = &ClusterStatus{UpgradeBlockers: []string{}}
			if r.Value != nil {
				row.Server = r.Value.Server
			}
		}
		row.Context, row.Elapsed = r.Context, r.Elapsed.Round(time.Millisecond).Seconds()
		row.Reachable = r.Err == nil
		if r.Err != nil {
			ce := describeClusterError(r.Err, ctx.Err() != nil, flags[r.Context])
			row.Reachable, row.Error, row.errorSummary = ce.Reachable, ce.Full, ce.Summary
			failed = append(failed, r.Context+" ("+ce.Summary+")")
		}
		rows[i] = row
	}
	if err := o.printFleet(rows); err != nil {
		return err
	}
	switch {
	case ctx.Err() != nil:
		return &ExitError{Code: 1, Err: fmt.Errorf("interrupted: %d of %d clusters were not read: %s", len(failed), len(rows), strings.Join(failed, ", "))}
	case len(failed) > 0:
		return &ExitError{Code: 1, Err: fmt.Errorf("%d of %d clusters could not be read: %s", len(failed), len(rows), strings.Join(failed, ", "))}
	}
	return nil
}

// gatherCluster is one cluster's row: the single-cluster report, the upgrade blockers and the
// adoption check. The row is returned with the error so that the server stays known.
func (o *StatusOptions) gatherCluster(ctx context.Context, flags *genericclioptions.ConfigFlags, target *upgradeTarget) (*ClusterStatus, error) {
	row := &ClusterStatus{UpgradeBlockers: []string{}}
	if cfg, err := flags.ToRESTConfig(); err == nil {
		row.Server = cfg.Host
	}
	conn, err := kube.Connect(flags)
	if err != nil {
		return row, err
	}
	if row.Status, err = o.gather(ctx, conn); err != nil {
		return row, err
	}
	row.UpgradeBlockers = append(row.UpgradeBlockers, row.Status.UpgradeWarnings...)
	stale, err := storage.StaleSources(ctx, conn.Client, target.served)
	switch {
	case apierrors.IsForbidden(err):
		// Like status's own upgrade warnings: left out for a user who may not list them.
	case err != nil:
		return row, err
	}
	for _, s := range stale {
		row.UpgradeBlockers = append(row.UpgradeBlockers, "upgrading to Flux "+target.version+": "+s.String())
	}
	if row.Adoption, err = adoption(ctx, conn.Client, o.namespace); err != nil {
		return row, err
	}
	return row, nil
}

// adoption runs migrate's detection: no error means `migrate` would adopt the installation, a
// refusal says why not; any other error (the lists forbidden) is the cluster's error.
func adoption(ctx context.Context, c client.Client, namespace string) (*Adoption, error) {
	in, err := adopt.Detect(ctx, c, namespace)
	var refusal *adopt.RefusalError
	switch {
	case errors.As(err, &refusal):
		return &Adoption{Reason: refusal.Reason}, nil
	case err != nil:
		return nil, fmt.Errorf("checking whether migrate could adopt the installation: %w", err)
	}
	return &Adoption{Adoptable: true, Installer: in.Installer}, nil
}

// upgradeTarget is the newest Flux release this plugin ships and the API versions it serves, kind
// by kind: a Kustomization applying a Flux object at another version blocks the upgrade to it
// until its source is rewritten.
type upgradeTarget struct {
	version string
	served  map[schema.GroupKind][]string
}

// newestRelease renders the newest release of the embedded distribution once, for every cluster.
func newestRelease(ctx context.Context) (*upgradeTarget, error) {
	dist, err := distribution.Open(ctx, "", distribution.Options{Warn: func(string) {}})
	if err != nil {
		return nil, fmt.Errorf("opening the embedded Flux distribution: %w", err)
	}
	versions := dist.Versions()
	if len(versions) == 0 {
		return nil, fmt.Errorf("the embedded Flux distribution holds no release")
	}
	newest := versions[len(versions)-1]
	release, err := dist.Release(newest)
	if err != nil {
		return nil, err
	}
	inst := &fluxinstance.FluxInstance{}
	inst.Name = fluxinstance.RequiredName
	inst.Spec.Distribution.Version = newest
	inst.Spec.Distribution.Registry = "ghcr.io/fluxcd"
	inst.Spec.Components = append([]string(nil), fluxinstance.AllComponents...)
	inst.Default()
	objs, err := render.Build(inst, release, func(string) {})
	if err != nil {
		return nil, fmt.Errorf("rendering Flux %s to learn the API versions it serves: %w", newest, err)
	}
	return &upgradeTarget{version: newest, served: storage.ServedVersions(objs)}, nil
}
