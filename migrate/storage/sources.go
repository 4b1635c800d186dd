package storage

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
)

// kustomizationsCRD is the CRD whose objects' inventories StaleSources reads.
const kustomizationsCRD = "kustomizations.kustomize.toolkit.fluxcd.io"

// StaleSource is one object that a Kustomization applies at an API version the target Flux no
// longer serves. Migrating the stored objects does not help here: kustomize-controller applies
// what the source (Git, OCI) says, so its next reconcile after the upgrade fails until the source
// is rewritten (`kubectl fluxinstance upgrade-repo`, package fleetrepo).
type StaleSource struct {
	// Kustomization is the namespace/name of the Kustomization that applies the object.
	Kustomization string
	// Object is "Kind namespace/name" ("Kind name" when cluster-scoped).
	Object string
	// APIVersion is group/version as the Kustomization applied it (its inventory's `v`).
	APIVersion string
	// RemovedIn is the Flux minor that removed APIVersion, e.g. "Flux 2.8", or "" when unknown.
	RemovedIn string
}

// String is the line shown to a person.
func (s StaleSource) String() string {
	msg := fmt.Sprintf("Kustomization %s applies %s as %s, which the target removes", s.Kustomization, s.Object, s.APIVersion)
	if s.RemovedIn != "" {
		msg += " (removed in " + s.RemovedIn + ")"
	}
	return msg
}

// ServedVersions returns, for each kind a rendering's CustomResourceDefinitions define, the
// versions they serve (served: true), in the CRD's order. Objects other than CRDs are ignored.
func ServedVersions(rendered []*unstructured.Unstructured) map[schema.GroupKind][]string {
	served := map[schema.GroupKind][]string{}
	for _, obj := range rendered {
		if obj == nil || obj.GroupVersionKind().GroupKind() != kube.CRDGVK.GroupKind() {
			continue
		}
		gk := kube.CRDNames(obj)
		served[gk] = append(served[gk], servedVersions(obj)...)
	}
	return served
}

// StorageVersions returns, for each kind a rendering's CustomResourceDefinitions define, the
// version they store objects at (storage: true). Objects other than CRDs are ignored, and so is a
// CRD without a storage version (the API server refuses one, so the rendering is broken).
func StorageVersions(rendered []*unstructured.Unstructured) map[schema.GroupKind]string {
	stored := map[schema.GroupKind]string{}
	for _, obj := range rendered {
		if obj == nil || obj.GroupVersionKind().GroupKind() != kube.CRDGVK.GroupKind() {
			continue
		}
		if v, _ := storageVersion(obj); v != "" {
			stored[kube.CRDNames(obj)] = v
		}
	}
	return stored
}

// IsFluxGroup tells whether group is one of Flux's API groups (source, kustomize, helm,
// notification, image), all under toolkit.fluxcd.io.
func IsFluxGroup(group string) bool {
	return strings.HasSuffix(group, ".toolkit.fluxcd.io")
}

