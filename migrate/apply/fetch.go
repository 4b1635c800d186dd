package apply

import (
	"context"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/render"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fetched is what the prefetch learnt about the in-cluster copies of the objects, by index.
type fetched struct {
	// lives holds the in-cluster copy, nil where the object was not found.
	lives []*unstructured.Unstructured
	// absent is true where the object certainly does not exist: the API server said NotFound,
	// or the object's namespace or CRD is itself part of the rendering and does not exist. A nil
	// live that is not absent is unknown: its kind is not served (yet), so it must be read again
	// once the CRDs of the first stage are established.
	absent []bool
}

// listThreshold is how many objects of one kind (and namespace) make a LIST cheaper than a GET
// each. A LIST only finds objects that still carry the owner labels: the others are read one by
// one, so a LIST never saves a read on a cluster the plugin did not apply to and costs one more.
const listThreshold = 2

// fetchGroup is the objects of one kind in one namespace ("" for cluster-scoped ones).
type fetchGroup struct {
	gvk       schema.GroupVersionKind
	namespace string
	indexes   []int
}

// prefetchState reads the in-cluster copy of every object, with as few requests as it can:
//   - cluster-scoped objects first; a namespaced object whose Namespace is rendered and absent,
//     and a custom resource whose CRD is rendered and absent, cannot exist and is not read;
//   - objects of a kind that the rendering has several of (in one namespace) are listed by their
//     owner labels in one request; only those the list did not return are read one by one (a
//     missing label never makes an existing object look absent).
func (m *Manager) prefetchState(ctx context.Context, objs []*unstructured.Unstructured, concurrency int) (*fetched, error) {
	f := &fetched{lives: make([]*unstructured.Unstructured, len(objs)), absent: make([]bool, len(objs))}
	var clusterScoped, namespaced []int
	for i, o := range objs {
		if o.GetNamespace() == "" {
			clusterScoped = append(clusterScoped, i)
		} else {
			namespaced = append(namespaced, i)
		}
	}
	if err := m.fetchInto(ctx, objs, clusterScoped, f, concurrency); err != nil {
		return nil, err
	}

	// What the first round found absent rules out what depends on it.
	absentNS := map[string]bool{}
	absentKinds := map[schema.GroupKind]bool{}
	for _, i := range clusterScoped {
		if !f.absent[i] {
			continue
		}
		id := kube.ID(objs[i])
		switch {
		case kube.IsNamespace(id):
			absentNS[objs[i].GetName()] = true
		case kube.IsCRD(id):
			absentKinds[kube.CRDNames(objs[i])] = true
		}
	}
	var rest []int
	for _, i := range namespaced {
		o := objs[i]
		if absentNS[o.GetNamespace()] || absentKinds[o.GroupVersionKind().GroupKind()] {
			f.absent[i] = true
			continue
		}
		rest = append(rest, i)
	}
	for _, i := range clusterScoped {
		// A cluster-scoped custom resource of a CRD that does not exist yet.
		if f.lives[i] == nil && !f.absent[i] && absentKinds[objs[i].GroupVersionKind().GroupKind()] {
			f.absent[i] = true
		}
	}
	if err := m.fetchInto(ctx, objs, rest, f, concurrency); err != nil {
		return nil, err
	}
	return f, nil
}

// fetchInto reads the given objects (by index) into f: a LIST per group of listThreshold or more
// objects that share the owner labels, then a GET for each object not listed.
func (m *Manager) fetchInto(ctx context.Context, objs []*unstructured.Unstructured, indexes []int, f *fetched, concurrency int) error {
	type key struct {
		gvk       schema.GroupVersionKind
		namespace string
	}
	var groups []*fetchGroup
	byKey := map[key]*fetchGroup{}
	var singles []int
	for _, i := range indexes {
		o := objs[i]
		k := key{gvk: o.GroupVersionKind(), namespace: o.GetNamespace()}
		g := byKey[k]
		if g == nil {
			g = &fetchGroup{gvk: k.gvk, namespace: k.namespace}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.indexes = append(g.indexes, i)
	}
	var listed []*fetchGroup
	for _, g := range groups {
		if len(g.indexes) >= listThreshold && ownerSelector(objs, g.indexes) != nil {
			listed = append(listed, g)
		} else {
			singles = append(singles, g.indexes...)
		}
	}

	// Lists first (concurrently), then the GETs of what they did not return.
	found := make([]bool, len(objs))
	eg, gctx := errgroup.WithContext(ctx)
	eg.SetLimit(concurrency)
	for _, g := range listed {
		eg.Go(func() error {
			items, ok, err := m.listOwned(gctx, g, ownerSelector(objs, g.indexes))
			if err != nil || !ok {
				return err
			}
			byName := map[string]*unstructured.Unstructured{}
			for i := range items {
				byName[items[i].GetName()] = &items[i]
			}
			for _, i := range g.indexes {
				if live := byName[objs[i].GetName()]; live != nil {
					f.lives[i] = live
					found[i] = true // distinct indexes per group: no two goroutines share one
				}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	for _, g := range listed {
		for _, i := range g.indexes {
			if !found[i] {
				singles = append(singles, i)
			}
		}
	}

	eg, gctx = errgroup.WithContext(ctx)
	eg.SetLimit(concurrency)
	for _, i := range singles {
		eg.Go(func() error {
			live, state, err := kube.Get(gctx, m.Client, objs[i])
			if err != nil {
				return err
			}
			f.lives[i], f.absent[i] = live, state == kube.Absent
			return nil
		})
	}
	return eg.Wait()
}

// ownerSelector is the owner labels that all the given objects carry with the same values, or nil.
func ownerSelector(objs []*unstructured.Unstructured, indexes []int) client.MatchingLabels {
	var sel client.MatchingLabels
	for n, i := range indexes {
		labels := objs[i].GetLabels()
		name, ns := labels[render.LabelOwnerName], labels[render.LabelOwnerNamespace]
		if name == "" || ns == "" {
			return nil
		}
		if n == 0 {
			sel = client.MatchingLabels{render.LabelOwnerName: name, render.LabelOwnerNamespace: ns}
			continue
		}
		if sel[render.LabelOwnerName] != name || sel[render.LabelOwnerNamespace] != ns {
			return nil
		}
	}
	return sel
}

// listOwned lists a group's kind in its namespace by the owner labels. ok is false when the kind
// is not served or listing is not allowed: the caller then reads the objects one by one.
func (m *Manager) listOwned(ctx context.Context, g *fetchGroup, sel client.MatchingLabels) ([]unstructured.Unstructured, bool, error) {
	var items []unstructured.Unstructured
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(g.gvk.GroupVersion().WithKind(g.gvk.Kind + "List"))
	opts := []client.ListOption{sel}
	if g.namespace != "" {
		opts = append(opts, client.InNamespace(g.namespace))
	}
	err := kube.ListPages(ctx, m.Client, list, func() error {
		items = append(items, list.Items...)
		return nil
	}, opts...)
	switch {
	case kube.IsNoMatch(err) || apierrors.IsForbidden(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsNotFound(err):
		return nil, false, nil
	case err != nil:
		return nil, false, kube.ObjectError(stubOf(g), "listing", err)
	}
	return items, true, nil
}

func stubOf(g *fetchGroup) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(g.gvk)
	u.SetNamespace(g.namespace)
	u.SetName("*")
	return u
}
