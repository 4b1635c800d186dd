package installation

// A Flux installed by Helm: the release that owns it, read from Helm's own release record, and the
// Flux HelmRelease whose helm-controller runs that release when there is one.
//
// The record is decoded with the standard library (base64, gzip, JSON), not with helm.sh/helm/v3:
// the few fields read here are Helm's stable storage format (release.v1), while the library would
// bring some hundred modules (OCI registries, template engines) into a plugin that never renders a
// chart. The tests check the decoding against records written by the real Helm CLI (test/helmenv).

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
)

// Helm's release records (its "secret" storage driver, the default, and "configmap"): one object
// per revision, named sh.helm.release.v1.<release>.v<revision>, labelled owner=helm, name=<release>,
// version=<revision>, status=<status>, holding data.release = base64(gzip(JSON of the release)).
const (
	HelmReleaseSecretType   = "helm.sh/release.v1"
	HelmReleaseRecordPrefix = "sh.helm.release.v1."
	helmLabelOwner          = "owner"
	helmOwnerValue          = "helm"
	helmLabelName           = "name"
	helmLabelVersion        = "version"
	helmReleaseKey          = "release"
)

// FluxHelmReleaseGVK is the Flux HelmRelease kind (helm.toolkit.fluxcd.io/v2, served since Flux 2.3).
var FluxHelmReleaseGVK = schema.GroupVersionKind{Group: "helm.toolkit.fluxcd.io", Version: "v2", Kind: "HelmRelease"}

// HelmRelease is the Helm release that installed Flux, from the Flux CRD's Helm annotations and the
// release's latest record.
type HelmRelease struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Revision, Status, Chart, ChartVersion and AppVersion are the latest record's (helm status).
	Revision     int    `json:"revision,omitempty"`
	Status       string `json:"status,omitempty"`
	Chart        string `json:"chart,omitempty"`
	ChartVersion string `json:"chartVersion,omitempty"`
	AppVersion   string `json:"appVersion,omitempty"`
	// Record names the object the release was read from: Secret/flux-system/sh.helm.release.v1.flux2.v1.
	Record string `json:"record,omitempty"`
	// Values are the values the user supplied (`helm get values`). Never printed: Helm keeps them
	// in a Secret because they may hold credentials, while `version -o json` ends up in bug reports.
	Values map[string]any `json:"-"`
	// ValuesSet names every value the user supplied as a dotted path (logLevel, policies.create).
	ValuesSet []string `json:"valuesSet,omitempty"`
	// Manifest is what the release installed, as Helm rendered it (multi-document YAML, hooks
	// aside): the objects `helm uninstall` would delete. See ManifestObjects.
	Manifest string `json:"-"`
	// ManagedBy is the Flux HelmRelease whose helm-controller runs this release, when one does.
	ManagedBy *FluxHelmRelease `json:"managedBy,omitempty"`
	// Unread says why the record could not be read (no permission to list Secrets there, no
	// record, a record that does not decode): the rest then comes from the annotations alone.
	Unread string `json:"unread,omitempty"`
}

// FluxHelmRelease is a Flux HelmRelease named by helm-controller's labels on the installed objects.
type FluxHelmRelease struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Found is false when the HelmRelease no longer exists (or its kind is not served).
	Found     bool `json:"found"`
	Suspended bool `json:"suspended,omitempty"`
	// StorageNamespace is where helm-controller keeps the release records (spec.storageNamespace,
	// by default the HelmRelease's namespace).
	StorageNamespace string `json:"storageNamespace,omitempty"`
	// Unread says why the HelmRelease could not be read.
	Unread string `json:"unread,omitempty"`
}

// DetectHelm reads the Helm release that owns obj (an installed Flux object, e.g. its CRD), or
// returns nil when obj carries no Helm release annotation. Permission errors are reported in the
// result, not returned: `version` and `status` must answer for a user who may not read Secrets.
func DetectHelm(ctx context.Context, c client.Reader, obj metav1.Object) (*HelmRelease, error) {
	ann := obj.GetAnnotations()
	name := ann[ownership.AnnotationHelmReleaseName]
	if name == "" {
		return nil, nil
	}
	rel := &HelmRelease{Name: name, Namespace: ann[ownership.AnnotationHelmReleaseNamespace]}
	labels := obj.GetLabels()
	if hr := labels[ownership.LabelHelmName]; hr != "" {
		fhr, err := readFluxHelmRelease(ctx, c, labels[ownership.LabelHelmNamespace], hr)
		if err != nil {
			return nil, err
		}
		rel.ManagedBy = fhr
	}
	if err := readHelmRecord(ctx, c, rel, rel.StorageNamespace()); err != nil {
		return nil, err
	}
	return rel, nil
}

