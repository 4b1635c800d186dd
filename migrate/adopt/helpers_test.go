package adopt

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// bootstrap and simulateBootstrap are the harness's simulated `flux bootstrap`.
type bootstrap = testenv.Bootstrap

const revision = testenv.BootstrapRevision

func simulateBootstrap(t *testing.T, env *testenv.Env, b bootstrap) []*unstructured.Unstructured {
	t.Helper()
	return env.SimulateBootstrap(t, b)
}

func setStatus(t *testing.T, c client.Client, obj *unstructured.Unstructured, status map[string]any) {
	t.Helper()
	require.NoError(t, testenv.SetStatus(context.Background(), c, obj, status))
}

func adminClient(t *testing.T, env *testenv.Env) client.Client {
	t.Helper()
	return testenv.FastClient(t, env.Config, 100, 200)
}

// release opens the distribution data directory and loads one version.
func release(t *testing.T, version string) *distribution.Release {
	t.Helper()
	d, err := distribution.Open(context.Background(), testenv.DistributionDir(t), distribution.Options{})
	require.NoError(t, err)
	v, err := d.Resolve(version)
	require.NoError(t, err)
	rel, err := d.Release(v)
	require.NoError(t, err)
	return rel
}

// snapshot records uid and resourceVersion of every object.
type snap struct{ uid, rv string }

func snapshot(t *testing.T, c client.Client, objs []*unstructured.Unstructured) map[string]snap {
	t.Helper()
	out := map[string]snap{}
	for _, o := range objs {
		live := &metav1.PartialObjectMetadata{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		require.NoError(t, c.Get(context.Background(), client.ObjectKeyFromObject(o), live), kube.Ref(o))
		out[kube.Ref(o)] = snap{uid: string(live.GetUID()), rv: live.GetResourceVersion()}
	}
	return out
}

// faultyClient fails every write after the first n (counting creates, patches, updates,
// deletes, status writes; dry runs included) and counts deletes.
type faultyClient struct {
	client.Client
	n       int64
	writes  atomic.Int64
	deletes atomic.Int64
}

var errInjected = fmt.Errorf("injected failure: the connection dropped")

func (f *faultyClient) allow() error {
	if f.writes.Add(1) > f.n {
		return errInjected
	}
	return nil
}

func (f *faultyClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if err := f.allow(); err != nil {
		return err
	}
	return f.Client.Create(ctx, obj, opts...)
}

func (f *faultyClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if err := f.allow(); err != nil {
		return err
	}
	return f.Client.Patch(ctx, obj, patch, opts...)
}

func (f *faultyClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	if err := f.allow(); err != nil {
		return err
	}
	return f.Client.Update(ctx, obj, opts...)
}

func (f *faultyClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	f.deletes.Add(1)
	if err := f.allow(); err != nil {
		return err
	}
	return f.Client.Delete(ctx, obj, opts...)
}

func (f *faultyClient) Status() client.SubResourceWriter {
	return &faultyStatus{SubResourceWriter: f.Client.Status(), f: f}
}

type faultyStatus struct {
	client.SubResourceWriter
	f *faultyClient
}

func (s *faultyStatus) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if err := s.f.allow(); err != nil {
		return err
	}
	return s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

func (s *faultyStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	if err := s.f.allow(); err != nil {
		return err
	}
	return s.SubResourceWriter.Update(ctx, obj, opts...)
}
