// Package helmenv installs Flux the way Terraform and Helm pipelines do: the real Helm CLI
// (helm.sh/helm/v3 cmd/helm v3.22.0, built from the Go module proxy by test/binaries/helm/build.sh in
// a module of its own, never imported here) installs the real Flux community chart
// (../shared/helm-charts/flux2, chart 2.18.3, Flux 2.8.5) into a test API server (test/testenv).
//
// What differs from a cluster, and why:
//   - --no-hooks: the chart's pre-install hook is a Job (`flux check --pre`, with its ServiceAccount)
//     and, with crds.migration.enabled, its pre-upgrade hook a Job running `flux migrate`. Helm waits
//     for a hook Job to complete, and no kubelet runs in testenv, so it would never complete: helm
//     would fail after --timeout. Both hooks delete themselves once they succeed in a cluster
//     (hook-delete-policy hook-succeeded), so what remains afterwards is the same: the release's
//     objects and its record. The release record still lists the hooks, as Helm rendered them.
//   - no --wait: the Deployments never become ready without a kubelet.
//
// Helm's configuration, cache and data directories are temporary per Helm value, so nothing is read
// from or written to the user's ~/.config/helm.
//
// Release.Labels stands in for helm-controller (which the harness does not build) when a HelmRelease
// manages the chart: it adds the same origin labels to every rendered object, as helm-controller's
// post-renderer does, through a Helm post-renderer that is the test binary itself. A package that
// uses it calls PostRenderMain first thing in its TestMain.
//
// Building helm cold takes about 2 minutes on 2 cores (test/binaries/helm/build.sh); test/e2e/helm,
// which installs, upgrades, uninstalls and installs the chart again, takes about 10 s.
package helmenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

const (
	// Version is the Helm version build.sh builds (test/binaries/helm/go.mod).
	Version = "v3.22.0"
	// BinaryEnv names a helm binary to use instead of the cached build.
	BinaryEnv = "HELM_BIN"
	// ChartEnv names the Flux community chart's directory (default ../shared/helm-charts/flux2).
	ChartEnv = "FLUX_CHART_DIR"
	// ChartName, ChartVersion and AppVersion are the chart's Chart.yaml.
	ChartName    = "flux2"
	ChartVersion = "2.18.3"
	AppVersion   = "2.8.5"
	// Hint says how to get helm.
	Hint = "build it with `make helm-tools` (test/binaries/helm/build.sh, cached under " +
		"~/.cache/kubectl-fluxinstance-testenv), or set " + BinaryEnv + " to a helm " + Version + " binary"

	// postRenderEnv carries Release.Labels to the post-renderer (the test binary run by helm).
	postRenderEnv = "HELMENV_POST_RENDER_LABELS"
	// timeout bounds one helm command: an install without hooks or --wait takes seconds.
	timeout = 2 * time.Minute
)

// Helm is the helm binary, the chart it installs and its private home directories.
type Helm struct {
	Binary string
	Chart  string
	home   string
}

// Find returns helm without building it: $HELM_BIN, else the binary cached by build.sh. ok is false
// when there is none; err reports a HELM_BIN that is unusable.
func Find() (bin string, ok bool, err error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", false, fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		return p, true, nil
	}
	dir, err := testenv.RunBuildScript("helm", "--check")
	if err != nil {
		return "", false, nil
	}
	return filepath.Join(dir, "helm"), true, nil
}

// Build builds (or reuses) helm with build.sh.
func Build() (string, error) {
	dir, err := testenv.RunBuildScript("helm")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "helm"), nil
}

// Require returns helm and the chart. helm is cached by `make helm-tools` (part of `make test`'s
// harness); when it is not, CI (CI=true) builds it and fails the test when that fails, while a
// developer's run skips with Hint. A missing chart skips, or fails in CI, like the distribution data.
func Require(t testing.TB) *Helm {
	t.Helper()
	chart := testenv.SharedDir(t, ChartEnv, filepath.Join("helm-charts", "flux2"), "Chart.yaml", "the Flux Helm chart")
	bin, ok, err := Find()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		if !testenv.InCI() {
			t.Skip("helm is not built: " + Hint)
		}
		if bin, err = Build(); err != nil {
			t.Fatalf("CI=true: the test needs helm: %v", err)
		}
	}
	return &Helm{Binary: bin, Chart: chart, home: t.TempDir()}
}

