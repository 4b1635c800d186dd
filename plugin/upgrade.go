package plugin

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fluxinstance/kubectl-fluxinstance/migrate/apply"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/kube"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/permissions"
	"github.com/fluxinstance/kubectl-fluxinstance/migrate/storage"
	"github.com/fluxinstance/kubectl-fluxinstance/render/fluxinstance"
)

// The storage migration of an upgrade across removed API versions, the same in both modes of
// apply: direct mode runs it before its CRD stage, operator mode before it applies the
// FluxInstance (the operator would otherwise fail on the CRDs the API server refuses). The steps,
// in order: planMigration, then either previewMigration (a dry run) or checkBeforeChange and,
// under the instance's lock, migrateStorage.

// planMigration plans the storage migration the rendering needs: stored objects at versions the
// rendered CRDs drop make the API server refuse those CRDs. Planned before anything else (the
// permission check needs the plan), and refused at once when the instance forbids migrating
// (spec.migrateResources: false).
func planMigration(ctx context.Context, c client.Client, r *rendering) (*storage.Plan, error) {
	migration, err := storage.NewPlan(ctx, c, r.Objects)
	if err != nil {
		return nil, err
	}
	return migration, allowMigration(migration, r.Instance)
}

// allowMigration refuses a migration the instance forbids.
func allowMigration(migration *storage.Plan, instance *fluxinstance.FluxInstance) error {
	if !migration.Empty() && !migrateResources(instance) {
		return &storage.DisabledError{Plan: migration}
	}
	return nil
}

// previewMigration is the dry run of the migration: what it would lose, as warnings, and what it
// would do. Nothing changes.
func (o *ApplyOptions) previewMigration(ctx context.Context, m *apply.Manager, migration *storage.Plan, objects []*unstructured.Unstructured) error {
	return printMigrationPreview(ctx, m.Client, o.ErrOut, migration, objects, "the upgrade loses", fmt.Sprintf("would migrate (%s dry run)", o.dryRun))
}

// printMigrationPreview prints what a planned migration would lose (each line prefixed with
// loses) and what it would do (verb), for apply's dry runs and diff. Nothing changes.
func printMigrationPreview(ctx context.Context, c client.Client, w io.Writer, migration *storage.Plan, objects []*unstructured.Unstructured, loses, verb string) error {
	if migration.Empty() {
		return nil
	}
	losses, err := storage.CheckLosses(ctx, c, migration, objects)
	if err != nil {
		return err
	}
	printLosses(w, losses, loses)
	printMigrationPlan(w, migration, verb)
	return nil
}

// checkBeforeChange refuses, before the first change, an apply the user lacks any of perms for
// (the migration's included) and an upgrade that would lose data (unless --force).
func (o *ApplyOptions) checkBeforeChange(ctx context.Context, m *apply.Manager, perms []permissions.Permission, migration *storage.Plan, objects []*unstructured.Unstructured) error {
	if err := checkPermissions(ctx, m.Client, "apply", perms, o.ErrOut); err != nil {
		return err
	}
	return o.checkLosses(ctx, m, migration, objects)
}

// migrateStorage plans again under the lock (another writer may have migrated meanwhile, or a
// killed run left part of it done: the plan starts from status.storedVersions) and migrates the
// stored objects before the new CRDs are applied. The rewrites go through a client without the
// client-side rate limit: Migrate bounds how many are in flight.
func (o *ApplyOptions) migrateStorage(ctx context.Context, conn *kube.Connection, m *apply.Manager, objects []*unstructured.Unstructured) error {
	migration, err := storage.NewPlan(ctx, m.Client, objects)
	if err != nil || migration.Empty() {
		return err
	}
	bulk, err := conn.Unthrottled()
	if err != nil {
		return err
	}
	printMigrationPlan(o.ErrOut, migration, "migrating")
	start := time.Now()
	err = storage.Migrate(ctx, bulk, migration, storage.Options{
		FieldManager: o.FieldManager,
		Progress:     func(line string) { fmt.Fprintln(o.ErrOut, line) },
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "storage migration done after %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// checkLosses says, before anything changes, what an upgrade across removed versions would lose
// (fields the new versions drop, Kustomizations still applying removed versions): a dry run lists
// it, an apply refuses unless --force.
func (o *ApplyOptions) checkLosses(ctx context.Context, m *apply.Manager, migration *storage.Plan, objects []*unstructured.Unstructured) error {
	losses, err := storage.CheckLosses(ctx, m.Client, migration, objects)
	if err != nil || losses.Empty() {
		return err
	}
	if o.dryRun.Changes() && !o.Force {
		return &storage.LossesError{Losses: losses}
	}
	printLosses(o.ErrOut, losses, "the upgrade loses")
	return nil
}

// printLosses warns of each loss, at most 20 lines, and of how to fix the sources.
func printLosses(w io.Writer, losses *storage.Losses, what string) {
	if losses.Empty() {
		return
	}
	for _, line := range losses.Lines(20) {
		fmt.Fprintf(w, "Warning: %s: %s\n", what, line)
	}
	fmt.Fprintf(w, "Warning: to fix the sources: %s\n", storage.FixSources)
}

// printMigrationPlan lists the storage migration on stderr, one line per CRD.
func printMigrationPlan(w io.Writer, migration *storage.Plan, verb string) {
	fmt.Fprintf(w, "storage migration: %s the stored objects of %d CRDs before applying them:\n", verb, len(migration.Migrations))
	for _, line := range migration.Describe() {
		fmt.Fprintf(w, "  %s\n", line)
	}
}

// migrateResources is the instance's spec.migrateResources, true unless set to false.
func migrateResources(instance *fluxinstance.FluxInstance) bool {
	return instance.Spec.MigrateResources == nil || *instance.Spec.MigrateResources
}
