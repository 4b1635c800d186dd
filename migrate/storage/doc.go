// Package storage migrates the stored Flux objects of a CRD to the storage version of the CRD
// about to be applied, so that the API server accepts a CRD that drops versions still listed in
// status.storedVersions ("must remain in spec.versions until a storage migration ensures no data
// remains persisted").
//
// Flux CRDs use `conversion: None`: an object stored at one version is served at any other with
// only its apiVersion changed. Migrating a kind is therefore three steps, each safe to repeat:
//
//  1. the live CRD is updated to serve the target version as storage, keeping every version still
//     stored or served (served, not storage), so that nothing stored becomes unreadable;
//  2. every object is rewritten at the target version: its managedFields entries naming other
//     versions are moved to the target (fluxcd/pkg/ssa PatchMigrateToVersion), or, when there are
//     none, the object is written back unchanged; either write makes the API server store it at
//     the new storage version;
//  3. status.storedVersions is set to the target version alone.
//
// The normal apply then replaces the CRD with the rendered one. Plan reads only; a run killed
// anywhere is re-planned from status.storedVersions, which step 3 alone shortens.
//
// Before migrating, CheckLosses says what the move would cost users: the fields the API server
// would drop (DroppedFields) and the Kustomizations that still apply a Flux object at a removed
// version (StaleSources). Nothing warns about the pruning otherwise, so a field that only the old
// version knew (e.g. a HelmRelease's spec.chart.spec.valuesFile) would silently disappear when the
// object is rewritten at the new one. DroppedFields runs the API server's own pruning
// (k8s.io/apiextensions-apiserver) on a copy, so that the answer is the server's, not a
// re-implementation of it.
package storage
