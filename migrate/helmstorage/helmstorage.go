// Package helmstorage sets a Helm release's records aside and puts them back: the last step of
// adopting a Flux installed with Helm, and the first of rolling that adoption back.
//
// Helm knows a release only by its records (Secrets, or ConfigMaps with HELM_DRIVER=configmap,
// named sh.helm.release.v1.<release>.v<revision> and found by the labels owner=helm,name=<release>).
// `helm uninstall` deletes every object the latest record's manifest lists, whoever owns it now,
// and `helm upgrade` patches them back to the chart. Once the plugin owns every object, the records
// are moved to copies Helm cannot find (another name, without the owner=helm label): `helm
// uninstall` then answers "release: not found" and deletes nothing. The copies keep every byte, so
// `migrate --rollback` restores the release exactly as Helm left it.
//
// Each move is a create of the copy, then a delete of the original with a precondition on the
// version read: repeating it after an interruption finishes it, and a record that Helm rewrote
// meanwhile is not deleted.
package helmstorage

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/ownership"
)

const (
	// backupPrefix names a set-aside copy: kubectl-fluxinstance.sh.helm.release.v1.flux2.v1.
	backupPrefix = ownership.PluginName + "."
	// LabelBackupOf marks a set-aside copy with its release's name (Helm never lists it: it
	// selects owner=helm).
	LabelBackupOf = ownership.PluginName + "/helm-release"
	// annotationLabels keeps the original's labels, which the copy cannot carry.
	annotationLabels = ownership.PluginName + "/helm-record-labels"

	helmLabelOwner = "owner"
	helmLabelName  = "name"
	helmOwnerValue = "helm"
)

// kinds are the storage drivers' kinds: Helm's default ("secret") and "configmap".
var kinds = []string{"Secret", "ConfigMap"}

// Release names a release's records: the release and the namespace its records are in (the
// release's namespace, or a HelmRelease's storage namespace).
type Release struct {
	Name             string
	StorageNamespace string
}

func (r Release) String() string { return r.StorageNamespace + "/" + r.Name }

// Records lists the records Helm sees for the release (Kind/namespace/name), oldest first.
func Records(ctx context.Context, c client.Client, r Release) ([]string, error) {
	var out []string
	for _, kind := range kinds {
		items, err := list(ctx, c, kind, r.StorageNamespace, client.MatchingLabels{helmLabelOwner: helmOwnerValue, helmLabelName: r.Name})
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			out = append(out, kind+"/"+it.GetNamespace()+"/"+it.GetName())
		}
	}
	return out, nil
}

// SetAside moves every record of the release to a copy Helm does not see and returns what it
// moved. Safe to repeat.
func SetAside(ctx context.Context, c client.Client, r Release) ([]string, error) {
	var moved []string
	for _, kind := range kinds {
		items, err := list(ctx, c, kind, r.StorageNamespace, client.MatchingLabels{helmLabelOwner: helmOwnerValue, helmLabelName: r.Name})
		if err != nil {
			return moved, err
		}
		for i := range items {
			orig := &items[i]
			backup, err := backupOf(orig, r.Name)
			if err != nil {
				return moved, err
			}
			if err := move(ctx, c, orig, backup); err != nil {
				return moved, fmt.Errorf("setting aside the Helm release record %s: %w", kube.Ref(orig), err)
			}
			moved = append(moved, kube.Ref(orig))
		}
	}
	return moved, nil
}

// Restore puts every set-aside record of the release back where Helm finds it and returns what
// it restored. Safe to repeat.
func Restore(ctx context.Context, c client.Client, r Release) ([]string, error) {
	var restored []string
	for _, kind := range kinds {
		items, err := list(ctx, c, kind, r.StorageNamespace, client.MatchingLabels{LabelBackupOf: r.Name})
		if err != nil {
			return restored, err
		}
		for i := range items {
			backup := &items[i]
			orig, err := originalOf(backup)
			if err != nil {
				return restored, err
			}
			if err := move(ctx, c, backup, orig); err != nil {
				return restored, fmt.Errorf("restoring the Helm release record %s: %w", kube.Ref(orig), err)
			}
			restored = append(restored, kube.Ref(orig))
		}
	}
	return restored, nil
}

