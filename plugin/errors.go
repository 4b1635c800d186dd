package plugin

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// UsageError is a mistake in how the command was called: it exits 2 and points at --help instead of
// printing the whole usage text.
type UsageError struct {
	msg string
}

func (e *UsageError) Error() string { return e.msg }

func usageError(cmd *cobra.Command, format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf("%s\nSee '%s -h' for help and examples", fmt.Sprintf(format, args...), cmd.CommandPath())}
}

// ExitError ends the process with Code, printing Err (if any) as "error: ...". Commands use it
// where kubectl uses a specific exit code, like diff's 1 for "differences found".
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// wrapArgsValidation turns cobra's positional-argument errors into UsageErrors, recursively, so that
// every command exits 2 for wrong arguments.
func wrapArgsValidation(cmd *cobra.Command) {
	if validate := cmd.Args; validate != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := validate(c, args); err != nil {
				return usageError(c, "%s", err)
			}
			return nil
		}
	}
	for _, c := range cmd.Commands() {
		wrapArgsValidation(c)
	}
}

// isCobraUsageError recognises the errors cobra itself returns for unknown commands, which do not go
// through the flag or argument hooks.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "required flag(s)")
}
