// Package helm installs Flux with the real Helm CLI from the real community chart (test/helmenv) into
// a test API server and checks what the plugin detects of it: the release, its record (Secrets, or
// ConfigMaps with HELM_DRIVER=configmap), the values the user set, a HelmRelease that manages it,
// and what `version` and `status` print. One API server for all: the subtests run in order.
package helm

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
	"github.com/fluxinstance/kubectl-fluxinstance/plugin"
	"github.com/fluxinstance/kubectl-fluxinstance/test/helmenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/pluginrun"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestMain lets the test binary serve as helm's post-renderer too (helmenv.Release.Labels: the
// stand-in for helm-controller's origin labels).
func TestMain(m *testing.M) { helmenv.Main(m) }

const (
	release   = "flux2"
	namespace = "flux-system"
)

// chartComponents are the controllers the chart installs by default (sourceWatcher.create is false).
func chartComponents() []string {
	return []string{"helm-controller", "image-automation-controller", "image-reflector-controller",
		"kustomize-controller", "notification-controller", "source-controller"}
}

// values differ from the chart's defaults (logLevel info, no pull secrets, policies created).
func values() map[string]any {
	return map[string]any{
		"logLevel":         "debug",
		"imagePullSecrets": []any{map[string]any{"name": "regcred"}},
		"policies":         map[string]any{"create": false},
	}
}

// fixture is the one API server with the chart installed that the subtests share, in order.
type fixture struct {
	h      *helmenv.Helm
	env    *testenv.Env
	c      client.Client
	plugin pluginrun.Plugin
}

func (f *fixture) run(t *testing.T, args ...string) pluginrun.Result {
	t.Helper()
	return f.plugin.Run(t, "", append(args, "--kubeconfig", f.env.Kubeconfig)...)
}

func TestHelmInstallation(t *testing.T) {
	f := &fixture{h: helmenv.Require(t), plugin: pluginrun.With(plugin.Run, plugin.BuildInfo{Version: "v0.0.0-e2e-helm"})}
	f.env = testenv.Start(t)
	f.c = f.env.Client(t)
	f.h.Install(t, f.env, helmenv.Release{Name: release, Namespace: namespace, Values: values()})

	t.Run("detected from the release record", f.detected)
	t.Run("the values took effect", f.valuesTookEffect)
	t.Run("the record decodes as helm reads it", f.recordDecodes)
	t.Run("version and status", f.versionAndStatus)
	t.Run("a user who may read only the CRD", f.crdReaderOnly)
	t.Run("managed by a Flux HelmRelease", f.managedByHelmRelease)
	t.Run("records in ConfigMaps", f.recordsInConfigMaps)
}

func (f *fixture) detected(t *testing.T) {
	ctx := context.Background()
	inst, err := installation.DetectInstallation(ctx, f.c)
	require.NoError(t, err)
	assert.Equal(t, installation.ManagedByHelm, inst.ManagedBy)
	assert.Equal(t, helmenv.AppVersion, inst.Version, "the CRD's app.kubernetes.io/version label")
	assert.Equal(t, namespace, inst.Namespace)
	require.NotNil(t, inst.Helm)
	hr := *inst.Helm
	// The manifest is the one Helm itself reads back (what `helm uninstall` would delete).
	manifest, err := f.h.Run(ctx, f.env, nil, "get", "manifest", release, "--namespace", namespace)
	require.NoError(t, err, "%s", manifest)
	assert.Equal(t, strings.TrimSpace(string(manifest)), strings.TrimSpace(hr.Manifest))
	objs, err := hr.ManifestObjects()
	require.NoError(t, err)
	assert.Contains(t, objs, installation.ManifestObject{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: installation.FluxDetectionCRD})
	hr.Manifest = ""
	assert.Equal(t, installation.HelmRelease{
		Name: release, Namespace: namespace, Revision: 1, Status: "deployed",
		Chart: helmenv.ChartName, ChartVersion: helmenv.ChartVersion, AppVersion: helmenv.AppVersion,
		Record: "Secret/flux-system/sh.helm.release.v1.flux2.v1", Values: values(),
		ValuesSet: []string{"imagePullSecrets", "logLevel", "policies.create"},
	}, hr)
}

