package permissions

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/lock"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/uninstall"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const rbacGroup = "rbac.authorization.k8s.io"

// ApplyPlan is what one `apply` in direct mode (not a dry run) will do, as far as permissions
// go: see apply.Manager.Reconcile.
type ApplyPlan struct {
	// Name and Namespace of the instance: its record, lock and FluxInstance live there.
	Name, Namespace string
	// Objects is the rendering.
	Objects []*unstructured.Unstructured
	// Previous is the record read before applying, nil on a first apply: what it lists and the
	// rendering does not is pruned.
	Previous *inventory.Inventory
	// Prune and Wait are the command's flags.
	Prune, Wait bool
	// FluxInstance is true when the instance's FluxInstance object exists: every record written
	// is then mirrored into its status.inventory.
	FluxInstance bool
	// Storage is the storage migration run before the apply, nil or empty when none is needed.
	Storage *storage.Plan
}

// ForApply lists what the plan needs, per resource and namespace rather than per object (one
// review covers all of an apply's Deployments):
//   - each rendered kind: get, create and patch (a server-side apply that creates an object needs
//     create as well as patch); list, cluster-wide, for the CRDs, Namespaces and ClusterRoles,
//     which the apply waits for between its stages by listing them; with Wait, list for every
//     kind in its namespace, and for the ReplicaSets and Pods of Deployments, which the readiness
//     wait reads by list;
//   - escalate on the rendered (Cluster)Roles and bind on the roles the bindings refer to: the
//     API server refuses RBAC that grants more than the user holds unless the user may escalate
//     or bind (it cannot be known beforehand whether the user holds it all; Flux binds
//     cluster-admin, which only a user who may do everything holds);
//   - with Prune, what the previous record lists and the rendering does not, but a Namespace
//     (never pruned): get and delete (get only for a record, which is never deleted); for a CRD,
//     list its custom resources (a CRD is pruned only when empty) and patch it (labelled
//     orphaned when not);
//   - the record ConfigMap, the lock Lease, the instance namespace when the rendering does not
//     create it, and the FluxInstance's status when it exists;
//   - with a storage migration, what storage.Migrate does: update each migrated CRD and its
//     status, and list, patch and update its custom resources in every namespace.
//
// A rendered kind is mapped to its resource by the rendered CRD that defines it (the apply
// creates it: not served yet) or by mapper; a kind neither defines nor serves is an error, as it
// would be halfway through the apply. A pruned kind the cluster does not serve is left out, as
// Prune leaves the object (it cannot exist). The plan is made without reading the objects: one
// that Prune would keep after reading it (annotated prune: disabled, no longer this instance's)
// still counts.
//
// The labelled lists with which apply reads the objects first are not needed: when they are
// refused, apply reads the objects one by one (get).
func ForApply(mapper meta.RESTMapper, plan ApplyPlan) ([]Permission, error) {
	r := newResolver(mapper, plan.Objects)
	objs := make([]*unstructured.Unstructured, len(plan.Objects))
	copy(objs, plan.Objects)
	sort.Sort(ssa.SortableUnstructureds(objs)) // apply order, so that the report follows the apply
	groups := &resourceGroups{}
	for _, o := range objs {
		res, err := r.rendered(o.GroupVersionKind())
		if err != nil {
			return nil, err
		}
		groups.add(res, o.GetKind(), o.GetNamespace(), o.GetName(), utils.IsClusterDefinition(o))
	}

	var perms []Permission
	hasNamespace := false
	for _, g := range groups.list {
		what := describe(g.kind, g.names)
		perms = append(perms, g.perm([]string{"get", "create", "patch"}, "applying "+what))
		if g.stageWait {
			perms = append(perms, g.perm([]string{"list"}, "waiting for "+what+" to be ready before the next stage"))
		}
		if plan.Wait {
			perms = append(perms, g.perm([]string{"list"}, "--wait reads the readiness of "+what+" by listing them"))
			for _, gen := range generated[schema.GroupKind{Group: g.res.Group, Kind: g.kind}] {
				perms = append(perms, Permission{Verbs: []string{"list"}, Group: gen.Group, Resource: gen.Resource, Namespace: g.namespace,
					Why: fmt.Sprintf("--wait reads the readiness of %s from their %s", what, gen.Resource)})
			}
		}
		if g.res.Group == "" && g.kind == "Namespace" && slices.Contains(g.names, plan.Namespace) {
			hasNamespace = true
		}
	}
	perms = append(perms, rbacPermissions(objs)...)
	if !hasNamespace {
		perms = append(perms, Permission{Verbs: []string{"get", "create"}, Resource: "namespaces", Name: plan.Namespace,
			Why: "the instance namespace, where the record is kept"})
	}
	if plan.Prune && plan.Previous != nil {
		pruned, err := prunePermissions(r, plan.Previous, plan.Objects)
		if err != nil {
			return nil, err
		}
		perms = append(perms, pruned...)
	}
	perms = append(perms, recordPermissions(plan.Namespace, []string{"get", "create", "update"}, "the inventory record of what was applied")...)
	perms = append(perms, lockPermissions(plan.Namespace)...)
	if plan.FluxInstance {
		perms = append(perms, fluxInstanceStatus(plan.Name, plan.Namespace))
	}
	perms = append(perms, storagePermissions(plan.Storage)...)
	return perms, nil
}

