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
	"os"
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

// BinDir returns the directory holding the Flux binaries (source-controller, kustomize-controller,
// fluxgen and, when withCLI, flux). In CI (CI=true) missing binaries are built, and a build failure
// fails the test; on a developer machine the test is skipped with the command to run.
func BinDir(t testing.TB, withCLI bool) string {
	t.Helper()
	want := []string{SourceController, KustomizeController, FluxGen}
	if withCLI {
		want = append(want, FluxCLI)
	}
	dir, err := testenv.BinaryDir("FLUX_TEST_BIN_DIR", "flux")
	if err == nil {
		err = testenv.CheckBinaries(dir, want...)
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
	built, buildErr := testenv.RunBuildScript("flux-controllers")
	if buildErr != nil {
		t.Fatalf("CI=true and %v; building them failed: %v", err, buildErr)
	}
	if err := testenv.CheckBinaries(built, want...); err != nil {
		t.Fatalf("CI=true and the Flux binaries are still missing after the build: %v", err)
	}
	return built
}
