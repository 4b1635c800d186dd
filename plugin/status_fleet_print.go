package plugin

import (
	"fmt"
	"io"
	"strings"

	"k8s.io/cli-runtime/pkg/printers"
)

func (o *StatusOptions) printFleet(rows []*ClusterStatus) error {
	if ok, err := printStructured(o.Out, o.Output, rows); ok {
		return err
	}
	if o.Output == "markdown" {
		return printFleetMarkdown(o.Out, rows)
	}
	return printFleetTable(o.Out, rows)
}

// fleetColumns are the table's columns, shared by the terminal and the markdown forms.
func fleetColumns() []string {
	return []string{"CONTEXT", "REACHABLE", "VERSION", "MANAGED-BY", "COMPONENTS", "SYNC", "DRIFT", "UPGRADE-BLOCKERS", "ADOPTION"}
}

// printFleetTable prints kubectl's kind of table; an ERROR column is added when a cluster failed.
func printFleetTable(out io.Writer, rows []*ClusterStatus) error {
	w := printers.GetNewTabWriter(out)
	header := fleetColumns()
	withErrors := anyError(rows)
	if withErrors {
		header = append(header, "ERROR")
	}
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := fleetCells(r, false)
		if withErrors {
			cells = append(cells, dash(r.errorSummary))
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	return w.Flush()
}

// printFleetMarkdown prints a GitHub-flavoured markdown table for a pull-request comment: the
// same columns with the details the terminal table only counts (every blocker, the whole refusal
// and error), which a comment has the room for.
func printFleetMarkdown(out io.Writer, rows []*ClusterStatus) error {
	header := fleetColumns()
	if anyError(rows) {
		header = append(header, "ERROR")
	}
	for i, h := range header {
		header[i] = strings.ToLower(h)
	}
	var b strings.Builder
	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat(" --- |", len(header)) + "\n")
	for _, r := range rows {
		cells := fleetCells(r, true)
		if len(header) > len(cells) {
			cells = append(cells, dash(r.Error))
		}
		for i, c := range cells {
			cells[i] = markdownCell(c)
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// markdownCell keeps a cell on its line: pipes escaped, line breaks as <br>.
func markdownCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", "<br>")
}

func anyError(rows []*ClusterStatus) bool {
	for _, r := range rows {
		if r.Error != "" {
			return true
		}
	}
	return false
}

// fleetCells are one row's cells; detailed lists every blocker and the whole refusal.
func fleetCells(r *ClusterStatus, detailed bool) []string {
	reachable := "yes"
	if !r.Reachable {
		reachable = "no"
	}
	cells := []string{r.Context, reachable}
	s := r.Status
	if s == nil {
		return append(cells, "-", "-", "-", "-", "-", "-", "-")
	}
	version, managedBy := "-", "not installed"
	if s.Installation.Installed {
		version, managedBy = dash(s.Installation.Version), dash(s.Installation.ManagedByText())
	}
	ready := 0
	for _, c := range s.Components {
		if c.Ready {
			ready++
		}
	}
	return append(cells, version, managedBy, fmt.Sprintf("%d/%d", ready, len(s.Components)),
		syncCell(s.Sync), driftCell(s.Drift), blockersCell(r.UpgradeBlockers, detailed), adoptionCell(r.Adoption, detailed))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// syncCell is the Kustomization's Ready status and its revision, shortened (the source's when
// there is no Kustomization): "True/main@sha1:0123456".
func syncCell(sync []SyncStatus) string {
	if len(sync) == 0 {
		return "-"
	}
	s := sync[0]
	for _, candidate := range sync {
		if candidate.Kind == "Kustomization" {
			s = candidate
		}
	}
	return s.Ready + "/" + dash(shortRevision(s.Revision))
}

// shortRevision cuts the digest of a Flux revision ("main@sha1:<40 hex>") to 7 characters, as Git
// does.
func shortRevision(rev string) string {
	prefix, digest, ok := strings.Cut(rev, ":")
	if !ok || len(digest) <= 7 {
		return rev
	}
	return prefix + ":" + digest[:7]
}

func driftCell(d *DriftReport) string {
	switch {
	case d == nil:
		return "-"
	case !d.Checked:
		return "unchecked"
	case len(d.Missing)+len(d.Changed) == 0:
		return "none"
	case len(d.Missing) == 0:
		return fmt.Sprintf("%d changed", len(d.Changed))
	case len(d.Changed) == 0:
		return fmt.Sprintf("%d missing", len(d.Missing))
	}
	return fmt.Sprintf("%d missing, %d changed", len(d.Missing), len(d.Changed))
}

func blockersCell(blockers []string, detailed bool) string {
	switch {
	case len(blockers) == 0:
		return "none"
	case detailed:
		return strings.Join(blockers, "\n")
	}
	return fmt.Sprintf("%d (see -o json)", len(blockers))
}

// adoptionCell is "adoptable (bootstrap)", or "no: " and migrate's refusal, in the terminal table
// up to its first clause.
func adoptionCell(a *Adoption, detailed bool) string {
	switch {
	case a == nil:
		return "-"
	case a.Adoptable:
		return "adoptable (" + a.Installer + ")"
	case detailed:
		return "no: " + a.Reason
	}
	reason := a.Reason
	for _, sep := range []string{" (", ": "} {
		reason, _, _ = strings.Cut(reason, sep)
	}
	return "no: " + summarizeLine(reason)
}