// StaleSources lists every Kustomization and returns the Flux objects (group *.toolkit.fluxcd.io)
// its status.inventory says it applied at a version that served (ServedVersions of the target
// rendering) does not list for the kind, sorted by Kustomization, then object. A Flux kind the
// target does not define at all is reported too: after the upgrade nothing serves it (so served
// must be the whole target rendering's, not a part of it).
//
// The Kustomizations are read at the version the live CRD serves (its storage version when
// served), so that this works before and after kustomize.toolkit.fluxcd.io/v1 existed. No
// Kustomization CRD means no Kustomization: an empty result, no error.
//
// An inventory entry that does not parse is an error naming the Kustomization and the entry, not
// a skip: this check exists to stop an upgrade that would break a source, and an entry it cannot
// read may be exactly such an object.
func StaleSources(ctx context.Context, c client.Client, served map[schema.GroupKind][]string) ([]StaleSource, error) {
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(kube.CRDGVK)
	if err := c.Get(ctx, client.ObjectKey{Name: kustomizationsCRD}, crd); err != nil {
		if apierrors.IsNotFound(err) {
			return []StaleSource{}, nil
		}
		return nil, fmt.Errorf("reading CustomResourceDefinition/%s: %w", kustomizationsCRD, err)
	}
	listKind, err := kube.CRDListKind(crd)
	if err != nil {
		return nil, err
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(listKind)
	stale := []StaleSource{}
	// Kept apart so that a bad inventory is reported as itself, not as a failed list.
	var inventoryErr error
	err = kube.ListPages(ctx, c, list, func() error {
		for i := range list.Items {
			found, err := staleIn(&list.Items[i], served)
			if err != nil {
				inventoryErr = err
				return err
			}
			stale = append(stale, found...)
		}
		return nil
	})
	if inventoryErr != nil {
		return nil, inventoryErr
	}
	if err != nil {
		return nil, fmt.Errorf("listing Kustomizations at %s: %w", listKind.GroupVersion(), err)
	}
	sort.Slice(stale, func(i, j int) bool {
		a, b := stale[i], stale[j]
		if a.Kustomization != b.Kustomization {
			return a.Kustomization < b.Kustomization
		}
		if a.Object != b.Object {
			return a.Object < b.Object
		}
		return a.APIVersion < b.APIVersion
	})
	return stale, nil
}

// staleIn returns the stale entries of one Kustomization's inventory.
func staleIn(ks *unstructured.Unstructured, served map[schema.GroupKind][]string) ([]StaleSource, error) {
	ref := ks.GetNamespace() + "/" + ks.GetName()
	entries, _, err := unstructured.NestedSlice(ks.Object, "status", "inventory", "entries")
	if err != nil {
		return nil, fmt.Errorf("Kustomization %s: reading status.inventory.entries: %w", ref, err)
	}
	var stale []StaleSource
	for i, e := range entries {
		em, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("Kustomization %s: status.inventory.entries[%d] is not an object", ref, i)
		}
		rawID, _ := em["id"].(string)
		version, _ := em["v"].(string)
		id, err := object.ParseObjMetadata(rawID)
		if err != nil {
			return nil, fmt.Errorf("Kustomization %s: status.inventory.entries[%d]: %w", ref, i, err)
		}
		if id.Name == "" || id.GroupKind.Kind == "" {
			return nil, fmt.Errorf("Kustomization %s: status.inventory.entries[%d]: id %q names no object", ref, i, rawID)
		}
		if !IsFluxGroup(id.GroupKind.Group) {
			continue
		}
		// kustomize-controller always writes v; without it the entry cannot be judged, which is
		// refused for the same reason as an id that does not parse.
		if version == "" {
			return nil, fmt.Errorf("Kustomization %s: status.inventory.entries[%d] (%s) has no version", ref, i, rawID)
		}
		if slices.Contains(served[id.GroupKind], version) {
			continue
		}
		gv := schema.GroupVersion{Group: id.GroupKind.Group, Version: version}
		stale = append(stale, StaleSource{
			Kustomization: ref,
			Object:        objectName(id),
			APIVersion:    gv.String(),
			RemovedIn:     RemovedIn(gv),
		})
	}
	return stale, nil
}

// objectName is "Kind namespace/name", or "Kind name" for a cluster-scoped object.
func objectName(id object.ObjMetadata) string {
	if id.Namespace == "" {
		return id.GroupKind.Kind + " " + id.Name
	}
	return id.GroupKind.Kind + " " + id.Namespace + "/" + id.Name
}

// RemovedIn returns the Flux minor whose CRDs stopped serving gv, e.g. "Flux 2.8", or "" when
// gv is not one of the removals known here. It is the one hand-kept table of the package, from
// Flux's release notes (2.7, 2.8 and 2.9 removed these versions from their CRDs), and
// TestRemovedInMatchesDistribution checks it against the CRDs of every Flux release in the
// distribution data, both ways, so a wrong or missing row fails a test. A switch rather than a
// package-level map: no package-level mutable state.
func RemovedIn(gv schema.GroupVersion) string {
	switch gv.Group {
	case "source.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io":
		switch gv.Version {
		case "v1beta1":
			return "Flux 2.7"
		case "v1beta2":
			return "Flux 2.8"
		}
	case "image.toolkit.fluxcd.io", "notification.toolkit.fluxcd.io":
		switch gv.Version {
		case "v1beta1":
			return "Flux 2.7"
		case "v1beta2":
			return "Flux 2.9"
		}
	case "helm.toolkit.fluxcd.io":
		switch gv.Version {
		case "v2beta1":
			return "Flux 2.7"
		case "v2beta2":
			return "Flux 2.8"
		}
	}
	return ""
}

// StoredAtRemovedVersions names each Flux CRD of the cluster whose status.storedVersions holds a
// version that a Flux release removes, for `status` to warn before an upgrade needs the migration:
// "helmreleases.helm.toolkit.fluxcd.io stores objects at v2beta2, which Flux 2.8 removes".
func StoredAtRemovedVersions(ctx context.Context, c client.Client) ([]string, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(kube.CRDGVK.GroupVersion().WithKind(kube.CRDGVK.Kind + "List"))
	var out []string
	err := kube.ListPages(ctx, c, list, func() error {
		for i := range list.Items {
			crd := &list.Items[i]
			group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
			if !IsFluxGroup(group) {
				continue
			}
			stored, _, _ := unstructured.NestedStringSlice(crd.Object, "status", "storedVersions")
			for _, v := range stored {
				if release := RemovedIn(schema.GroupVersion{Group: group, Version: v}); release != "" {
					out = append(out, fmt.Sprintf("%s stores objects at %s, which %s removes: an apply of %s or later migrates them first", crd.GetName(), v, release, strings.TrimPrefix(release, "Flux ")))
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the Flux CRDs: %w", err)
	}
	sort.Strings(out)
	return out, nil
}
