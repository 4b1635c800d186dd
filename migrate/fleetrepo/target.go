package fleetrepo

import (
	"errors"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
)

// Target is what the Flux being upgraded to serves: for each Flux kind its served versions, its
// storage version and the pruning of its CRD at that version (storage.DroppedFields).
type Target struct {
	served  map[schema.GroupKind][]string
	storage map[schema.GroupKind]string
	// pruners answer storage.DroppedFields at the storage version, each CRD decoded once.
	pruners map[schema.GroupKind]*storage.Pruner
}

// NewTarget reads the Flux CRDs of a rendering (other objects are ignored). It fails when the
// rendering has no Flux CRD: nothing could be checked against it.
func NewTarget(rendered []*unstructured.Unstructured) (*Target, error) {
	t := &Target{served: map[schema.GroupKind][]string{}, storage: map[schema.GroupKind]string{}, pruners: map[schema.GroupKind]*storage.Pruner{}}
	stored := storage.StorageVersions(rendered)
	for gk, versions := range storage.ServedVersions(rendered) {
		if storage.IsFluxGroup(gk.Group) && stored[gk] != "" {
			t.served[gk], t.storage[gk] = versions, stored[gk]
		}
	}
	for _, obj := range rendered {
		if obj == nil || obj.GroupVersionKind().GroupKind() != kube.CRDGVK.GroupKind() {
			continue
		}
		if gk := kube.CRDNames(obj); t.storage[gk] != "" {
			p, err := storage.NewPruner(obj, t.storage[gk])
			if err != nil {
				return nil, fmt.Errorf("the rendered CRD of %s: %w", gk, err)
			}
			t.pruners[gk] = p
		}
	}
	if len(t.storage) == 0 {
		return nil, errors.New("the rendering has no Flux CustomResourceDefinition (group *.toolkit.fluxcd.io) to upgrade the repository to")
	}
	return t, nil
}

// decision is what to do with one group/version: nothing (to == "" and warn == ""), rewrite it to
// the version to, or leave it and warn.
type decision struct {
	to   string
	warn string
}

// decide answers for an apiVersion (or a patch target's group and version) of a Flux group, kind
// being the sibling kind ("" when there is none).
func (t *Target) decide(group, version, kind string) decision {
	gk := schema.GroupKind{Group: group, Kind: kind}
	if kind != "" {
		if _, known := t.storage[gk]; known {
			if slices.Contains(t.served[gk], version) {
				return decision{}
			}
			return decision{to: t.storage[gk]}
		}
	}
	return t.decideGroup(group, version, kind)
}

// decideGroup answers without a known kind: the version is fine when every kind of the group
// serves it, and is rewritten only when all the group's kinds store the same version.
func (t *Target) decideGroup(group, version, kind string) decision {
	what := group + "/" + version
	if kind != "" {
		what = kind + " " + what
	}
	stores, servedByAll, found := "", true, false
	for gk, v := range t.storage {
		if gk.Group != group {
			continue
		}
		if found && stores != v {
			stores = "?"
		} else if !found {
			stores = v
		}
		found = true
		servedByAll = servedByAll && slices.Contains(t.served[gk], version)
	}
	switch {
	case !found && kind != "":
		return decision{warn: what + " left unchanged: the target rendering has no CRD for " + kind + "." + group + " (is its controller among the FluxInstance's components?)"}
	case !found:
		return decision{warn: what + " left unchanged: the target rendering has no CRD of group " + group + " (is its controller among the FluxInstance's components?)"}
	case kind != "":
		return decision{warn: what + " left unchanged: the target rendering has no CRD for " + kind + "." + group + ", so its version cannot be checked"}
	case servedByAll:
		return decision{}
	case stores == "?":
		return decision{warn: what + " left unchanged: no sibling kind, and the kinds of " + group + " store different versions: add the kind, or set the version by hand"}
	}
	return decision{to: stores}
}

// pruner is the pruning of a Flux kind's target CRD at its storage version, or nil.
func (t *Target) pruner(gk schema.GroupKind) *storage.Pruner { return t.pruners[gk] }
