package plugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/permissions"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/wait"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

const applyExample = `  # Install or upgrade Flux as described by a FluxInstance, and wait until it is ready
  kubectl fluxinstance apply -f flux-instance.yaml

  # See what would change, without changing anything
  kubectl fluxinstance apply -f flux-instance.yaml --dry-run=server

  # Take over fields that another tool owns, and return without waiting
  kubectl fluxinstance apply -f flux-instance.yaml --force-conflicts --wait=false

  # Where the Flux Operator runs: apply the FluxInstance object and wait for the operator
  kubectl fluxinstance apply -f flux-instance.yaml --mode=operator

  # Roll out a fleet repository, one cluster at a time in this order, each its own FluxInstance
  kubectl fluxinstance apply -f clusters/ --contexts staging,prod-eu,prod-us`

// ApplyOptions holds the flags of `kubectl fluxinstance apply`.
type ApplyOptions struct {
	instanceFlags
	outputFlag
	lockFlag
	FieldManager   string
	ForceConflicts bool
	Prune          bool
	Wait           bool
	Timeout        time.Duration
	Strict         bool
	Mode           string
	Force          bool
	fleet          fleetFlags
	// ContinueOnError goes on with the next cluster after one failed, across contexts.
	ContinueOnError bool

	dryRun      kube.DryRun
	namespace   string
	enforceNS   bool
	configFlags *genericclioptions.ConfigFlags
	version     string
	genericiooptions.IOStreams
}