func (f *fixture) valuesTookEffect(t *testing.T) {
	ctx := context.Background()
	var deps appsv1.DeploymentList
	require.NoError(t, f.c.List(ctx, &deps, client.InNamespace(namespace)))
	var names []string
	for _, d := range deps.Items {
		names = append(names, d.Name)
		assert.Equal(t, release, d.Annotations[ownership.AnnotationHelmReleaseName], d.Name)
		assert.Equal(t, []corev1.LocalObjectReference{{Name: "regcred"}}, d.Spec.Template.Spec.ImagePullSecrets, d.Name)
		assert.Contains(t, d.Spec.Template.Spec.Containers[0].Args, "--log-level=debug", d.Name)
	}
	assert.ElementsMatch(t, chartComponents(), names)
	var policies networkingv1.NetworkPolicyList
	require.NoError(t, f.c.List(ctx, &policies, client.InNamespace(namespace)))
	assert.Empty(t, policies.Items, "policies.create=false")
}

func (f *fixture) recordDecodes(t *testing.T) {
	ctx := context.Background()
	s := &corev1.Secret{}
	require.NoError(t, f.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "sh.helm.release.v1.flux2.v1"}, s))
	assert.Equal(t, corev1.SecretType(installation.HelmReleaseSecretType), s.Type)
	got, err := installation.DecodeHelmRelease(s.Data["release"])
	require.NoError(t, err)

	// Helm's own reading of the same record.
	out, err := f.h.Run(ctx, f.env, nil, "get", "values", release, "-n", namespace, "-o", "json")
	require.NoError(t, err, string(out))
	var helmValues map[string]any
	require.NoError(t, json.Unmarshal(out, &helmValues), string(out))
	assert.Equal(t, helmValues, got.Values)
	out, err = f.h.Run(ctx, f.env, nil, "status", release, "-n", namespace, "-o", "json")
	require.NoError(t, err, string(out))
	var status struct {
		Version int `json:"version"`
		Info    struct {
			Status string `json:"status"`
		} `json:"info"`
	}
	require.NoError(t, json.Unmarshal(out, &status), string(out))
	assert.Equal(t, status.Version, got.Revision)
	assert.Equal(t, status.Info.Status, got.Status)
	assert.Equal(t, release, got.Name)
	assert.Equal(t, namespace, got.Namespace)

	_, err = installation.DecodeHelmRelease([]byte("not base64!"))
	assert.ErrorContains(t, err, "not base64")
	_, err = installation.DecodeHelmRelease(s.Data["release"][:len(s.Data["release"])/2])
	assert.Error(t, err, "a truncated record")
}

func (f *fixture) versionAndStatus(t *testing.T) {
	r := f.run(t, "version")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "Client Version: v0.0.0-e2e-helm\nFlux Version: 2.8.5\n"+
		"Managed By: Helm (release flux2 in flux-system, chart flux2-2.18.3, revision 1, deployed)\n"+
		"Namespace: flux-system\n", r.Stdout)

	r = f.run(t, "version", "-o", "json")
	require.Equal(t, 0, r.Code, r.Stderr)
	var report plugin.VersionReport
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &report), r.Stdout)
	require.NotNil(t, report.Flux)
	require.NotNil(t, report.Flux.Helm)
	assert.Equal(t, []string{"imagePullSecrets", "logLevel", "policies.create"}, report.Flux.Helm.ValuesSet)
	assert.NotContains(t, r.Stdout, "regcred", "values are never printed")

	r = f.run(t, "status")
	require.Equal(t, 0, r.Code, r.Stderr)
	assertRow(t, r.Stdout, "Managed By:", "Helm (release flux2 in flux-system, chart flux2-2.18.3, revision 1, deployed)")
	assertRow(t, r.Stdout, "Helm Record:", "Secret/flux-system/sh.helm.release.v1.flux2.v1")
	assertRow(t, r.Stdout, "Helm Values Set:", "imagePullSecrets, logLevel, policies.create")
	assert.NotContains(t, r.Stdout, "regcred")

	r = f.run(t, "status", "-o", "json")
	require.Equal(t, 0, r.Code, r.Stderr)
	var status plugin.StatusReport
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &status), r.Stdout)
	assert.Equal(t, namespace, status.Namespace, "the release's namespace")
	var components []string
	for _, comp := range status.Components {
		components = append(components, comp.Name)
	}
	assert.ElementsMatch(t, chartComponents(), components)
}

func (f *fixture) crdReaderOnly(t *testing.T) {
	kubeconfig := crdReader(t, f.c, f.env)
	r := f.plugin.Run(t, "", "version", "--kubeconfig", kubeconfig)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "Managed By: Helm (release flux2 in flux-system, record not read: cannot list Secrets in flux-system: ")
	assert.Contains(t, r.Stdout, "forbidden")
}