// generated are the kinds cli-utils' status readers list to compute a kind's readiness (its
// caching cluster reader's generated kinds): a Deployment is ready by its ReplicaSets and Pods.
var generated = map[schema.GroupKind][]schema.GroupResource{
	{Group: "apps", Kind: "Deployment"}:  {{Group: "apps", Resource: "replicasets"}, {Resource: "pods"}},
	{Group: "apps", Kind: "ReplicaSet"}:  {{Resource: "pods"}},
	{Group: "apps", Kind: "StatefulSet"}: {{Resource: "pods"}},
}

// rbacPermissions asks for escalate on the rendered roles and bind on the roles the rendered
// bindings refer to (by name, as the API server asks).
func rbacPermissions(objs []*unstructured.Unstructured) []Permission {
	var perms []Permission
	for _, o := range objs {
		if o.GroupVersionKind().Group != rbacGroup {
			continue
		}
		switch o.GetKind() {
		case "ClusterRole", "Role":
			perms = append(perms, Permission{Verbs: []string{"escalate"}, Group: rbacGroup, Resource: strings.ToLower(o.GetKind()) + "s",
				Namespace: o.GetNamespace(), Why: "applying roles that may grant more than you hold"})
		case "ClusterRoleBinding", "RoleBinding":
			kind, _, _ := unstructured.NestedString(o.Object, "roleRef", "kind")
			name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
			if kind != "ClusterRole" && kind != "Role" {
				continue // the API server rejects the binding anyway
			}
			perms = append(perms, Permission{Verbs: []string{"bind"}, Group: rbacGroup, Resource: strings.ToLower(kind) + "s",
				Namespace: o.GetNamespace(), Name: name, Why: fmt.Sprintf("%s %s binds it", o.GetKind(), o.GetName())})
		}
	}
	return perms
}

// prunePermissions is what Prune needs for the previous record's objects the rendering dropped.
func prunePermissions(r *resolver, prev *inventory.Inventory, objects []*unstructured.Unstructured) ([]Permission, error) {
	keep := object.UnstructuredSetToObjMetadataSet(objects)
	groups, perms, crds, err := listed(r, prev, func(id object.ObjMetadata) bool { return keep.Contains(id) || kube.IsNamespace(id) })
	if err != nil {
		return nil, err
	}
	for _, crd := range crds {
		perms = append(perms, customResources(crd, []string{"list"}, "pruning CustomResourceDefinition "+crd+" only if none is left"))
	}
	for _, g := range groups.list {
		what := describe(g.kind, g.names)
		perms = append(perms, g.perm([]string{"get", "delete"}, "pruning "+what+" that the new rendering dropped"))
		if g.res == crdResource {
			perms = append(perms, g.perm([]string{"patch"}, "labelling a pruned CustomResourceDefinition orphaned while it still has objects"))
		}
	}
	return perms, nil
}