// readHelmRecord fills rel from its latest record in namespace: Secrets first (Helm's default
// driver), then ConfigMaps (HELM_DRIVER=configmap). Only metadata is listed; the one latest record
// is read.
func readHelmRecord(ctx context.Context, c client.Reader, rel *HelmRelease, namespace string) error {
	for _, kind := range []string{"Secret", "ConfigMap"} {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind + "List"))
		err := c.List(ctx, list, client.InNamespace(namespace),
			client.MatchingLabels{helmLabelOwner: helmOwnerValue, helmLabelName: rel.Name})
		if unreadable(err) {
			rel.Unread = fmt.Sprintf("cannot list %ss in %s: %v", kind, namespace, err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("listing the records of Helm release %s/%s (%ss labelled owner=helm in %s): %w", rel.Namespace, rel.Name, kind, namespace, err)
		}
		latest, revision := "", -1
		for _, item := range list.Items {
			if v, err := strconv.Atoi(item.Labels[helmLabelVersion]); err == nil && v > revision {
				latest, revision = item.Name, v
			}
		}
		if latest == "" {
			continue
		}
		return readHelmRecordObject(ctx, c, rel, kind, client.ObjectKey{Namespace: namespace, Name: latest})
	}
	rel.Unread = fmt.Sprintf("no release record (Secret or ConfigMap %s%s.v<N>) in %s", HelmReleaseRecordPrefix, rel.Name, namespace)
	return nil
}

func readHelmRecordObject(ctx context.Context, c client.Reader, rel *HelmRelease, kind string, key client.ObjectKey) error {
	ref := kind + "/" + key.Namespace + "/" + key.Name
	var data []byte
	var err error
	if kind == "Secret" {
		s := &corev1.Secret{}
		if err = c.Get(ctx, key, s); err == nil {
			data = s.Data[helmReleaseKey]
		}
	} else {
		cm := &corev1.ConfigMap{}
		if err = c.Get(ctx, key, cm); err == nil {
			data = []byte(cm.Data[helmReleaseKey])
		}
	}
	if unreadable(err) {
		rel.Unread = fmt.Sprintf("cannot read %s: %v", ref, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the Helm release record %s: %w", ref, err)
	}
	decoded, err := DecodeHelmRelease(data)
	if err != nil {
		// Reported, not returned: `version` still answers; whatever adopts the release must
		// refuse on Unread.
		rel.Unread = fmt.Sprintf("cannot decode %s (data.%s): %v", ref, helmReleaseKey, err)
		return nil
	}
	if decoded.Namespace == "" {
		decoded.Namespace = rel.Namespace
	}
	decoded.Record, decoded.ManagedBy = ref, rel.ManagedBy
	*rel = decoded
	return nil
}

func unreadable(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)
}

// helmRecord is the part of Helm's release JSON (pkg/release.Release) read here.
type helmRecord struct {
	Name string `json:"name"`
	Info struct {
		Status string `json:"status"`
	} `json:"info"`
	Chart struct {
		Metadata struct {
			Name       string `json:"name"`
			Version    string `json:"version"`
			AppVersion string `json:"appVersion"`
		} `json:"metadata"`
	} `json:"chart"`
	Config    map[string]any `json:"config"`
	Manifest  string         `json:"manifest"`
	Version   int            `json:"version"`
	Namespace string         `json:"namespace"`
}

// DecodeHelmRelease decodes a release record's data.release: base64, then gzip when the gzip magic
// is there (Helm writes it compressed but reads either), then JSON.
func DecodeHelmRelease(data []byte) (HelmRelease, error) {
	raw, err := base64.StdEncoding.DecodeString(string(data))
	if err != nil {
		return HelmRelease{}, fmt.Errorf("not base64: %w", err)
	}
	if bytes.HasPrefix(raw, []byte{0x1f, 0x8b, 0x08}) {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return HelmRelease{}, fmt.Errorf("not gzip: %w", err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return HelmRelease{}, fmt.Errorf("not gzip: %w", err)
		}
	}
	var rec helmRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return HelmRelease{}, fmt.Errorf("not a Helm release (JSON): %w", err)
	}
	return HelmRelease{
		Name: rec.Name, Namespace: rec.Namespace, Revision: rec.Version, Status: rec.Info.Status,
		Chart: rec.Chart.Metadata.Name, ChartVersion: rec.Chart.Metadata.Version, AppVersion: rec.Chart.Metadata.AppVersion,
		Values: rec.Config, ValuesSet: valuePaths("", rec.Config, nil), Manifest: rec.Manifest,
	}, nil
}

