package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Bootstrap describes a simulated `flux bootstrap` (the options of the Flux CLI).
type Bootstrap struct {
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

func (b *Bootstrap) defaults() {
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

// BootstrapRevision is the Git revision the simulated controllers report.
const BootstrapRevision = "main@sha1:0123456789abcdef0123456789abcdef01234567"

// SimulateBootstrap leaves in the cluster what `flux bootstrap` (generator of the Flux CLI, see
// shared/recipes/flux-controllers/gen-gotk.sh) plus kustomize-controller's first reconcile
// leave: gotk-components and gotk-sync objects, applied by the field manager kustomize-controller
// with its owner labels, and the Kustomization's status.inventory listing them.
func (e *Env) SimulateBootstrap(t testing.TB, b Bootstrap) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	objs, err := e.SimulateBootstrapFrom(ctx, DistributionDir(t), b)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// SimulateBootstrapFrom is SimulateBootstrap for callers without a testing.TB (the demo, benchmarks).
func (e *Env) SimulateBootstrapFrom(ctx context.Context, distDir string, b Bootstrap) ([]*unstructured.Unstructured, error) {
	b.defaults()
	ns := b.Namespace
	dir := filepath.Join(distDir, "flux", b.Version)
	components := append([]string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}, b.Extra...)
	var readErr error
	read := func(file string) []*unstructured.Unstructured {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			readErr = errors.Join(readErr, err)
			return nil
		}
		objs, err := DecodeYAML(data)
		if err != nil {
			readErr = errors.Join(readErr, fmt.Errorf("%s: %w", file, err))
		}
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
	if readErr != nil {
		return nil, readErr
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
		l["kustomize.toolkit.fluxcd.io/name"] = ns
		l["kustomize.toolkit.fluxcd.io/namespace"] = ns
		o.SetLabels(l)
	}

	c, err := client.New(e.Config, client.Options{})
	if err != nil {
		return nil, err
	}
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{}), ssa.Owner{Field: "kustomize-controller"})
	if _, err := rm.ApplyAllStaged(ctx, objs, ssa.DefaultApplyOptions()); err != nil {
		return nil, fmt.Errorf("applying the simulated bootstrap: %w", err)
	}

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
	if err := SetStatus(ctx, c, gitRepo, map[string]any{"artifact": map[string]any{"revision": BootstrapRevision, "path": "x", "url": "http://x", "lastUpdateTime": "2025-01-01T00:00:00Z", "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"}}); err != nil {
		return nil, err
	}
	if err := SetStatus(ctx, c, ks, map[string]any{"inventory": map[string]any{"entries": entries},
		"lastAppliedRevision": BootstrapRevision, "lastAttemptedRevision": BootstrapRevision}); err != nil {
		return nil, err
	}
	return objs, nil
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

// SetStatus replaces an object's status as its controller would (written by kustomize-controller).
func SetStatus(ctx context.Context, c client.Client, obj *unstructured.Unstructured, status map[string]any) error {
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(obj.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
		return err
	}
	live.Object["status"] = status
	if err := c.Status().Update(ctx, live, client.FieldOwner("kustomize-controller")); err != nil {
		return fmt.Errorf("setting the status of %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return nil
}
