// Package cluster is the cluster machinery that `apply` and `migrate` share: building clients from
// kubeconfig flags, detecting how Flux is installed, server-side apply with ownership takeover,
// the inventory of what was applied, pruning and waiting. It knows nothing about cobra or printing.
package cluster
