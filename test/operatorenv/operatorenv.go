// Package operatorenv runs the real Flux Operator (github.com/controlplaneio-fluxcd/flux-operator
// cmd/operator, v0.59.0) out of cluster as a local process against a test API server
// (test/testenv): it installs the operator's CRDs, starts the operator with the Flux distribution
// data as its storage path, and offers helpers to wait for a FluxInstance to be reconciled, to read
// its inventory and to find the FluxReport the operator writes.
//
// The operator is AGPL-3.0. It is built by test/binaries/flux-operator/build.sh in a module of its
// own and only ever run as a separate process; its CRDs are applied from the copy build.sh keeps
// next to the binary (crds/, from the same module source). Nothing of it is imported or committed.
//
// Out of cluster the operator differs from an in-cluster one in what the tests can observe:
//   - no Deployment of the operator exists; its presence shows as its CRDs plus the FluxReport
//     `flux` it writes in its runtime namespace (WaitReport);
//   - no kubelet runs, so the Flux Deployments it applies never become Ready: FluxInstances must
//     set spec.wait to false;
//   - only the FluxInstance named `flux` in the runtime namespace (Options.Namespace) is
//     reconciled, like in a cluster.
package operatorenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

const (
	// Version is the Flux Operator version build.sh builds (test/binaries/flux-operator/go.mod).
	Version = "v0.59.0"
	// BinaryEnv names a flux-operator (cmd/operator) binary to use instead of the cached build.
	// Its CRDs are taken from CRDsEnv, else from crds/ next to the binary.
	BinaryEnv = "FLUX_OPERATOR_BIN"
	// CRDsEnv names a directory of the operator's CRD manifests (config/crd/bases of its module).
	CRDsEnv = "FLUX_OPERATOR_CRDS"
	// Hint says how to get the operator.
	Hint = "build it with test/binaries/flux-operator/build.sh (cached under ~/.cache/kubectl-fluxinstance-testenv; " +
		"cold: about 3 minutes on 2 cores and 1.3 GB of Go modules from the proxy including the go1.27.3 toolchain), " +
		"or set " + BinaryEnv + " to a flux-operator " + Version + " cmd/operator binary built with GOFIPS140=latest"

	// FieldManager is the field manager the operator applies Flux with.
	FieldManager = "flux-operator"
	// InstanceName is the only FluxInstance name the operator reconciles.
	InstanceName = "flux"
	// ReportName is the name of the FluxReport the operator writes in its runtime namespace.
	ReportName = "flux"
	// Group is the operator's API group.
	Group = "fluxcd.controlplane.io"
)

// FluxInstanceGVK and FluxReportGVK are the operator's kinds.
var (
	FluxInstanceGVK = schema.GroupVersionKind{Group: Group, Version: "v1", Kind: "FluxInstance"}
	FluxReportGVK   = schema.GroupVersionKind{Group: Group, Version: "v1", Kind: "FluxReport"}
)

// Binaries are the operator binary and the directory of its CRD manifests.
type Binaries struct {
	Operator string
	CRDs     string
}

// Find returns the operator without building it: $FLUX_OPERATOR_BIN, else the binary cached by
// build.sh. ok is false when there is none; err reports a FLUX_OPERATOR_BIN that is unusable.
func Find() (b Binaries, ok bool, err error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return b, false, fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		crds := os.Getenv(CRDsEnv)
		if crds == "" {
			crds = filepath.Join(filepath.Dir(p), "crds")
		}
		if err := checkCRDs(crds); err != nil {
			return b, false, fmt.Errorf("%s=%s: %w (set %s)", BinaryEnv, p, err, CRDsEnv)
		}
		return Binaries{Operator: p, CRDs: crds}, true, nil
	}
	dir, err := testenv.RunBuildScript("flux-operator", "--check")
	if err != nil {
		return b, false, nil
	}
	return fromDir(dir), true, nil
}

// Build builds (or reuses) the operator with build.sh, which can take minutes.
func Build() (Binaries, error) {
	dir, err := testenv.RunBuildScript("flux-operator")
	if err != nil {
		return Binaries{}, err
	}
	return fromDir(dir), nil
}

func fromDir(dir string) Binaries {
	return Binaries{Operator: filepath.Join(dir, "flux-operator"), CRDs: filepath.Join(dir, "crds")}
}

