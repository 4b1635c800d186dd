package fluxenv

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/normalize"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// SimulateReconcile does to the cluster what kustomize-controller's reconcile of the sync
// Kustomization would, for Flux versions whose controllers cannot run here (their CRDs lack the
// APIs of ControllersVersion): it applies the objects of Options.Path at the work tree's HEAD with
// the kustomize-controller field manager and the kustomize.toolkit.fluxcd.io/name|namespace labels,
// removes the kubectl field managers the way it does, and writes the Kustomization's status
// (inventory, lastAppliedRevision, Ready). Like kustomize-controller, a directory with a
// kustomization.yaml is built and any other YAML file is applied as is. It returns the inventory
// ids. Use it on a Flux from ApplyBootstrap whose controllers are not running.
func (f *Flux) SimulateReconcile(t testing.TB) []string {
	t.Helper()
	if f.Controllers != nil {
		t.Fatal("SimulateReconcile is for Flux without running controllers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids, err := f.simulateReconcile(ctx, f.Repo.Head(t))
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func (f *Flux) simulateReconcile(ctx context.Context, commit string) ([]string, error) {
	objs, err := collectManifests(filepath.Join(f.Repo.Dir, filepath.FromSlash(f.Options.Path)))
	if err != nil {
		return nil, err
	}
	if err := normalize.UnstructuredList(objs); err != nil {
		return nil, err
	}
	rm := ssa.NewResourceManager(f.Client, polling.NewStatusPoller(f.Client, f.Client.RESTMapper(), polling.Options{}),
		ssa.Owner{Field: "kustomize-controller", Group: "kustomize.toolkit.fluxcd.io"})
	rm.SetOwnerLabels(objs, f.Key().Name, f.Key().Namespace)
	opts := ssa.DefaultApplyOptions()
	opts.Cleanup = ssa.ApplyCleanupOptions{
		Annotations: []string{"kubectl.kubernetes.io/last-applied-configuration"},
		FieldManagers: []ssa.FieldManager{
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationApply},
			{Name: "kubectl", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: "before-first-apply", OperationType: metav1.ManagedFieldsOperationUpdate},
			{Name: "kustomize-controller", OperationType: metav1.ManagedFieldsOperationUpdate},
		},
	}
	changeSet, err := rm.ApplyAllStaged(ctx, objs, opts)
	if err != nil {
		return nil, fmt.Errorf("applying %s as kustomize-controller: %w", f.Options.Path, err)
	}
	ids := make([]string, 0, len(changeSet.Entries))
	entries := make([]any, 0, len(changeSet.Entries))
	for _, e := range changeSet.Entries {
		id := e.ObjMetadata.String()
		ids = append(ids, id)
		entries = append(entries, map[string]any{"id": id, "v": e.GroupVersion[strings.LastIndex(e.GroupVersion, "/")+1:]})
	}

	ks := &unstructured.Unstructured{}
	ks.SetGroupVersionKind(KustomizationKind())
	if err := f.Client.Get(ctx, f.Key(), ks); err != nil {
		return nil, fmt.Errorf("getting Kustomization %s: %w", f.Key(), err)
	}
	ref := f.Options.Branch
	if f.Options.Tag != "" {
		ref = f.Options.Tag
	}
	revision := ref + "@sha1:" + commit
	now := metav1.Now().UTC().Format(time.RFC3339)
	ks.Object["status"] = map[string]any{
		"observedGeneration":    ks.GetGeneration(),
		"lastAppliedRevision":   revision,
		"lastAttemptedRevision": revision,
		"inventory":             map[string]any{"entries": entries},
		"conditions": []any{map[string]any{
			"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
			"message": "Applied revision: " + revision, "lastTransitionTime": now,
			"observedGeneration": ks.GetGeneration(),
		}},
	}
	if err := f.Client.Status().Update(ctx, ks, client.FieldOwner("kustomize-controller")); err != nil {
		return nil, fmt.Errorf("writing the status of Kustomization %s: %w", f.Key(), err)
	}
	return ids, nil
}

// collectManifests gathers the objects kustomize-controller would apply from root when root has
// no kustomization.yaml: directories with one are built, other YAML files are decoded.
func collectManifests(root string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err == nil {
				built, err := KustomizeBuild(p)
				if err != nil {
					return err
				}
				objs = append(objs, built...)
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		decoded, err := testenv.DecodeYAML(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		objs = append(objs, decoded...)
		return nil
	})
	return objs, err
}
