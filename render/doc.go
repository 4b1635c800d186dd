// Package render turns a defaulted and validated FluxInstance plus one resolved
// distribution release into exactly the objects the Flux Operator would apply.
// It is pure: no cluster access, no file access, no package-level mutable state.
//
// Libraries do the generic work: the apply order is fluxcd/pkg/ssa's (the
// operator's, see SortObjects; run stable so that equal keys, which Build
// never produces, keep their order), user patches run through kustomize's
// patch filters, and object access goes through apimachinery's unstructured
// helpers. What the Flux Operator decides itself (size profiles, arguments,
// sharding, per-instance RBAC names, CRD kind enums) is re-derived here from
// its documented behaviour: the operator is AGPL and is never imported, and
// the goldens and test/parity pin the result.
//
// Kept by hand on purpose, because no library does the job:
//
//   - The strategic merge schema subset (k8sschema.json, useSchemaSubset):
//     kyaml only offers its whole built-in schema, whose parse allocates about
//     45 MB; internal/schemagen cuts kyaml's own definitions down to the kinds
//     Build emits, so merges are the same.
//   - Patch targets (patchID, selector, implicitMatcher): kustomize matches on
//     the identities its own build records as its transformers rename and
//     move objects; Build makes the objects directly, so it records the part
//     of those identities a target can see (original and current name and
//     namespace) and matches them with kustomize's rules.
//   - Splitting the distribution's YAML files (splitYAMLDocuments):
//     apimachinery's YAMLReader drops empty documents and rejects "---"
//     followed by text, which would shift or lose the document numbers that
//     parse errors report.
//   - Which kinds are cluster-scoped (clusterScoped): without a cluster there
//     is no RESTMapper to ask; the list covers every cluster-scoped kind the
//     distribution ships and Build adds.
package render
