package fleetrepo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// Options changes how NewPlan treats the repository.
type Options struct {
	// SkipInvalid skips (and lists) the YAML files that do not parse even when they name a Flux
	// group; without it such a file stops the plan, since it may hold objects left unchanged.
	SkipInvalid bool
}

// File is one file the plan rewrites.
type File struct {
	// Path is slash-separated and relative to the repository.
	Path    string
	Changes []Change

	abs      string
	original []byte
	updated  []byte
	mode     fs.FileMode
}

// Plan is every change to a repository, computed without writing anything.
type Plan struct {
	Dir   string
	Files []*File
	// Warnings are about files that were read: fields the new versions drop, versions left as they
	// are, inline patches to edit by hand.
	Warnings []Warning
	// Skipped are the files and directories that were not read, and why.
	Skipped []Warning
}

// Changes are every file's changes, by file and line.
func (p *Plan) Changes() []Change {
	var out []Change
	for _, f := range p.Files {
		out = append(out, f.Changes...)
	}
	return out
}

// InvalidError refuses a plan when YAML files that name a Flux group do not parse: they might
// hold Flux objects the rewrite would miss. Nothing was written.
type InvalidError struct{ Files []Warning }

func (e *InvalidError) Error() string {
	lines := make([]string, len(e.Files))
	for i, f := range e.Files {
		lines[i] = f.String()
	}
	return fmt.Sprintf("%d YAML file(s) that name a Flux API group do not parse, so their Flux objects cannot be checked (nothing was written):\n  %s\nfix them, or pass --skip-invalid to rewrite the other files and list these as skipped",
		len(e.Files), strings.Join(lines, "\n  "))
}

// NewPlan reads every *.yaml and *.yml file under dir (hidden directories such as .git and Helm
// chart directories are skipped and listed) and plans the rewrite of each Flux version the target
// does not serve. It writes nothing.
func NewPlan(dir string, t *Target, opts Options) (*Plan, error) {
	p := &Plan{Dir: dir}
	var invalid []Warning
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		rel := relPath(dir, path)
		if d.IsDir() {
			if reason := skipDir(path, d.Name(), path == dir); reason != "" {
				if d.Name() != ".git" {
					p.Skipped = append(p.Skipped, Warning{Path: rel + "/", Message: reason})
				}
				return filepath.SkipDir
			}
			return nil
		}
		if !isYAML(d.Name()) {
			return nil
		}
		if !d.Type().IsRegular() {
			p.Skipped = append(p.Skipped, Warning{Path: rel, Message: "not a regular file: not followed (a symbolic link's target is rewritten where it lives, when that is in the repository)"})
			return nil
		}
		f, warnings, bad, err := planFile(path, rel, t)
		switch {
		case err != nil:
			return err
		case bad != nil && !opts.SkipInvalid && bad.flux:
			invalid = append(invalid, bad.Warning)
		case bad != nil && bad.flux:
			bad.Message += ": not read; it names a Flux API group, so check its apiVersions by hand"
			p.Skipped = append(p.Skipped, bad.Warning)
		case bad != nil:
			bad.Message += ": not read"
			p.Skipped = append(p.Skipped, bad.Warning)
		}
		p.Warnings = append(p.Warnings, warnings...)
		if f != nil {
			p.Files = append(p.Files, f)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(invalid) > 0 {
		return nil, &InvalidError{Files: invalid}
	}
	sort.Slice(p.Files, func(i, j int) bool { return p.Files[i].Path < p.Files[j].Path })
	sortWarnings(p.Warnings)
	return p, nil
}

// invalidFile is a YAML file that does not parse; flux tells whether it names a Flux group.
type invalidFile struct {
	Warning
	flux bool
}

// planFile reads and plans one file: the file to write (nil when nothing changes), the warnings
// about it, or the reason it cannot be parsed.
func planFile(path, rel string, t *Target) (*File, []Warning, *invalidFile, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	w := &walker{t: t, lines: splitLines(data)}
	if err := walkYAML(data, w.document); err != nil {
		return nil, nil, &invalidFile{
			Warning: Warning{Path: rel, Message: fmt.Sprintf("not valid YAML (%v)", err)},
			flux:    bytes.Contains(data, []byte(".toolkit.fluxcd.io")),
		}, nil
	}
	warnings := w.warnings
	for i := range warnings {
		warnings[i].Path = rel
	}
	if len(w.edits) == 0 {
		return nil, warnings, nil, nil
	}
	updated, err := applyEdits(data, w.edits)
	if err == nil {
		// The edits change scalars only, so the result parses as the original did; checking costs
		// one parse and guards the one thing a rewrite must never do, break a file.
		err = walkYAML(updated, func(*yaml.Node) {})
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: the rewrite would break the file, so nothing was written (please report this as a bug): %w", rel, err)
	}
	changes := w.changes
	for i := range changes {
		changes[i].Path = rel
	}
	return &File{Path: rel, Changes: changes, abs: path, original: data, updated: updated, mode: info.Mode().Perm()}, warnings, nil, nil
}

// walkYAML decodes every document of a YAML stream, in order. Node lines count from the start of
// the stream, so they are the file's lines whatever document they are in.
func walkYAML(data []byte, visit func(*yaml.Node)) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		visit(&doc)
	}
}

// skipDir is why a directory is not read ("" to read it): hidden directories (.git, .github…)
// and Helm charts, whose templates are Go templates rather than YAML.
func skipDir(path, name string, root bool) string {
	if !root && strings.HasPrefix(name, ".") {
		return "a hidden directory: not read"
	}
	if _, err := os.Stat(filepath.Join(path, "Chart.yaml")); err != nil {
		return ""
	}
	if st, err := os.Stat(filepath.Join(path, "templates")); err == nil && st.IsDir() {
		return "a Helm chart (Chart.yaml and templates/): its templates are not plain YAML, so it is not read; check its Flux apiVersions by hand"
	}
	return ""
}

func isYAML(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

func relPath(dir, path string) string {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(rel)
}

func sortWarnings(ws []Warning) {
	sort.SliceStable(ws, func(i, j int) bool {
		if ws[i].Path != ws[j].Path {
			return ws[i].Path < ws[j].Path
		}
		return ws[i].Line < ws[j].Line
	})
}

// Write replaces each changed file atomically: the new content goes to a temporary file in the
// same directory, with the file's mode, which is then renamed over it. A file that changed since
// the plan read it is refused, before anything is written.
func (p *Plan) Write() error {
	for _, f := range p.Files {
		current, err := os.ReadFile(f.abs)
		if err != nil {
			return fmt.Errorf("reading %s again before writing it: %w", f.Path, err)
		}
		if !bytes.Equal(current, f.original) {
			return fmt.Errorf("%s changed since it was read: nothing was written; run the command again", f.Path)
		}
	}
	for i, f := range p.Files {
		if err := writeAtomic(f.abs, f.updated, f.mode); err != nil {
			return fmt.Errorf("writing %s (%d of %d files were written before it): %w", f.Path, i, len(p.Files), err)
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".upgrade-repo-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
