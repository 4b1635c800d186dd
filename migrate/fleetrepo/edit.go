package fleetrepo

import (
	"bytes"
	"fmt"
	"sort"
	"unicode/utf8"

	yaml "go.yaml.in/yaml/v3"
)

// edit replaces old with new at a byte offset of a 1-based line of the source it was found in.
type edit struct {
	line int
	off  int
	old  string
	new  string
}

// splitLines splits data into lines without their "\n" (a "\r" stays: it is never edited).
func splitLines(data []byte) [][]byte { return bytes.Split(data, []byte("\n")) }

// scalarEdit locates the text of scalar n in lines and returns the edit that replaces its value by
// value, or an error when the bytes there are not the value as written (an escape, a folded line):
// such a scalar cannot be edited in place.
func scalarEdit(lines [][]byte, n *yaml.Node, value string) (edit, error) {
	if n.Line < 1 || n.Line > len(lines) {
		return edit{}, fmt.Errorf("line %d is outside the file", n.Line)
	}
	line := lines[n.Line-1]
	// yaml.v3 does not count a byte order mark as a column.
	bom := 0
	if n.Line == 1 && bytes.HasPrefix(line, []byte("\ufeff")) {
		bom = len("\ufeff")
	}
	off, ok := runeOffset(line[bom:], n.Column-1)
	if !ok {
		return edit{}, fmt.Errorf("line %d has no column %d", n.Line, n.Column)
	}
	off += bom
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		off++
	}
	if !bytes.HasPrefix(line[off:], []byte(n.Value)) {
		return edit{}, fmt.Errorf("line %d: %q is not written as plain text there", n.Line, n.Value)
	}
	return edit{line: n.Line, off: off, old: n.Value, new: value}, nil
}

// runeOffset is the byte offset of the col-th (0-based) character of line; yaml.v3 counts
// columns in characters.
func runeOffset(line []byte, col int) (int, bool) {
	off := 0
	for i := 0; i < col; i++ {
		if off >= len(line) {
			return 0, false
		}
		_, size := utf8.DecodeRune(line[off:])
		off += size
	}
	return off, off <= len(line)
}

// applyEdits returns data with edits applied; each edit's old text must be where it says, or the
// edit is refused (the plan and the bytes disagree, which is a bug rather than a user error).
func applyEdits(data []byte, edits []edit) ([]byte, error) {
	lines := splitLines(data)
	sorted := append([]edit(nil), edits...)
	// Right to left within a line, so that earlier offsets stay valid.
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].line != sorted[j].line {
			return sorted[i].line < sorted[j].line
		}
		return sorted[i].off > sorted[j].off
	})
	for _, e := range sorted {
		if e.line < 1 || e.line > len(lines) {
			return nil, fmt.Errorf("line %d is outside the file", e.line)
		}
		line := lines[e.line-1]
		if e.off > len(line) || !bytes.HasPrefix(line[e.off:], []byte(e.old)) {
			return nil, fmt.Errorf("line %d: expected %q at byte %d", e.line, e.old, e.off)
		}
		next := make([]byte, 0, len(line)-len(e.old)+len(e.new))
		next = append(append(append(next, line[:e.off]...), e.new...), line[e.off+len(e.old):]...)
		lines[e.line-1] = next
	}
	return bytes.Join(lines, []byte("\n")), nil
}