func checkCRDs(dir string) error {
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		return fmt.Errorf("no CRD manifests (*.yaml) in %s", dir)
	}
	return nil
}

// Require returns the operator. It is cached by build.sh; when it is not, CI (CI=true) builds it
// and fails the test when that fails, while a developer's run skips with Hint rather than start a
// build of several minutes unasked.
func Require(t testing.TB) Binaries {
	t.Helper()
	b, ok, err := Find()
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		return b
	}
	if !testenv.InCI() {
		t.Skip("the Flux Operator is not built: " + Hint)
	}
	start := time.Now()
	b, err = Build()
	if err != nil {
		t.Fatalf("CI=true: the test needs the Flux Operator: %v", err)
	}
	t.Logf("Flux Operator ready in %s", time.Since(start).Round(time.Second))
	return b
}

// Options tune how the operator runs.
type Options struct {
	// Namespace is the operator's RUNTIME_NAMESPACE (default flux-system): the namespace of the
	// FluxInstance it reconciles and of its FluxReport. Start creates it.
	Namespace string
	// Distribution is the storage path, the Flux distribution data (flux/ and flux-images/);
	// default testenv.DistributionDir.
	Distribution string
	// Args are extra command-line flags (e.g. "--log-level=debug", "--reporting-interval=10s").
	Args []string
	// Env are extra environment entries (KEY=value).
	Env []string
}

// Operator is a running Flux Operator.
type Operator struct {
	// Namespace is its runtime namespace.
	Namespace string
	// Binaries are the operator binary and its CRDs.
	Binaries Binaries
	// Log is the path of its log (console encoding).
	Log string
	// HealthAddr and MetricsAddr are its loopback health (/readyz, /healthz) and metrics addresses.
	HealthAddr, MetricsAddr string

	env      *testenv.Env
	proc     *testenv.Process
	stopOnce sync.Once
}

// Start installs the operator's CRDs (server-side apply, waiting until they are Established),
// creates the runtime namespace, starts the operator against env and waits until it serves
// /readyz. It is stopped when the test ends (or earlier with Stop). Calling Start again on the
// same env after Stop starts a new operator process.
func Start(t testing.TB, env *testenv.Env, opts Options) *Operator {
	t.Helper()
	bins := Require(t)
	if opts.Namespace == "" {
		opts.Namespace = "flux-system"
	}
	if opts.Distribution == "" {
		opts.Distribution = testenv.DistributionDir(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := InstallCRDs(ctx, env, bins.CRDs); err != nil {
		t.Fatal(err)
	}
	if err := createNamespace(ctx, env, opts.Namespace); err != nil {
		t.Fatal(err)
	}
	o, err := start(ctx, env, bins, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Stop)
	return o
}

// InstallCRDs applies the operator's CRDs (FluxInstance, FluxReport, ResourceSet,
// ResourceSetInputProvider) from dir with server-side apply and waits until they are Established.
func InstallCRDs(ctx context.Context, env *testenv.Env, dir string) error {
	objs, err := testenv.ReadManifests(dir)
	if err != nil {
		return fmt.Errorf("reading the Flux Operator CRDs: %w", err)
	}
	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		return err
	}
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{}), ssa.Owner{Field: "operatorenv"})
	cs, err := rm.ApplyAllStaged(ctx, objs, ssa.DefaultApplyOptions())
	if err != nil {
		return fmt.Errorf("applying the Flux Operator CRDs: %w", err)
	}
	if err := rm.WaitForSet(cs.ToObjMetadataSet(), ssa.WaitOptions{Interval: 200 * time.Millisecond, Timeout: time.Minute}); err != nil {
		return fmt.Errorf("waiting for the Flux Operator CRDs to be Established: %w", err)
	}
	return nil
}

