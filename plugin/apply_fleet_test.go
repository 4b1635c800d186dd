package plugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestFleetCommandsUsageErrors(t *testing.T) {
	kc := fleetKubeconfig(t, map[string]string{"a": "https://127.0.0.1:1", "b": "https://127.0.0.1:1"})
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"continue without many":    {[]string{"apply", "-f", "x.yaml", "--continue-on-error"}, "--continue-on-error needs --contexts or --all-contexts"},
		"apply -o json across":     {[]string{"apply", "-f", "x.yaml", "--all-contexts", "-o", "json"}, "-o json prints one cluster's changes"},
		"migrate for real across":  {[]string{"migrate", "--all-contexts"}, "migrate changes one cluster at a time: run it per context"},
		"migrate rollback across":  {[]string{"migrate", "--contexts", "a", "--rollback", "--dry-run"}, "migrate changes one cluster at a time"},
		"migrate repo-dir across":  {[]string{"migrate", "--contexts", "a", "--dry-run", "--repo-dir", t.TempDir()}, "--repo-dir and --output-file are one cluster's"},
		"migrate permissions":      {[]string{"migrate", "--contexts", "a", "--dry-run", "--check-permissions"}, "--check-permissions checks one cluster"},
		"diff unknown context":     {[]string{"diff", "-f", "x.yaml", "--contexts", "a,z"}, `the kubeconfig has no context named "z"`},
		"diff parallel for one":    {[]string{"diff", "-f", "x.yaml", "--max-parallel", "2"}, "--max-parallel needs --contexts or --all-contexts"},
		"apply --context with all": {[]string{"apply", "-f", "x.yaml", "--all-contexts", "--context", "a"}, "--context selects one cluster"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runPlugin(t, "", append(tc.args, "--kubeconfig", kc)...)
			assert.Equal(t, 2, r.Code, r.Stderr)
			assert.Contains(t, r.Stderr, tc.want)
			assert.Empty(t, r.Stdout)
		})
	}
}

func TestResolveFleetInputs(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "a"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a", fleetInstanceFile), []byte("x"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "c", fleetInstanceFile), 0o755)) // a directory, not a file

	in, err := resolveFleetInputs([]string{dir}, []string{"a"}, nil)
	require.NoError(t, err)
	assert.Equal(t, map[string][]string{"a": {filepath.Join(dir, "a", fleetInstanceFile)}}, in.files)

	_, err = resolveFleetInputs([]string{dir}, []string{"a", "b", "c"}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "b", fleetInstanceFile)+` (context "b")`)
	assert.Contains(t, err.Error(), filepath.Join(dir, "c", fleetInstanceFile)+` (context "c")`)
	assert.NotContains(t, err.Error(), `(context "a")`)

	file := filepath.Join(dir, "a", fleetInstanceFile)
	in, err = resolveFleetInputs([]string{file}, []string{"a", "b"}, nil)
	require.NoError(t, err)
	assert.Equal(t, map[string][]string{"a": {file}, "b": {file}}, in.files, "one file for all")

	// Standard input is read once and given whole to every cluster.
	in, err = resolveFleetInputs([]string{"-"}, []string{"a", "b"}, strings.NewReader("kind: FluxInstance\n"))
	require.NoError(t, err)
	for range 2 {
		var got bytes.Buffer
		_, _ = got.ReadFrom(in.input())
		assert.Equal(t, "kind: FluxInstance\n", got.String())
	}

	_, err = resolveFleetInputs([]string{file, file}, []string{"a"}, nil)
	assert.ErrorContains(t, err, "-f takes one file for every cluster or one directory")
	_, err = resolveFleetInputs([]string{filepath.Join(dir, "nowhere")}, []string{"a"}, nil)
	assert.ErrorContains(t, err, "reading -f "+filepath.Join(dir, "nowhere"))
}

func TestPrefixWriter(t *testing.T) {
	var mu sync.Mutex
	var out bytes.Buffer
	a, b := newPrefixWriter(&mu, &out, "a"), newPrefixWriter(&mu, &out, "b")
	_, _ = a.Write([]byte("one "))
	_, _ = b.Write([]byte("first\nsec"))
	_, _ = a.Write([]byte("line\ntwo"))
	a.Flush()
	b.Flush()
	assert.Equal(t, "[b] first\n[a] one line\n[a] two\n[b] sec\n", out.String(), "whole lines only, never mixed")
}

// lockedBuffer is a Buffer that a test reads while the command writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Ctrl-C during a rollout interrupts the cluster being applied (as a one-cluster apply is), starts
// no other, and prints the summary once the interrupted apply has returned.
func TestApplyFleetInterrupt(t *testing.T) {
	envs := testenv.StartMany(t, 2)
	first, second := envs[0], envs[1]
	kc := testenv.Kubeconfigs(t, t.TempDir(), map[string]string{"first": first.Kubeconfig, "second": second.Kubeconfig}, nil)
	file := filepath.Join(t.TempDir(), "flux.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`apiVersion: fluxcd.controlplane.io/v1
kind: FluxInstance
metadata: {name: flux, namespace: flux-system}
spec:
  distribution: {version: "2.9.x", registry: ghcr.io/fluxcd}
  components: [source-controller]
`), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut lockedBuffer
	done := make(chan int)
	go func() {
		// No kubelet runs the controllers: the wait lasts until the interrupt.
		done <- run(ctx, []string{"apply", "-f", file, "--contexts", "first,second", "--timeout", "5m", "--kubeconfig", kc},
			genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, testBuildInfo)
	}()
	require.Eventually(t, func() bool { return strings.Contains(errOut.String(), "[first] waiting up to 5m0s") }, time.Minute, 50*time.Millisecond, errOut.String())
	cancel()
	code := <-done
	t.Logf("\n%s%s", out.String(), errOut.String())
	assert.Equal(t, 1, code)
	assert.Regexp(t, `(?m)^first\s+interrupted\s+\S+$`, out.String())
	assert.Regexp(t, `(?m)^second\s+not started\s+-$`, out.String())
	assert.Contains(t, errOut.String(), "error: interrupted: 0 of 2 clusters applied; failed: first (interrupted); not started: second")

	holder, err := lock.Current(context.Background(), kube.Instance{Client: first.Client(t), Name: "flux", Namespace: "flux-system"})
	require.NoError(t, err)
	assert.Nil(t, holder, "the interrupted apply holds no lock")
	err = second.Client(t).Get(context.Background(), client.ObjectKey{Name: "flux-system"}, &corev1.Namespace{})
	assert.True(t, apierrors.IsNotFound(err), "second was not touched: %v", err)
}