// listed groups by resource the objects inv lists and skip does not leave out, for the caller to
// ask its verbs of; crds are the names of the listed CRDs. A record listed by mistake is only read
// (found to be a record, never deleted); a kind the cluster does not serve is left out (nothing of
// it can exist). inv may be nil.
func listed(r *resolver, inv *inventory.Inventory, skip func(object.ObjMetadata) bool) (*resourceGroups, []Permission, []string, error) {
	groups := &resourceGroups{}
	if inv == nil {
		return groups, nil, nil, nil
	}
	ids, versions, err := inv.Objects()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", inv.Source, err)
	}
	var perms []Permission
	var crds []string
	for i, id := range ids {
		if skip(id) {
			continue
		}
		res, served, err := r.served(id.GroupKind.WithVersion(versions[i]))
		if err != nil {
			return nil, nil, nil, err
		}
		if !served {
			continue
		}
		if inventory.IsRecord(id) {
			perms = append(perms, Permission{Verbs: []string{"get"}, Resource: res.Resource, Namespace: id.Namespace, Name: id.Name,
				Why: "reading what the record lists"})
			continue
		}
		groups.add(res, id.GroupKind.Kind, id.Namespace, id.Name, false)
		if kube.IsCRD(id) {
			crds = append(crds, id.Name)
		}
	}
	return groups, perms, crds, nil
}

// DeletePlan is what one `delete` (not a dry run) will do, as far as permissions go: see
// uninstall.Run.
type DeletePlan struct {
	// Name and Namespace of the instance: its record, lock and FluxInstance live there.
	Name, Namespace string
	// Record is the record delete works from.
	Record *inventory.Inventory
	// Options are uninstall's (WithCRDs, RemoveFinalizers).
	Options uninstall.Options
	// FluxInstance is true when the instance's FluxInstance object exists: the record rewritten
	// is then mirrored into its status.inventory.
	FluxInstance bool
}

// ForDelete lists what the plan needs: for each recorded object but what uninstall keeps without
// reading (uninstall.Keeps: the Namespace, the CRDs without WithCRDs) get and delete (get only for
// a record, never deleted); patch for the Flux objects, suspended (and their finalizers cleared)
// before they go; with WithCRDs and RemoveFinalizers, list and patch of every custom resource of
// the deleted CRDs; the record ConfigMap it rewrites, the lock Lease, and the FluxInstance's
// status when it exists. A recorded kind the cluster does not serve is left out, as uninstall
// leaves it (it cannot exist).
//
// Deleting a CRD needs no permission on its custom resources: the API server removes them.
func ForDelete(mapper meta.RESTMapper, plan DeletePlan) ([]Permission, error) {
	r := newResolver(mapper, nil)
	groups, perms, crds, err := listed(r, plan.Record, func(id object.ObjMetadata) bool { return uninstall.Keeps(id, plan.Options) })
	if err != nil {
		return nil, err
	}
	if plan.Options.RemoveFinalizers {
		for _, crd := range crds {
			perms = append(perms, customResources(crd, []string{"list", "patch"},
				"clearing the finalizers of every custom resource of CustomResourceDefinition "+crd+" before deleting it (--remove-finalizers)"))
		}
	}
	for _, g := range groups.list {
		what := describe(g.kind, g.names)
		perms = append(perms, g.perm([]string{"get", "delete"}, "deleting "+what))
		if uninstall.IsFluxObject(object.ObjMetadata{GroupKind: schema.GroupKind{Group: g.res.Group, Kind: g.kind}}) {
			why := "suspending " + what + " before deleting, so that the controller deletes nothing it applied"
			if plan.Options.RemoveFinalizers {
				why += ", and clearing their finalizers (--remove-finalizers)"
			}
			perms = append(perms, g.perm([]string{"patch"}, why))
		}
	}
	perms = append(perms, recordPermissions(plan.Namespace, []string{"get", "update"}, "rewriting the inventory record with what was kept")...)
	perms = append(perms, lockPermissions(plan.Namespace)...)
	if plan.FluxInstance {
		perms = append(perms, fluxInstanceStatus(plan.Name, plan.Namespace))
	}
	return perms, nil
}

