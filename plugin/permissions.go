package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/permissions"
)

// checkPermissions refuses a command before its first change when the user lacks any permission
// its plan needs, listing every missing one (*permissions.MissingError). A check the API server
// does not answer (SelfSubjectAccessReviews refused or not served) does not block: the API server
// still authorizes each request, so the command goes on, after saying that it could not check.
func checkPermissions(ctx context.Context, c client.Client, command string, perms []permissions.Permission, errOut io.Writer) error {
	missing, err := permissions.Check(ctx, c, perms)
	var unchecked *permissions.UncheckedError
	switch {
	case errors.As(err, &unchecked):
		fmt.Fprintf(errOut, "Warning: could not check your permissions before the %s (%v); going on: the API server still refuses what you may not do, but possibly after part of the %s is done\n",
			command, unchecked.Err, command)
		return nil
	case err != nil:
		return err
	case len(missing) > 0:
		return &permissions.MissingError{Command: command, Missing: missing}
	}
	return nil
}