// NewCmdApply returns the `apply` command.
func NewCmdApply(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, info BuildInfo) *cobra.Command {
	o := &ApplyOptions{
		configFlags: configFlags, IOStreams: streams, version: info.Version,
		FieldManager: ownership.PluginFieldManager, Prune: true, Wait: true, Timeout: 5 * time.Minute,
		Mode: modeAuto,
	}
	cmd := &cobra.Command{
		Use:   "apply -f FILENAME",
		Short: "Install or upgrade Flux from a FluxInstance with server-side apply",
		Long: `Render a FluxInstance and server-side apply the objects in stages (CRDs, Namespaces and
ClusterRoles first), taking over the fields of the tools that installed Flux before (flux bootstrap,
flux install, kubectl, Helm, the Flux Operator), prune what the previous apply created and the new
rendering dropped (never a CRD that still has objects, never the Namespace), and wait until
everything is ready. Users' own Flux objects are never touched.

Where the Flux Operator runs (its FluxInstance CRD is installed and an operator Deployment or a
FluxReport updated in the last 15 minutes is found), --mode=operator applies the FluxInstance object
itself and waits until the operator reports it Ready; no manifest is applied directly, but objects
stored at API versions the new Flux version removes are migrated first, as in direct mode, for
the version the operator will apply: the rendered one when the version pins the minor release
(2.9.4, 2.9.x) or comes from spec.distribution.artifact, else the one the operator last attempted
for the same range (status.lastAttemptedRevision). --mode=direct applies the manifests, and
refuses when the operator manages the instance (the two would undo each other's changes) unless
--force. --mode=auto (the default) picks operator when the operator manages
the instance or runs and nothing was applied directly, direct otherwise. An instance applied directly
moves to the operator with 'kubectl fluxinstance handoff'.

With --contexts or --all-contexts, the clusters are applied in the order given, one at a time (a
rollout: a failure on the first cluster stops the rest; --max-parallel N applies N at once), each
as above with its own mode, lock and wait, from -f FILE or, with -f DIR, from
DIR/<context>/flux-instance.yaml. Each line of output is prefixed with [context]. The rollout
stops at the first failure unless --continue-on-error, and ends with a summary: applied, failed
and not started. The exit status is 1 when a cluster failed or was not started.`,
		Example: applyExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	o.addFlags(cmd, "apply")
	flags := cmd.Flags()
	addDryRunFlag(cmd)
	flags.StringVar(&o.FieldManager, "field-manager", o.FieldManager, "Name of the manager used to track field ownership.")
	flags.BoolVar(&o.ForceConflicts, "force-conflicts", false, "Take over fields owned by other managers than the installers of Flux the plugin takes over anyway.")
	flags.BoolVar(&o.Prune, "prune", o.Prune, "Delete the objects the previous apply created and the new rendering no longer has.")
	flags.BoolVar(&o.Wait, "wait", o.Wait, "Wait until every applied object is ready.")
	flags.DurationVar(&o.Timeout, "timeout", o.Timeout, "How long to wait with --wait.")
	o.outputFlag.addFlag(cmd, "one line per object", "json", "yaml")
	flags.StringVar(&o.Mode, "mode", o.Mode, `How to apply: "auto", "direct" (render and apply the manifests) or "operator" (apply the FluxInstance object for the Flux Operator to reconcile).`)
	flags.BoolVar(&o.Force, "force", false, "Go on where apply would refuse to protect you: in either mode, upgrade even though objects would lose fields the new API versions drop, or Kustomizations still apply Flux objects at removed versions, or take over a Flux that a Helm release still owns (adopt it with migrate instead); with --mode=direct, apply the manifests even though the Flux Operator manages the instance.")
	addStrictFlag(cmd, &o.Strict)
	o.lockFlag.addFlag(cmd)
	// One at a time by default: a rollout learns from the first cluster before it touches the next.
	o.fleet.addFlags(cmd, 1, "how many clusters are applied at once (a rollout: 1 by default).")
	flags.BoolVar(&o.ContinueOnError, "continue-on-error", false, "With --contexts or --all-contexts: go on with the next clusters after one failed.")
	return cmd
}

// Complete derives the dry-run mode and the namespace override.
func (o *ApplyOptions) Complete(cmd *cobra.Command) error {
	var err error
	if o.dryRun, err = dryRunMode(cmd); err != nil {
		return err
	}
	if o.requestTimeout, err = requestTimeout(o.configFlags); err != nil {
		return usageError(cmd, "%v", err)
	}
	o.namespace, o.enforceNS = explicitNamespace(cmd)
	return o.fleet.complete(cmd, o.configFlags)
}

// Validate checks the flags.
func (o *ApplyOptions) Validate(cmd *cobra.Command) error {
	if len(o.Filenames) == 0 {
		return usageError(cmd, "-f, --filename is required")
	}
	if err := o.validateFleet(cmd); err != nil {
		return err
	}
	if err := o.outputFlag.validate(cmd); err != nil {
		return err
	}
	if o.FieldManager == "" {
		return usageError(cmd, "--field-manager must not be empty")
	}
	if o.Timeout <= 0 {
		return usageError(cmd, "--timeout must be positive")
	}
	switch o.Mode {
	case modeAuto, modeDirect, modeOperator:
	default:
		return usageError(cmd, `--mode must be "auto", "direct" or "operator", got %q`, o.Mode)
	}
	return nil
}

// Run renders first (bad input changes nothing), then connects, reconciles and waits.
func (o *ApplyOptions) Run(ctx context.Context) error {
	if o.fleet.enabled() {
		return o.runFleet(ctx)
	}
	r, err := o.render(ctx, o.In, o.namespace, o.enforceNS, warnTo(o.ErrOut))
	// A version the plugin's distribution lacks may still be the operator's to resolve: the
	// mode decides, once connected.
	var unresolved *unresolvedVersionError
	if errors.As(err, &unresolved) && o.Mode != modeDirect {
		r = unresolved.partial
	} else if err != nil {
		return err
	}
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return err
	}
	m := apply.NewManager(kube.Instance{Client: conn.Client, Name: r.Instance.Name, Namespace: r.Instance.Namespace})
	mode, mg, err := chooseMode(ctx, m, o.Mode, o.Force, o.ErrOut)
	if err != nil {
		return err
	}
	if err := refuseHelmOwned(ctx, conn.Client, o.Force, o.dryRun, o.ErrOut); err != nil {
		return err
	}
	if unresolved != nil {
		if mode != modeOperator {
			return unresolved
		}
		fmt.Fprintf(o.ErrOut, "Note: %v; the Flux Operator resolves it from its own distribution (the sync preflight and the storage migration need a rendering and were skipped)\n", unresolved)
	} else if err := preflightSync(ctx, conn, r.Instance, r.Objects, o.Strict, o.ErrOut); err != nil {
		return err
	}
	if mode == modeOperator {
		return o.runOperator(ctx, conn, m, r, unresolved == nil, mg.Instance)
	}
	record, err := applyRecord(r, o.version)
	if err != nil {
		return err
	}
	opts := apply.ReconcileOptions{
		Options: apply.Options{FieldManager: o.FieldManager, DryRun: o.dryRun, ForceConflicts: o.ForceConflicts},
		Prune:   o.Prune,
		Record:  record,
	}
	migration, err := planMigration(ctx, m.Client, r)
	if err != nil {
		return err
	}
	var res *apply.ReconcileResult
	if o.dryRun.Changes() {
		res, err = o.reconcile(ctx, conn, m, mg, r.Objects, opts, migration)
	} else {
		res, err = o.preview(ctx, m, r.Objects, opts, migration)
	}
	if err != nil {
		return err
	}
	return o.reportAndWait(ctx, m, res, r.Objects)
}

