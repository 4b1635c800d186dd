package fleetrepo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	yaml "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
)

// inlinePatch rewrites the Flux objects inside a patch given as a string (patches[].patch, an
// inline patchesStrategicMerge entry). The string is parsed on its own and walked like a file;
// its edits are then mapped to the file's lines, which is exact for a literal block (`|`): each
// line of the value is a line of the file behind the block's indentation. Any other style is
// reported for a person to edit.
func (w *walker) inlinePatch(n *yaml.Node, path, owner string) {
	if n.Kind != yaml.ScalarNode || !strings.Contains(n.Value, ".toolkit.fluxcd.io") {
		return
	}
	what := strings.TrimSpace(owner + " " + path)
	sub := &walker{t: w.t, lines: splitLines([]byte(n.Value)), inPatch: true}
	dec := yaml.NewDecoder(strings.NewReader(n.Value))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			w.warnings = append(w.warnings, Warning{Line: n.Line, Message: fmt.Sprintf("%s: the inline patch names a Flux group but does not parse as YAML (%v): check its apiVersions by hand", what, err)})
			return
		}
		sub.document(&doc)
	}
	if len(sub.edits) > 0 && n.Style&yaml.LiteralStyle == 0 {
		w.warnings = append(w.warnings, Warning{Line: n.Line, Message: fmt.Sprintf("%s: the inline patch names Flux versions the target does not serve (%s), but only a literal block (|) can be edited in place: rewrite them by hand", what, summary(sub.changes))})
		return
	}
	edits, err := w.mapEdits(n, sub)
	if err != nil {
		w.warnings = append(w.warnings, Warning{Line: n.Line, Message: fmt.Sprintf("%s: the inline patch cannot be edited in place (%v): rewrite %s by hand", what, err, summary(sub.changes))})
		return
	}
	w.edits = append(w.edits, edits...)
	for _, c := range sub.changes {
		c.Line += n.Line
		c.Object = strings.TrimSpace(what + ": " + c.Object)
		w.changes = append(w.changes, c)
	}
	for _, warning := range sub.warnings {
		warning.Line += n.Line
		warning.Message = what + ": " + warning.Message
		w.warnings = append(w.warnings, warning)
	}
}

// mapEdits moves the edits of a literal block's text to the file: line k of the text is line
// n.Line+k of the file, shifted right by the block's indentation.
func (w *walker) mapEdits(n *yaml.Node, sub *walker) ([]edit, error) {
	var out []edit
	for _, e := range sub.edits {
		line := n.Line + e.line
		if line > len(w.lines) {
			return nil, fmt.Errorf("line %d is outside the file", line)
		}
		fileLine, text := trimCR(w.lines[line-1]), sub.lines[e.line-1]
		if !bytes.HasSuffix(fileLine, text) {
			return nil, fmt.Errorf("line %d is not line %d of the patch", line, e.line)
		}
		e.off += len(fileLine) - len(text)
		e.line = line
		out = append(out, e)
	}
	return out, nil
}

// summary lists changes as "Kind group/from → to", for a warning.
func summary(changes []Change) string {
	parts := make([]string, 0, len(changes))
	for _, c := range changes {
		parts = append(parts, fmt.Sprintf("%s %s/%s → %s", c.Object, c.Group, c.From, c.To))
	}
	return strings.Join(parts, "; ")
}

// dropped warns about the fields of a rewritten object that its new version does not have, found
// by the API server's pruning (storage.DroppedFields) against the target CRD. Patch directives
// ($patch, $setElementOrder/…) of an inline patch are not fields, and are left out.
func (w *walker) dropped(root *yaml.Node, owner, kind, to string, line int) {
	group, _, _ := strings.Cut(scalar(root, "apiVersion"), "/")
	pruner := w.t.pruner(schema.GroupKind{Group: group, Kind: kind})
	if pruner == nil {
		return
	}
	paths, err := droppedPaths(root, pruner)
	if err != nil {
		w.warnings = append(w.warnings, Warning{Line: line, Message: fmt.Sprintf("%s: could not check which fields %s/%s drops (%v): review the object against the new version", owner, group, to, err)})
		return
	}
	if w.inPatch {
		paths = withoutDirectives(paths)
	}
	if msg := storage.FormatDropped(owner, paths, group+"/"+to); msg != "" {
		w.warnings = append(w.warnings, Warning{Line: line, Message: msg + ": the API server prunes them when this is applied; move each to its replacement in " + to + " (see the Flux release notes) or delete it"})
	}
}

// droppedPaths are the paths of root's fields that the pruner's version does not have.
func droppedPaths(root *yaml.Node, pruner *storage.Pruner) ([]string, error) {
	obj, err := decode(root)
	if err != nil {
		return nil, err
	}
	return pruner.DroppedFields(obj)
}

// decode turns a YAML node into an object with JSON types, as the API server would read it. Only
// the shape matters to the pruning (which fields and lists exist), so scalars are typed by their
// resolved tag and nothing is re-serialised.
func decode(n *yaml.Node) (*unstructured.Unstructured, error) {
	d := &decoder{budget: maxNodes}
	v, err := d.value(n, 0)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("line %d: not a mapping", n.Line)
	}
	return &unstructured.Unstructured{Object: obj}, nil
}

// maxDepth and maxNodes bound what decode expands: aliases can make a small file deep or huge
// (the "billion laughs").
const (
	maxDepth = 200
	maxNodes = 1 << 20
)

type decoder struct{ budget int }

func (d *decoder) value(n *yaml.Node, depth int) (any, error) {
	if d.budget--; depth > maxDepth || d.budget < 0 {
		return nil, fmt.Errorf("line %d: the object expands to more than %d levels or %d values (aliases)", n.Line, maxDepth, maxNodes)
	}
	switch n.Kind {
	case yaml.AliasNode:
		return d.value(n.Alias, depth+1)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := d.value(n.Content[i+1], depth+1)
			if err != nil {
				return nil, err
			}
			m[n.Content[i].Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, item := range n.Content {
			v, err := d.value(item, depth+1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	}
	return scalarValue(n), nil
}

// scalarValue types a scalar by its resolved tag, with JSON's number types.
func scalarValue(n *yaml.Node) any {
	switch n.ShortTag() {
	case "!!null":
		return nil
	case "!!bool":
		var b bool
		if n.Decode(&b) == nil {
			return b
		}
	case "!!int":
		var i int64
		if n.Decode(&i) == nil {
			return i
		}
	case "!!float":
		var f float64
		if n.Decode(&f) == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f
		}
	}
	return n.Value
}

// withoutDirectives drops the paths of strategic-merge patch directives, which start with "$".
func withoutDirectives(paths []string) []string {
	var out []string
	for _, p := range paths {
		if !strings.Contains(p, "$") {
			out = append(out, p)
		}
	}
	return out
}
