// Package fluxenv runs the real Flux source-controller and kustomize-controller (v1.9.4, the pair of
// Flux v2.9.4) as local processes against a test API server (test/testenv), serves fleet
// repositories over HTTP from 127.0.0.1 with `git http-backend`, and bootstraps them the way
// `flux bootstrap` does: the gotk files come from the Flux CLI's own generator packages (fluxgen),
// or the real Flux CLI runs `flux bootstrap git`. No kubelet runs, so the controller Deployments get
// an Available status written for them.
//
// The binaries are built from the Go module proxy by test/binaries/flux-controllers/build.sh and
// found in FLUX_TEST_BIN_DIR or the repository's bin/flux.
package fluxenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// Names of the binaries in the Flux binaries directory.
const (
	SourceController    = "source-controller"
	KustomizeController = "kustomize-controller"
	FluxGen             = "fluxgen"
	FluxCLI             = "flux"
)

// Versions the binaries are built at (test/binaries/flux-controllers).
const (
	// FluxVersion is the Flux release whose controllers run here.
	FluxVersion = "v2.9.4"
	// ControllersVersion is the source-controller and kustomize-controller version of FluxVersion.
	ControllersVersion = "v1.9.4"
)

func runBuild() (string, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(root, "test", "binaries", "flux-controllers", "build.sh"))
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the Flux binaries with test/binaries/flux-controllers/build.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// BinDir returns the directory holding the Flux binaries (source-controller, kustomize-controller,
// fluxgen and, when withCLI, flux). In CI (CI=true) missing binaries are built, and a build failure
// fails the test; on a developer machine the test is skipped with the command to run.
func BinDir(t testing.TB, withCLI bool) string {
	t.Helper()
	want := []string{SourceController, KustomizeController, FluxGen}
	if withCLI {
		want = append(want, FluxCLI)
	}
	dir, err := binDir()
	if err == nil {
		err = checkBinaries(dir, want)
	}
	if err == nil {
		return dir
	}
	if !testenv.InCI() {
		t.Skipf("%v: run test/binaries/flux-controllers/build.sh (make flux-testenv) to build the Flux binaries", err)
	}
	if os.Getenv("FLUX_TEST_BIN_DIR") != "" {
		t.Fatalf("CI=true but %v", err)
	}
	// build.sh serializes concurrent builds with a lock and reuses its cache, so packages that
	// get here at the same time build once.
	built, buildErr := runBuild()
	if buildErr != nil {
		t.Fatalf("CI=true and %v; building them failed: %v", err, buildErr)
	}
	if err := checkBinaries(built, want); err != nil {
		t.Fatalf("CI=true and the Flux binaries are still missing after the build: %v", err)
	}
	return built
}

func binDir() (string, error) {
	if dir := os.Getenv("FLUX_TEST_BIN_DIR"); dir != "" {
		return dir, nil
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "flux"), nil
}

func checkBinaries(dir string, names []string) error {
	for _, name := range names {
		// Stat follows the symlinks build.sh makes, so a dangling link (cache wiped) counts as missing.
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("%s not found in %s", name, dir)
		}
	}
	return nil
}
