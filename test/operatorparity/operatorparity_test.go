// Package operatorparity compares what `kubectl fluxinstance apply` leaves in a cluster with what
// the real Flux Operator (v0.59.0, run out of cluster by test/operatorenv) leaves in another, for
// every FluxInstance of the fidelity corpus (test/fixtures/instances).
package operatorparity

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fixtures"
	"github.com/fluxinstance/kubectl-fluxinstance/test/operatorenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/parity"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// concurrency bounds the instances compared at once ($OPERATOR_PARITY_CONCURRENCY overrides): each
// runs two API servers (with their etcd) and the operator.
func concurrency() int {
	if n, err := strconv.Atoi(os.Getenv("OPERATOR_PARITY_CONCURRENCY")); err == nil && n > 0 {
		return n
	}
	if runtime.NumCPU() > 2 {
		return 3
	}
	return 2
}

// TestParityWithOperator applies every FluxInstance of the fidelity corpus (spec.wait forced to
// false: no kubelet runs) twice, each on a fresh API server: once through the real Flux Operator
// and once with `kubectl fluxinstance apply --distribution <dir> --wait=false`. Both must reject
// the same instances, and for the others leave the same objects: the same inventory (ids and API
// versions), and for each object the same content, labels and annotations, modulo what the API
// server stamps (uid, resourceVersion, timestamps, managedFields, generation, status, allocated
// cluster IPs: serverNormalise). Unlike the parity test against the Flux Operator CLI
// (test/parity), no difference is excused: every operator behaviour the CLI lacks (digest
// pinning, variants, sharding storage, network policies of a cluster block) is the plugin's too.
// Instances that must fail (test/fixtures/instances/rejected, outside the corpus, which the
// renderer's golden tests need to render) fail on both sides.
func TestParityWithOperator(t *testing.T) {
	bins := operatorenv.Require(t)
	testenv.RequireBinDir(t)
	dist := testenv.DistributionDir(t)
	files := fixtures.Glob(t, "*.yaml")

	plugin := parity.PluginBinary(t)
	// An instance that names an OCI artifact gets the distribution served from a loopback
	// registry instead: the operator pulls it (there is no network), the plugin reads --distribution.
	var artifactURL string
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "artifact:") {
			artifactURL = parity.ServeDistribution(t)
			break
		}
	}
	pluginEnv := parity.Env(t, t.TempDir())
	t.Logf("operator %s; %d instances, %d at a time", bins.Operator, len(files), concurrency())

	sem := make(chan struct{}, concurrency())
	var started, compared, rejected atomic.Int32
	t.Run("rejected", func(t *testing.T) {
		for _, file := range fixtures.Glob(t, "rejected/*.yaml") {
			t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				c := &instanceCase{file: file, dist: dist, plugin: plugin, pluginEnv: pluginEnv}
				require.Equal(t, outcomeBothRejected, c.run(t), "the operator and the plugin must both reject it")
			})
		}
	})
	t.Run("instances", func(t *testing.T) {
		for _, file := range files {
			name := strings.TrimSuffix(filepath.Base(file), ".yaml")
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				started.Add(1)
				sem <- struct{}{}
				defer func() { <-sem }()
				c := &instanceCase{file: file, dist: dist, plugin: plugin, pluginEnv: pluginEnv, artifactURL: artifactURL}
				switch c.run(t) {
				case outcomeCompared:
					compared.Add(1)
				case outcomeBothRejected:
					rejected.Add(1)
				}
			})
		}
	})
	t.Logf("%d instances compared, %d rejected by both", compared.Load(), rejected.Load())
	// Guards against a run that compared nothing (every instance rejected) and so proved nothing.
	assert.GreaterOrEqual(t, int(compared.Load()), int(started.Load())*3/4, "too few instances compared with the operator")
}

type outcome int

const (
	outcomeFailed outcome = iota
	outcomeCompared
	outcomeBothRejected
)

type instanceCase struct {
	file, dist, plugin string
	pluginEnv          []string
	artifactURL        string
}