// storagePermissions is what storage.Migrate needs: the CRD updated to serve the target as
// storage, its status.storedVersions rewritten, and every object of the kind (any namespace)
// listed and written back (a JSON patch of its managedFields, or an update).
func storagePermissions(plan *storage.Plan) []Permission {
	if plan.Empty() {
		return nil
	}
	var perms []Permission
	for _, m := range plan.Migrations {
		why := fmt.Sprintf("migrating the stored %s to %s before the CRD is upgraded", m.CRD, m.Version)
		perms = append(perms,
			Permission{Verbs: []string{"get", "update"}, Group: kube.CRDGVK.Group, Resource: "customresourcedefinitions", Name: m.CRD, Why: why},
			Permission{Verbs: []string{"update"}, Group: kube.CRDGVK.Group, Resource: "customresourcedefinitions", Subresource: "status", Name: m.CRD, Why: why},
			Permission{Verbs: []string{"list", "patch", "update"}, Group: m.Group, Resource: m.Resource, Why: why})
	}
	return perms
}

var crdResource = schema.GroupResource{Group: kube.CRDGVK.Group, Resource: "customresourcedefinitions"}

// customResources asks for verbs on every custom resource of the CRD named crdName, in every
// namespace. A CRD's name is, by the API server's validation, <plural>.<group>: the resource
// follows without reading the CRD.
func customResources(crdName string, verbs []string, why string) Permission {
	plural, group, _ := strings.Cut(crdName, ".")
	return Permission{Verbs: verbs, Group: group, Resource: plural, Why: why}
}

// recordPermissions are the record's: inventory.Store writes it by create (a POST, which carries
// no name for RBAC to match) and update (compare-and-swap), and reads it by name.
func recordPermissions(ns string, verbs []string, why string) []Permission {
	var named, unnamed []string
	for _, v := range verbs {
		if v == "create" {
			unnamed = append(unnamed, v)
		} else {
			named = append(named, v)
		}
	}
	perms := []Permission{{Verbs: named, Resource: "configmaps", Namespace: ns, Name: inventory.ConfigMapName, Why: why}}
	if len(unnamed) > 0 {
		perms = append(perms, Permission{Verbs: unnamed, Resource: "configmaps", Namespace: ns, Why: why})
	}
	return perms
}

// lockPermissions are the lock's: read, take (create, by POST: no name), renew and release it.
func lockPermissions(ns string) []Permission {
	const why = "the lock that keeps another apply or delete off the instance meanwhile"
	return []Permission{
		{Verbs: []string{"get", "update", "delete"}, Group: "coordination.k8s.io", Resource: "leases", Namespace: ns, Name: lock.LeaseName, Why: why},
		{Verbs: []string{"create"}, Group: "coordination.k8s.io", Resource: "leases", Namespace: ns, Why: why},
	}
}

func fluxInstanceStatus(name, ns string) Permission {
	p := fluxInstance([]string{"patch"}, name, ns, "mirroring the record into the FluxInstance's status.inventory")
	p.Subresource = "status"
	return p
}

// fluxInstance asks for verbs on the instance's FluxInstance object.
func fluxInstance(verbs []string, name, ns, why string) Permission {
	return Permission{Verbs: verbs, Group: "fluxcd.controlplane.io", Resource: "fluxinstances", Namespace: ns, Name: name, Why: why}
}

// OperatorApplyPlan is what one `apply --mode=operator` (not a dry run) that migrates storage
// versions first will do, as far as permissions go.
type OperatorApplyPlan struct {
	// Name and Namespace of the instance: its FluxInstance and lock live there.
	Name, Namespace string
	// Storage is the storage migration run before the FluxInstance is applied.
	Storage *storage.Plan
}

