package adopt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/installation"
	"sigs.k8s.io/yaml"
)

// Bootstrap files `flux bootstrap` commits in <path>/<namespace>/.
const (
	FileComponents    = "gotk-components.yaml"
	FileSync          = "gotk-sync.yaml"
	FileKustomization = "kustomization.yaml"
	// FileInstance is where --repo-dir writes the FluxInstance.
	FileInstance = "flux-instance.yaml"
)

// RepoChange is one file changed in the checkout, as `git status --short` prints it.
type RepoChange struct {
	Status string // "D", "M", "??"
	Path   string // relative to the checkout
}

func (c RepoChange) String() string {
	if c.Status == "??" {
		return "?? " + c.Path
	}
	return " " + c.Status + " " + c.Path
}

// BootstrapDir is the directory of the bootstrap files relative to the repository root.
func BootstrapDir(p *Plan) string {
	path := ""
	if p.Install.Sync != nil {
		path = strings.Trim(strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p.Install.Sync.Path)), "./"), "/")
		if path == "." {
			path = ""
		}
	}
	return filepath.ToSlash(filepath.Join(path, p.Install.Namespace))
}

// UpdateRepo replaces the bootstrap files in a checkout of the fleet repository with the
// FluxInstance: gotk-components.yaml and gotk-sync.yaml are removed, the FluxInstance is written
// to flux-instance.yaml, and kustomization.yaml keeps every other resource the user listed (its
// patches are dropped: they are now spec.kustomize.patches). flux-instance.yaml is deliberately
// not listed in kustomization.yaml: kustomize-controller would try to apply it, and without the
// Flux Operator no FluxInstance CRD exists; it is applied with `kubectl fluxinstance apply -f`.
// Nothing is committed. dryRun reports the changes without writing.
func UpdateRepo(repoDir string, p *Plan, instanceYAML []byte, dryRun bool) ([]RepoChange, error) {
	if err := CheckRepoDir(p.Install); err != nil {
		return nil, err
	}
	rel := BootstrapDir(p)
	dir := filepath.Join(repoDir, filepath.FromSlash(rel))
	if _, err := os.Stat(filepath.Join(dir, FileComponents)); err != nil {
		if _, err2 := os.Stat(filepath.Join(dir, FileInstance)); err2 == nil {
			return nil, nil // already done
		}
		return nil, fmt.Errorf("--repo-dir: %s not found: is %s a checkout of the repository that Kustomization %s/%s syncs (path %s)?",
			filepath.Join(dir, FileComponents), repoDir, p.Install.Namespace, p.Install.Namespace, p.Install.Sync.Path)
	}
	var changes []RepoChange
	for _, f := range []string{FileComponents, FileSync} {
		full := filepath.Join(dir, f)
		if _, err := os.Stat(full); err == nil {
			changes = append(changes, RepoChange{Status: "D", Path: rel + "/" + f})
			if !dryRun {
				if err := os.Remove(full); err != nil {
					return changes, err
				}
			}
		}
	}
	kpath := filepath.Join(dir, FileKustomization)
	data, err := os.ReadFile(kpath)
	switch {
	case err == nil:
		out, err := rewriteKustomization(data)
		if err != nil {
			return changes, fmt.Errorf("%s: %w", kpath, err)
		}
		changes = append(changes, RepoChange{Status: "M", Path: rel + "/" + FileKustomization})
		if !dryRun {
			if err := os.WriteFile(kpath, out, 0o644); err != nil {
				return changes, err
			}
		}
	case !errors.Is(err, os.ErrNotExist):
		return changes, err
	}
	changes = append(changes, RepoChange{Status: "??", Path: rel + "/" + FileInstance})
	if !dryRun {
		if err := os.WriteFile(filepath.Join(dir, FileInstance), instanceYAML, 0o644); err != nil {
			return changes, err
		}
	}
	return changes, nil
}

// CheckRepoDir refuses --repo-dir for an installation without bootstrap files in Git.
func CheckRepoDir(in *Install) error {
	if in.Installer != installation.ManagedByBootstrap {
		return refuse("--repo-dir: Flux in namespace %q was installed by `%s`, which committed no bootstrap files to replace; run migrate without --repo-dir and keep the FluxInstance it writes (--output-file)", in.Namespace, in.Installer)
	}
	return nil
}

// rewriteKustomization removes the bootstrap files from resources and drops the patches.
func rewriteKustomization(data []byte) ([]byte, error) {
	var k map[string]any
	if err := yaml.Unmarshal(data, &k); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if k == nil {
		k = map[string]any{}
	}
	if _, ok := k["apiVersion"]; !ok {
		k["apiVersion"] = "kustomize.config.k8s.io/v1beta1"
	}
	if _, ok := k["kind"]; !ok {
		k["kind"] = "Kustomization"
	}
	res, _ := k["resources"].([]any)
	kept := []any{}
	for _, r := range res {
		if s, ok := r.(string); ok && slices.Contains([]string{FileComponents, FileSync, "./" + FileComponents, "./" + FileSync}, s) {
			continue
		}
		kept = append(kept, r)
	}
	k["resources"] = kept
	for _, f := range []string{"patches", "patchesStrategicMerge", "patchesJson6902"} {
		delete(k, f)
	}
	return yaml.Marshal(k)
}

// RecordNamespace finds the namespace of the one migration record (for --rollback without -n).
func RecordNamespace(ctx context.Context, c client.Client) (string, error) {
	records, err := listRecords(ctx, c)
	if err != nil {
		return "", err
	}
	switch len(records) {
	case 0:
		return "", refuse("no migration record (ConfigMap %s labelled %s=true) in any namespace: there is nothing to roll back", RecordConfigMap, labelRecord)
	case 1:
		return records[0].Namespace, nil
	}
	var ns []string
	for _, r := range records {
		ns = append(ns, r.Namespace)
	}
	return "", refuse("migration records exist in namespaces %s: pass -n NAMESPACE to choose one", strings.Join(ns, ", "))
}
