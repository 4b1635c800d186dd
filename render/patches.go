package render

import (
	"encoding/json"
	"fmt"
	"regexp"
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

// applyPatches applies spec.kustomize.patches in order with kustomize's patch
// filters (strategic merge and JSON6902), as the operator's kustomize build does.
//
// Target selection follows kustomize: group, version, kind, name and namespace
// are anchored regular expressions; labelSelector and annotationSelector are
// Kubernetes selectors; a target that matches nothing is not an error.
//
// A strategic merge patch without a target selects by its own kind, name (and
// namespace when set). Deliberate choice: it applies to every object with that
// name, including the per-shard copies of a controller (source-controller also
// patches source-controller-<shard>), because a shard is a copy of its
// controller and users expect the same settings on every copy; the reference
// CLI instead fails with "multiple matches". Add a target with a name regex to
// patch the main controller only (e.g. name: ^source-controller$ - names are
// anchored anyway, so "source-controller" alone selects only the main one).
// A JSON6902 patch requires a target.
func applyPatches(objs []*unstructured.Unstructured, patches []fluxinstance.Patch, shards []string) ([]*unstructured.Unstructured, error) {
	for i, p := range patches {
		path := fmt.Sprintf("spec.kustomize.patches[%d]", i)
		if strings.TrimSpace(p.Patch) == "" {
			return nil, fmt.Errorf("%s.patch: the patch is empty", path)
		}
		first, err := kyaml.Parse(p.Patch)
		if err != nil {
			return nil, fmt.Errorf("%s.patch: not valid YAML: %w", path, err)
		}
		if first.YNode().Kind == kyaml.SequenceNode {
			if p.Target == nil {
				return nil, fmt.Errorf("%s.target: required for a JSON6902 patch (a list of operations); set at least target.kind", path)
			}
			filter := patchjson6902.Filter{Patch: p.Patch}
			objs, err = patchSelected(objs, path, p.Target, func(n *kyaml.RNode) (*kyaml.RNode, error) {
				out, err := filter.Filter([]*kyaml.RNode{n})
				if err != nil {
					return nil, err
				}
				return single(out), nil
			})
			if err != nil {
				return nil, err
			}
			continue
		}
		docs, err := kio.FromBytes([]byte(p.Patch))
		if err != nil {
			return nil, fmt.Errorf("%s.patch: not valid YAML: %w", path, err)
		}
		for _, doc := range docs {
			target := p.Target
			if target == nil {
				meta, merr := doc.GetMeta()
				if merr != nil || meta.Kind == "" || meta.Name == "" {
					return nil, fmt.Errorf("%s: a strategic merge patch without a target must set kind and metadata.name (or add a target)", path)
				}
				group, version := splitAPIVersion(meta.APIVersion)
				target = &fluxinstance.Selector{
					Group: regexp.QuoteMeta(group), Version: regexp.QuoteMeta(version), Kind: regexp.QuoteMeta(meta.Kind),
					Name: regexp.QuoteMeta(meta.Name) + "(-.+)?", Namespace: regexp.QuoteMeta(meta.Namespace),
				}
				objs, err = patchSMP(objs, path, target, doc, meta.Name, shards, true)
			} else {
				objs, err = patchSMP(objs, path, target, doc, "", nil, false)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return objs, nil
}

// patchSMP applies one strategic merge patch document. Without a user target,
// only the named object and its shard copies (annotated as shards) match.
func patchSMP(objs []*unstructured.Unstructured, path string, target *fluxinstance.Selector, doc *kyaml.RNode, name string, shards []string, implicit bool) ([]*unstructured.Unstructured, error) {
	matched := 0
	out, err := patchSelectedFiltered(objs, path, target, func(o *unstructured.Unstructured) bool {
		if !implicit || o.GetName() == name {
			return true
		}
		if o.GetAnnotations()[AnnotationShardRole] != ShardRoleValue {
			return false
		}
		for _, s := range shards {
			if o.GetName() == name+"-"+s {
				return true
			}
		}
		return false
	}, func(n *kyaml.RNode) (*kyaml.RNode, error) {
		matched++
		res, err := patchstrategicmerge.Filter{Patch: doc.Copy()}.Filter([]*kyaml.RNode{n})
		if err != nil {
			return nil, err
		}
		return single(res), nil
	})
	if err != nil {
		return nil, err
	}
	if implicit && matched == 0 {
		return nil, fmt.Errorf("%s: no object matches the strategic merge patch for %s; check kind and metadata.name, or add a target", path, name)
	}
	return out, nil
}

func single(nodes []*kyaml.RNode) *kyaml.RNode {
	if len(nodes) == 0 {
		return nil
	}
	return nodes[0]
}

func patchSelected(objs []*unstructured.Unstructured, path string, target *fluxinstance.Selector, apply func(*kyaml.RNode) (*kyaml.RNode, error)) ([]*unstructured.Unstructured, error) {
	return patchSelectedFiltered(objs, path, target, nil, apply)
}

// patchSelectedFiltered runs apply on every object the target selects; an
// object whose patch result is empty ($patch: delete) is dropped. Name, kind
// and namespace are kept as kustomize does.
func patchSelectedFiltered(objs []*unstructured.Unstructured, path string, target *fluxinstance.Selector, extra func(*unstructured.Unstructured) bool, apply func(*kyaml.RNode) (*kyaml.RNode, error)) ([]*unstructured.Unstructured, error) {
	sel, err := compileSelector(target)
	if err != nil {
		return nil, fmt.Errorf("%s.target: %w", path, err)
	}
	out := objs[:0:0]
	for _, o := range objs {
		if !sel.matches(o) || (extra != nil && !extra(o)) {
			out = append(out, o)
			continue
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

func (s *selector) matches(o *unstructured.Unstructured) bool {
	group, version := splitAPIVersion(o.GetAPIVersion())
	switch {
	case s.group != nil && !s.group.MatchString(group),
		s.version != nil && !s.version.MatchString(version),
		s.kind != nil && !s.kind.MatchString(o.GetKind()),
		s.name != nil && !s.name.MatchString(o.GetName()),
		s.namespace != nil && !s.namespace.MatchString(o.GetNamespace()),
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
