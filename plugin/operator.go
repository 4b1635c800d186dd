package plugin

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/operator"
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
