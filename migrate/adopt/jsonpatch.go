package adopt

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Op is one JSON6902 operation. Value is kept for remove (nil) out of the JSON.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
	// from is the rendered value, for the plan's wording.
	from any
}

// diffOps returns the JSON6902 operations that turn from into to (both decoded JSON values),
// rooted at path. Maps are compared key by key; lists of named items (containers, volumes...)
// with the same names in the same order are compared item by item so that a change of one
// container's args does not rewrite the whole pod spec; any other differing list is replaced
// whole (kustomize applies JSON6902 literally, and positional edits of e.g. args would be
// unreadable and fragile).
func diffOps(from, to any, path string) []Op {
	if equalJSON(from, to) {
		return nil
	}
	fm, ok1 := from.(map[string]any)
	tm, ok2 := to.(map[string]any)
	if ok1 && ok2 {
		var ops []Op
		keys := make([]string, 0, len(fm)+len(tm))
		for k := range fm {
			keys = append(keys, k)
		}
		for k := range tm {
			if _, ok := fm[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := path + "/" + escapePointer(k)
			fv, inFrom := fm[k]
			tv, inTo := tm[k]
			switch {
			case inFrom && !inTo:
				ops = append(ops, Op{Op: "remove", Path: p, from: fv})
			case !inFrom && inTo:
				ops = append(ops, Op{Op: "add", Path: p, Value: tv})
			default:
				ops = append(ops, diffOps(fv, tv, p)...)
			}
		}
		return ops
	}
	fl, ok1 := from.([]any)
	tl, ok2 := to.([]any)
	if ok1 && ok2 && sameNames(fl, tl) {
		var ops []Op
		for i := range fl {
			ops = append(ops, diffOps(fl[i], tl[i], path+"/"+strconv.Itoa(i))...)
		}
		return ops
	}
	return []Op{{Op: "replace", Path: path, Value: to, from: from}}
}

// sameNames tells whether two lists hold maps with the same "name" values in the same order.
func sameNames(a, b []any) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		am, ok1 := a[i].(map[string]any)
		bm, ok2 := b[i].(map[string]any)
		if !ok1 || !ok2 {
			return false
		}
		an, ok1 := am["name"].(string)
		bn, ok2 := bm["name"].(string)
		if !ok1 || !ok2 || an != bn {
			return false
		}
	}
	return true
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// equalJSON compares decoded JSON values, treating all numbers alike.
func equalJSON(a, b any) bool {
	if fa, ok := number(a); ok {
		fb, ok := number(b)
		return ok && fa == fb
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equalJSON(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case float32:
		return float64(n), true
	}
	return 0, false
}

// describeOp is one line of the plan for an operation.
func describeOp(o Op) string {
	field := fieldPath(o.Path)
	switch o.Op {
	case "remove":
		return "remove " + field
	case "replace":
		if added, removed, ok := stringListDelta(o.from, o.Value); ok {
			var parts []string
			for _, a := range added {
				parts = append(parts, "add "+a)
			}
			for _, r := range removed {
				parts = append(parts, "drop "+r)
			}
			if len(parts) > 0 {
				return fmt.Sprintf("%s: %s", field, strings.Join(parts, ", "))
			}
			return field + ": same items, in the running order"
		}
		return fmt.Sprintf("set %s to %s", field, short(o.Value))
	default:
		return fmt.Sprintf("set %s to %s", field, short(o.Value))
	}
}

func short(v any) string {
	s := fmt.Sprintf("%v", v)
	if b, err := jsonMarshal(v); err == nil {
		s = string(b)
	}
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// stringListDelta compares two lists of strings (args, commands) as sets.
func stringListDelta(from, to any) (added, removed []string, ok bool) {
	f, ok1 := strings2(from)
	t, ok2 := strings2(to)
	if !ok1 || !ok2 {
		return nil, nil, false
	}
	in := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	for _, s := range t {
		if !in(f, s) {
			added = append(added, s)
		}
	}
	for _, s := range f {
		if !in(t, s) {
			removed = append(removed, s)
		}
	}
	return added, removed, true
}

func strings2(v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// fieldPath prints a JSON pointer the way kubectl explains fields: dots between segments, and
// keys holding dots or slashes (annotations, labels) in brackets.
func fieldPath(pointer string) string {
	var b strings.Builder
	for i, seg := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		switch {
		case strings.ContainsAny(seg, "./"):
			fmt.Fprintf(&b, "[%s]", seg)
		case i > 0:
			b.WriteString("." + seg)
		default:
			b.WriteString(seg)
		}
	}
	return b.String()
}