// StorageNamespace is where the release's records are: the release's namespace, or the storage
// namespace of the HelmRelease whose helm-controller runs it.
func (r *HelmRelease) StorageNamespace() string {
	if m := r.ManagedBy; m != nil && m.StorageNamespace != "" {
		return m.StorageNamespace
	}
	return r.Namespace
}

// ManifestObject is one object of a release's manifest, as Helm rendered it: Namespace is empty
// when the template sets none (Helm then installs a namespaced object in the release's namespace).
type ManifestObject struct {
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
}

// ManifestObjects lists the objects of the release's manifest, in its order.
func (r *HelmRelease) ManifestObjects() ([]ManifestObject, error) {
	var out []ManifestObject
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(r.Manifest), 4096)
	for i := 1; ; i++ {
		var obj unstructured.Unstructured
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("the manifest of Helm release %s/%s, document %d: %w", r.Namespace, r.Name, i, err)
		}
		if obj.Object == nil {
			continue // an empty document (a template that rendered nothing)
		}
		out = append(out, ManifestObject{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()})
	}
}

// valuePaths lists the leaves of values as sorted dotted paths; a list is one leaf (Helm replaces
// lists whole, it never merges them).
func valuePaths(prefix string, values map[string]any, out []string) []string {
	for k, v := range values {
		path := k
		if prefix != "" {
			path = prefix + "." + k
		}
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			out = valuePaths(path, m, out)
			continue
		}
		out = append(out, path)
	}
	sort.Strings(out)
	return out
}

// readFluxHelmRelease reads the HelmRelease helm-controller's labels name.
func readFluxHelmRelease(ctx context.Context, c client.Reader, namespace, name string) (*FluxHelmRelease, error) {
	fhr := &FluxHelmRelease{Name: name, Namespace: namespace, StorageNamespace: namespace}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(FluxHelmReleaseGVK)
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	switch {
	case apierrors.IsNotFound(err) || apimeta.IsNoMatchError(err):
		return fhr, nil
	case unreadable(err):
		fhr.Unread = err.Error()
		return fhr, nil
	case err != nil:
		return nil, fmt.Errorf("reading HelmRelease %s/%s (named by the %s label of the Flux CRD): %w", namespace, name, ownership.LabelHelmName, err)
	}
	fhr.Found = true
	fhr.Suspended, _, _ = unstructured.NestedBool(obj.Object, "spec", "suspend")
	if ns, _, _ := unstructured.NestedString(obj.Object, "spec", "storageNamespace"); ns != "" {
		fhr.StorageNamespace = ns
	}
	return fhr, nil
}

// Summary is the release in one line, for `version` and `status`: "release flux2 in flux-system,
// chart flux2-2.18.3, revision 1, deployed; managed by HelmRelease flux-system/flux2, suspended".
func (r *HelmRelease) Summary() string {
	parts := []string{fmt.Sprintf("release %s in %s", r.Name, r.Namespace)}
	if r.Chart != "" {
		parts = append(parts, fmt.Sprintf("chart %s-%s", r.Chart, r.ChartVersion))
	}
	if r.Revision > 0 {
		parts = append(parts, fmt.Sprintf("revision %d", r.Revision), r.Status)
	}
	if r.Unread != "" {
		parts = append(parts, "record not read: "+r.Unread)
	}
	s := strings.Join(parts, ", ")
	if m := r.ManagedBy; m != nil {
		s += fmt.Sprintf("; managed by HelmRelease %s/%s, %s", m.Namespace, m.Name, m.state())
	}
	return s
}

func (m *FluxHelmRelease) state() string {
	switch {
	case m.Unread != "":
		return "not read: " + m.Unread
	case !m.Found:
		return "not found"
	case m.Suspended:
		return "suspended"
	}
	return "reconciled by helm-controller"
}

// ManagedByText is ManagedBy with the Helm release when there is one:
// "Helm (release flux2 in flux-system, chart flux2-2.18.3, revision 1, deployed)".
func (i Installation) ManagedByText() string {
	if i.Helm == nil || i.ManagedBy != ManagedByHelm {
		return i.ManagedBy
	}
	return i.ManagedBy + " (" + i.Helm.Summary() + ")"
}
