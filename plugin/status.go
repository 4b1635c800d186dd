package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/diff"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/fleet"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

const statusExample = `  # Show the Flux installation of the current context, however it was installed
  kubectl fluxinstance status

  # The installation in another namespace, for scripts
  kubectl fluxinstance status -n gitops -o json

  # One row per cluster of the kubeconfig, eight clusters read at a time
  kubectl fluxinstance status --all-contexts

  # Some clusters, as a markdown table for a pull-request comment
  kubectl fluxinstance status --contexts prod-eu,prod-us -o markdown`

// StatusOptions holds the flags of `kubectl fluxinstance status`.
type StatusOptions struct {
	outputFlag
	fleet fleetFlags

	namespace   string
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
}

// StatusReport is what `status -o json|yaml` prints.
type StatusReport struct {
	Namespace    string                    `json:"namespace"`
	Installation installation.Installation `json:"installation"`
	// Applied describes the last apply by this plugin (nil when it never applied here).
	Applied    *AppliedRecord    `json:"applied,omitempty"`
	Components []ComponentStatus `json:"components"`
	Sync       []SyncStatus      `json:"sync,omitempty"`
	// Operator is the Flux Operator's view, when its FluxInstance CRD is installed.
	Operator *OperatorStatus `json:"operator,omitempty"`
	// Drift is nil when there is no record to compare with.
	Drift *DriftReport `json:"drift,omitempty"`
	// LockedBy is the command that holds the instance now (apply, delete, migrate, handoff).
	LockedBy *lock.Holder `json:"lockedBy,omitempty"`
	// UpgradeWarnings name the Flux CRDs that store objects at versions a Flux release removes.
	UpgradeWarnings []string `json:"upgradeWarnings,omitempty"`
}

// OperatorStatus says whether the Flux Operator runs and what it reports of the FluxInstance.
type OperatorStatus struct {
	operator.OperatorPresence
	// ManagesInstance is true when the operator reconciles the instance of this namespace.
	ManagesInstance bool            `json:"managesInstance"`
	Instance        *operator.State `json:"instance,omitempty"`
}

// AppliedRecord is the inventory record of the last apply.
type AppliedRecord struct {
	At            time.Time `json:"at"`
	By            string    `json:"by,omitempty"`
	FieldManager  string    `json:"fieldManager,omitempty"`
	PluginVersion string    `json:"pluginVersion,omitempty"`
	Distribution  string    `json:"distribution,omitempty"`
	Revision      string    `json:"revision,omitempty"`
	State         string    `json:"state,omitempty"`
	Objects       int       `json:"objects"`
	Record        string    `json:"record"`
}

// ComponentStatus is one Flux controller Deployment.
type ComponentStatus struct {
	Name    string `json:"name"`
	Image   string `json:"image"`
	Ready   bool   `json:"ready"`
	Replica string `json:"replicas"`
}

// SyncStatus is the cluster sync source or Kustomization.
type SyncStatus struct {
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Ready    string `json:"ready"`
	Message  string `json:"message,omitempty"`
	Revision string `json:"revision,omitempty"`
}

// DriftReport compares the cluster with a fresh rendering of the recorded instance.
type DriftReport struct {
	Checked bool     `json:"checked"`
	Reason  string   `json:"reason,omitempty"`
	Missing []string `json:"missing,omitempty"`
	Changed []string `json:"changed,omitempty"`
}

// NewCmdStatus returns the `status` command.
func NewCmdStatus(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &StatusOptions{configFlags: configFlags, IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the Flux installation: version, manager, components, sync, inventory and drift",
		Long: `Show the Flux installation of a namespace: its version and what manages it, the controllers with
their images and readiness, the cluster sync source and Kustomization, and, for an installation applied by
this plugin, when and by whom, the inventory size and the drift since (a server-side dry-run of the
recorded FluxInstance, skipping the objects the record proves untouched). Installations made by flux bootstrap, flux install or the Flux Operator are shown
read-only. The namespace is -n, else the one the installation says, else flux-system.

With --contexts or --all-contexts, status reads many clusters of the kubeconfig at once
(--max-parallel at a time) and prints one row per cluster: whether it answered, the Flux version,
what manages it, components ready, the sync's readiness and revision, drift, upgrade blockers
(stored versions and sources at API versions a Flux release removes) and whether ` + "`migrate`" + ` can
adopt it (or why not). -o json|yaml prints each cluster's full report, -o markdown a table for a
pull-request comment. Each cluster is bounded by --request-timeout (default ` + defaultClusterTimeout.String() + ` per cluster
here; 0 for no bound), so one that is down or never answers is reported in its row without delaying
the others.
The exit code is 1 when any cluster could not be read.`,
		Example: statusExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	o.outputFlag.addFlag(cmd, "a report in words (with --contexts or --all-contexts: a table)", "json", "yaml", "markdown")
	o.fleet.wholeRunDeadline = true
	o.fleet.addFlags(cmd, fleet.DefaultMaxParallel, "how many clusters are read at once.")
	return cmd
}

// Complete reads -n and resolves --contexts or --all-contexts.
func (o *StatusOptions) Complete(cmd *cobra.Command) error {
	o.namespace, _ = explicitNamespace(cmd)
	return o.fleet.complete(cmd, o.configFlags)
}

// Validate checks the flags.
func (o *StatusOptions) Validate(cmd *cobra.Command) error {
	if o.Output == "markdown" && !o.fleet.enabled() {
		return usageError(cmd, "-o markdown prints the fleet table: add --contexts or --all-contexts")
	}
	return o.outputFlag.validate(cmd)
}

// Run gathers the report; parts the user may not read are reported as such, not as failures.
func (o *StatusOptions) Run(ctx context.Context) error {
	if o.fleet.enabled() {
		return o.runFleet(ctx)
	}
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return err
	}
	report, err := o.gather(ctx, conn)
	if err != nil {
		return err
	}
	if ok, err := printStructured(o.Out, o.Output, report); ok {
		return err
	}
	return printStatus(o.Out, report)
}

