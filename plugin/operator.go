package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
)

// How apply reaches the cluster.
const (
	modeAuto = "auto"
	// modeDirect renders and server-side applies the manifests (the plugin manages the instance).
	modeDirect = "direct"
	// modeOperator applies the FluxInstance object for the Flux Operator to reconcile.
	modeOperator = "operator"
)

// management is who manages the instance in a namespace, as apply, diff and status need to know.
type management struct {
	Operator operator.OperatorPresence
	// Instance is the FluxInstance object (nil when there is none).
	Instance *operator.State
	// ByOperator is true when the operator reconciles the instance: the object exists, is not
	// disabled, and the operator runs or has already reconciled it.
	ByOperator bool
	// ByPlugin is true when this plugin's inventory record says it applied the manifests directly.
	ByPlugin bool
	// Record is the inventory record read (nil when there is none).
	Record *inventory.Inventory
}

func detectManagement(ctx context.Context, m *apply.Manager) (*management, error) {
	presence, err := operator.DetectOperator(ctx, m.Instance)
	if err != nil {
		return nil, err
	}
	state, err := operator.FluxInstance(ctx, m.Instance)
	if err != nil {
		return nil, err
	}
	inv, err := m.Store().Read(ctx)
	if err != nil {
		return nil, err
	}
	return &management{
		Operator:   presence,
		Instance:   state,
		ByOperator: state != nil && !state.Disabled && (presence.Running || state.Reconciled),
		ByPlugin:   inv != nil && strings.HasPrefix(inv.Source, "ConfigMap/") && inv.State != inventory.StateDeleted,
		Record:     inv,
	}, nil
}

// chooseMode resolves --mode against the cluster and refuses the combinations that would make
// the plugin and the operator fight over the same objects. It returns what it learnt of the
// instance's management too.
func chooseMode(ctx context.Context, m *apply.Manager, requested string, force bool, errOut io.Writer) (string, *management, error) {
	mg, err := detectManagement(ctx, m)
	if err != nil {
		return "", nil, err
	}
	mode, err := resolveMode(mg, m, requested, force, errOut)
	return mode, mg, err
}

func resolveMode(mg *management, m *apply.Manager, requested string, force bool, errOut io.Writer) (string, error) {
	ref := fmt.Sprintf("FluxInstance %s/%s", m.Namespace, m.Name)
	switch requested {
	case modeDirect:
		if mg.ByOperator && !force {
			return "", fmt.Errorf("%s is reconciled by the Flux Operator (%s): applying its manifests directly would start a fight, "+
				"the operator re-applies its own rendering on its next reconcile and undoes this apply, and each side's garbage collection "+
				"deletes what the other one adds. Apply the FluxInstance with --mode=operator (or --mode=auto) instead; "+
				"or stop the operator first (annotate the FluxInstance %s=disabled) and pass --force", ref, mg.evidence(), operator.AnnotationReconcile)
		}
		if mg.ByOperator {
			fmt.Fprintf(errOut, "Warning: %s is reconciled by the Flux Operator; applying its manifests directly anyway (--force)\n", ref)
		}
		return modeDirect, nil
	case modeOperator:
		if !mg.Operator.Running && !mg.ByOperator {
			return "", fmt.Errorf("the Flux Operator does not run in this cluster (%s): install it, or apply the manifests with --mode=direct", mg.Operator.Evidence)
		}
		if mg.ByPlugin && mg.Instance == nil {
			return "", fmt.Errorf("the instance in namespace %s was applied directly by kubectl-fluxinstance: hand it to the operator with "+
				"`kubectl fluxinstance handoff -n %s`, which moves this plugin's inventory and field ownership to the operator first "+
				"(applying the FluxInstance alone would leave both managers owning the same fields)", m.Namespace, m.Namespace)
		}
		return modeOperator, nil
	}
	// auto
	switch {
	case mg.ByOperator:
		return modeOperator, nil
	case mg.Operator.Running && !mg.ByPlugin:
		return modeOperator, nil
	case mg.Operator.Running:
		fmt.Fprintf(errOut, "Note: the Flux Operator runs in this cluster (%s), but the instance in namespace %s is applied directly by "+
			"kubectl-fluxinstance; applying directly. Hand it to the operator with `kubectl fluxinstance handoff -n %s`.\n",
			mg.Operator.Evidence, m.Namespace, m.Namespace)
	}
	return modeDirect, nil
}