// ForOperatorApply lists what the plan needs: the storage migration's permissions (as ForApply
// asks them), the lock held around it, and reading and server-side applying the FluxInstance
// (create as well as patch: the apply may create it), which the wait for the operator reads
// too. The operator applies the manifests with its own permissions: none of them is asked.
func ForOperatorApply(plan OperatorApplyPlan) []Permission {
	perms := storagePermissions(plan.Storage)
	perms = append(perms, lockPermissions(plan.Namespace)...)
	return append(perms, fluxInstance([]string{"get", "create", "patch"}, plan.Name, plan.Namespace,
		"applying the FluxInstance for the Flux Operator to reconcile, and waiting for it"))
}

// resolver maps kinds to resources.
type resolver struct {
	mapper meta.RESTMapper
	// defined holds the plural of each kind a rendered CRD defines: the apply creates the CRD, so
	// the cluster may not serve the kind yet.
	defined map[schema.GroupKind]string
}

func newResolver(mapper meta.RESTMapper, rendering []*unstructured.Unstructured) *resolver {
	r := &resolver{mapper: mapper, defined: map[schema.GroupKind]string{}}
	for _, o := range rendering {
		if !kube.IsCRD(kube.ID(o)) {
			continue
		}
		if plural, _, _ := unstructured.NestedString(o.Object, "spec", "names", "plural"); plural != "" {
			r.defined[kube.CRDNames(o)] = plural
		}
	}
	return r
}

// rendered maps a rendered object's kind: by the rendered CRD that defines it, else the cluster.
func (r *resolver) rendered(gvk schema.GroupVersionKind) (schema.GroupResource, error) {
	if plural, ok := r.defined[gvk.GroupKind()]; ok {
		return schema.GroupResource{Group: gvk.Group, Resource: plural}, nil
	}
	res, served, err := r.served(gvk)
	if err != nil {
		return res, err
	}
	if !served {
		return res, fmt.Errorf("%s: the cluster does not serve this kind and no CustomResourceDefinition of the rendering defines it", gvk)
	}
	return res, nil
}

// served maps a kind by the cluster's discovery; served is false when the cluster does not serve
// it (at that version).
func (r *resolver) served(gvk schema.GroupVersionKind) (schema.GroupResource, bool, error) {
	var versions []string
	if gvk.Version != "" {
		versions = []string{gvk.Version}
	}
	mapping, err := r.mapper.RESTMapping(gvk.GroupKind(), versions...)
	switch {
	case kube.IsNoMatch(err):
		return schema.GroupResource{}, false, nil
	case err != nil:
		return schema.GroupResource{}, false, fmt.Errorf("finding the resource of %s: %w", gvk, err)
	}
	return mapping.Resource.GroupResource(), true, nil
}

// resourceGroup is the objects of one resource in one namespace ("" cluster-scoped).
type resourceGroup struct {
	res       schema.GroupResource
	kind      string
	namespace string
	names     []string
	// stageWait: apply waits for these between its stages (CRDs, Namespaces, ClusterRoles).
	stageWait bool
}

func (g *resourceGroup) perm(verbs []string, why string) Permission {
	return Permission{Verbs: verbs, Group: g.res.Group, Resource: g.res.Resource, Namespace: g.namespace, Why: why}
}

// resourceGroups keeps the groups in the order their first object comes.
type resourceGroups struct {
	list  []*resourceGroup
	index map[string]*resourceGroup
}

func (gs *resourceGroups) add(res schema.GroupResource, kind, namespace, name string, stageWait bool) {
	if gs.index == nil {
		gs.index = map[string]*resourceGroup{}
	}
	key := res.String() + "/" + namespace
	g := gs.index[key]
	if g == nil {
		g = &resourceGroup{res: res, kind: kind, namespace: namespace}
		gs.index[key] = g
		gs.list = append(gs.list, g)
	}
	g.names = append(g.names, name)
	g.stageWait = g.stageWait || stageWait
}

// describe names the objects of a group for a reason: "Namespace flux-system", "6 Deployment objects".
func describe(kind string, names []string) string {
	if len(names) == 1 {
		return kind + " " + names[0]
	}
	return fmt.Sprintf("%d %s objects", len(names), kind)
}
