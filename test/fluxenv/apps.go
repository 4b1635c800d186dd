package fluxenv

import (
	"fmt"
	"path"
	"testing"
)

// App is a user application in the fleet repository: a ConfigMap and a Deployment, both named Name,
// in Namespace. Its files live in <Path>/apps/<Namespace>/: namespace.yaml and <Name>.yaml.
type App struct {
	Namespace, Name string
}

// File is the repository-relative path of the app's ConfigMap and Deployment.
func (a App) File(clusterPath string) string {
	return path.Join(clusterPath, "apps", a.Namespace, a.Name+".yaml")
}

// NamespaceFile is the repository-relative path of the app namespace's manifest.
func (a App) NamespaceFile(clusterPath string) string {
	return path.Join(clusterPath, "apps", a.Namespace, "namespace.yaml")
}

// Manifest is the app's ConfigMap and Deployment. The image is never pulled: no kubelet runs.
func (a App) Manifest() string {
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: %[1]s
  namespace: %[2]s
data:
  owner: flux
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: 1
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
    spec:
      containers:
      - name: app
        image: ghcr.io/stefanprodan/podinfo:6.9.0
        envFrom:
        - configMapRef:
            name: %[1]s
`, a.Name, a.Namespace)
}

// NamespaceManifest is the app's Namespace.
func (a App) NamespaceManifest() string {
	return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", a.Namespace)
}

// AddApp writes the app (and its namespace) into the work tree under clusterPath; commit it with
// CommitAndPush or Flux.Push.
func (r *Repo) AddApp(t testing.TB, clusterPath string, a App) {
	t.Helper()
	r.WriteFile(t, a.NamespaceFile(clusterPath), a.NamespaceManifest())
	r.WriteFile(t, a.File(clusterPath), a.Manifest())
}

// RemoveApp deletes the app's ConfigMap and Deployment from the work tree (the namespace stays, so
// that pruning does not wait for a namespace deletion no controller manager finishes).
func (r *Repo) RemoveApp(t testing.TB, clusterPath string, a App) {
	t.Helper()
	r.Remove(t, a.File(clusterPath))
}
