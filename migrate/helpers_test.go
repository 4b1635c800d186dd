package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/cluster"
	"github.com/fluxinstance/kubectl-fluxinstance/render/distribution"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

// bootstrap describes a simulated `flux bootstrap` (the options of the Flux CLI).
type bootstrap struct {
	Version       string
	Namespace     string
	Extra         []string // components-extra
	Registry      string
	PullSecret    string
	NoNetPol      bool
	Domain        string
	Tolerations   []string // toleration keys
	LogLevel      string
	Tag           string // sync by tag instead of branch main
	Semver        string
	Path          string
	ExtraArgs     map[string][]string // deployment -> args appended (a user's patch)
	Replicas      map[string]int64
	SkipInventory []string // inventory ids left out (simulates files removed from Git)
}

func (b *bootstrap) defaults() {
	if b.Namespace == "" {
		b.Namespace = "flux-system"
	}
	if b.Registry == "" {
		b.Registry = "ghcr.io/fluxcd"
	}
	if b.Domain == "" {
		b.Domain = "cluster.local"
	}
	if b.LogLevel == "" {
		b.LogLevel = "info"
	}
	if b.Path == "" {
		b.Path = "clusters/production"
	}
}

const revision = "main@sha1:0123456789abcdef0123456789abcdef01234567"

// simulateBootstrap leaves in the cluster what `flux bootstrap` (generator of the Flux CLI, see
// shared/recipes/flux-controllers/gen-gotk.sh) plus kustomize-controller's first reconcile
// leave: gotk-components and gotk-sync objects, applied by the field manager kustomize-controller
// with its owner labels, and the Kustomization's status.inventory listing them.
func simulateBootstrap(t *testing.T, env *testenv.Env, b bootstrap) []*unstructured.Unstructured {
	t.Helper()
	b.defaults()
	ns := b.Namespace
	dir := filepath.Join(testenv.DistributionDir(t), "flux", b.Version)
	components := append([]string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}, b.Extra...)
	read := func(file string) []*unstructured.Unstructured {
		data, err := os.ReadFile(filepath.Join(dir, file))
		require.NoError(t, err)
		objs, err := testenv.DecodeYAML(data)
		require.NoError(t, err)
		return objs
	}
	var objs []*unstructured.Unstructured
	nsObj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": ns, "labels": map[string]any{
			"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/warn-version": "latest"}}}}
	objs = append(objs, nsObj)
	if !b.NoNetPol {
		objs = append(objs, read("policies.yaml")...)
	}
	for _, r := range read("rbac.yaml") {
		r.SetName(r.GetName() + "-" + ns) // roles/kustomization.yaml: nameSuffix
		if ref, ok := r.Object["roleRef"].(map[string]any); ok && ref["name"] != "cluster-admin" {
			ref["name"] = ref["name"].(string) + "-" + ns
		}
		if subs, ok := r.Object["subjects"].([]any); ok {
			for _, s := range subs {
				s.(map[string]any)["namespace"] = ns
			}
		}
		objs = append(objs, r)
	}
	for _, c := range components {
		objs = append(objs, read(c+".yaml")...)
	}
	eventsAddr := fmt.Sprintf("http://notification-controller.$(RUNTIME_NAMESPACE).svc.%s./", b.Domain)
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition":
		default:
			o.SetNamespace(ns)
		}
		setLabels(o.Object, "metadata", ns, b.Version)
		if o.GetKind() != "Deployment" {
			continue
		}
		setLabels(o.Object, "spec/template/metadata", ns, b.Version)
		pod := o.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		pod["nodeSelector"] = map[string]any{"kubernetes.io/os": "linux"}
		if len(b.Tolerations) > 0 {
			var tols []any
			for _, k := range b.Tolerations {
				tols = append(tols, map[string]any{"key": k, "operator": "Exists"})
			}
			pod["tolerations"] = tols
		}
		if b.PullSecret != "" {
			pod["imagePullSecrets"] = []any{map[string]any{"name": b.PullSecret}}
		}
		ctr := pod["containers"].([]any)[0].(map[string]any)
		ctr["image"] = b.Registry + "/" + strings.TrimPrefix(ctr["image"].(string), "fluxcd/")
		args := ctr["args"].([]any)
		for i, a := range args {
			s := a.(string)
			switch {
			case strings.HasPrefix(s, "--events-addr="):
				args[i] = "--events-addr=" + eventsAddr
			case s == "--watch-all-namespaces":
				args[i] = "--watch-all-namespaces=true"
			case strings.HasPrefix(s, "--log-level="):
				args[i] = "--log-level=" + b.LogLevel
			case strings.HasPrefix(s, "--storage-adv-addr="):
				args[i] = fmt.Sprintf("--storage-adv-addr=%s.$(RUNTIME_NAMESPACE).svc.%s.", o.GetName(), b.Domain)
			}
		}
		for _, extra := range b.ExtraArgs[o.GetName()] {
			args = append(args, extra)
		}
		ctr["args"] = args
		if r, ok := b.Replicas[o.GetName()]; ok {
			o.Object["spec"].(map[string]any)["replicas"] = r
		}
	}
	ref := map[string]any{"branch": "main"}
	switch {
	case b.Tag != "":
		ref = map[string]any{"tag": b.Tag}
	case b.Semver != "":
		ref = map[string]any{"semver": b.Semver}
	}
	gitRepo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": ns, "namespace": ns},
		"spec": map[string]any{"interval": "1m0s", "ref": ref, "secretRef": map[string]any{"name": "flux-system"},
			"url": "ssh://git@github.com/example/fleet"},
	}}
	ks := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": ns, "namespace": ns},
		"spec": map[string]any{"interval": "10m0s", "path": "./" + b.Path, "prune": true,
			"sourceRef": map[string]any{"kind": "GitRepository", "name": ns}},
	}}
	objs = append(objs, gitRepo, ks)
	for _, o := range objs {
		l := o.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l[cluster.LabelKustomizeName] = ns
		l[cluster.LabelKustomizeNS] = ns
		o.SetLabels(l)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := adminClient(t, env)
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{}), ssa.Owner{Field: "kustomize-controller"})
	_, err := rm.ApplyAllStaged(ctx, objs, ssa.DefaultApplyOptions())
	require.NoError(t, err)

	// The controllers' status: the source's artifact and the Kustomization's inventory.
	skip := map[string]bool{}
	for _, s := range b.SkipInventory {
		skip[s] = true
	}
	var entries []any
	for _, o := range objs {
		id := object.UnstructuredToObjMetadata(o).String()
		if skip[id] {
			continue
		}
		entries = append(entries, map[string]any{"id": id, "v": o.GroupVersionKind().Version})
	}
	setStatus(t, c, gitRepo, map[string]any{"artifact": map[string]any{"revision": revision, "path": "x", "url": "http://x", "lastUpdateTime": "2025-01-01T00:00:00Z", "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"}})
	setStatus(t, c, ks, map[string]any{"inventory": map[string]any{"entries": entries},
		"lastAppliedRevision": revision, "lastAttemptedRevision": revision})
	return objs
}

