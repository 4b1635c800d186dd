package render

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/kustomize/api/filters/patchjson6902"
	"sigs.k8s.io/kustomize/api/filters/patchstrategicmerge"
	"sigs.k8s.io/kustomize/kyaml/kio"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// patchID is what kustomize knows of an object when the user's patches run,
// as the operator builds them: the object's original name and namespace (as
// in the distribution: no namespace) and its current namespace (its current
// name is the object's name). Shard copies keep their controller's original
// name; renamed cluster-wide RBAC objects keep their upstream name.
type patchID struct {
	orgName, orgNS, curNS string
}

// idOf returns o's patchID; an object without one is known by its name and
// namespace as they are.
func idOf(ids map[*unstructured.Unstructured]patchID, o *unstructured.Unstructured) patchID {
	if id, ok := ids[o]; ok {
		return id
	}
	return patchID{orgName: o.GetName(), orgNS: o.GetNamespace(), curNS: o.GetNamespace()}
}

// nonNamespaceable is kustomize's effective namespace of cluster-scoped objects.
const nonNamespaceable = "_non_namespaceable_"

// effectiveNamespace is the namespace kustomize compares: cluster-scoped
// objects have none, namespaced objects without one are in "default".
func effectiveNamespace(kind, ns string) string {
	switch {
	case clusterScoped(kind):
		return nonNamespaceable
	case ns == "":
		return "default"
	}
	return ns
}