func (f *fixture) managedByHelmRelease(t *testing.T) {
	ctx := context.Background()
	// helm-controller taking over the release: a new revision whose objects carry its labels.
	f.h.Upgrade(t, f.env, helmenv.Release{Name: release, Namespace: namespace, Values: values(), Labels: map[string]string{
		ownership.LabelHelmName: "flux", ownership.LabelHelmNamespace: namespace,
	}})
	inst, err := installation.DetectInstallation(ctx, f.c)
	require.NoError(t, err)
	require.NotNil(t, inst.Helm)
	assert.Equal(t, 2, inst.Helm.Revision)
	assert.Equal(t, "Secret/flux-system/sh.helm.release.v1.flux2.v2", inst.Helm.Record)
	assert.Equal(t, &installation.FluxHelmRelease{Name: "flux", Namespace: namespace, StorageNamespace: namespace}, inst.Helm.ManagedBy)

	require.NoError(t, f.c.Create(ctx, fluxHelmRelease()))
	r := f.run(t, "version")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "Managed By: Helm (release flux2 in flux-system, chart flux2-2.18.3, revision 2, deployed; "+
		"managed by HelmRelease flux-system/flux, suspended)\n")
}

func (f *fixture) recordsInConfigMaps(t *testing.T) {
	ctx := context.Background()
	f.h.Uninstall(t, f.env, release, namespace)
	// helm deleted the CRDs; the API server finishes deleting them (and their objects) itself.
	require.Eventually(t, func() bool {
		crds := &metav1.PartialObjectMetadataList{}
		crds.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinitionList"))
		if err := f.c.List(ctx, crds); err != nil {
			t.Logf("listing CRDs: %v", err)
			return false
		}
		for _, crd := range crds.Items {
			if strings.HasSuffix(crd.Name, ".toolkit.fluxcd.io") {
				return false
			}
		}
		return true
	}, time.Minute, 100*time.Millisecond, "the chart's CRDs are deleted")
	var secrets corev1.SecretList
	require.NoError(t, f.c.List(ctx, &secrets, client.InNamespace(namespace), client.MatchingLabels{"owner": "helm"}))
	assert.Empty(t, secrets.Items, "helm uninstall deletes the release records")

	f.h.Install(t, f.env, helmenv.Release{Name: release, Namespace: namespace, Driver: "configmap"})
	inst, err := installation.DetectInstallation(ctx, f.c)
	require.NoError(t, err)
	require.NotNil(t, inst.Helm)
	hr := *inst.Helm
	assert.NotEmpty(t, hr.Manifest, "read from the ConfigMap record too")
	hr.Manifest = ""
	assert.Equal(t, installation.HelmRelease{
		Name: release, Namespace: namespace, Revision: 1, Status: "deployed",
		Chart: helmenv.ChartName, ChartVersion: helmenv.ChartVersion, AppVersion: helmenv.AppVersion,
		Record: "ConfigMap/flux-system/sh.helm.release.v1.flux2.v1",
	}, hr)
	r := f.run(t, "status")
	require.Equal(t, 0, r.Code, r.Stderr)
	assertRow(t, r.Stdout, "Helm Values Set:", "none (the chart's defaults)")
}

// assertRow checks that out has the line "label value", whatever the tab writer's padding.
func assertRow(t *testing.T, out, label, value string) {
	t.Helper()
	assert.Regexp(t, "(?m)^"+regexp.QuoteMeta(label)+" +"+regexp.QuoteMeta(value)+"$", out)
}

// fluxHelmRelease is a suspended HelmRelease that manages the chart (its CRD is the chart's).
func fluxHelmRelease() *unstructured.Unstructured {
	hr := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "flux", "namespace": namespace},
		"spec": map[string]any{
			"interval": "1h", "releaseName": release, "suspend": true,
			"chart": map[string]any{"spec": map[string]any{
				"chart": helmenv.ChartName, "version": helmenv.ChartVersion,
				"sourceRef": map[string]any{"kind": "HelmRepository", "name": "fluxcd-community"},
			}},
		},
	}}
	hr.SetGroupVersionKind(installation.FluxHelmReleaseGVK)
	return hr
}

// crdReader returns the kubeconfig of a user who may get the Flux CRD and nothing else.
func crdReader(t *testing.T, c client.Client, env *testenv.Env) string {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "crd-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"},
			Verbs: []string{"get"}, ResourceNames: []string{installation.FluxDetectionCRD}}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "crd-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "dora"}},
	}
	require.NoError(t, c.Create(ctx, role))
	require.NoError(t, c.Create(ctx, binding))
	return env.UserKubeconfig(t, "dora")
}
