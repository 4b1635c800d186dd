package fleetrepo

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
)

// Change is one version rewritten: an object's apiVersion, a reference's, or a patch target's.
type Change struct {
	// Path is the file, slash-separated and relative to the repository.
	Path string
	// Line is the 1-based line of the rewritten value.
	Line int
	// Object says what was rewritten: "HelmRelease apps/podinfo", or "Kustomization flux-system/apps
	// spec.sourceRef (GitRepository)" for a reference inside it.
	Object string
	Group  string
	From   string
	To     string
}

// String is the line shown to a person: "apps/podinfo.yaml:5: HelmRelease apps/podinfo:
// helm.toolkit.fluxcd.io/v2beta1 → v2".
func (c Change) String() string {
	return fmt.Sprintf("%s:%d: %s: %s/%s → %s", c.Path, c.Line, c.Object, c.Group, c.From, c.To)
}

// Warning is something a person must look at: a field the new version drops, a version that could
// not be rewritten, a file that was not read.
type Warning struct {
	Path    string
	Line    int // 0 when it is about the whole file
	Message string
}

func (w Warning) String() string {
	if w.Line == 0 {
		return w.Path + ": " + w.Message
	}
	return fmt.Sprintf("%s:%d: %s", w.Path, w.Line, w.Message)
}

// walker collects the edits, changes and warnings of one YAML source (a file, or the text of an
// inline patch, whose lines inlinePatch maps back to the file's). Lines are the source's own.
type walker struct {
	t       *Target
	lines   [][]byte
	inPatch bool // the source is an inline patch: partial objects, with patch directives
	// fluxDoc tells whether the document being walked is a Flux object: only there is a nested
	// apiVersion without a sibling kind taken for a reference to rewrite.
	fluxDoc  bool
	edits    []edit
	changes  []Change
	warnings []Warning
}

// document walks one YAML document: its root object first (which also reports the fields the
// new version drops), then everything inside it.
func (w *walker) document(doc *yaml.Node) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.SequenceNode { // a JSON 6902 patch file, a list of objects
		w.fluxDoc = false
		w.walk(root, "", "")
		return
	}
	if root.Kind != yaml.MappingNode {
		return
	}
	owner := describe(root)
	group, _, _ := strings.Cut(scalar(root, "apiVersion"), "/")
	w.fluxDoc = storage.IsFluxGroup(group)
	if gk, to, line := w.apiVersion(root, "", owner); to != "" {
		w.dropped(root, owner, gk, to, line)
	}
	w.children(root, "", owner)
}

// walk visits every node below n; path is n's dotted path in the document ("" at the root).
func (w *walker) walk(n *yaml.Node, path, owner string) {
	switch n.Kind {
	case yaml.MappingNode:
		w.apiVersion(n, path, owner)
		w.patchOperation(n, path, owner)
		w.children(n, path, owner)
	case yaml.SequenceNode:
		for i, item := range n.Content {
			w.walk(item, path+"["+strconv.Itoa(i)+"]", owner)
		}
	}
	// Aliases are skipped: the anchored node is visited (and edited) where it is written.
}

// children visits the values of mapping n, looking at kustomize's patch fields on the way.
func (w *walker) children(n *yaml.Node, path, owner string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i].Value, n.Content[i+1]
		child := joinPath(path, key)
		switch key {
		case "patches", "patchesJson6902":
			w.patchTargets(value, child, owner)
		case "patch":
			w.inlinePatch(value, child, owner)
		case "patchesStrategicMerge":
			if value.Kind == yaml.SequenceNode {
				for j, item := range value.Content {
					w.inlinePatch(item, child+"["+strconv.Itoa(j)+"]", owner)
				}
			}
		}
		w.walk(value, child, owner)
	}
}

