package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FluxInstall describes a Flux installation to simulate from the distribution data, the way the
// Flux CLI, `flux bootstrap` or Helm would leave it in a cluster (no controllers run).
type FluxInstall struct {
	// Version is a directory of flux/ in the distribution, e.g. "v2.7.5".
	Version string
	// Namespace defaults to flux-system.
	Namespace string
	// CRDsOnly installs only the CustomResourceDefinitions.
	CRDsOnly bool
	// Bootstrapped adds kustomize-controller's owner labels and applies as kustomize-controller,
	// as after the first reconcile of a `flux bootstrap` cluster.
	Bootstrapped bool
	// ManagedBy sets app.kubernetes.io/managed-by (e.g. "Helm" or "flux-operator").
	ManagedBy string
	// FieldManager overrides the field manager (default "flux", or "kustomize-controller" when
	// Bootstrapped).
	FieldManager string
}

// InstallFlux applies the Flux objects of one distribution version to the environment with
// server-side apply and returns them.
func (e *Env) InstallFlux(t testing.TB, in FluxInstall) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	objs, err := e.InstallFluxFrom(ctx, DistributionDir(t), in)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// InstallFluxFrom is InstallFlux for callers without a testing.TB (the demo, benchmarks).
func (e *Env) InstallFluxFrom(ctx context.Context, distDir string, in FluxInstall) ([]*unstructured.Unstructured, error) {
	if in.Namespace == "" {
		in.Namespace = "flux-system"
	}
	objs, err := ReadManifests(filepath.Join(distDir, "flux", in.Version))
	if err != nil {
		return nil, fmt.Errorf("reading Flux %s: %w", in.Version, err)
	}
	var selected []*unstructured.Unstructured
	for _, obj := range objs {
		isCRD := obj.GetKind() == "CustomResourceDefinition"
		if in.CRDsOnly && !isCRD {
			continue
		}
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels["app.kubernetes.io/instance"] = in.Namespace
		labels["app.kubernetes.io/part-of"] = "flux"
		labels["app.kubernetes.io/version"] = in.Version
		if in.ManagedBy != "" {
			labels["app.kubernetes.io/managed-by"] = in.ManagedBy
		}
		if in.Bootstrapped {
			labels["kustomize.toolkit.fluxcd.io/name"] = in.Namespace
			labels["kustomize.toolkit.fluxcd.io/namespace"] = in.Namespace
		}
		obj.SetLabels(labels)
		if !isCRD && !isClusterScoped(obj.GetKind()) {
			obj.SetNamespace(in.Namespace)
		}
		selected = append(selected, obj)
	}
	if !in.CRDsOnly {
		ns := &unstructured.Unstructured{}
		ns.SetAPIVersion("v1")
		ns.SetKind("Namespace")
		ns.SetName(in.Namespace)
		ns.SetLabels(map[string]string{"app.kubernetes.io/instance": in.Namespace, "app.kubernetes.io/part-of": "flux"})
		selected = append(selected, ns)
	}
	manager := in.FieldManager
	if manager == "" {
		manager = "flux"
		if in.Bootstrapped {
			manager = "kustomize-controller"
		}
	}
	c, err := client.New(e.Config, client.Options{})
	if err != nil {
		return nil, err
	}
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{}), ssa.Owner{Field: manager})
	if _, err := rm.ApplyAllStaged(ctx, selected, ssa.DefaultApplyOptions()); err != nil {
		return nil, fmt.Errorf("installing Flux %s: %w", in.Version, err)
	}
	return selected, nil
}

// CreateNamespace creates a namespace (tests use one per case on a shared server).
func (e *Env) CreateNamespace(t testing.TB, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := e.Client(t).Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// ReadManifests decodes every YAML document of every *.yaml file in dir, in file-name order.
func ReadManifests(dir string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no *.yaml files in " + dir)
	}
	sort.Strings(files)
	var objs []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		decoded, err := DecodeYAML(data)
		if err != nil {
			return nil, errors.New(f + ": " + err.Error())
		}
		objs = append(objs, decoded...)
	}
	return objs, nil
}

// DecodeYAML decodes a multi-document YAML stream, skipping empty documents.
func DecodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(obj.Object) == 0 {
			continue
		}
		objs = append(objs, obj)
	}
}

func isClusterScoped(kind string) bool {
	switch kind {
	case "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition":
		return true
	}
	return strings.HasSuffix(kind, "Class")
}

// FluxInstanceStandInCRD is a stand-in for the Flux Operator's FluxInstance CRD: it serves the
// kind, with a status subresource, and accepts any content. Tests use it where the plugin reacts
// to the operator's CRD being installed; the operator itself is not run.
const FluxInstanceStandInCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: fluxinstances.fluxcd.controlplane.io
spec:
  group: fluxcd.controlplane.io
  names: {kind: FluxInstance, listKind: FluxInstanceList, plural: fluxinstances, singular: fluxinstance}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`
