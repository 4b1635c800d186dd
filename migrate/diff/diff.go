// Package diff shows what an apply would change, object by object, as kubectl diff does: unified
// YAML diffs of the in-cluster copy against the server's dry-run result (Secret values masked),
// plus what a prune would delete, and the two directories an external diff program compares.
package diff

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/inventory"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Options configures Objects.
type Options struct {
	FieldManager string
	Concurrency  int
	// Record is the inventory record of the last apply of these objects with FieldManager, when
	// there is one: the objects its fingerprints prove unchanged are not dry-run.
	Record *inventory.Inventory
}

// Entry is the difference for one object.
type Entry struct {
	ObjMetadata object.ObjMetadata `json:"-"`
	// Subject is Kind/namespace/name.
	Subject string     `json:"subject"`
	Action  ssa.Action `json:"action"`
	// Live is the normalised in-cluster object (nil when created); Merged what the apply would
	// leave (nil when deleted). Secret values are masked in both.
	Live   *unstructured.Unstructured `json:"-"`
	Merged *unstructured.Unstructured `json:"-"`
	// Text is a unified diff of Live and Merged as YAML with a header naming the object; empty
	// when unchanged.
	Text string `json:"diff,omitempty"`
}

// Changed tells whether the entry is a difference (anything but unchanged or skipped).
func (e Entry) Changed() bool {
	return e.Action != ssa.UnchangedAction && e.Action != ssa.SkippedAction
}

// HasChanges tells whether any entry differs (`diff` exits 1 then).
func HasChanges(entries []Entry) bool {
	for _, e := range entries {
		if e.Changed() {
			return true
		}
	}
	return false
}

