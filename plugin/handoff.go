package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/handoff"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

const handoffExample = `  # See what handing the instance in flux-system to the Flux Operator would do
  kubectl fluxinstance handoff --dry-run

  # Hand it over and wait up to 10 minutes for the operator's first reconcile
  kubectl fluxinstance handoff -n flux-system --timeout 10m`

// HandoffOptions holds the flags of `kubectl fluxinstance handoff`.
type HandoffOptions struct {
	lockFlag
	outputFlag
	distributionFlags
	Timeout time.Duration

	dryRun      kube.DryRun
	namespace   string
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams
}

// HandoffReport is what `handoff -o json|yaml` prints.
type HandoffReport struct {
	Namespace string                    `json:"namespace"`
	Operator  operator.OperatorPresence `json:"operator"`
	// Resuming says where an interrupted hand-off stopped.
	Resuming string          `json:"resuming,omitempty"`
	Objects  int             `json:"objects"`
	Create   []string        `json:"create"`
	Delete   []string        `json:"delete"`
	DryRun   bool            `json:"dryRun,omitempty"`
	Result   *handoff.Result `json:"result,omitempty"`
}

// NewCmdHandoff returns the `handoff` command.
func NewCmdHandoff(configFlags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &HandoffOptions{configFlags: configFlags, IOStreams: streams, Timeout: 5 * time.Minute}
	cmd := &cobra.Command{
		Use:   "handoff",
		Short: "Hand an instance applied by this plugin to the Flux Operator, restarting and deleting nothing",
		Long: `Hand the instance this plugin applied in a namespace to the Flux Operator running in the cluster:
create the FluxInstance the plugin last applied with reconciliation disabled, give it the plugin's
inventory as its status.inventory (so the operator garbage-collects exactly what the plugin would
have), move every object's fields from the plugin's field manager to flux-operator, then enable
reconciliation and wait for the operator's first reconcile. The plan lists what that reconcile may
create or delete (nothing, when the cluster is as the last apply left it); anything else it did, or an
object recreated or a controller restarted, fails the command. The plugin's inventory ConfigMap is
removed last. Safe to re-run: an interrupted hand-off continues where it stopped.

Afterwards 'kubectl fluxinstance apply' applies the FluxInstance for the operator (--mode=auto).`,
		Example: handoffExample,
		Args:    cobra.NoArgs,
		RunE:    runE(o),
	}
	f := cmd.Flags()
	addDryRunFlag(cmd)
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "How long to wait for the operator's first reconcile.")
	o.outputFlag.addFlag(cmd, "a plan and a result in words", "json", "yaml")
	o.lockFlag.addFlag(cmd)
	o.distributionFlags.addFlags(cmd, "render the plan from", "the one the last apply used")
	return cmd
}

// Complete reads -n.
func (o *HandoffOptions) Complete(cmd *cobra.Command) error {
	o.namespace, _ = explicitNamespace(cmd)
	var err error
	if o.requestTimeout, err = requestTimeout(o.configFlags); err != nil {
		return usageError(cmd, "%v", err)
	}
	o.dryRun, err = dryRunMode(cmd)
	return err
}

// Validate checks the flags.
func (o *HandoffOptions) Validate(cmd *cobra.Command) error {
	if err := o.outputFlag.validate(cmd); err != nil {
		return err
	}
	if o.Timeout <= 0 {
		return usageError(cmd, "--timeout must be positive")
	}
	return nil
}

// Run plans, then (unless --dry-run) hands off and checks the operator's first reconcile.
func (o *HandoffOptions) Run(ctx context.Context) error {
	conn, err := kube.Connect(o.configFlags)
	if err != nil {
		return err
	}
	ns := o.namespace
	if ns == "" {
		inst, err := installation.DetectInstallation(ctx, conn.Client)
		if err != nil {
			return err
		}
		ns = inst.Namespace
	}
	if ns == "" {
		ns = fluxinstance.DefaultNamespace
	}
	inst := kube.Instance{Client: conn.Client, Name: fluxinstance.RequiredName, Namespace: ns}
	if !o.dryRun.Changes() {
		return o.handoff(ctx, inst)
	}
	// Planned under the lock: the plan is made from the record no other command is changing.
	err = o.withLock(ctx, inst, "handoff", o.ErrOut, func(ctx context.Context) error {
		return o.handoff(ctx, inst)
	})
	var noNamespace *lock.NamespaceNotFoundError
	if errors.As(err, &noNamespace) {
		// Nothing to lock, so nothing to hand off: the plan says why in the hand-off's words.
		return o.handoff(ctx, inst)
	}
	return err
}

