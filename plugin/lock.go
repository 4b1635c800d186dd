package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
)

// lockFlag is --wait-lock, shared by the commands that change an instance (apply, delete,
// migrate, handoff): they hold the instance's lock while they write.
type lockFlag struct {
	WaitLock time.Duration
}

func (f *lockFlag) addFlag(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&f.WaitLock, "wait-lock", 0,
		"How long to wait when another command holds the instance (0 fails at once, naming the holder).")
}

// withLock runs work holding the instance's lock for command. work gets a context that is
// cancelled if the lock is lost (then the error says so). A failed release is a warning: the
// claim then expires on its own within lock.DefaultDuration.
func (f *lockFlag) withLock(ctx context.Context, inst kube.Instance, command string, errOut io.Writer, work func(context.Context) error) error {
	lockCtx, l, err := lock.Acquire(ctx, inst, lock.Options{
		Command:  command,
		Wait:     f.WaitLock,
		Progress: func(msg string) { fmt.Fprintln(errOut, msg) },
	})
	if err != nil {
		return err
	}
	err = work(lockCtx)
	if rerr := l.Release(); rerr != nil {
		fmt.Fprintf(errOut, "Warning: %v\n", rerr)
	}
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(lockCtx), lock.ErrLost) {
		return fmt.Errorf("%w (stopped at: %v)", lock.ErrLost, err)
	}
	return err
}