func createNamespace(ctx context.Context, env *testenv.Env, name string) error {
	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

func start(ctx context.Context, env *testenv.Env, bins Binaries, opts Options) (*Operator, error) {
	dir, err := os.MkdirTemp(env.Dir, "flux-operator-")
	if err != nil {
		return nil, err
	}
	// An empty Docker config: no credential helper of the user's is consulted for OCI pulls.
	docker := filepath.Join(dir, "docker")
	if err := os.MkdirAll(docker, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(docker, "config.json"), []byte("{}"), 0o644); err != nil {
		return nil, err
	}
	ports, err := testenv.FreePorts(2)
	if err != nil {
		return nil, err
	}
	o := &Operator{
		Namespace:   opts.Namespace,
		Binaries:    bins,
		HealthAddr:  "127.0.0.1:" + strconv.Itoa(ports[0]),
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(ports[1]),
		env:         env,
	}
	procEnv := []string{
		"KUBECONFIG=" + env.Kubeconfig,
		"RUNTIME_NAMESPACE=" + opts.Namespace,
		// Events would go to notification-controller's in-cluster address, which cannot be
		// reached from here: every reconcile would wait ~15 s for the retries.
		"NOTIFICATIONS_DISABLED=1",
		"DOCKER_CONFIG=" + docker,
		"HOME=" + dir,
		"TMPDIR=" + dir,
		// Out of cluster: the in-cluster preflight (container OS check) must not run, and no
		// setting of the caller's environment may change the operator's defaults.
		"KUBERNETES_SERVICE_HOST=",
		"DEFAULT_SERVICE_ACCOUNT=",
		"DEFAULT_WORKLOAD_IDENTITY_SERVICE_ACCOUNT=",
		"OVERRIDE_MANAGERS=",
		"REPORTING_INTERVAL=",
		"WEB_SERVER_PORT=",
	}
	procEnv = append(procEnv, opts.Env...)
	args := append([]string{
		"--storage-path=" + opts.Distribution,
		"--metrics-addr=" + o.MetricsAddr,
		"--health-addr=" + o.HealthAddr,
		"--web-server-port=0",
		"--enable-leader-election=false",
		"--log-encoding=console",
	}, opts.Args...)
	o.proc, err = testenv.StartProcess(dir, "flux-operator", bins.Operator, procEnv, args...)
	if err != nil {
		return nil, err
	}
	o.Log = o.proc.Log
	if err := o.waitHealthy(ctx, time.Minute); err != nil {
		o.Stop()
		return nil, err
	}
	return o, nil
}

func (o *Operator) waitHealthy(ctx context.Context, timeout time.Duration) error {
	httpClient := &http.Client{Timeout: 2 * time.Second}
	defer httpClient.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := httpClient.Get("http://" + o.HealthAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := o.proc.Exited(); err != nil {
			return fmt.Errorf("the Flux Operator did not start: %w", err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the Flux Operator is not ready after %s; last log lines:\n%s", timeout, o.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the operator (SIGTERM, then SIGKILL after 10 s) and waits for it to exit. What it
// applied stays in the cluster; its finalizer stays on the FluxInstance. Safe to call twice.
func (o *Operator) Stop() {
	o.stopOnce.Do(func() { o.proc.Stop() })
}

// Running reports whether the operator process is still running.
func (o *Operator) Running() bool { return o.proc.Exited() == nil }

// LogTail returns the last n lines of the operator's log.
func (o *Operator) LogTail(n int) string { return testenv.Tail(o.Log, n) }

// InstanceKey is the key of the one FluxInstance this operator reconciles.
func (o *Operator) InstanceKey() client.ObjectKey {
	return client.ObjectKey{Namespace: o.Namespace, Name: InstanceName}
}

// ApplyInstance server-side applies a FluxInstance (its metadata and spec; status, managedFields
// and resourceVersion are dropped) as fieldManager, which should not be the operator's.
func ApplyInstance(ctx context.Context, c client.Client, obj *unstructured.Unstructured, fieldManager string) error {
	obj = obj.DeepCopy()
	obj.SetGroupVersionKind(FluxInstanceGVK)
	obj.SetManagedFields(nil)
	obj.SetResourceVersion("")
	delete(obj.Object, "status")
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(fieldManager), client.ForceOwnership)
}

// WaitInstanceReady waits until the FluxInstance key has a Ready=True condition whose
// observedGeneration equals its metadata.generation (the operator reconciled the current spec)
// and the rest of its status is written too (status.lastAppliedRevision equals
// lastAttemptedRevision, status.inventory.entries is set: the operator patches the conditions in
// a request of their own, before the rest of the status), and returns it. On timeout (ctx) or when the operator exits, the error says the Ready
// condition's status, reason and message (or that there is none) and includes the operator's
// log tail. A Ready=False condition is waited out (the operator retries); use
// WaitInstanceReconciled to stop at the first failure.
func (o *Operator) WaitInstanceReady(ctx context.Context, key client.ObjectKey) (*unstructured.Unstructured, error) {
	fi, _, err := o.waitInstance(ctx, key, false)
	return fi, err
}

// WaitInstanceReconciled waits until the operator has finished a reconcile of the current
// generation of the FluxInstance key, whether it succeeded or not: its Ready condition is True or
// False with observedGeneration equal to metadata.generation. It returns the object and that
// condition; the error is only for a timeout (ctx) or an operator that exited, as in
// WaitInstanceReady.
func (o *Operator) WaitInstanceReconciled(ctx context.Context, key client.ObjectKey) (*unstructured.Unstructured, metav1.Condition, error) {
	return o.waitInstance(ctx, key, true)
}

func (o *Operator) waitInstance(ctx context.Context, key client.ObjectKey, orFailed bool) (*unstructured.Unstructured, metav1.Condition, error) {
	c, err := client.New(o.env.Config, client.Options{})
	if err != nil {
		return nil, metav1.Condition{}, err
	}
	last := "the FluxInstance was never read"
	for {
		fi := &unstructured.Unstructured{}
		fi.SetGroupVersionKind(FluxInstanceGVK)
		err := c.Get(ctx, key, fi)
		switch {
		case apierrors.IsNotFound(err):
			last = "the FluxInstance does not exist"
		case err != nil:
			if ctx.Err() == nil {
				last = "reading the FluxInstance: " + err.Error()
			}
		default:
			cond, found := Condition(fi, "Ready")
			switch {
			case !found:
				last = fmt.Sprintf("no Ready condition yet (generation %d)", fi.GetGeneration())
			case cond.ObservedGeneration != fi.GetGeneration():
				last = fmt.Sprintf("Ready=%s for generation %d, the object is at generation %d (%s: %s)",
					cond.Status, cond.ObservedGeneration, fi.GetGeneration(), cond.Reason, cond.Message)
			case cond.Status == metav1.ConditionTrue:
				// The operator patches the conditions first and the rest of the status (revisions,
				// inventory, history) in a second request: Ready=True can be seen before them.
				applied, _, _ := unstructured.NestedString(fi.Object, "status", "lastAppliedRevision")
				attempted, _, _ := unstructured.NestedString(fi.Object, "status", "lastAttemptedRevision")
				_, hasInventory, _ := unstructured.NestedFieldNoCopy(fi.Object, "status", "inventory", "entries")
				if applied != "" && applied == attempted && hasInventory {
					return fi, cond, nil
				}
				last = fmt.Sprintf("Ready=True but the rest of the status is not written yet (lastAppliedRevision %q, lastAttemptedRevision %q, inventory: %t)",
					applied, attempted, hasInventory)
			case orFailed && cond.Status == metav1.ConditionFalse:
				return fi, cond, nil
			default:
				last = fmt.Sprintf("Ready=%s (%s: %s)", cond.Status, cond.Reason, cond.Message)
			}
		}
		if err := o.proc.Exited(); err != nil {
			return nil, metav1.Condition{}, fmt.Errorf("FluxInstance %s is not ready: %s; %w", key, last, err)
		}
		select {
		case <-ctx.Done():
			return nil, metav1.Condition{}, fmt.Errorf("FluxInstance %s is not ready (%v): %s; last operator log lines:\n%s", key, ctx.Err(), last, o.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Condition returns the condition of type typ from obj's status.conditions.
func Condition(obj *unstructured.Unstructured, typ string) (metav1.Condition, bool) {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != typ {
			continue
		}
		var cond metav1.Condition
		cond.Type = typ
		s, _ := m["status"].(string)
		cond.Status = metav1.ConditionStatus(s)
		cond.Reason, _ = m["reason"].(string)
		cond.Message, _ = m["message"].(string)
		switch g := m["observedGeneration"].(type) {
		case int64:
			cond.ObservedGeneration = g
		case float64:
			cond.ObservedGeneration = int64(g)
		}
		return cond, true
	}
	return metav1.Condition{}, false
}

// InventoryEntry is one entry of a FluxInstance's status.inventory.entries: the id is a cli-utils
// object identity "<namespace>_<name>_<group>_<kind>" (namespace empty for cluster-scoped
// objects, group empty for the core group, a ':' in a name written "__") and "v" is the API
// version, e.g. {"id":"flux-system_source-controller_apps_Deployment","v":"v1"}.
type InventoryEntry struct {
	ID      string `json:"id"`
	Version string `json:"v"`
}

// InventoryRef is an inventory entry decoded.
type InventoryRef struct {
	Namespace, Name string
	GVK             schema.GroupVersionKind
}

// ParseInventoryEntry decodes an entry.
func ParseInventoryEntry(e InventoryEntry) (InventoryRef, error) {
	m, err := object.ParseObjMetadata(e.ID)
	if err != nil {
		return InventoryRef{}, fmt.Errorf("inventory entry %q: %w", e.ID, err)
	}
	if e.Version == "" {
		return InventoryRef{}, fmt.Errorf("inventory entry %q has no version", e.ID)
	}
	return InventoryRef{
		Namespace: m.Namespace, Name: m.Name,
		GVK: schema.GroupVersionKind{Group: m.GroupKind.Group, Version: e.Version, Kind: m.GroupKind.Kind},
	}, nil
}

// InventoryEntries returns status.inventory.entries of a FluxInstance.
func InventoryEntries(fi *unstructured.Unstructured) ([]InventoryEntry, error) {
	raw, found, err := unstructured.NestedSlice(fi.Object, "status", "inventory", "entries")
	if err != nil {
		return nil, fmt.Errorf("status.inventory.entries: %w", err)
	}
	if !found {
		return nil, errors.New("the FluxInstance has no status.inventory.entries")
	}
	entries := make([]InventoryEntry, 0, len(raw))
	for _, r := range raw {
		m, _ := r.(map[string]any)
		id, _ := m["id"].(string)
		v, _ := m["v"].(string)
		entries = append(entries, InventoryEntry{ID: id, Version: v})
	}
	return entries, nil
}

// Inventory reads every object listed in the FluxInstance's status.inventory.entries from the
// cluster, in the inventory's order. A listed object that does not exist is an error.
func Inventory(ctx context.Context, c client.Client, fi *unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	entries, err := InventoryEntries(fi)
	if err != nil {
		return nil, err
	}
	objs := make([]*unstructured.Unstructured, 0, len(entries))
	for _, e := range entries {
		ref, err := ParseInventoryEntry(e)
		if err != nil {
			return nil, err
		}
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(ref.GVK)
		if err := c.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, obj); err != nil {
			return nil, fmt.Errorf("inventory entry %s: %w", e.ID, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// PluginInventoryName is the ConfigMap of the plugin's inventory record, in the instance's
// namespace (docs/inventory.md).
const PluginInventoryName = "kubectl-fluxinstance-inventory"

// PluginRecord is the plugin's inventory record: its entries (shaped like a FluxInstance's) and
// its state (e.g. Applied).
type PluginRecord struct {
	Entries []InventoryEntry `json:"entries"`
	State   string           `json:"-"`
}

// PluginInventory reads the plugin's inventory record in namespace ns.
func PluginInventory(ctx context.Context, c client.Client, ns string) (PluginRecord, error) {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: PluginInventoryName}, &cm); err != nil {
		return PluginRecord{}, fmt.Errorf("the plugin's inventory record: %w", err)
	}
	var record PluginRecord
	if err := json.Unmarshal([]byte(cm.Data["inventory"]), &record); err != nil {
		return PluginRecord{}, fmt.Errorf("the plugin's inventory record %s/%s: %w", ns, PluginInventoryName, err)
	}
	record.State = cm.Data["state"]
	return record, nil
}

// WaitReport waits until the operator has written its FluxReport `flux` in its runtime namespace
// and returns it: out of cluster, with no operator Deployment, that report (with the operator's
// CRDs) is how a client can tell that an operator is at work. The report is written at start-up
// and then every reporting interval (default 5m) and after each FluxInstance reconcile.
func (o *Operator) WaitReport(ctx context.Context) (*unstructured.Unstructured, error) {
	c, err := client.New(o.env.Config, client.Options{})
	if err != nil {
		return nil, err
	}
	for {
		r := &unstructured.Unstructured{}
		r.SetGroupVersionKind(FluxReportGVK)
		err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: ReportName}, r)
		if err == nil {
			return r, nil
		}
		if err := o.proc.Exited(); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no FluxReport %s/%s (%v); last operator log lines:\n%s", o.Namespace, ReportName, err, o.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
