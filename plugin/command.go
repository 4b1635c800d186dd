package plugin

import (
	"context"

	"github.com/spf13/cobra"
)

// commandOptions is the shape of every command's options struct, kubectl's pattern: Complete
// derives what the flags imply, Validate rejects bad combinations (as usage errors), Run acts.
type commandOptions interface {
	Complete(cmd *cobra.Command) error
	Validate(cmd *cobra.Command) error
	Run(ctx context.Context) error
}

// runE is the RunE of a command whose options follow commandOptions.
func runE(o commandOptions) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if err := o.Complete(cmd); err != nil {
			return err
		}
		if err := o.Validate(cmd); err != nil {
			return err
		}
		return o.Run(cmd.Context())
	}
}