func (o *StatusOptions) gather(ctx context.Context, conn *kube.Connection) (*StatusReport, error) {
	inst, err := installation.DetectInstallation(ctx, conn.Client)
	if err != nil {
		return nil, err
	}
	ns := o.namespace
	if ns == "" {
		ns = inst.Namespace
	}
	if ns == "" {
		ns = fluxinstance.DefaultNamespace
	}
	report := &StatusReport{Namespace: ns, Installation: inst, Components: []ComponentStatus{}}
	m := apply.NewManager(kube.Instance{Client: conn.Client, Name: fluxinstance.RequiredName, Namespace: ns})
	inv, err := m.Store().Read(ctx)
	if err != nil {
		return nil, err
	}
	// Why an apply would wait or be refused; a user who may not read the Lease gets the rest.
	if holder, err := lock.Current(ctx, m.Instance); err == nil {
		report.LockedBy = holder
	}
	// What an upgrade will have to migrate; likewise left out when the CRDs may not be listed.
	if warnings, err := storage.StoredAtRemovedVersions(ctx, conn.Client); err == nil {
		report.UpgradeWarnings = warnings
	}
	var recorded *fluxinstance.FluxInstance
	if report.Applied, recorded, err = appliedRecord(inv); err != nil {
		return nil, err
	}
	if report.Components, err = components(ctx, conn.Client, ns); err != nil {
		return nil, err
	}
	syncName := ns
	if recorded != nil && recorded.Spec.Sync != nil && recorded.Spec.Sync.Name != "" {
		syncName = recorded.Spec.Sync.Name
	}
	if report.Sync, err = syncStatus(ctx, conn.Client, ns, syncName); err != nil {
		return nil, err
	}
	mg, err := detectManagement(ctx, m)
	if err != nil {
		return nil, err
	}
	if mg.Operator.CRD {
		report.Operator = &OperatorStatus{OperatorPresence: mg.Operator, ManagesInstance: mg.ByOperator, Instance: mg.Instance}
	}
	switch {
	case mg.ByOperator:
		// The operator's record wins over a leftover of the plugin's: what it applied is what the
		// cluster should look like, rendered at the version it resolved.
		report.Installation.ManagedBy = installation.ManagedByOperator
		report.Drift = operatorDrift(ctx, m, mg.Instance)
	case report.Applied != nil:
		report.Drift = drift(ctx, m, recorded, inv.Distribution, inv.FieldManager, inv)
	}
	return report, nil
}

// appliedRecord is what the plugin's record says of its last apply, and the instance it applied
// (nil, nil without a record of the plugin's own: the operator mirrors one in its status).
func appliedRecord(inv *inventory.Inventory) (*AppliedRecord, *fluxinstance.FluxInstance, error) {
	if inv == nil || !strings.HasPrefix(inv.Source, "ConfigMap/") {
		return nil, nil, nil
	}
	applied := &AppliedRecord{
		At: inv.AppliedAt, By: inv.User, FieldManager: inv.FieldManager, PluginVersion: inv.PluginVersion,
		Distribution: inv.Distribution, Revision: inv.Digest, State: inv.State, Objects: len(inv.Entries), Record: inv.Source,
	}
	if inv.Instance == "" {
		return applied, nil, nil
	}
	recorded, err := fluxinstance.Decode([]byte(inv.Instance), inv.Source)
	return applied, recorded, err
}