func setLabels(obj map[string]any, path, ns, version string) {
	cur := obj
	for _, p := range strings.Split(path, "/") {
		next, ok := cur[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[p] = next
		}
		cur = next
	}
	labels, ok := cur["labels"].(map[string]any)
	if !ok {
		labels = map[string]any{}
		cur["labels"] = labels
	}
	labels["app.kubernetes.io/instance"] = ns
	labels["app.kubernetes.io/part-of"] = "flux"
	labels["app.kubernetes.io/version"] = version
}

func setStatus(t *testing.T, c client.Client, obj *unstructured.Unstructured, status map[string]any) {
	t.Helper()
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(obj.GroupVersionKind())
	require.NoError(t, c.Get(context.Background(), client.ObjectKeyFromObject(obj), live))
	live.Object["status"] = status
	require.NoError(t, c.Status().Update(context.Background(), live, client.FieldOwner("kustomize-controller")))
}

func adminClient(t *testing.T, env *testenv.Env) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 100, 200
	c, err := client.New(cfg, client.Options{})
	require.NoError(t, err)
	return c
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
		require.NoError(t, c.Get(context.Background(), client.ObjectKeyFromObject(o), live), cluster.Ref(o))
		out[cluster.Ref(o)] = snap{uid: string(live.GetUID()), rv: live.GetResourceVersion()}
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