// refuseHelmOwned stops an apply over a Flux that a Helm release still owns: the apply would take
// the objects over but leave the release, whose `helm uninstall` (or a Terraform destroy, or
// helm-controller when its HelmRelease is deleted) deletes what its manifest lists, the CRDs with
// every team's Flux objects among them. `migrate` sets the release aside once it has taken the
// objects over. A dry run, or --force, only warns; a user who may not read the CRD is not stopped.
func refuseHelmOwned(ctx context.Context, c client.Reader, force bool, dryRun kube.DryRun, errOut io.Writer) error {
	inst, err := installation.DetectInstallation(ctx, c)
	if err != nil || inst.ManagedBy != installation.ManagedByHelm || inst.Helm == nil {
		return nil
	}
	msg := fmt.Sprintf("Flux is installed by Helm (%s): apply would take its objects over but leave the release, whose `helm uninstall` (or a Terraform destroy, or helm-controller once its HelmRelease is deleted) would then delete every Flux CRD and with them every team's Flux objects; "+
		"adopt it with `kubectl fluxinstance migrate` instead (it sets the release aside once the takeover is verified), or pass --force to apply anyway", inst.Helm.Summary())
	if force || !dryRun.Changes() {
		fmt.Fprintf(errOut, "Warning: %s\n", msg)
		return nil
	}
	return errors.New(msg)
}