// operatorDrift re-renders the operator's FluxInstance at the version it last applied and
// dry-runs it as the operator would (its field manager).
func operatorDrift(ctx context.Context, m *apply.Manager, state *operator.State) *DriftReport {
	rev := state.LastAppliedRevision
	if rev == "" {
		return &DriftReport{Reason: "the Flux Operator has not applied the FluxInstance yet"}
	}
	// Only the spec: the live object's metadata and status are the server's and the operator's.
	data, err := json.Marshal(map[string]any{
		"apiVersion": fluxinstance.APIVersion, "kind": fluxinstance.Kind,
		"metadata": map[string]any{"name": m.Name, "namespace": m.Namespace},
		"spec":     state.Object.Object["spec"],
	})
	if err != nil {
		return &DriftReport{Reason: err.Error()}
	}
	inst, err := fluxinstance.Decode(data, "FluxInstance/"+m.Namespace+"/"+m.Name)
	if err != nil {
		return &DriftReport{Reason: err.Error()}
	}
	version, _, _ := strings.Cut(rev, "@")
	inst.Spec.Distribution.Version = version
	source := inst.Spec.Distribution.Artifact
	return drift(ctx, m, inst, source, ownership.OperatorFieldManager, nil)
}

// components lists the Flux controller Deployments of the namespace.
func components(ctx context.Context, c client.Client, ns string) ([]ComponentStatus, error) {
	var list appsv1.DeploymentList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{render.LabelPartOf: render.PartOfValue}); err != nil {
		return nil, fmt.Errorf("listing Deployments in %s: %w", ns, err)
	}
	out := []ComponentStatus{}
	for _, d := range list.Items {
		image := ""
		if len(d.Spec.Template.Spec.Containers) > 0 {
			image = d.Spec.Template.Spec.Containers[0].Image
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		available := false
		for _, cond := range d.Status.Conditions {
			if cond.Type == appsv1.DeploymentAvailable && cond.Status == "True" {
				available = true
			}
		}
		out = append(out, ComponentStatus{
			Name: d.Name, Image: image, Ready: available && d.Status.ReadyReplicas >= want,
			Replica: fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, want),
		})
	}
	return out, nil
}

// syncKinds are the kinds a cluster sync can use, each with the API versions tried in order.
var syncKinds = []struct {
	group, kind string
	versions    []string
}{
	{"source.toolkit.fluxcd.io", "GitRepository", []string{"v1"}},
	{"source.toolkit.fluxcd.io", "OCIRepository", []string{"v1", "v1beta2"}},
	{"source.toolkit.fluxcd.io", "Bucket", []string{"v1", "v1beta2"}},
	{"kustomize.toolkit.fluxcd.io", "Kustomization", []string{"v1"}},
}

// syncStatus reads the namespace-named sync objects that exist.
func syncStatus(ctx context.Context, c client.Client, ns, name string) ([]SyncStatus, error) {
	var out []SyncStatus
	for _, k := range syncKinds {
		for _, v := range k.versions {
			obj := &unstructured.Unstructured{}
			obj.SetGroupVersionKind(schema.GroupVersionKind{Group: k.group, Version: v, Kind: k.kind})
			err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
			if apimeta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
				continue // this version or kind is not served, or there is no such object
			}
			if err != nil {
				return nil, fmt.Errorf("reading %s %s/%s: %w", k.kind, ns, name, err)
			}
			out = append(out, describeSync(obj))
			break
		}
	}
	return out, nil
}

func describeSync(obj *unstructured.Unstructured) SyncStatus {
	s := SyncStatus{Kind: obj.GetKind(), Name: obj.GetName(), Ready: "Unknown"}
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, raw := range conds {
		cond, ok := raw.(map[string]any)
		if !ok || cond["type"] != "Ready" {
			continue
		}
		s.Ready, _ = cond["status"].(string)
		s.Message, _ = cond["message"].(string)
	}
	if rev, ok, _ := unstructured.NestedString(obj.Object, "status", "lastAppliedRevision"); ok {
		s.Revision = rev
	} else if rev, ok, _ := unstructured.NestedString(obj.Object, "status", "artifact", "revision"); ok {
		s.Revision = rev
	}
	return s
}

// drift renders the recorded instance again and dry-runs it: objects that would be created are
// missing, objects that would be configured changed since the last apply. record is the
// plugin's record of that apply (nil for the operator's): the objects its fingerprints prove
// untouched are not dry-run, most of what the check costs the API server.
func drift(ctx context.Context, m *apply.Manager, recorded *fluxinstance.FluxInstance, dist, fieldManager string, record *inventory.Inventory) *DriftReport {
	if recorded == nil {
		return &DriftReport{Reason: "the record holds no FluxInstance (applied by an older plugin)"}
	}
	source := dist
	if source == embeddedDistributionRef {
		source = ""
	}
	r, err := renderInstance(ctx, recorded, "the recorded FluxInstance", source, distribution.Options{Warn: func(string) {}})
	if err != nil {
		return &DriftReport{Reason: err.Error()}
	}
	opts := diff.Options{FieldManager: fieldManager}
	if record != nil && len(record.Fingerprints) > 0 {
		opts.Record = record
	}
	entries, err := diff.Objects(ctx, m, r.Objects, nil, opts)
	if err != nil {
		return &DriftReport{Reason: err.Error()}
	}
	d := &DriftReport{Checked: true}
	for _, e := range entries {
		switch e.Action {
		case "created":
			d.Missing = append(d.Missing, e.Subject)
		case "configured":
			d.Changed = append(d.Changed, e.Subject)
		}
	}
	return d
}