func (c *instanceCase) run(t *testing.T) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	inst, file := c.prepare(t)
	ns := inst.GetNamespace()

	// Two fresh API servers, started together: one for the operator, one for the plugin.
	opEnv, pluginEnv := startEnvs(t)

	// The operator's side: the operator, then the FluxInstance.
	op := operatorenv.Start(t, opEnv, operatorenv.Options{Namespace: ns, Distribution: c.dist})
	opClient := opEnv.Client(t)
	if secret, _, _ := unstructured.NestedString(inst.Object, "spec", "distribution", "artifactPullSecret"); secret != "" {
		createPullSecret(ctx, t, opClient, ns, secret, c.artifactURL)
	}
	applyErr := operatorenv.ApplyInstance(ctx, opClient, inst, "operatorparity")

	// The plugin's side, while the operator reconciles.
	env := append(append([]string{}, c.pluginEnv...), "KUBECONFIG="+pluginEnv.Kubeconfig)
	res := parity.Run(ctx, env, c.plugin, "apply", "-f", file, "--distribution", c.dist, "--wait=false")

	if applyErr != nil {
		// The operator's CRD refuses the instance: the plugin must refuse it too.
		if res.Err == nil {
			t.Fatalf("the API server rejects the FluxInstance for the operator (%v) but the plugin applies it", applyErr)
		}
		t.Logf("both reject it; API server (operator CRD): %v; plugin: %s", applyErr, firstLine(res.Stderr))
		return outcomeBothRejected
	}
	fi, ready, err := op.WaitInstanceReconciled(ctx, op.InstanceKey())
	require.NoError(t, err)
	if ready.Status != metav1.ConditionTrue {
		if res.Err == nil {
			t.Fatalf("the operator fails to reconcile the instance (%s: %s) but the plugin applies it", ready.Reason, ready.Message)
		}
		t.Logf("both reject it; operator: %s: %s; plugin: %s", ready.Reason, ready.Message, firstLine(res.Stderr))
		return outcomeBothRejected
	}
	require.NoError(t, res.Err, "the operator reconciles %s but the plugin does not apply it", c.file)

	theirs, err := operatorenv.Inventory(ctx, opClient, fi)
	require.NoError(t, err, "the operator's inventory")
	theirEntries, err := operatorenv.InventoryEntries(fi)
	require.NoError(t, err)
	ourEntries := readPluginInventory(ctx, t, pluginEnv.Client(t), ns)
	ours := getObjects(ctx, t, pluginEnv.Client(t), ourEntries)

	diffs := compareInventories(ourEntries, theirEntries)
	oursByID, theirsByID := byID(ourEntries, ours), byID(theirEntries, theirs)
	ids := make([]string, 0, len(oursByID))
	for id := range oursByID {
		if _, ok := theirsByID[id]; ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		parity.DiffValues(id+" ", serverNormalise(oursByID[id]).Object, serverNormalise(theirsByID[id]).Object, &diffs)
	}
	t.Logf("%d objects compared (%d applied by the operator, %d by the plugin)", len(ids), len(theirEntries), len(ourEntries))
	assert.Empty(t, diffs, "%s: the plugin's objects differ from the operator's (ours vs theirs):\n%s", c.file, strings.Join(diffs, "\n"))
	return outcomeCompared
}

// startEnvs starts two fresh API servers at the same time (each start is mostly waiting for
// kube-apiserver) and stops them when the test ends.
func startEnvs(t *testing.T) (*testenv.Env, *testenv.Env) {
	var envs [2]*testenv.Env
	var errs [2]error
	var wg sync.WaitGroup
	for i := range envs {
		dir := t.TempDir()
		wg.Go(func() { envs[i], errs[i] = testenv.StartDetached(dir) })
	}
	wg.Wait()
	for i := range envs {
		if envs[i] != nil {
			t.Cleanup(envs[i].Stop)
		}
	}
	for _, err := range errs {
		require.NoError(t, err, "starting a test API server")
	}
	return envs[0], envs[1]
}