// Release is one `helm install` or `helm upgrade` of the chart.
type Release struct {
	Name      string
	Namespace string
	// Values are written to a values file (--values), as a pipeline's values would be.
	Values map[string]any
	// Labels are added to every rendered object by the post-renderer (see the package comment).
	Labels map[string]string
	// Driver is Helm's storage driver for the release records (HELM_DRIVER): "" is Helm's default,
	// Secrets; "configmap" keeps them in ConfigMaps.
	Driver string
}

// Install runs `helm install` of the chart and returns its output; the namespace is created.
func (h *Helm) Install(t testing.TB, env *testenv.Env, rel Release) string {
	t.Helper()
	return h.release(t, env, "install", rel, "--create-namespace")
}

// Upgrade runs `helm upgrade` of the chart (a new revision) and returns its output.
func (h *Helm) Upgrade(t testing.TB, env *testenv.Env, rel Release) string {
	t.Helper()
	return h.release(t, env, "upgrade", rel)
}

func (h *Helm) release(t testing.TB, env *testenv.Env, verb string, rel Release, extra ...string) string {
	t.Helper()
	args := append([]string{verb, rel.Name, h.Chart, "--namespace", rel.Namespace, "--no-hooks"}, extra...)
	if rel.Values != nil {
		data, err := yaml.Marshal(rel.Values)
		if err != nil {
			t.Fatalf("encoding the values of release %s: %v", rel.Name, err)
		}
		file := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", file)
	}
	var environ []string
	if rel.Driver != "" {
		environ = append(environ, "HELM_DRIVER="+rel.Driver)
	}
	if len(rel.Labels) > 0 {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		labels, err := yaml.Marshal(rel.Labels)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--post-renderer", self)
		environ = append(environ, postRenderEnv+"="+string(labels))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := h.Run(ctx, env, environ, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Uninstall runs `helm uninstall` of a release whose records are Secrets and returns its output.
func (h *Helm) Uninstall(t testing.TB, env *testenv.Env, name, namespace string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := h.Run(ctx, env, nil, "uninstall", name, "--namespace", namespace, "--no-hooks")
	if err != nil {
		t.Fatalf("helm uninstall %s: %v\n%s", name, err, out)
	}
	return string(out)
}

// Run runs helm with args against env's API server (its admin kubeconfig), with extra environment
// variables, and returns its combined output. HELM_DRIVER is Helm's default (Secrets), set so that a
// developer's own HELM_DRIVER does not move the release records the tests read.
func (h *Helm) Run(ctx context.Context, env *testenv.Env, environ []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.Binary, append(args, "--kubeconfig", env.Kubeconfig)...)
	cmd.Env = append(append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
		"HELM_DRIVER=secret",
	), environ...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// AsHelmController rewrites the field manager of every object of the namespace's Flux installation
// (labelled app.kubernetes.io/part-of=flux, cluster-wide) from helm to helm-controller, which is
// what helm-controller writes when a HelmRelease runs the chart (it sets Helm's managed-fields
// manager to its own name). With Release.Labels it completes the stand-in for helm-controller.
func AsHelmController(t testing.TB, c client.Client, kinds []schema.GroupVersionKind) {
	t.Helper()
	ctx := context.Background()
	for _, gvk := range kinds {
		var list unstructured.UnstructuredList
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, &list, client.MatchingLabels{"app.kubernetes.io/part-of": "flux"}); err != nil {
			t.Fatalf("listing %s: %v", gvk.Kind, err)
		}
		for i := range list.Items {
			obj := &list.Items[i]
			var ops []map[string]any
			for j, mf := range obj.GetManagedFields() {
				if mf.Manager == "helm" {
					ops = append(ops, map[string]any{"op": "replace", "path": fmt.Sprintf("/metadata/managedFields/%d/manager", j), "value": "helm-controller"})
				}
			}
			if len(ops) == 0 {
				continue
			}
			patch, err := json.Marshal(ops)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, patch), client.FieldOwner("helm-controller")); err != nil {
				t.Fatalf("%s %s/%s: renaming the helm field manager: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
			}
		}
	}
}