// handoff plans, prints the plan, and (unless --dry-run) hands off.
func (o *HandoffOptions) handoff(ctx context.Context, inst kube.Instance) error {
	plan, err := handoff.NewPlan(ctx, inst, o.renderRecord)
	var done *handoff.HandedOffError
	if errors.As(err, &done) {
		// The state the command is for: a re-run after a complete (or interrupted at its very
		// end) hand-off succeeds, like an apply with nothing to change.
		fmt.Fprintf(o.ErrOut, "Nothing to do: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	report := &HandoffReport{
		Namespace: inst.Namespace, Operator: plan.Operator, Resuming: plan.Stage, Objects: len(plan.Inventory.Entries),
		Create: nonNil(plan.Create), Delete: nonNil(plan.Delete), DryRun: !o.dryRun.Changes(),
	}
	if o.Output == "" {
		o.printPlan(report)
	}
	constraint, _, _ := unstructured.NestedString(plan.Instance.Object, "spec", "distribution", "version")
	if w := minorDrift(constraint, plan.Inventory.FluxVersion); w != "" {
		fmt.Fprintf(o.ErrOut, "Warning: %s\n", w)
	}
	if !o.dryRun.Changes() {
		return o.print(report)
	}
	res, err := handoff.Run(ctx, inst, plan, handoff.Options{
		Timeout:  o.Timeout,
		Progress: func(line string) { fmt.Fprintln(o.ErrOut, line) },
	})
	report.Result = res
	if perr := o.print(report); perr != nil && err == nil {
		err = perr
	}
	return err
}

// renderRecord is the hand-off's Renderer: the FluxInstance of the plugin's record, and a fresh
// rendering of it from the distribution the record names (or --distribution).
func (o *HandoffOptions) renderRecord(ctx context.Context, inv *inventory.Inventory) (*unstructured.Unstructured, []*unstructured.Unstructured, error) {
	if inv.Instance == "" {
		return nil, nil, fmt.Errorf("%s holds no FluxInstance (it was written by an older plugin): re-run `kubectl fluxinstance apply` once, then handoff", inv.Source)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(inv.Instance), &obj.Object); err != nil {
		return nil, nil, fmt.Errorf("%s: the recorded FluxInstance: %w", inv.Source, err)
	}
	inst, err := fluxinstance.Decode([]byte(inv.Instance), inv.Source)
	if err != nil {
		return nil, nil, err
	}
	source := o.Distribution
	if source == "" && inv.Distribution != embeddedDistributionRef {
		source = inv.Distribution
	}
	r, err := renderInstance(ctx, inst, "the FluxInstance recorded in "+inv.Source, source,
		o.distributionFlags.options(warnTo(o.ErrOut)))
	if err != nil {
		return nil, nil, err
	}
	return obj, r.Objects, nil
}

// minorDrift warns when the recorded spec.distribution.version admits other minor releases than
// the installed one. The hand-off needs no storage migration otherwise: the installed CRDs are the
// recorded version's, so every version objects are stored at is one they serve, and Flux adds and
// removes API versions only in minor releases. With such a version the operator, which resolves it
// from its own distribution, may upgrade while it takes over; the plugin cannot know to which
// release, so it migrates nothing (migrating to the wrong storage versions could make the API
// server refuse the operator's CRDs) and says so.
func minorDrift(constraint, installed string) string {
	if constraint == "" || installed == "" || distribution.PinsMinor(constraint, installed) {
		return ""
	}
	return fmt.Sprintf("the recorded spec.distribution.version %q admits other minor releases than the installed %s: the Flux Operator resolves it from "+
		"its own distribution and may upgrade Flux while it takes over (restarting the controllers; and failing if objects are stored at API versions "+
		"the newer release removes, which a hand-off does not migrate). To hand off without an upgrade, apply the instance with spec.distribution.version %s first",
		constraint, installed, minorWildcard(installed))
}

func (o *HandoffOptions) printPlan(r *HandoffReport) {
	fmt.Fprintf(o.ErrOut, "Flux Operator: running (%s)\n", r.Operator.Evidence)
	if r.Resuming != "" {
		fmt.Fprintf(o.ErrOut, "Resuming an interrupted hand-off: %s\n", r.Resuming)
	}
	fmt.Fprintf(o.ErrOut, "Hand-off plan for namespace %s: %d objects move to the operator; its first reconcile may create %d and delete %d\n",
		r.Namespace, r.Objects, len(r.Create), len(r.Delete))
	for _, s := range r.Create {
		fmt.Fprintf(o.ErrOut, "  create: %s\n", s)
	}
	for _, s := range r.Delete {
		fmt.Fprintf(o.ErrOut, "  delete: %s\n", s)
	}
}

func (o *HandoffOptions) print(r *HandoffReport) error {
	if ok, err := printStructured(o.Out, o.Output, r); ok {
		return err
	}
	res := r.Result
	switch {
	case r.DryRun:
		fmt.Fprintf(o.Out, "fluxinstance.fluxcd.controlplane.io/flux would be handed to the Flux Operator (dry run)\n")
	case res == nil || res.State == nil:
	case len(res.Unplanned) > 0:
		fmt.Fprintf(o.Out, "fluxinstance.fluxcd.controlplane.io/flux handed off with surprises: %d objects, created %d, deleted %d, recreated %d, restarted %d\n",
			res.Objects, len(res.Created), len(res.Deleted), len(res.Recreated), len(res.Restarted))
	default:
		fmt.Fprintf(o.Out, "fluxinstance.fluxcd.controlplane.io/flux handed off: the Flux Operator applied %s, %d objects (created %d, deleted %d, none recreated or restarted, as planned)\n",
			res.State.LastAppliedRevision, res.Objects, len(res.Created), len(res.Deleted))
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