// Objects server-side dry-runs every object against the cluster and adds the objects that would
// be pruned (prunable: see apply's PruneCandidates) as deleted. Nothing is changed.
func Objects(ctx context.Context, m *apply.Manager, objects []*unstructured.Unstructured, prunable []object.ObjMetadata, opts Options) ([]Entry, error) {
	plans, err := m.PreviewRecorded(ctx, objects, opts.FieldManager, opts.Concurrency, opts.Record)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, p := range plans {
		e := Entry{ObjMetadata: kube.ID(p.Object), Subject: kube.Ref(p.Object), Action: p.Action}
		if p.Action != ssa.UnchangedAction {
			var live *unstructured.Unstructured
			if p.Action != ssa.CreatedAction {
				live = p.Live
			}
			e.Live, e.Merged = normalizeForDiff(live), normalizeForDiff(p.Merged)
			maskSecrets(e.Live, e.Merged)
			if e.Text, err = unifiedDiff(e.Subject, e.Live, e.Merged); err != nil {
				return nil, err
			}
		}
		out = append(out, e)
	}
	for _, id := range prunable {
		live, state, err := kube.GetByID(ctx, m.Client, id)
		if err != nil {
			return nil, err
		}
		if state != kube.Found {
			continue
		}
		e := Entry{ObjMetadata: id, Subject: kube.RefMeta(id), Action: ssa.DeletedAction, Live: normalizeForDiff(live)}
		maskSecrets(e.Live, nil)
		if e.Text, err = unifiedDiff(e.Subject, e.Live, nil); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// normalizeForDiff drops what the server maintains (managedFields, resourceVersion, uid,
// generation, creationTimestamp, status) so that the diff shows only configuration.
func normalizeForDiff(u *unstructured.Unstructured) *unstructured.Unstructured {
	if u == nil {
		return nil
	}
	c := u.DeepCopy()
	for _, f := range []string{"managedFields", "resourceVersion", "uid", "generation", "creationTimestamp"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(c.Object, "status")
	if len(c.GetAnnotations()) == 0 {
		unstructured.RemoveNestedField(c.Object, "metadata", "annotations")
	}
	return c
}

// maskSecrets replaces Secret values with ssa's masks ("***", or "*** (before)"/"*** (after)"
// where the value changes), so a diff never prints secret data.
func maskSecrets(live, merged *unstructured.Unstructured) {
	isSecret := func(u *unstructured.Unstructured) bool {
		return u != nil && u.GetKind() == "Secret" && u.GroupVersionKind().Group == ""
	}
	if !isSecret(live) && !isSecret(merged) {
		return
	}
	for _, u := range []*unstructured.Unstructured{live, merged} {
		if u == nil {
			continue
		}
		// stringData is write-only sugar for data: fold it in so it is masked too.
		if sd, ok, _ := unstructured.NestedStringMap(u.Object, "stringData"); ok {
			data, _, _ := unstructured.NestedMap(u.Object, "data")
			if data == nil {
				data = map[string]any{}
			}
			for k, v := range sd {
				data[k] = v
			}
			_ = unstructured.SetNestedMap(u.Object, data, "data")
			unstructured.RemoveNestedField(u.Object, "stringData")
		}
	}
	_ = ssa.SanitizeUnstructuredData(live, merged)
}

// unifiedDiff renders the YAML of both sides as a unified diff with kubectl-like headers.
func unifiedDiff(subject string, live, merged *unstructured.Unstructured) (string, error) {
	a, err := toYAML(live)
	if err != nil {
		return "", err
	}
	b, err := toYAML(merged)
	if err != nil {
		return "", err
	}
	text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A:        difflib.SplitLines(a),
		B:        difflib.SplitLines(b),
		FromFile: "live/" + subject,
		ToFile:   "merged/" + subject,
		Context:  3,
	})
	if err != nil {
		return "", fmt.Errorf("%s: computing the diff: %w", subject, err)
	}
	return text, nil
}

func toYAML(u *unstructured.Unstructured) (string, error) {
	if u == nil {
		return "", nil
	}
	out, err := yaml.Marshal(u.Object)
	if err != nil {
		return "", fmt.Errorf("%s: %w", kube.Ref(u), err)
	}
	return string(out), nil
}

// WriteDiffDirs writes the changed entries as YAML files into <dir>/live and <dir>/merged, one
// file per object named group.Kind.namespace.name (the group omitted for the core group, the
// namespace when cluster-scoped), for an external diff program (KUBECTL_EXTERNAL_DIFF):
// the caller runs `$KUBECTL_EXTERNAL_DIFF <live> <merged>`. A created object has no live file, a
// deleted one no merged file, as with kubectl. dir must exist.
func WriteDiffDirs(entries []Entry, dir string) (liveDir, mergedDir string, err error) {
	liveDir, mergedDir = filepath.Join(dir, "live"), filepath.Join(dir, "merged")
	for _, d := range []string{liveDir, mergedDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", "", err
		}
	}
	for _, e := range entries {
		if !e.Changed() {
			continue
		}
		name := diffFileName(e.ObjMetadata)
		for _, side := range []struct {
			dir string
			obj *unstructured.Unstructured
		}{{liveDir, e.Live}, {mergedDir, e.Merged}} {
			if side.obj == nil {
				continue
			}
			data, err := toYAML(side.obj)
			if err != nil {
				return "", "", err
			}
			if err := os.WriteFile(filepath.Join(side.dir, name), []byte(data), 0o600); err != nil {
				return "", "", err
			}
		}
	}
	return liveDir, mergedDir, nil
}

func diffFileName(id object.ObjMetadata) string {
	parts := []string{}
	if id.GroupKind.Group != "" {
		parts = append(parts, id.GroupKind.Group)
	}
	parts = append(parts, id.GroupKind.Kind)
	if id.Namespace != "" {
		parts = append(parts, id.Namespace)
	}
	parts = append(parts, id.Name)
	// Names never hold a path separator, but RBAC names may hold ':'.
	return strings.ReplaceAll(strings.Join(parts, "."), string(filepath.Separator), "_")
}