// applyPatches applies spec.kustomize.patches in order with kustomize's patch
// filters (strategic merge and JSON6902), as the operator's kustomize build
// does, before the operator's labels and annotations are added.
//
// Target selection follows kustomize: group, version, kind, name and namespace
// are anchored regular expressions; labelSelector and annotationSelector are
// Kubernetes selectors; a target that matches nothing is not an error. Like
// kustomize, name and namespace match an object's original identity as well as
// its current one (see patchID): a target named source-controller also
// selects the shards source-controller-<shard>, and crd-controller selects
// crd-controller-<namespace>. The distribution's objects have no namespace at
// that point (they are in "default" for a target), shard copies are in both.
//
// A strategic merge patch without a target selects the objects kustomize
// would: those whose original or current kind, name and namespace are the
// patch's (no metadata.namespace is "default"). Like kustomize (and so the
// Flux Operator, whose reconcile fails with "multiple matches"), it must
// select exactly one: with sharding, a patch naming a sharded controller also
// selects its shard copies and is an error. To patch the controller and its
// shards, add a target naming it; the main controller only, a target with
// annotationSelector "!sharding.fluxcd.io/role"; one shard, a target with its
// name (source-controller-<shard>).
// A JSON6902 patch requires a target.
//
// A target that selects nothing renders as the Flux Operator renders it, without the patch
// and without an error (its CLI prints nothing either), but it is almost always a mistake (a
// component not installed, a namespace set on the target): warn receives one message per such
// patch.
func applyPatches(objs []*unstructured.Unstructured, patches []fluxinstance.Patch, ids map[*unstructured.Unstructured]patchID, warn func(string)) ([]*unstructured.Unstructured, error) {
	for i, p := range patches {
		path := fmt.Sprintf("spec.kustomize.patches[%d]", i)
		if strings.TrimSpace(p.Patch) == "" {
			return nil, fmt.Errorf("%s.patch: the patch is empty", path)
		}
		first, err := kyaml.Parse(p.Patch)
		if err != nil {
			return nil, fmt.Errorf("%s.patch: not valid YAML: %w", path, err)
		}
		if p.Target != nil {
			sel, err := compileSelector(p.Target)
			if err != nil {
				return nil, fmt.Errorf("%s.target: %w", path, err)
			}
			// Warned, then applied as usual: the patch is still checked as the operator checks it.
			if !slices.ContainsFunc(objs, sel.matcher(ids)) {
				warn(noMatchWarning(path, p.Target, namespaceOnlyMismatch(objs, ids, p.Target)))
			}
		}
		// A list of operations is a JSON6902 patch, anything else strategic merge.
		if first.YNode().Kind == kyaml.SequenceNode {
			objs, err = applyJSON6902(objs, ids, path, p)
		} else {
			objs, err = applyStrategicMerge(objs, ids, path, p)
		}
		if err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// namespaceOnlyMismatch tells whether target, which selects nothing, would select objects
// without its namespace: the usual mistake, since the distribution's objects are patched before
// they get the instance's namespace (see patchID).
func namespaceOnlyMismatch(objs []*unstructured.Unstructured, ids map[*unstructured.Unstructured]patchID, target *fluxinstance.Selector) bool {
	if target.Namespace == "" {
		return false
	}
	anyNS := *target
	anyNS.Namespace = ""
	sel, err := compileSelector(&anyNS)
	return err == nil && slices.ContainsFunc(objs, sel.matcher(ids))
}

// noMatchWarning says that the patch at path changes nothing because target selects no object;
// namespaceOnly when it would without its namespace (namespaceOnlyMismatch).
func noMatchWarning(path string, target *fluxinstance.Selector, namespaceOnly bool) string {
	var fields []string
	for _, f := range []struct{ name, value string }{
		{"group", target.Group}, {"version", target.Version}, {"kind", target.Kind}, {"name", target.Name},
		{"namespace", target.Namespace}, {"labelSelector", target.LabelSelector}, {"annotationSelector", target.AnnotationSelector},
	} {
		if f.value != "" {
			fields = append(fields, fmt.Sprintf("%s: %q", f.name, f.value))
		}
	}
	hint := "check the target against the objects `kubectl fluxinstance build` prints (a component that is not installed has none)"
	if namespaceOnly {
		hint = "it would select objects without target.namespace, which the distribution's objects do not have yet when patches run: remove target.namespace"
	}
	return fmt.Sprintf("%s: the target {%s} selects no object, so the patch changes nothing (the Flux Operator ignores it too); %s",
		path, strings.Join(fields, ", "), hint)
}

// applyJSON6902 applies a JSON6902 patch (path is its field path, for errors)
// to the objects its target selects.
func applyJSON6902(objs []*unstructured.Unstructured, ids map[*unstructured.Unstructured]patchID, path string, p fluxinstance.Patch) ([]*unstructured.Unstructured, error) {
	if p.Target == nil {
		return nil, fmt.Errorf("%s.target: required for a JSON6902 patch (a list of operations); set at least target.kind", path)
	}
	sel, err := compileSelector(p.Target)
	if err != nil {
		return nil, fmt.Errorf("%s.target: %w", path, err)
	}
	filter := patchjson6902.Filter{Patch: p.Patch}
	return patchSelected(objs, ids, path, sel.matcher(ids), func(n *kyaml.RNode) (*kyaml.RNode, error) {
		out, err := filter.Filter([]*kyaml.RNode{n})
		if err != nil {
			return nil, err
		}
		return single(out), nil
	})
}

// applyStrategicMerge applies each document of a strategic merge patch in turn.
func applyStrategicMerge(objs []*unstructured.Unstructured, ids map[*unstructured.Unstructured]patchID, path string, p fluxinstance.Patch) ([]*unstructured.Unstructured, error) {
	docs, err := kio.FromBytes([]byte(p.Patch))
	if err != nil {
		return nil, fmt.Errorf("%s.patch: not valid YAML: %w", path, err)
	}
	if err := useSchemaSubset(); err != nil {
		return nil, err
	}
	for _, doc := range docs {
		if p.Target == nil {
			objs, err = applyUntargetedMerge(objs, ids, path, doc)
		} else {
			objs, err = applyTargetedMerge(objs, ids, path, p.Target, doc)
		}
		if err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// mergeWith returns the patchSelected step that merges doc into an object.
func mergeWith(doc *kyaml.RNode) func(*kyaml.RNode) (*kyaml.RNode, error) {
	return func(n *kyaml.RNode) (*kyaml.RNode, error) {
		res, err := patchstrategicmerge.Filter{Patch: doc.Copy()}.Filter([]*kyaml.RNode{n})
		if err != nil {
			return nil, err
		}
		return single(res), nil
	}
}

// applyTargetedMerge merges doc into every object target selects; selecting
// none is not an error.
func applyTargetedMerge(objs []*unstructured.Unstructured, ids map[*unstructured.Unstructured]patchID, path string, target *fluxinstance.Selector, doc *kyaml.RNode) ([]*unstructured.Unstructured, error) {
	sel, err := compileSelector(target)
	if err != nil {
		return nil, fmt.Errorf("%s.target: %w", path, err)
	}
	return patchSelected(objs, ids, path, sel.matcher(ids), mergeWith(doc))
}

// applyUntargetedMerge merges doc into the one object its own kind, name and
// namespace select (see implicitMatcher); like kustomize, none or several is
// an error.
func applyUntargetedMerge(objs []*unstructured.Unstructured, ids map[*unstructured.Unstructured]patchID, path string, doc *kyaml.RNode) ([]*unstructured.Unstructured, error) {
	meta, err := doc.GetMeta()
	if err != nil || meta.Kind == "" || meta.Name == "" {
		return nil, fmt.Errorf("%s: a strategic merge patch without a target must set kind and metadata.name (or add a target)", path)
	}
	match := implicitMatcher(ids, meta)
	var selected []string
	for _, o := range objs {
		if match(o) {
			selected = append(selected, o.GetKind()+"/"+o.GetName())
		}
	}
	switch {
	case len(selected) > 1:
		return nil, fmt.Errorf("%s: the strategic merge patch for %s %s has no target and matches %d objects (%s); "+
			"the Flux Operator refuses that (kustomize: multiple matches): add a target, e.g. {kind: %s, name: %s} for all of them "+
			"or with annotationSelector: \"!%s\" for the main one only",
			path, meta.Kind, meta.Name, len(selected), strings.Join(selected, ", "), meta.Kind, meta.Name, AnnotationShardRole)
	case len(selected) == 0:
		where := ""
		if meta.Namespace != "" {
			where = " in namespace " + meta.Namespace + " (the operator patches the distribution's objects before it sets their namespace: remove metadata.namespace)"
		}
		return nil, fmt.Errorf("%s: no object matches the strategic merge patch for %s %s%s; check kind and metadata.name, or add a target",
			path, meta.Kind, meta.Name, where)
	}
	return patchSelected(objs, ids, path, match, mergeWith(doc))
}

// implicitMatcher selects what kustomize selects for a strategic merge patch
// without target: the objects with the patch's kind (and group and version
// when set) whose original or current name and namespace are the patch's.
func implicitMatcher(ids map[*unstructured.Unstructured]patchID, meta kyaml.ResourceMeta) func(*unstructured.Unstructured) bool {
	group, version := splitAPIVersion(meta.APIVersion)
	ns := effectiveNamespace(meta.Kind, meta.Namespace)
	return func(o *unstructured.Unstructured) bool {
		if o.GetKind() != meta.Kind {
			return false
		}
		g, v := splitAPIVersion(o.GetAPIVersion())
		if (meta.APIVersion != "" && g != group) || (version != "" && v != version) {
			return false
		}
		id := idOf(ids, o)
		return (id.orgName == meta.Name && effectiveNamespace(o.GetKind(), id.orgNS) == ns) ||
			(o.GetName() == meta.Name && effectiveNamespace(o.GetKind(), id.curNS) == ns)
	}
}

func single(nodes []*kyaml.RNode) *kyaml.RNode {
	if len(nodes) == 0 {
		return nil
	}
	return nodes[0]
}

// patchSelected runs apply on every object match selects; an object whose
// patch result is empty ($patch: delete) is dropped. Name, kind and namespace
// are kept as kustomize does, and so is the object's patchID.
func patchSelected(objs []*unstructured.Unstructured, ids map[*unstructured.Unstructured]patchID, path string, match func(*unstructured.Unstructured) bool, apply func(*kyaml.RNode) (*kyaml.RNode, error)) ([]*unstructured.Unstructured, error) {
	out := objs[:0:0]
	for _, o := range objs {
		if !match(o) {
			out = append(out, o)
			continue
		}
		// kustomize's own bookkeeping annotations are there when patches run
		// (and removed later), so adding an annotation never fails for lack
		// of the map; labels have no such guarantee.
		if md, ok := o.Object["metadata"].(map[string]interface{}); ok && md["annotations"] == nil {
			md["annotations"] = map[string]interface{}{}
		}
		data, err := json.Marshal(o.Object)
		if err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", path, o.GetKind(), o.GetName(), err)
		}
		node, err := kyaml.Parse(string(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", path, o.GetKind(), o.GetName(), err)
		}
		res, err := apply(node)
		if err != nil {
			return nil, fmt.Errorf("%s: patching %s %s: %w", path, o.GetKind(), o.GetName(), err)
		}
		if res == nil || res.IsNilOrEmpty() {
			delete(ids, o)
			continue // deleted by the patch
		}
		j, err := res.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", path, o.GetKind(), o.GetName(), err)
		}
		obj := map[string]interface{}{}
		if err := utiljson.Unmarshal(j, &obj); err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", path, o.GetKind(), o.GetName(), err)
		}
		n := &unstructured.Unstructured{Object: obj}
		n.SetName(o.GetName())
		n.SetNamespace(o.GetNamespace())
		n.SetKind(o.GetKind())
		if id, ok := ids[o]; ok {
			delete(ids, o)
			ids[n] = id
		}
		out = append(out, n)
	}
	return out, nil
}

type selector struct {
	group, version, kind, name, namespace *regexp.Regexp
	labels, annotations                   labels.Selector
}

func compileSelector(t *fluxinstance.Selector) (*selector, error) {
	s := &selector{}
	var err error
	for _, f := range []struct {
		field string
		expr  string
		dst   **regexp.Regexp
	}{
		{"group", t.Group, &s.group}, {"version", t.Version, &s.version}, {"kind", t.Kind, &s.kind},
		{"name", t.Name, &s.name}, {"namespace", t.Namespace, &s.namespace},
	} {
		if f.expr == "" {
			continue
		}
		if *f.dst, err = regexp.Compile("^(?:" + f.expr + ")$"); err != nil {
			return nil, fmt.Errorf("%s: %q is not a valid regular expression: %w", f.field, f.expr, err)
		}
	}
	if t.LabelSelector != "" {
		if s.labels, err = labels.Parse(t.LabelSelector); err != nil {
			return nil, fmt.Errorf("labelSelector: %q: %w", t.LabelSelector, err)
		}
	}
	if t.AnnotationSelector != "" {
		if s.annotations, err = labels.Parse(t.AnnotationSelector); err != nil {
			return nil, fmt.Errorf("annotationSelector: %q: %w", t.AnnotationSelector, err)
		}
	}
	return s, nil
}

// matcher returns the selection function of s, matching name and namespace
// against the objects' original identity as well as their current one.
func (s *selector) matcher(ids map[*unstructured.Unstructured]patchID) func(*unstructured.Unstructured) bool {
	return func(o *unstructured.Unstructured) bool { return s.matches(o, idOf(ids, o)) }
}

func (s *selector) matches(o *unstructured.Unstructured, id patchID) bool {
	group, version := splitAPIVersion(o.GetAPIVersion())
	kind := o.GetKind()
	switch {
	case s.group != nil && !s.group.MatchString(group),
		s.version != nil && !s.version.MatchString(version),
		s.kind != nil && !s.kind.MatchString(kind),
		s.name != nil && !s.name.MatchString(id.orgName) && !s.name.MatchString(o.GetName()),
		s.namespace != nil && !s.namespace.MatchString(effectiveNamespace(kind, id.orgNS)) &&
			!s.namespace.MatchString(effectiveNamespace(kind, id.curNS)),
		s.labels != nil && !s.labels.Matches(labels.Set(o.GetLabels())),
		s.annotations != nil && !s.annotations.Matches(labels.Set(o.GetAnnotations())):
		return false
	}
	return true
}

func splitAPIVersion(apiVersion string) (group, version string) {
	if i := strings.IndexByte(apiVersion, '/'); i >= 0 {
		return apiVersion[:i], apiVersion[i+1:]
	}
	return "", apiVersion
}
