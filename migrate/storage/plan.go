package storage

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Migration is one CRD whose stored objects must move to the target storage version before the
// rendered CRD can be applied.
type Migration struct {
	// CRD is the CustomResourceDefinition's name, e.g. helmreleases.helm.toolkit.fluxcd.io.
	CRD string
	// Group, Kind and Resource (plural) of the custom resources.
	Group, Kind, Resource string
	// Namespaced tells whether the custom resources live in namespaces.
	Namespaced bool
	// StoredVersions is the live status.storedVersions: what the objects may be stored at.
	StoredVersions []string
	// Version is the rendered CRD's storage version: where the objects go.
	Version string
	// Removed are the stored versions the rendered CRD no longer has: the reason the API server
	// would refuse the rendered CRD.
	Removed []string
	// ManagedFieldsAt are the versions the rendered CRD no longer has that objects' managedFields
	// entries still name, when status.storedVersions is already the target alone: such an entry
	// makes every later write of the object fail once the version is gone.
	ManagedFieldsAt []string
	// Objects is how many objects of the kind exist (all namespaces) when planned, Uncounted
	// when listing them was forbidden.
	Objects int

	// target is the rendered CRD's spec.versions entry of Version.
	target map[string]any
	// liveServed and liveList are the live CRD's served versions and list kind when planned, so
	// that CheckLosses reads the objects without reading the CRD again.
	liveServed []string
	liveList   schema.GroupVersionKind
}

// Uncounted is Migration.Objects when the objects could not be listed.
const Uncounted = -1

// GVK returns the kind at the target version.
func (m Migration) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: m.Group, Version: m.Version, Kind: m.Kind}
}

// Plan is every migration an apply of a rendering needs, in the rendering's CRD order.
type Plan struct {
	Migrations []Migration
}

// Empty tells whether nothing needs migrating.
func (p *Plan) Empty() bool { return p == nil || len(p.Migrations) == 0 }

// Describe is one line per migration, for people: the kind, how many objects, the versions they
// move from and to, and status.storedVersions before and after.
func (p *Plan) Describe() []string {
	if p.Empty() {
		return nil
	}
	lines := make([]string, 0, len(p.Migrations))
	for _, m := range p.Migrations {
		from := m.from()
		if len(from) == 0 {
			from = m.ManagedFieldsAt
		}
		if len(from) == 0 {
			from = []string{"the versions the target removes"} // uncounted: managedFields unread
		}
		count := thousands(m.Objects) + " " + plural(m.Objects, "object")
		if m.Objects == Uncounted {
			count = "objects (not counted: listing them is forbidden)"
		}
		line := fmt.Sprintf("%s: %s from %s to %s (storedVersions [%s] -> [%s])",
			m.CRD, count, strings.Join(from, ", "), m.Version,
			strings.Join(m.StoredVersions, ", "), m.Version)
		if len(m.ManagedFieldsAt) > 0 {
			line += fmt.Sprintf("; managedFields naming %s moved to %s", strings.Join(m.ManagedFieldsAt, ", "), m.Version)
		}
		lines = append(lines, line)
	}
	return lines
}

// from lists the stored versions other than the target: the versions objects move away from.
func (m Migration) from() []string {
	var from []string
	for _, v := range m.StoredVersions {
		if v != m.Version {
			from = append(from, v)
		}
	}
	return from
}