// apiVersion rewrites mapping n's apiVersion when it names a Flux group at a version the target
// does not serve, the kind being n's sibling kind. It returns the kind and the new version when
// it rewrote it, and the line of the value.
func (w *walker) apiVersion(n *yaml.Node, path, owner string) (kind, to string, line int) {
	av := value(n, "apiVersion")
	if av == nil || av.Kind != yaml.ScalarNode {
		return "", "", 0
	}
	group, version, ok := strings.Cut(av.Value, "/")
	if !ok || !storage.IsFluxGroup(group) {
		return "", "", 0
	}
	kind = scalar(n, "kind")
	what := owner
	if path != "" {
		what = strings.TrimSpace(owner + " " + path)
		if kind != "" {
			what += " (" + kind + ")"
		}
	}
	d := w.t.decide(group, version, kind)
	if kind == "" && !w.fluxDoc && d.to != "" {
		// Outside a Flux object, a bare apiVersion is data (a ConfigMap's, a chart's values): it is
		// not guessed at.
		d = decision{warn: av.Value + " left unchanged: no kind beside it and outside a Flux object, so it may be data; set it to " + group + "/" + d.to + " by hand if it names a Flux object"}
	}
	if what == "" {
		what = "apiVersion"
	}
	if w.record(d, av, group+"/", group, version, what) {
		return kind, d.to, av.Line
	}
	return "", "", 0
}

// patchOperation rewrites the value of a JSON 6902 operation that sets an apiVersion ({op:
// replace, path: /spec/sourceRef/apiVersion, value: GROUP/VERSION}). No kind is beside it, so the
// group's storage version is used when its kinds agree.
func (w *walker) patchOperation(n *yaml.Node, path, owner string) {
	op, target, val := scalar(n, "op"), scalar(n, "path"), value(n, "value")
	if op == "" || !strings.HasSuffix(target, "/apiVersion") || val == nil || val.Kind != yaml.ScalarNode {
		return
	}
	group, version, ok := strings.Cut(val.Value, "/")
	if !ok || !storage.IsFluxGroup(group) {
		return
	}
	what := strings.TrimSpace(fmt.Sprintf("%s %s (%s %s)", owner, joinPath(path, "value"), op, target))
	w.record(w.t.decide(group, version, ""), val, group+"/", group, version, what)
}

// patchTargets rewrites the version of each kustomize patch target (patches[].target,
// patchesJson6902[].target) that selects a Flux group at a version the target does not serve.
func (w *walker) patchTargets(list *yaml.Node, path, owner string) {
	if list.Kind != yaml.SequenceNode {
		return
	}
	for i, item := range list.Content {
		target := value(item, "target")
		if target == nil || target.Kind != yaml.MappingNode {
			continue
		}
		group, version := scalar(target, "group"), value(target, "version")
		if !storage.IsFluxGroup(group) || version == nil || version.Kind != yaml.ScalarNode {
			continue
		}
		kind := scalar(target, "kind")
		what := strings.TrimSpace(fmt.Sprintf("%s %s[%d].target", owner, path, i))
		if kind != "" {
			what += " (" + kind + ")"
		}
		w.record(w.t.decide(group, version.Value, kind), version, "", group, version.Value, what)
	}
}

// record acts on a decision about the scalar n (an apiVersion, whose value is prefix "group/"
// and the version, or a patch target's version, prefix ""): it warns, or edits and records the
// change. It tells whether n was rewritten.
func (w *walker) record(d decision, n *yaml.Node, prefix, group, version, what string) bool {
	if d.warn != "" {
		w.warnings = append(w.warnings, Warning{Line: n.Line, Message: strings.TrimSpace(what + ": " + d.warn)})
		return false
	}
	if d.to == "" {
		return false
	}
	e, err := scalarEdit(w.lines, n, prefix+d.to)
	if err != nil {
		w.warnings = append(w.warnings, Warning{Line: n.Line, Message: fmt.Sprintf("%s: %s/%s is not served by the target, but it cannot be edited in place (%v): set it to %s/%s by hand", what, group, version, err, group, d.to)})
		return false
	}
	w.edits = append(w.edits, e)
	w.changes = append(w.changes, Change{Line: n.Line, Object: what, Group: group, From: version, To: d.to})
	return true
}

// describe names the object a root mapping is: "Kind namespace/name", "Kind name", "Kind", or "".
func describe(root *yaml.Node) string {
	kind := scalar(root, "kind")
	meta := value(root, "metadata")
	if kind == "" || meta == nil {
		return kind
	}
	name, ns := scalar(meta, "name"), scalar(meta, "namespace")
	switch {
	case name == "":
		return kind
	case ns == "":
		return kind + " " + name
	}
	return kind + " " + ns + "/" + name
}

// value is the value node of key in mapping n, or nil.
func value(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// scalar is the string value of key in mapping n, or "".
func scalar(n *yaml.Node, key string) string {
	if v := value(n, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// trimCR drops the "\r" of a CRLF line.
func trimCR(line []byte) []byte { return bytes.TrimSuffix(line, []byte("\r")) }
