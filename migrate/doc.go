// Package migrate holds everything that reads or changes a cluster, one package per concern. It
// has no code of its own; this comment is the map (docs/architecture.md has the longer one).
//
//   - kube: client setup from kubectl's flags, object naming, the one live read, the paged list,
//     CRD facts, dry-run modes. Every other package builds on it.
//   - ownership: every takeover rule: the field managers taken over, the labels and annotations
//     removed or honoured, what makes an object this plugin's, and the kustomize-controller
//     handover that makes `flux bootstrap` safe to leave.
//   - installation: who installed Flux (bootstrap, flux install, Helm, the operator, this plugin).
//   - inventory: the plugin's record of what it applied (states, fingerprints) and its mirror in a
//     FluxInstance's status.inventory.
//   - apply: staged server-side apply (a marked fork of fluxcd/pkg/ssa's ApplyAllStaged), the no-op
//     fast path, conflicts, prune, and the record written around them.
//   - lock: one writer per instance, a Lease held and renewed while a command writes.
//   - wait: waiting for kstatus readiness with progress.
//   - diff: per-object diffs of what an apply would change.
//   - uninstall: removing what the plugin applied (`delete`).
//   - operator: the Flux Operator: detection, the FluxInstance object and its state, applying it
//     for the operator and waiting for its reconcile.
//   - handoff: moving an instance from the plugin to the Flux Operator.
//   - adopt: adopting a Flux installed by `flux bootstrap`, `flux install` or the Helm chart
//     (detect, plan, take over, verify, rollback, rewrite the fleet repository).
//   - helmstorage: a Helm release's records, set aside once an adoption is verified (so that
//     `helm uninstall` deletes nothing) and restored by its rollback.
//   - permissions: what a command's plan needs (apply, delete, migrate), checked with
//     SelfSubjectAccessReviews before its first change, every missing permission listed at once.
//   - preflight: checks of a rendering against the cluster before applying (sync credentials).
//   - storage: the storage-version migration apply runs before the CRD stage, so that the API
//     server accepts CRDs that drop versions objects were stored at.
//   - fleetrepo: `upgrade-repo`, a checkout of the fleet repository rewritten for the target Flux.
//
// Dependencies point one way: plugin → migrate/* → render; inside migrate, kube is at the bottom,
// ownership, installation, operator, inventory and lock above it, apply and the commands' packages on
// top. Errors are wrapped with %w and never translated here: the plugin does that once.
package migrate
