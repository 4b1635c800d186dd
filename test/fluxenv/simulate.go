package fluxenv

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxcd/pkg/ssa/normalize"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

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
	ref := f.Options.Branch
	if f.Options.Tag != "" {
		ref = f.Options.Tag
	}
	return testenv.SimulateReconcile(ctx, f.Client, objs, testenv.Reconcile{
		Kustomization: f.Key(), Revision: ref + "@sha1:" + commit, Ready: true, Cleanup: true,
	})
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
