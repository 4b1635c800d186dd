package fleet

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("ctx-%02d", i)
	}
	return out
}

// Results come back in the order given although they finish in reverse, and no more than
// MaxParallel functions ever run at once.
func TestRunOrdersResultsAndBoundsConcurrency(t *testing.T) {
	var running, most atomic.Int32
	contexts := names(12)
	// Each function waits for the one after it in its batch of three, so later ones finish first.
	release := make([]chan struct{}, len(contexts)+1)
	for i := range release {
		release[i] = make(chan struct{})
	}
	index := map[string]int{}
	for i, n := range contexts {
		index[n] = i
	}
	results := Run(context.Background(), contexts, Options{MaxParallel: 3}, func(_ context.Context, name string) (string, error) {
		now := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if now <= m || most.CompareAndSwap(m, now) {
				break
			}
		}
		i := index[name]
		if i%3 != 2 && i+1 < len(contexts) {
			<-release[i+1]
		}
		close(release[i])
		return "value of " + name, nil
	})
	require.Len(t, results, len(contexts))
	for i, r := range results {
		assert.Equal(t, contexts[i], r.Context)
		assert.Equal(t, "value of "+contexts[i], r.Value)
		assert.NoError(t, r.Err)
	}
	assert.LessOrEqual(t, most.Load(), int32(3))
	assert.Equal(t, int32(3), most.Load(), "three could run at once")
}

// A function that never returns is reported as timed out, and the others still finish with their
// values: the hung one does not hold its slot beyond its deadline.
func TestRunTimesOutAHungContextAlone(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	results := Run(context.Background(), []string{"hung", "a", "b", "c"}, Options{MaxParallel: 1, Timeout: 200 * time.Millisecond},
		func(ctx context.Context, name string) (int, error) {
			if name == "hung" {
				<-hang // ignores its context, as a stuck dial without a deadline would
			}
			return len(name), nil
		})
	var timeout *TimeoutError
	require.ErrorAs(t, results[0].Err, &timeout)
	assert.Equal(t, "hung", timeout.Context)
	assert.Contains(t, results[0].Err.Error(), `context "hung": no answer within 200ms`)
	for _, r := range results[1:] {
		assert.NoError(t, r.Err, r.Context)
		assert.Equal(t, 1, r.Value)
	}
}

// A function's own error is kept as it is; one that fails because its deadline passed is a
// TimeoutError.
func TestRunKeepsErrorsAndNamesDeadlines(t *testing.T) {
	denied := errors.New("forbidden")
	results := Run(context.Background(), []string{"denied", "slow"}, Options{Timeout: 100 * time.Millisecond},
		func(ctx context.Context, name string) (struct{}, error) {
			if name == "denied" {
				return struct{}{}, denied
			}
			<-ctx.Done()
			return struct{}{}, fmt.Errorf("listing: %w", ctx.Err())
		})
	assert.ErrorIs(t, results[0].Err, denied)
	var timeout *TimeoutError
	assert.ErrorAs(t, results[1].Err, &timeout)
}

// Cancelling the run stops the running functions and reports the ones not started, in order.
func TestRunCancelReportsEveryContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var started atomic.Int32
	results := Run(ctx, names(5), Options{MaxParallel: 2}, func(ctx context.Context, name string) (int, error) {
		if started.Add(1) == 2 {
			cancel()
		}
		<-ctx.Done()
		return 0, ctx.Err()
	})
	require.Len(t, results, 5)
	for i, r := range results {
		var notRun *NotRunError
		require.ErrorAs(t, r.Err, &notRun, r.Context)
		assert.Equal(t, i < 2, notRun.Started, r.Context)
		assert.ErrorIs(t, r.Err, context.Canceled)
	}
}

func writeKubeconfig(t *testing.T, contexts ...string) *genericclioptions.ConfigFlags {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "t"}
	for _, n := range contexts {
		cfg.Contexts[n] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	flags := genericclioptions.NewConfigFlags(true)
	flags.KubeConfig = &path
	return flags
}

func TestContexts(t *testing.T) {
	flags := writeKubeconfig(t, "prod-eu", "dev", "prod-us")
	all, err := Contexts(flags, nil, true)
	require.NoError(t, err)
	assert.Equal(t, []string{"dev", "prod-eu", "prod-us"}, all)

	given, err := Contexts(flags, []string{"prod-us", "dev", "prod-us"}, false)
	require.NoError(t, err)
	assert.Equal(t, []string{"prod-us", "dev"}, given, "in the order given, once each")

	_, err = Contexts(flags, []string{"dev", "prod-ue", "stage"}, false)
	var unknown *UnknownContextError
	require.ErrorAs(t, err, &unknown)
	assert.Equal(t, `the kubeconfig has no context named "prod-ue", "stage"; its contexts are: dev, prod-eu, prod-us`, err.Error())
}

// Each context's copy of the flags selects it and keeps the rest; the base is not changed.
func TestFlagsFor(t *testing.T) {
	base := writeKubeconfig(t, "a", "b")
	ns, timeout := "gitops", "3s"
	base.Namespace, base.Timeout = &ns, &timeout
	fa, fb := FlagsFor(base, "a"), FlagsFor(base, "b")
	assert.Equal(t, "a", *fa.Context)
	assert.Equal(t, "b", *fb.Context)
	assert.Empty(t, *base.Context)
	for _, f := range []*genericclioptions.ConfigFlags{fa, fb} {
		assert.Equal(t, *base.KubeConfig, *f.KubeConfig)
		got, _, err := f.ToRawKubeConfigLoader().Namespace()
		require.NoError(t, err)
		assert.Equal(t, "gitops", got)
		cfg, err := f.ToRESTConfig()
		require.NoError(t, err)
		assert.Equal(t, 3*time.Second, cfg.Timeout)
	}
}