func printStatus(out io.Writer, r *StatusReport) error {
	w := printers.GetNewTabWriter(out)
	fmt.Fprintf(w, "Namespace:\t%s\n", r.Namespace)
	if !r.Installation.Installed {
		fmt.Fprintf(w, "Flux:\tnot installed\n")
		return w.Flush()
	}
	fmt.Fprintf(w, "Flux Version:\t%s\n", r.Installation.Version)
	fmt.Fprintf(w, "Managed By:\t%s\n", r.Installation.ManagedByText())
	if h := r.Installation.Helm; h != nil && h.Record != "" && r.Installation.ManagedBy == installation.ManagedByHelm {
		fmt.Fprintf(w, "Helm Record:\t%s\n", h.Record)
		// Names only: the values themselves may hold credentials (`helm get values` shows them).
		set := strings.Join(h.ValuesSet, ", ")
		if set == "" {
			set = "none (the chart's defaults)"
		}
		fmt.Fprintf(w, "Helm Values Set:\t%s\n", set)
	}
	for _, warning := range r.UpgradeWarnings {
		fmt.Fprintf(w, "Upgrade Warning:\t%s\n", warning)
	}
	if h := r.LockedBy; h != nil {
		fmt.Fprintf(w, "Locked By:\t%s (claim expires %s unless renewed)\n", h, h.Expires().UTC().Format(time.RFC3339))
	}
	printApplied(w, r.Applied)
	printOperator(w, r)
	printDrift(w, r.Drift)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "COMPONENT\tREADY\tREPLICAS\tIMAGE")
	for _, c := range r.Components {
		fmt.Fprintf(w, "%s\t%t\t%s\t%s\n", c.Name, c.Ready, c.Replica, c.Image)
	}
	if len(r.Sync) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "SYNC\tREADY\tREVISION\tMESSAGE")
		for _, s := range r.Sync {
			fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\n", s.Kind, s.Name, s.Ready, s.Revision, s.Message)
		}
	}
	return w.Flush()
}

func printApplied(w io.Writer, a *AppliedRecord) {
	if a == nil {
		return
	}
	by := a.By
	if by == "" {
		by = "unknown user"
	}
	fmt.Fprintf(w, "Last Applied:\t%s by %s (field manager %s, plugin %s)\n", a.At.Format(time.RFC3339), by, a.FieldManager, a.PluginVersion)
	if a.State != "" && a.State != "Applied" {
		fmt.Fprintf(w, "Apply State:\t%s (re-run apply to finish)\n", a.State)
	}
	fmt.Fprintf(w, "Distribution:\t%s\n", a.Distribution)
	fmt.Fprintf(w, "Revision:\t%s\n", a.Revision)
	fmt.Fprintf(w, "Inventory:\t%d objects (%s)\n", a.Objects, a.Record)
}

func printOperator(w io.Writer, r *StatusReport) {
	op := r.Operator
	if op == nil {
		return
	}
	state := "not running"
	if op.Running {
		state = "running"
	}
	fmt.Fprintf(w, "Flux Operator:\t%s (%s)\n", state, op.Evidence)
	if fi := op.Instance; fi != nil {
		manages := "reconciled by the operator"
		if fi.Disabled {
			manages = "reconciliation disabled"
		} else if !op.ManagesInstance {
			manages = "not reconciled"
		}
		fmt.Fprintf(w, "FluxInstance:\t%s/flux, %s: %s\n", r.Namespace, manages, fi.Summary())
	}
}

func printDrift(w io.Writer, d *DriftReport) {
	switch {
	case d == nil:
	case !d.Checked:
		fmt.Fprintf(w, "Drift:\tnot checked: %s\n", d.Reason)
	case len(d.Missing)+len(d.Changed) == 0:
		fmt.Fprintf(w, "Drift:\tnone\n")
	default:
		fmt.Fprintf(w, "Drift:\t%d missing, %d changed since the last apply\n", len(d.Missing), len(d.Changed))
		for _, s := range d.Missing {
			fmt.Fprintf(w, "\tmissing: %s\n", s)
		}
		for _, s := range d.Changed {
			fmt.Fprintf(w, "\tchanged: %s\n", s)
		}
	}
}
