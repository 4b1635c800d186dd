package parity

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// DiffValues appends to diffs every difference between two decoded objects (or values) below
// path, as "path.field: ours=… theirs=…", "path.field: ours=<absent> theirs=…", or for lists of
// different lengths the elements only one side has. Both parity tests (against the reference
// CLI and against the real operator) report differences with it.
func DiffValues(path string, ours, theirs any, diffs *[]string) {
	om, oIsMap := ours.(map[string]any)
	tm, tIsMap := theirs.(map[string]any)
	if oIsMap && tIsMap {
		keys := map[string]bool{}
		for k := range om {
			keys[k] = true
		}
		for k := range tm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			ov, oOK := om[k]
			tv, tOK := tm[k]
			switch {
			case !oOK:
				*diffs = append(*diffs, fmt.Sprintf("%s.%s: ours=<absent> theirs=%s", path, k, short(tv)))
			case !tOK:
				*diffs = append(*diffs, fmt.Sprintf("%s.%s: ours=%s theirs=<absent>", path, k, short(ov)))
			default:
				DiffValues(path+"."+k, ov, tv, diffs)
			}
		}
		return
	}
	ol, oIsList := ours.([]any)
	tl, tIsList := theirs.([]any)
	if oIsList && tIsList {
		if len(ol) == len(tl) {
			for i := range ol {
				DiffValues(fmt.Sprintf("%s[%d]", path, i), ol[i], tl[i], diffs)
			}
			return
		}
		// Lists of different lengths: name the elements only one side has.
		for _, o := range ol {
			if !containsValue(tl, o) {
				*diffs = append(*diffs, fmt.Sprintf("%s[]: only ours has %s", path, short(o)))
			}
		}
		for _, v := range tl {
			if !containsValue(ol, v) {
				*diffs = append(*diffs, fmt.Sprintf("%s[]: only the reference has %s", path, short(v)))
			}
		}
		return
	}
	if !reflect.DeepEqual(ours, theirs) {
		*diffs = append(*diffs, fmt.Sprintf("%s: ours=%s theirs=%s", path, short(ours), short(theirs)))
	}
}

func containsValue(list []any, v any) bool {
	for _, x := range list {
		if reflect.DeepEqual(x, v) {
			return true
		}
	}
	return false
}

func short(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "\n", " ⏎ ")
}
