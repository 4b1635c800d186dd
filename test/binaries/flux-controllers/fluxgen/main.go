// Command fluxgen writes the three files `flux bootstrap` commits to a fleet repository
// (gotk-components.yaml, gotk-sync.yaml, kustomization.yaml) for one Flux version, offline, with the
// Flux CLI's own generator packages (github.com/fluxcd/flux2/v2/pkg/manifestgen/{install,sync},
// Apache-2.0). The release manifests come from the distribution data (flux/vX.Y.Z): given a
// pre-filled directory, install.Generate downloads nothing.
//
//	fluxgen -dist DIST/flux/v2.9.4 -version v2.9.4 -out REPO/clusters/test/flux-system \
//	  -url http://127.0.0.1:PORT/fleet.git [-namespace flux-system] [-components-extra a,b] ...
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fluxcd/flux2/v2/pkg/manifestgen/install"
	"github.com/fluxcd/flux2/v2/pkg/manifestgen/sync"
)

// kustomization is what `flux bootstrap` writes beside the two gotk files.
const kustomization = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- gotk-components.yaml
- gotk-sync.yaml
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fluxgen:", err)
		os.Exit(1)
	}
}

func run() error {
	in := install.MakeDefaultOptions()
	sy := sync.MakeDefaultOptions()
	dist := flag.String("dist", "", "distribution directory of one version (flux-distribution/flux/vX.Y.Z)")
	out := flag.String("out", "", "directory that receives gotk-components.yaml, gotk-sync.yaml and kustomization.yaml")
	flag.StringVar(&in.Version, "version", "", "Flux version, vX.Y.Z")
	flag.StringVar(&in.Namespace, "namespace", in.Namespace, "namespace of the installation and of the sync objects")
	components := flag.String("components", strings.Join(in.Components, ","), "controllers to install")
	extra := flag.String("components-extra", "", "additional controllers (image-reflector-controller, image-automation-controller, source-watcher)")
	flag.StringVar(&in.Registry, "registry", in.Registry, "container registry of the controller images")
	flag.StringVar(&in.ImagePullSecret, "image-pull-secret", "", "image pull secret name set on the controllers' pod templates")
	flag.BoolVar(&in.NetworkPolicy, "network-policy", in.NetworkPolicy, "install the network policies")
	flag.BoolVar(&in.WatchAllNamespaces, "watch-all-namespaces", in.WatchAllNamespaces, "watch all namespaces")
	flag.StringVar(&in.ClusterDomain, "cluster-domain", in.ClusterDomain, "cluster domain")
	flag.StringVar(&in.LogLevel, "log-level", in.LogLevel, "controllers' log level")
	tolerations := flag.String("toleration-keys", "", "comma-separated toleration keys")
	flag.StringVar(&sy.URL, "url", "", "Git repository URL of the GitRepository")
	flag.StringVar(&sy.Branch, "branch", sy.Branch, "Git branch (empty with -tag)")
	flag.StringVar(&sy.Tag, "tag", "", "Git tag")
	flag.StringVar(&sy.SemVer, "semver", "", "Git tag semver range")
	flag.StringVar(&sy.Commit, "commit", "", "Git commit SHA")
	flag.StringVar(&sy.Secret, "secret-ref", sy.Secret, "Git credentials secret name")
	flag.StringVar(&sy.TargetPath, "path", "", "path of the cluster in the repository (the Kustomization path)")
	flag.DurationVar(&sy.Interval, "interval", time.Minute, "GitRepository interval")
	flag.Parse()

	if *dist == "" || *out == "" || in.Version == "" || sy.URL == "" {
		return fmt.Errorf("-dist, -out, -version and -url are required")
	}
	in.Components = append(list(*components), list(*extra)...)
	in.TolerationKeys = list(*tolerations)
	sy.Namespace, sy.Name = in.Namespace, in.Namespace

	// Generate writes into the manifests directory, so it gets a copy of the read-only data.
	tmp, err := os.MkdirTemp("", "fluxgen")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, os.DirFS(*dist)); err != nil {
		return fmt.Errorf("copying the distribution %s: %w", *dist, err)
	}
	gotk, err := install.Generate(in, tmp)
	if err != nil {
		return fmt.Errorf("generating gotk-components.yaml: %w", err)
	}
	syncManifest, err := sync.Generate(sy)
	if err != nil {
		return fmt.Errorf("generating gotk-sync.yaml: %w", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for name, content := range map[string]string{
		"gotk-components.yaml": gotk.Content,
		"gotk-sync.yaml":       syncManifest.Content,
		"kustomization.yaml":   kustomization,
	} {
		if err := os.WriteFile(filepath.Join(*out, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
