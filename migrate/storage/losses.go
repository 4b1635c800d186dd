package storage

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
)

// Losses is what an upgrade across removed versions would cost users, said before anything
// changes: fields the API server drops when an object is rewritten at the target version, and
// Kustomizations that still apply a Flux object at a version the target removes (after the
// upgrade kustomize-controller could no longer apply them).
type Losses struct {
	// Dropped are one line per object (FormatDropped).
	Dropped []string
	// Stale are the Kustomizations' entries at removed versions.
	Stale []StaleSource
}

// Empty tells whether nothing would be lost.
func (l *Losses) Empty() bool { return l == nil || len(l.Dropped)+len(l.Stale) == 0 }

// Lines are the losses, one per line, at most max of each kind (0: all) and then "and N more".
func (l *Losses) Lines(max int) []string {
	var out []string
	out = append(out, atMost(l.Dropped, max)...)
	stale := make([]string, len(l.Stale))
	for i, s := range l.Stale {
		stale[i] = s.String()
	}
	return append(out, atMost(stale, max)...)
}

func atMost(lines []string, max int) []string {
	if max <= 0 || len(lines) <= max {
		return lines
	}
	return append(append([]string{}, lines[:max]...), fmt.Sprintf("and %d more", len(lines)-max))
}

// LossesError refuses an upgrade that would lose something, unless forced.
type LossesError struct{ Losses *Losses }

func (e *LossesError) Error() string {
	return "the upgrade would lose what these lines name (nothing was changed):\n  " +
		strings.Join(e.Losses.Lines(20), "\n  ") +
		"\nfix the objects and sources first (set every Flux object's apiVersion in Git to a version the new Flux serves, " +
		"and move the dropped fields to their replacements), or re-run with --force to upgrade anyway"
}

// CheckLosses reads, without changing anything, every object of the plan's kinds and every
// Kustomization, and reports what the upgrade to the rendered CRDs (objects) would lose.
func CheckLosses(ctx context.Context, c client.Client, plan *Plan, objects []*unstructured.Unstructured) (*Losses, error) {
	l := &Losses{}
	if plan.Empty() {
		return l, nil
	}
	rendered := map[string]*unstructured.Unstructured{}
	for _, o := range objects {
		if kube.IsCRD(kube.ID(o)) {
			rendered[o.GetName()] = o
		}
	}
	for _, m := range plan.Migrations {
		crd := rendered[m.CRD]
		if crd == nil || m.Objects <= 0 {
			continue // nothing to lose, or nothing the user may list: the permission check says so
		}
		dropped, err := droppedOf(ctx, c, m, crd)
		if err != nil {
			return nil, err
		}
		l.Dropped = append(l.Dropped, dropped...)
	}
	stale, err := StaleSources(ctx, c, ServedVersions(objects))
	if err != nil {
		return nil, err
	}
	l.Stale = stale
	return l, nil
}

// droppedOf names each object of m's kind whose fields the target version's schema would prune.
// It reads the objects at every version the live CRD serves and the target removes: the API
// server prunes what it serves by the schema of the version asked for, so only an old version
// shows the fields that only the old schema knows (with `conversion: None` the stored content is
// the same whatever the version). Without such a version, at the live storage version. The live
// CRD's versions are the plan's (NewPlan read it).
func droppedOf(ctx context.Context, c client.Client, m Migration, target *unstructured.Unstructured) ([]string, error) {
	kept := map[string]bool{}
	for _, v := range servedVersions(target) {
		kept[v] = true
	}
	var versions []string
	for _, v := range m.liveServed {
		if !kept[v] {
			versions = append(versions, v)
		}
	}
	if len(versions) == 0 {
		versions = []string{m.liveList.Version}
	}
	gv := m.Group + "/" + m.Version
	prune, err := newPruner(target, m.Version)
	if err != nil {
		return nil, err
	}
	refs := map[types.UID]string{}
	paths := map[types.UID]map[string]bool{}
	for _, v := range versions {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: m.liveList.Group, Version: v, Kind: m.liveList.Kind})
		err := kube.ListPages(ctx, c, list, func() error {
			for i := range list.Items {
				obj := &list.Items[i]
				dropped, err := prune.dropped(obj)
				if err != nil {
					return fmt.Errorf("%s: %w", kube.Ref(obj), err)
				}
				for _, p := range dropped {
					if paths[obj.GetUID()] == nil {
						paths[obj.GetUID()], refs[obj.GetUID()] = map[string]bool{}, kube.Ref(obj)
					}
					paths[obj.GetUID()][p] = true
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("listing %s at %s to find fields the upgrade would drop: %w", m.CRD, v, err)
		}
	}
	var out []string
	for uid, set := range paths {
		out = append(out, FormatDropped(refs[uid], slices.Sorted(maps.Keys(set)), gv))
	}
	sort.Strings(out)
	return out, nil
}

// servedVersions are the names of the versions a CRD serves.
func servedVersions(crd *unstructured.Unstructured) []string {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	var out []string
	for _, v := range versions {
		vm, _ := v.(map[string]any)
		if served, _ := vm["served"].(bool); served {
			name, _ := vm["name"].(string)
			out = append(out, name)
		}
	}
	return out
}