// NewPlan reads, for every CRD of the rendering whose live copy exists, its
// status.storedVersions, and lists a migration when it holds a version other than the rendered
// CRD's storage version (which covers the versions the rendered CRD no longer serves), with the
// number of objects of the kind (a paged, metadata-only list). A CRD stored at the target alone
// is listed too when the rendered CRD drops a live version that objects' managedFields still
// name (objects created at v1beta2 of a kind stored at v1 since): the API server accepts the
// CRD, but every later write of those objects would fail. Nothing changes.
func NewPlan(ctx context.Context, c client.Client, objects []*unstructured.Unstructured) (*Plan, error) {
	var crds []*unstructured.Unstructured
	for _, rendered := range objects {
		if kube.IsCRD(kube.ID(rendered)) {
			crds = append(crds, rendered)
		}
	}
	// Every apply plans: the reads are concurrent so that an apply with nothing to migrate pays
	// about one round trip for it.
	found := make([]*Migration, len(crds))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(kube.DefaultConcurrency)
	for i, rendered := range crds {
		g.Go(func() (err error) {
			found[i], err = planCRD(gctx, c, rendered)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	plan := &Plan{}
	for _, m := range found {
		if m != nil {
			plan.Migrations = append(plan.Migrations, *m)
		}
	}
	return plan, nil
}

func planCRD(ctx context.Context, c client.Client, rendered *unstructured.Unstructured) (*Migration, error) {
	target, targetEntry := storageVersion(rendered)
	if target == "" {
		return nil, fmt.Errorf("%s: planning the storage migration: the rendered CRD has no storage version", kube.Ref(rendered))
	}
	live, state, err := kube.Get(ctx, c, crdStub(rendered.GetName()))
	switch {
	case apierrors.IsForbidden(err):
		// Applying the CRD needs the read too: the permission check that follows the plan
		// refuses with every missing permission listed.
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("planning the storage migration: %w", err)
	}
	if state != kube.Found {
		return nil, nil // a CRD the apply creates stores nothing yet
	}
	stored, _, _ := unstructured.NestedStringSlice(live.Object, "status", "storedVersions")
	rendVersions := versionNames(rendered)
	storedElsewhere := len(stored) > 1 || (len(stored) == 1 && stored[0] != target)
	dropsVersion := false
	for _, v := range versionNames(live) {
		if !slices.Contains(rendVersions, v) {
			dropsVersion = true
		}
	}
	if !storedElsewhere && !dropsVersion {
		return nil, nil
	}
	m := &Migration{
		CRD:            rendered.GetName(),
		StoredVersions: stored,
		Version:        target,
		target:         targetEntry,
		liveServed:     servedVersions(live),
	}
	gk := kube.CRDNames(rendered)
	m.Group, m.Kind = gk.Group, gk.Kind
	m.Resource, _, _ = unstructured.NestedString(rendered.Object, "spec", "names", "plural")
	scope, _, _ := unstructured.NestedString(rendered.Object, "spec", "scope")
	m.Namespaced = scope != "Cluster"
	for _, v := range stored {
		if !slices.Contains(rendVersions, v) {
			m.Removed = append(m.Removed, v)
		}
	}
	err = m.count(ctx, c, live, rendVersions)
	switch {
	case apierrors.IsForbidden(err) && storedElsewhere:
		// A user who may not list them is told so with every other missing permission by the
		// check that follows the plan: the migration is needed whatever their number.
		m.Objects = Uncounted
		return m, nil
	case apierrors.IsForbidden(err):
		// Stored at the target already: the API server accepts the CRD, and whether objects'
		// managedFields name a dropped version cannot be learnt without the list. Not planned,
		// so that the permissions asked for do not depend on what the user may see.
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("CustomResourceDefinition/%s: counting its objects for the storage migration: %w", m.CRD, err)
	}
	if !storedElsewhere && len(m.ManagedFieldsAt) == 0 {
		return nil, nil // the versions going away hold nothing
	}
	slices.Sort(m.ManagedFieldsAt)
	return m, nil
}

// count counts m's objects at the live CRD's storage version (the target may not be served yet)
// and notes the versions about to go that their managedFields still name: the metadata carries
// them, so objects already stored at the target are checked too.
func (m *Migration) count(ctx context.Context, c client.Client, live *unstructured.Unstructured, rendVersions []string) error {
	listGVK, err := kube.CRDListKind(live)
	if err != nil {
		return fmt.Errorf("planning the storage migration: %w", err)
	}
	m.liveList = listGVK
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(listGVK)
	return kube.ListPages(ctx, c, list, func() error {
		m.Objects += len(list.Items)
		for _, item := range list.Items {
			for _, e := range item.ManagedFields {
				gv, perr := schema.ParseGroupVersion(e.APIVersion)
				if perr != nil || gv.Group != m.Group || slices.Contains(rendVersions, gv.Version) || slices.Contains(m.ManagedFieldsAt, gv.Version) {
					continue
				}
				m.ManagedFieldsAt = append(m.ManagedFieldsAt, gv.Version)
			}
		}
		return nil
	})
}

// storageVersion returns the name and spec.versions entry of a CRD's storage version.
func storageVersion(crd *unstructured.Unstructured) (string, map[string]any) {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		vm, ok := v.(map[string]any)
		if !ok {
			continue
		}
		if storage, _ := vm["storage"].(bool); storage {
			name, _ := vm["name"].(string)
			return name, vm
		}
	}
	return "", nil
}

func versionNames(crd *unstructured.Unstructured) []string {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	var names []string
	for _, v := range versions {
		if vm, ok := v.(map[string]any); ok {
			name, _ := vm["name"].(string)
			names = append(names, name)
		}
	}
	return names
}

func crdStub(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(kube.CRDGVK)
	u.SetName(name)
	return u
}

// thousands formats n with comma separators (5000 → 5,000).
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

// PreviewObjects is the rendering as a dry run can send it: each planned CRD with the versions the
// migration gives it first (the target as storage, the stored and served versions kept), since
// the API server refuses the rendered CRD itself, even in a dry run, until the objects are
// migrated. The rendering is not modified.
func (p *Plan) PreviewObjects(ctx context.Context, c client.Client, objects []*unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	if p.Empty() {
		return objects, nil
	}
	byName := map[string]Migration{}
	for _, m := range p.Migrations {
		byName[m.CRD] = m
	}
	out := make([]*unstructured.Unstructured, len(objects))
	for i, o := range objects {
		out[i] = o
		m, ok := byName[o.GetName()]
		if !ok || !kube.IsCRD(kube.ID(o)) {
			continue
		}
		live, state, err := kube.Get(ctx, c, crdStub(m.CRD))
		if err != nil {
			return nil, fmt.Errorf("previewing the storage migration: %w", err)
		}
		if state != kube.Found {
			continue
		}
		preview := o.DeepCopy()
		if err := unstructured.SetNestedSlice(preview.Object, desiredVersions(live, m), "spec", "versions"); err != nil {
			return nil, fmt.Errorf("CustomResourceDefinition/%s: previewing the storage migration: %w", m.CRD, err)
		}
		out[i] = preview
	}
	return out, nil
}

// DisabledError refuses a migration the FluxInstance forbids (spec.migrateResources: false).
type DisabledError struct {
	Plan *Plan
}

func (e *DisabledError) Error() string {
	var reasons []string
	for _, m := range e.Plan.Migrations {
		switch {
		case len(m.Removed) > 0:
			reasons = append(reasons, fmt.Sprintf("%s stores %s, which the target removes (its storage version is %s)",
				m.CRD, strings.Join(m.Removed, ", "), m.Version))
		case len(m.ManagedFieldsAt) > 0:
			reasons = append(reasons, fmt.Sprintf("%s has objects whose managedFields name %s, which the target removes",
				m.CRD, strings.Join(m.ManagedFieldsAt, ", ")))
		default:
			reasons = append(reasons, fmt.Sprintf("%s stores %s, not the target's storage version %s",
				m.CRD, strings.Join(m.from(), ", "), m.Version))
		}
	}
	return fmt.Sprintf("the stored Flux objects must be migrated before this upgrade, and spec.migrateResources=false forbids the migration: %s; "+
		"set spec.migrateResources to true (the default), or migrate them yourself (flux migrate) first", strings.Join(reasons, "; "))
}
