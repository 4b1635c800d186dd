package plugin

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// fleetKubeconfig writes a kubeconfig whose contexts point at the given servers.
func fleetKubeconfig(t *testing.T, servers map[string]string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	for name, server := range servers {
		cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: "unused"}
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

func TestStatusFleetUsageErrors(t *testing.T) {
	kc := fleetKubeconfig(t, map[string]string{"a": "https://127.0.0.1:1", "b": "https://127.0.0.1:1"})
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown context":       {[]string{"--contexts", "a,c"}, `the kubeconfig has no context named "c"; its contexts are: a, b`},
		"both selections":       {[]string{"--contexts", "a", "--all-contexts"}, "--contexts and --all-contexts exclude each other"},
		"with --context":        {[]string{"--all-contexts", "--context", "a"}, "--context selects one cluster"},
		"no parallelism":        {[]string{"--all-contexts", "--max-parallel", "0"}, "--max-parallel must be at least 1; got 0"},
		"parallel without many": {[]string{"--max-parallel", "4"}, "--max-parallel needs --contexts or --all-contexts"},
		"markdown for one":      {[]string{"-o", "markdown"}, "-o markdown prints the fleet table: add --contexts or --all-contexts"},
		"bad timeout":           {[]string{"--all-contexts", "--request-timeout", "soon"}, `invalid --request-timeout "soon"`},
	} {
		t.Run(name, func(t *testing.T) {
			r := runPlugin(t, "", append([]string{"status", "--kubeconfig", kc}, tc.args...)...)
			assert.Equal(t, 2, r.Code, r.Stderr)
			assert.Contains(t, r.Stderr, tc.want)
			assert.Empty(t, r.Stdout)
		})
	}
}

// Ctrl-C stops every cluster in flight, starts no other, and still prints the table with a row
// for each context, then the summary.
func TestStatusFleetInterrupt(t *testing.T) {
	kc := fleetKubeconfig(t, map[string]string{
		"a-silent": testenv.SilentServer(t), "b-silent": testenv.SilentServer(t),
		"c-closed": testenv.ClosedPort(t), "d-silent": testenv.SilentServer(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first two hang until the interrupt; a minute of --request-timeout would hold them.
	time.AfterFunc(500*time.Millisecond, cancel)
	var out, errOut bytes.Buffer
	start := time.Now()
	code := run(ctx, []string{"status", "--all-contexts", "--max-parallel", "2", "--request-timeout", "1m", "--kubeconfig", kc},
		genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, testBuildInfo)
	assert.Less(t, time.Since(start), 30*time.Second, "stopped by the interrupt, not by --request-timeout")
	assert.Equal(t, 1, code)
	t.Logf("\n%s%s", out.String(), errOut.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 5)
	assert.Regexp(t, `^a-silent\s+no\s+(-\s+){7}interrupted$`, lines[1])
	assert.Regexp(t, `^b-silent\s+no\s+(-\s+){7}interrupted$`, lines[2])
	assert.Regexp(t, `^c-closed\s+no\s+(-\s+){7}not checked$`, lines[3])
	assert.Regexp(t, `^d-silent\s+no\s+(-\s+){7}not checked$`, lines[4])
	assert.Equal(t, "error: interrupted: 4 of 4 clusters were not read: a-silent (interrupted), b-silent (interrupted), c-closed (not checked), d-silent (not checked)\n", errOut.String())
}
