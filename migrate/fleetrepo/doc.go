// Package fleetrepo rewrites a local checkout of a fleet repository for a Flux upgrade: every Flux
// object's apiVersion that the target Flux no longer serves becomes the version the target stores
// (top-level objects, nested references such as spec.sourceRef, kustomize patch targets and the
// objects inside inline patches), and the fields the new version no longer has are reported.
// It never contacts a cluster: the target is the rendering's CustomResourceDefinitions.
//
// The edit is hand-written on purpose. A fleet repository is reviewed as a diff, so a rewrite must
// change only the version it moves and keep every comment, key order, quoting style, indentation
// and unrelated document byte for byte. No library does that: kyaml, sigs.k8s.io/yaml and
// yaml.v3's encoder all re-serialise the whole document. Here yaml.v3 only parses, to locate each
// scalar by line and column; the new value is spliced into the original bytes at that position,
// after checking that the bytes there are the old value.
//
// NewPlan reads and plans everything first, writing nothing; Plan.Write then replaces each
// changed file atomically (a temporary file renamed over it, its mode kept), so that a file that
// cannot be parsed stops the run before any file is touched.
package fleetrepo