func list(ctx context.Context, c client.Client, kind, namespace string, labels client.MatchingLabels) ([]unstructured.Unstructured, error) {
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: kind + "List"})
	if err := c.List(ctx, l, client.InNamespace(namespace), labels); err != nil {
		return nil, fmt.Errorf("listing the Helm release records (%ss in %s labelled %v): %w", kind, namespace, map[string]string(labels), err)
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].GetName() < l.Items[j].GetName() })
	return l.Items, nil
}

// move creates to (unless an identical copy exists) and then deletes from, if from is unchanged.
func move(ctx context.Context, c client.Client, from, to *unstructured.Unstructured) error {
	err := c.Create(ctx, to, client.FieldOwner(ownership.PluginFieldManager))
	if apierrors.IsAlreadyExists(err) {
		existing := &unstructured.Unstructured{}
		existing.SetGroupVersionKind(to.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(to), existing); err != nil {
			return err
		}
		if !sameContent(existing, to) {
			return fmt.Errorf("%s already exists with other content: compare the two and delete the one that is not wanted, then run the command again", kube.Ref(to))
		}
	} else if err != nil {
		return fmt.Errorf("creating %s: %w", kube.Ref(to), err)
	}
	uid, rv := from.GetUID(), from.GetResourceVersion()
	err = c.Delete(ctx, from, client.Preconditions{UID: &uid, ResourceVersion: &rv})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s once copied to %s: %w", kube.Ref(from), kube.Ref(to), err)
	}
	return nil
}

// backupOf is the set-aside copy of a record: same content, another name, no Helm labels.
func backupOf(orig *unstructured.Unstructured, release string) (*unstructured.Unstructured, error) {
	labels, err := json.Marshal(orig.GetLabels())
	if err != nil {
		return nil, err
	}
	b := copyContent(orig)
	b.SetName(backupPrefix + orig.GetName())
	b.SetLabels(map[string]string{LabelBackupOf: release})
	b.SetAnnotations(map[string]string{annotationLabels: string(labels)})
	return b, nil
}

// originalOf is the record a set-aside copy was made from.
func originalOf(backup *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	name, ok := strings.CutPrefix(backup.GetName(), backupPrefix)
	var labels map[string]string
	if err := json.Unmarshal([]byte(backup.GetAnnotations()[annotationLabels]), &labels); !ok || err != nil {
		return nil, fmt.Errorf("%s is not a Helm release record set aside by %s (name or annotation %s): delete its %s label if it is yours", kube.Ref(backup), ownership.PluginName, annotationLabels, LabelBackupOf)
	}
	o := copyContent(backup)
	o.SetName(name)
	o.SetLabels(labels)
	return o, nil
}

// copyContent is obj's kind, namespace and content (type, data) without its identity.
func copyContent(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := &unstructured.Unstructured{Object: map[string]any{}}
	for k, v := range obj.DeepCopy().Object {
		if k != "metadata" {
			out.Object[k] = v
		}
	}
	out.SetNamespace(obj.GetNamespace())
	return out
}

func sameContent(a, b *unstructured.Unstructured) bool {
	strip := func(u *unstructured.Unstructured) map[string]any {
		m := maps.Clone(u.Object)
		delete(m, "metadata")
		return m
	}
	return reflect.DeepEqual(strip(a), strip(b)) && maps.Equal(a.GetLabels(), b.GetLabels())
}

// Latest decodes the newest record Helm sees for the release.
func Latest(ctx context.Context, c client.Client, r Release) (*installation.HelmRelease, error) {
	meta := &metav1.ObjectMeta{Annotations: map[string]string{
		ownership.AnnotationHelmReleaseName: r.Name, ownership.AnnotationHelmReleaseNamespace: r.StorageNamespace,
	}}
	rel, err := installation.DetectHelm(ctx, c, meta)
	if err != nil {
		return nil, err
	}
	if rel.Unread != "" {
		return nil, fmt.Errorf("reading Helm release %s: %s", r, rel.Unread)
	}
	return rel, nil
}
