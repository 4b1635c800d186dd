package migrate_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxinstance/kubectl-fluxinstance/test/fluxenv"
	"github.com/fluxinstance/kubectl-fluxinstance/test/testenv"
)

// TestMigrateOlderVersions migrates bootstraps of older Flux versions, whose CRDs the running
// controllers cannot serve: the bootstrap files of each version are applied like `flux bootstrap`
// and reconciled by simulation (kustomize-controller's labels, field manager and inventory).
// After the migration and the removal of the files from Git, a simulated garbage collection with
// kustomize-controller's rule deletes nothing of Flux, and still deletes a removed user app.
func TestMigrateOlderVersions(t *testing.T) {
	t.Parallel()
	fluxenv.BinDir(t, false)
	server := fluxenv.StartGitServer(t)
	for _, version := range []string{"v2.2.3", "v2.5.1", "v2.8.8"} {
		t.Run(version, func(t *testing.T) {
			start := time.Now()
			repo := server.CreateRepo(t, "fleet-"+version)
			apps := []fluxenv.App{{Namespace: "apps", Name: "podinfo"}, {Namespace: "apps", Name: "other"}}
			for _, a := range apps {
				repo.AddApp(t, "clusters/test", a)
			}
			o := fluxenv.Options{Version: version}
			fluxenv.WriteBootstrapFiles(t, repo, o)
			repo.CommitAndPush(t, "Add Flux "+version+" sync manifests")
			f := fluxenv.ApplyBootstrap(t, testenv.Start(t), repo, o)
			s := newScenario(t, f, apps...)
			ids := f.SimulateReconcile(t)
			c := s.c

			ks := f.Kustomization(t)
			before := takeSnapshot(t, c, ks, secretKey(f))
			var fluxKeys []objectKey
			for _, k := range inventoryKeys(t, ks) {
				if isFlux(t, c, k) {
					fluxKeys = append(fluxKeys, k)
				}
			}
			require.NotEmpty(t, fluxKeys)

			stderr, inst := s.migrate(t)
			assert.Contains(t, stderr, "Flux "+version+" installed by `flux bootstrap`")
			assert.Equal(t, version, inst.Spec.Distribution.Version)
			for _, k := range fluxKeys {
				assertTakenOver(t, c, k)
			}
			assert.ElementsMatch(t, ids, fluxenv.Inventory(f.Kustomization(t)), "the Kustomization keeps its status.inventory")
			allowed := unexpressed(stderr)
			if len(allowed) > 0 {
				t.Logf("the plan says the takeover changes the pod templates of %v", allowed)
			}
			before.assertSurvived(t, c)
			before.assertTemplates(t, c, allowed)

			// The files leave Git; the simulated reconcile of that commit drops the Flux objects
			// from the inventory, and the garbage collection would delete none of them.
			s.checkWorkTree(t)
			repo.CommitAndPush(t, "Replace the Flux bootstrap files with a FluxInstance")
			stale := staleKeys(t, f, before, f.SimulateReconcile(t))
			assert.ElementsMatch(t, fluxKeys, stale, "exactly the Flux objects left the inventory")
			for _, k := range stale {
				m, err := getMeta(c, k)
				require.NoError(t, err, k.String())
				assert.False(t, wouldPrune(m), "kustomize-controller would not delete %s", k)
			}

			// The same rule still deletes a user app removed from Git.
			repo.RemoveApp(t, "clusters/test", apps[0])
			repo.CommitAndPush(t, "Remove "+apps[0].Name)
			inventory := fluxenv.Inventory(f.Kustomization(t))
			var removed []objectKey
			for _, k := range staleKeys(t, f, before, f.SimulateReconcile(t)) {
				if slices.Contains(inventory, k.String()) {
					removed = append(removed, k)
					m, err := getMeta(c, k)
					require.NoError(t, err, k.String())
					assert.True(t, wouldPrune(m), "kustomize-controller would delete %s", k)
				}
			}
			assert.ElementsMatch(t, appKeys(apps[0]), removed)
			before.assertSurvived(t, c)
			t.Logf("Flux %s: %s", version, time.Since(start).Round(10*time.Millisecond))
		})
	}
}

// staleKeys are the recorded inventory objects missing from a new inventory: what
// kustomize-controller's garbage collection considers.
// The Git credentials' secret, created by bootstrap and never in Git, is left out.
func staleKeys(t testing.TB, f *fluxenv.Flux, before *snapshot, inventory []string) []objectKey {
	t.Helper()
	var out []objectKey
	for k := range before.uids {
		if k == secretKey(f) {
			continue
		}
		if !slices.Contains(inventory, k.String()) {
			out = append(out, k)
		}
	}
	return out
}
