package plugin

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/preflight"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// The sync preflight of apply, diff and migrate: what `create secret` fixes.

// addStrictFlag adds --strict to a command that runs the sync preflight.
func addStrictFlag(cmd *cobra.Command, strict *bool) {
	cmd.Flags().BoolVar(strict, "strict", false, "Treat the warnings of the sync preflight (a missing or incomplete pull secret, a provider that does not fit the URL) as errors, before anything changes.")
}

// preflightSync checks the sync configuration of inst against the cluster and prints what it
// finds on errOut as "Warning: ..." and "Note: ..."; with strict, warnings fail the command.
func preflightSync(ctx context.Context, conn *kube.Connection, inst *fluxinstance.FluxInstance, objects []*unstructured.Unstructured, strict bool, errOut io.Writer) error {
	findings, err := preflight.Check(ctx, conn.Client, inst, objects)
	if err != nil {
		return fmt.Errorf("checking the sync configuration: %w", err)
	}
	warnings := 0
	for _, f := range findings {
		fmt.Fprintf(errOut, "%s: %s\n", f.Severity, f.Message)
		if f.Severity == preflight.Warning {
			warnings++
		}
	}
	if strict && warnings > 0 {
		return fmt.Errorf("--strict: the sync preflight found %d problem(s), see the warnings above; nothing was changed", warnings)
	}
	return nil
}