// prepare reads the corpus instance, forces spec.wait to false, points an OCI artifact at the
// loopback registry, and writes the result for the plugin.
func (c *instanceCase) prepare(t *testing.T) (*unstructured.Unstructured, string) {
	b, err := os.ReadFile(c.file)
	require.NoError(t, err)
	objs, err := testenv.DecodeYAML(b)
	require.NoError(t, err)
	require.Len(t, objs, 1, "%s: one FluxInstance per file", c.file)
	inst := objs[0]
	require.Equal(t, operatorenv.InstanceName, inst.GetName(), "%s: the operator only reconciles a FluxInstance named %q", c.file, operatorenv.InstanceName)
	if inst.GetNamespace() == "" {
		inst.SetNamespace("flux-system")
	}
	require.NoError(t, unstructured.SetNestedField(inst.Object, false, "spec", "wait"))
	if a, _, _ := unstructured.NestedString(inst.Object, "spec", "distribution", "artifact"); a != "" {
		require.NotEmpty(t, c.artifactURL)
		require.NoError(t, unstructured.SetNestedField(inst.Object, c.artifactURL, "spec", "distribution", "artifact"))
	}
	out, err := yaml.Marshal(inst.Object)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), filepath.Base(c.file))
	require.NoError(t, os.WriteFile(file, out, 0o644))
	return inst, file
}

// createPullSecret creates the artifact pull secret an instance names, for the loopback registry
// (which asks for no credentials).
func createPullSecret(ctx context.Context, t *testing.T, c client.Client, ns, name, ociURL string) {
	host := strings.SplitN(strings.TrimPrefix(ociURL, "oci://"), "/", 2)[0]
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"username": "flux", "password": "flux"}}})
	require.NoError(t, err)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}
	require.NoError(t, c.Create(ctx, secret))
}

func readPluginInventory(ctx context.Context, t *testing.T, c client.Client, ns string) []operatorenv.InventoryEntry {
	record, err := operatorenv.PluginInventory(ctx, c, ns)
	require.NoError(t, err)
	require.Equal(t, "Applied", record.State)
	return record.Entries
}

func getObjects(ctx context.Context, t *testing.T, c client.Client, entries []operatorenv.InventoryEntry) []*unstructured.Unstructured {
	objs := make([]*unstructured.Unstructured, 0, len(entries))
	for _, e := range entries {
		ref, err := operatorenv.ParseInventoryEntry(e)
		require.NoError(t, err)
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(ref.GVK)
		require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, obj), "plugin inventory entry %s", e.ID)
		objs = append(objs, obj)
	}
	return objs
}

func byID(entries []operatorenv.InventoryEntry, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := make(map[string]*unstructured.Unstructured, len(entries))
	for i, e := range entries {
		m[e.ID] = objs[i]
	}
	return m
}

// compareInventories lists the objects only one side applied and the entries whose API version
// differs.
func compareInventories(ours, theirs []operatorenv.InventoryEntry) []string {
	var diffs []string
	oursV, theirsV := map[string]string{}, map[string]string{}
	for _, e := range ours {
		oursV[e.ID] = e.Version
	}
	for _, e := range theirs {
		theirsV[e.ID] = e.Version
	}
	for _, e := range ours {
		if v, ok := theirsV[e.ID]; !ok {
			diffs = append(diffs, e.ID+": only the plugin applies it")
		} else if v != e.Version {
			diffs = append(diffs, fmt.Sprintf("%s: applied as %s by the plugin, %s by the operator", e.ID, e.Version, v))
		}
	}
	for _, e := range theirs {
		if _, ok := oursV[e.ID]; !ok {
			diffs = append(diffs, e.ID+": only the operator applies it")
		}
	}
	sort.Strings(diffs)
	return diffs
}

// serverNormalise removes what the API server sets on its own: identity, bookkeeping and
// timestamps (the same on both sides, or different only because they are two servers), status,
// and the cluster IPs each server allocates at random.
func serverNormalise(obj *unstructured.Unstructured) *unstructured.Unstructured {
	obj = obj.DeepCopy()
	for _, f := range []string{"managedFields", "uid", "resourceVersion", "creationTimestamp", "generation"} {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	delete(obj.Object, "status")
	if obj.GetKind() == "Service" && obj.GetAPIVersion() == "v1" {
		unstructured.RemoveNestedField(obj.Object, "spec", "clusterIP")
		unstructured.RemoveNestedField(obj.Object, "spec", "clusterIPs")
	}
	return obj
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