// reportAndWait prints what the apply did and, with --wait, waits until every object is ready.
func (o *ApplyOptions) reportAndWait(ctx context.Context, m *apply.Manager, res *apply.ReconcileResult, objects []*unstructured.Unstructured) error {
	report := newChangeReport(res.ChangeSet, string(o.dryRun), res.Warnings())
	if err := printChanges(o.Out, o.Output, report); err != nil {
		return err
	}
	for _, w := range res.Warnings() {
		fmt.Fprintf(o.ErrOut, "Warning: %s\n", w)
	}
	if !o.Wait || o.dryRun != kube.DryRunNone {
		return nil
	}
	fmt.Fprintf(o.ErrOut, "waiting up to %s for %d objects to be ready\n", o.Timeout, len(objects))
	start := time.Now()
	err := wait.UntilReady(ctx, m.Client, objects, o.Timeout, func(ready, total int, notReady []string) {
		fmt.Fprintf(o.ErrOut, "%d/%d ready after %s; waiting for %s\n", ready, total, time.Since(start).Round(time.Second), summarize(notReady, 5))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "all %d objects ready after %s\n", len(objects), time.Since(start).Round(time.Second))
	return nil
}

// preview is a dry run of reconcile: what the migration would lose and do, then what applying
// and pruning would do. Nothing changes.
func (o *ApplyOptions) preview(ctx context.Context, m *apply.Manager, objects []*unstructured.Unstructured, opts apply.ReconcileOptions, migration *storage.Plan) (*apply.ReconcileResult, error) {
	if err := o.previewMigration(ctx, m, migration, objects); err != nil {
		return nil, err
	}
	if !migration.Empty() {
		// The API server refuses the rendered CRDs even in a dry run until the migration is
		// done: the preview sends them as the migration leaves them.
		var err error
		if objects, err = migration.PreviewObjects(ctx, m.Client, objects); err != nil {
			return nil, err
		}
	}
	return m.Reconcile(ctx, objects, opts)
}

// reconcile applies for real: every permission the apply needs is checked before its first
// write (a refusal halfway would leave the CRDs and cluster RBAC applied and the controllers
// not), then the checks and the instance Namespace the lock needs, then the apply under the lock.
func (o *ApplyOptions) reconcile(ctx context.Context, conn *kube.Connection, m *apply.Manager, mg *management, objects []*unstructured.Unstructured, opts apply.ReconcileOptions, migration *storage.Plan) (*apply.ReconcileResult, error) {
	perms, err := permissions.ForApply(m.Client.RESTMapper(), permissions.ApplyPlan{
		Name: m.Name, Namespace: m.Namespace, Objects: objects, Previous: mg.Record,
		Prune: o.Prune, Wait: o.Wait, FluxInstance: mg.Instance != nil, Storage: migration,
	})
	if err != nil {
		return nil, err
	}
	if err := o.checkBeforeChange(ctx, m, perms, migration, objects); err != nil {
		return nil, err
	}
	if opts.NamespaceCreated, err = m.Prepare(ctx, objects, opts); err != nil {
		return nil, err
	}
	var res *apply.ReconcileResult
	err = o.withLock(ctx, m.Instance, "apply", o.ErrOut, func(ctx context.Context) (err error) {
		// Planned again under the lock only when there was something to migrate: an apply with
		// nothing to migrate (nearly all) does not pay for a second round of CRD reads. Were a
		// concurrent older apply to store objects at a version the rendering drops meanwhile, the
		// API server would refuse the CRD stage before anything is lost, and a re-run migrates.
		if !migration.Empty() {
			if err := o.migrateStorage(ctx, conn, m, objects); err != nil {
				return err
			}
		}
		res, err = m.Reconcile(ctx, objects, opts)
		return err
	})
	return res, err
}

// applyRecord is what the inventory keeps about this apply: the operator's revision form for the
// rendering, and the instance itself so that `status` can re-render it.
func applyRecord(r *rendering, pluginVersion string) (inventory.RecordInfo, error) {
	digest, err := renderingDigest(r.Objects)
	if err != nil {
		return inventory.RecordInfo{}, err
	}
	// Only what defines the rendering: status and server-set metadata are not the user's intent.
	// The instance as the user wrote it when there is one, so that a hand-off gives the operator
	// the user's object rather than one with every default spelled out.
	var instance any = map[string]any{
		"apiVersion": fluxinstance.APIVersion,
		"kind":       fluxinstance.Kind,
		"metadata":   map[string]any{"name": r.Instance.Name, "namespace": r.Instance.Namespace},
		"spec":       r.Instance.Spec,
	}
	if r.Object != nil {
		instance = r.Object.Object
	}
	data, err := yaml.Marshal(instance)
	if err != nil {
		return inventory.RecordInfo{}, err
	}
	return inventory.RecordInfo{
		PluginVersion: pluginVersion,
		Distribution:  recordedDistribution(r.DistributionRef),
		FluxVersion:   r.Version,
		Digest:        r.Version + "@sha256:" + digest,
		Instance:      string(data),
	}, nil
}

// The inventory records the distribution as given to distribution.Open, with a name for the
// embedded one, so that `status` can open it again.
const embeddedDistributionRef = "embedded"

func recordedDistribution(ref string) string {
	if ref == "" {
		return embeddedDistributionRef
	}
	return ref
}

// renderingDigest hashes the rendered YAML stream, like the operator's lastAppliedRevision.
func renderingDigest(objs []*unstructured.Unstructured) (string, error) {
	var buf bytes.Buffer
	for _, obj := range objs {
		data, err := yaml.Marshal(obj.Object)
		if err != nil {
			return "", err
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	return fmt.Sprintf("%x", sha256.Sum256(buf.Bytes())), nil
}

// explicitNamespace returns -n when the user typed it: only then does it override (and is
// checked against) the namespace in the file, as kubectl enforces it.
func explicitNamespace(cmd *cobra.Command) (string, bool) {
	if f := cmd.Flags().Lookup("namespace"); f != nil && f.Changed {
		return f.Value.String(), true
	}
	return "", false
}

func warnTo(w interface{ Write([]byte) (int, error) }) func(string) {
	return func(msg string) { fmt.Fprintf(w, "Warning: %s\n", msg) }
}

// summarize lists at most n items and says how many more there are.
func summarize(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// runOperator applies the FluxInstance object and waits for the Flux Operator to reconcile it.
// The rendering is not applied; it validated the instance, fed the preflight checks and, when
// rendered is true (the plugin's distribution has the version), plans the storage migration the
// upgrade needs: the operator applies the new CRDs before it migrates anything, so the API
// server would refuse them. The migration runs first, with the user's permissions, for the
// version the operator will apply (operatorTarget); live is the FluxInstance as it is (nil when
// there is none).
func (o *ApplyOptions) runOperator(ctx context.Context, conn *kube.Connection, m *apply.Manager, r *rendering, rendered bool, live *operator.State) error {
	var migration *storage.Plan
	var target []*unstructured.Unstructured
	if rendered {
		var err error
		if migration, target, err = o.operatorMigration(ctx, m, r, live); err != nil {
			return err
		}
	}
	var action, token string
	var err error
	switch {
	case o.dryRun != kube.DryRunNone:
		if err = o.previewMigration(ctx, m, migration, target); err == nil {
			action, err = o.applyInstance(ctx, m, r)
		}
	case migration.Empty():
		// One write, refused whole or done whole: no lock, no permission check beforehand.
		action, err = o.applyInstance(ctx, m, r)
	default:
		action, token, err = o.migrateThenApplyInstance(ctx, conn, m, r, migration, target)
	}
	if err != nil {
		return err
	}
	return o.reportAndWaitOperator(ctx, m, r, action, token)
}

// operatorMigration plans the storage migration for operator mode, against the rendering of the
// version the operator will apply (operatorTarget), which it returns with the plan. When that
// version is not known, a migration the plugin's own rendering needs is only said: migrating to
// storage versions the operator's CRDs lack would make the API server refuse them.
func (o *ApplyOptions) operatorMigration(ctx context.Context, m *apply.Manager, r *rendering, live *operator.State) (*storage.Plan, []*unstructured.Unstructured, error) {
	migration, err := storage.NewPlan(ctx, m.Client, r.Objects)
	if err != nil || migration.Empty() {
		return nil, nil, err
	}
	target, reason, err := o.operatorTarget(ctx, r, live)
	if err != nil {
		return nil, nil, err
	}
	if target == nil {
		fmt.Fprintf(o.ErrOut, "Note: Flux %s would need a storage migration of %d CRDs first; nothing is migrated: %s.\n",
			r.Version, len(migration.Migrations), reason)
		return nil, nil, nil
	}
	if reason != "" {
		fmt.Fprintf(o.ErrOut, "storage migration: %s\n", reason)
	}
	if target != r {
		if migration, err = storage.NewPlan(ctx, m.Client, target.Objects); err != nil || migration.Empty() {
			return nil, nil, err
		}
	}
	return migration, target.Objects, allowMigration(migration, r.Instance)
}

// migrateThenApplyInstance checks every permission and what the upgrade loses before the first
// change, then migrates and applies the FluxInstance under the instance's lock (so that no other
// apply, migrate or handoff of the plugin writes meanwhile). The wait for the operator is left
// to the caller, after the lock is released, with the token of the reconcile requested after the
// apply: the operator may already have failed on this very spec (applied with kubectl, say) and
// be waiting out its retry; it reconciles now, and the wait is for that reconcile, not for the
// failure before the migration.
func (o *ApplyOptions) migrateThenApplyInstance(ctx context.Context, conn *kube.Connection, m *apply.Manager, r *rendering, migration *storage.Plan, target []*unstructured.Unstructured) (action, token string, err error) {
	perms := permissions.ForOperatorApply(permissions.OperatorApplyPlan{Name: m.Name, Namespace: m.Namespace, Storage: migration})
	if err := o.checkBeforeChange(ctx, m, perms, migration, target); err != nil {
		return "", "", err
	}
	err = o.withLock(ctx, m.Instance, "apply", o.ErrOut, func(ctx context.Context) (err error) {
		if err := o.migrateStorage(ctx, conn, m, target); err != nil {
			return err
		}
		if action, err = o.applyInstance(ctx, m, r); err != nil {
			return err
		}
		token, err = operator.RequestReconcile(ctx, m.Instance, o.FieldManager, time.Now())
		return err
	})
	return action, token, err
}

// minorWildcard is "2.9.x" for "v2.9.4".
func minorWildcard(version string) string {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return version
	}
	return parts[0] + "." + parts[1] + ".x"
}

func (o *ApplyOptions) applyInstance(ctx context.Context, m *apply.Manager, r *rendering) (string, error) {
	return operator.ApplyFluxInstance(ctx, m.Instance, r.Object, o.FieldManager, o.dryRun, "")
}

// reportAndWaitOperator prints the FluxInstance's change and, with --wait, waits until the
// operator reports it Ready (for the reconcile request token, when set).
func (o *ApplyOptions) reportAndWaitOperator(ctx context.Context, m *apply.Manager, r *rendering, action, token string) error {
	gvk := r.Object.GroupVersionKind()
	report := ChangeReport{DryRun: string(o.dryRun), Changes: []Change{{
		Kind: gvk.Kind, Group: gvk.Group, APIVersion: gvk.GroupVersion().String(),
		Namespace: m.Namespace, Name: m.Name, Action: action,
	}}}
	if o.dryRun == kube.DryRunNone {
		report.DryRun = ""
	}
	if err := printChanges(o.Out, o.Output, report); err != nil {
		return err
	}
	if !o.Wait || o.dryRun != kube.DryRunNone {
		return nil
	}
	ref := fmt.Sprintf("FluxInstance %s/%s", m.Namespace, m.Name)
	fmt.Fprintf(o.ErrOut, "waiting up to %s for the Flux Operator to reconcile %s\n", o.Timeout, ref)
	start := time.Now()
	state, err := operator.WaitForOperator(ctx, m.Instance, token, o.Timeout, func(s *operator.State) {
		fmt.Fprintf(o.ErrOut, "%s after %s: %s\n", ref, time.Since(start).Round(time.Second), s.Summary())
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "%s ready after %s: applied %s, %d objects in its inventory\n", ref, time.Since(start).Round(time.Second), state.LastAppliedRevision, state.Inventory)
	return nil
}
