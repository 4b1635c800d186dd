package plugin

import (
	"fmt"
	"io"
	"strings"

	"github.com/fluxcd/pkg/ssa"
)

// Change is one line of what apply or delete did, in the machine-readable outputs.
type Change struct {
	Kind       string `json:"kind"`
	Group      string `json:"group,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Action     string `json:"action"`
}

// ChangeReport is what `apply -o json|yaml` and `delete -o json|yaml` print.
type ChangeReport struct {
	DryRun   string   `json:"dryRun,omitempty"`
	Changes  []Change `json:"changes"`
	Warnings []string `json:"warnings,omitempty"`
}

func newChangeReport(cs *ssa.ChangeSet, dryRun string, warnings []string) ChangeReport {
	r := ChangeReport{DryRun: dryRun, Changes: []Change{}, Warnings: warnings}
	if cs == nil {
		return r
	}
	for _, e := range cs.Entries {
		r.Changes = append(r.Changes, Change{
			Kind: e.ObjMetadata.GroupKind.Kind, Group: e.ObjMetadata.GroupKind.Group, APIVersion: e.GroupVersion,
			Namespace: e.ObjMetadata.Namespace, Name: e.ObjMetadata.Name, Action: string(e.Action),
		})
	}
	return r
}

// resourceName is kubectl's `-o name` form: kind.group/name, lower-case kind.
func resourceName(kind, group, name string) string {
	k := strings.ToLower(kind)
	if group != "" {
		k += "." + group
	}
	return k + "/" + name
}

// printChanges prints one line per object like kubectl apply ("deployment.apps/x configured"),
// with kubectl's dry-run suffix, or the whole report as JSON or YAML.
func printChanges(out io.Writer, output string, r ChangeReport) error {
	if ok, err := printStructured(out, output, r); ok {
		return err
	}
	suffix := ""
	if r.DryRun != "" && r.DryRun != "none" {
		suffix = " (" + r.DryRun + " dry run)"
	}
	for _, c := range r.Changes {
		fmt.Fprintf(out, "%s %s%s\n", resourceName(c.Kind, c.Group, c.Name), c.Action, suffix)
	}
	return nil
}
