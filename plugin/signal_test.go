package plugin

import (
	"bufio"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// signalChildEnv makes the test binary, re-run by TestSecondSignalExitsAtOnce, act as a command
// stuck where the first signal's cancellation does not reach (a library ignoring its context).
const signalChildEnv = "FLUXINSTANCE_SIGNAL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(signalChildEnv) != "" {
		ctx, stop := interruptible()
		defer stop()
		os.Stdout.WriteString("ready\n")
		<-ctx.Done()
		os.Stdout.WriteString("cancelled\n")
		time.Sleep(time.Minute) // stuck: only the second signal ends it
		os.Exit(0)
	}
	testenv.Main(m)
}

// The first SIGINT (or SIGTERM) cancels the command's context; a second one ends the process at
// once with status 130, as a second Ctrl-C does kubectl.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), signalChildEnv+"=1")
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			lines := make(chan string, 2)
			go func() {
				for sc := bufio.NewScanner(out); sc.Scan(); {
					lines <- sc.Text()
				}
			}()
			require.Equal(t, "ready", waitLine(t, lines))
			require.NoError(t, cmd.Process.Signal(sig))
			require.Equal(t, "cancelled", waitLine(t, lines), "the first signal cancels the context")
			start := time.Now()
			require.NoError(t, cmd.Process.Signal(sig))
			err = cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			assert.Equal(t, 130, exit.ExitCode())
			assert.Less(t, time.Since(start), 10*time.Second, "at once, not after the stuck minute")
		})
	}
}

func waitLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l := <-lines:
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("the child said nothing")
		return ""
	}
}