func (mg *management) evidence() string {
	if mg.Operator.Running {
		return mg.Operator.Evidence
	}
	return "the object carries the operator's finalizer and status"
}

// operatorTarget returns the rendering of the Flux version the Flux Operator will apply for the
// instance, which a storage migration must target (storage versions its CRDs lack would make the
// API server refuse them), with a line saying how it is known ("" when by the version alone); or
// nil, with why it cannot be known and what to do. The operator resolves spec.distribution.version from its own
// distribution (its built-in one, or spec.distribution.artifact), so the plugin's rendering r is
// the operator's only when:
//   - the version pins the minor (2.9.4, 2.9.x): API versions change only in minor releases, so
//     every release it admits stores at the same versions;
//   - r was rendered from spec.distribution.artifact, which the operator pulls too.
//
// Otherwise the operator has told: once it reconciled this version constraint from this
// distribution source (live, at its current generation), status.lastAttemptedRevision names the
// version it resolved, also when the API server refused that version's CRDs. That is the case
// this is for: an operator upgraded with a newer distribution tries the newer Flux that "2.x"
// admits on its own and fails on the stored versions. That version is rendered from the
// plugin's distribution.
func (o *ApplyOptions) operatorTarget(ctx context.Context, r *rendering, live *operator.State) (*rendering, string, error) {
	spec := r.Instance.Spec.Distribution
	if distribution.PinsMinor(spec.Version, r.Version) {
		return r, "", nil
	}
	if spec.Artifact != "" && r.DistributionRef == spec.Artifact {
		return r, fmt.Sprintf("the Flux Operator resolves %q from %s too", spec.Version, spec.Artifact), nil
	}
	attempted := lastAttemptedVersion(live, spec.Version, spec.Artifact)
	if attempted == "" {
		return nil, fmt.Sprintf("spec.distribution.version %q admits other minor releases, which the Flux Operator may resolve from its own "+
			"distribution. Pin the minor (e.g. %s) to have apply migrate first; or, should the operator's reconcile fail on "+
			"status.storedVersions, run this apply again: the operator's attempt names the version it resolves %q to, and apply "+
			"migrates for it", spec.Version, minorWildcard(r.Version), spec.Version), nil
	}
	if attempted == r.Version {
		return r, fmt.Sprintf("the Flux Operator resolves %q to %s (its status.lastAttemptedRevision)", spec.Version, attempted), nil
	}
	// A copy at that version. r.Instance is defaulted already, so renderInstance defaulting the
	// copy changes nothing the two share.
	pinned := *r.Instance
	pinned.Spec.Distribution.Version = strings.TrimPrefix(attempted, "v")
	target, err := renderInstance(ctx, &pinned, r.File, r.DistributionRef, o.distributionFlags.options(func(string) {}))
	var unresolved *unresolvedVersionError
	if errors.As(err, &unresolved) {
		return nil, fmt.Sprintf("the Flux Operator resolves %q to %s (its status.lastAttemptedRevision), which the plugin's distribution (%s) lacks. "+
			"Pass --distribution with one that has it (the operator's own) to have apply migrate first", spec.Version, attempted, r.DistributionSource), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("rendering Flux %s, the version the Flux Operator resolves %q to: %w", attempted, spec.Version, err)
	}
	return target, fmt.Sprintf("the Flux Operator resolves %q to %s (its status.lastAttemptedRevision), not %s: migrating for %s", spec.Version, attempted, r.Version, attempted), nil
}

// lastAttemptedVersion is the Flux version ("v2.9.4") of the live FluxInstance's
// status.lastAttemptedRevision when the operator's last reconcile was of the current generation
// and that generation asks for the same version constraint from the same artifact: the version
// the operator resolves them to. "" otherwise.
func lastAttemptedVersion(live *operator.State, constraint, artifact string) string {
	if live == nil || live.LastAttemptedRevision == "" || !live.Current("") {
		return ""
	}
	liveConstraint, _, _ := unstructured.NestedString(live.Object.Object, "spec", "distribution", "version")
	liveArtifact, _, _ := unstructured.NestedString(live.Object.Object, "spec", "distribution", "artifact")
	if liveConstraint != constraint || liveArtifact != artifact {
		return ""
	}
	version, _, _ := strings.Cut(live.LastAttemptedRevision, "@")
	return version
}
