// Command render builds the release artifacts for krew/release.mk, reproducibly and without
// depending on the host's tar, gzip, zip or sha256sum (GNU and BSD variants differ):
//
//	render archive   -platform OS/ARCH -mtime UNIX -binary PATH -helper PATH -out DIR [FILE...]
//	render checksums -dir DIR
//	render manifest  -template krew/fluxinstance.yaml -checksums DIR/checksums.txt
//	                 -version VERSION -url-base URL -o OUT
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fluxinstance/kubectl-fluxinstance/krew"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "krew/render: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: render archive|checksums|manifest [flags]")
	}
	switch args[0] {
	case "archive":
		return archive(args[1:])
	case "checksums":
		return checksums(args[1:])
	case "manifest":
		return manifest(args[1:])
	}
	return fmt.Errorf("unknown sub-command %q: want archive, checksums or manifest", args[0])
}

func archive(args []string) error {
	fs := flag.NewFlagSet("archive", flag.ContinueOnError)
	platform := fs.String("platform", "", "OS/ARCH of the binary")
	mtime := fs.String("mtime", "", "timestamp of every entry, in Unix seconds (the commit time)")
	binary := fs.String("binary", "", "the plugin binary; stored as kubectl-fluxinstance[.exe]")
	helper := fs.String("helper", "", "the completion helper; stored executable as "+krew.CompletionHelper)
	out := fs.String("out", "", "directory to write the archive to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := krew.ParsePlatform(*platform)
	if err != nil {
		return err
	}
	secs, err := strconv.ParseInt(strings.TrimSpace(*mtime), 10, 64)
	if err != nil {
		return fmt.Errorf("-mtime %q: want Unix seconds (git log -1 --format=%%ct)", *mtime)
	}
	if *binary == "" || *helper == "" || *out == "" {
		return fmt.Errorf("archive needs -binary, -helper and -out")
	}
	files := []krew.File{
		{Name: p.Binary(), Source: *binary, Executable: true},
		{Name: krew.CompletionHelper, Source: *helper, Executable: true},
	}
	for _, f := range fs.Args() {
		files = append(files, krew.File{Name: filepath.Base(f), Source: f})
	}
	dest := filepath.Join(*out, p.ArchiveName())
	if err := krew.WriteArchive(dest, p, files, time.Unix(secs, 0)); err != nil {
		return err
	}
	fmt.Println(dest)
	return nil
}

func checksums(args []string) error {
	fs := flag.NewFlagSet("checksums", flag.ContinueOnError)
	dir := fs.String("dir", "dist", "directory holding the archives")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var names []string
	for _, pattern := range []string{krew.BinaryBase + "_*.tar.gz", krew.BinaryBase + "_*.zip"} {
		matches, err := filepath.Glob(filepath.Join(*dir, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			names = append(names, filepath.Base(m))
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("no %s_* archives in %s: run make dist", krew.BinaryBase, *dir)
	}
	sort.Strings(names)
	return krew.WriteChecksums(*dir, names)
}

func manifest(args []string) error {
	fs := flag.NewFlagSet("manifest", flag.ContinueOnError)
	tmplPath := fs.String("template", "krew/fluxinstance.yaml", "the manifest template")
	sumsPath := fs.String("checksums", "dist/checksums.txt", "checksums of the archives (make dist)")
	version := fs.String("version", "", "the release version (the Makefile's VERSION)")
	urlBase := fs.String("url-base", "", "URL of the release's assets")
	out := fs.String("o", "dist/krew/fluxinstance.yaml", "where to write the manifest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" {
		return fmt.Errorf("-version is required")
	}
	tmpl, err := os.ReadFile(*tmplPath)
	if err != nil {
		return err
	}
	sums, err := krew.ReadChecksums(*sumsPath)
	if err != nil {
		return fmt.Errorf("%w (run make dist first)", err)
	}
	data, err := krew.RenderManifest(tmpl, krew.ManifestInput{Version: *version, URLBase: *urlBase, Checksums: sums})
	if err != nil {
		return fmt.Errorf("%s: %w", *tmplPath, err)
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return err
	}
	fmt.Println(*out)
	return nil
}
