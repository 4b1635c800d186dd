#!/usr/bin/env bash
# Builds the Flux Operator CLI (`flux-operator`, github.com/controlplaneio-fluxcd/flux-operator/cmd/cli,
# the version in go.mod) from the Go module proxy, as the reference renderer of the parity test
# (test/parity) and the benchmark (test/bench). AGPL-3.0: it is built and run as a separate process,
# never imported. It needs Go 1.27: the toolchain (GOTOOLCHAIN below) comes from the module proxy too.
# Built with CGO_ENABLED=0 (a static binary, as released upstream) and otherwise the same toolchain and
# flags as the Flux Operator (../flux-operator/build.sh), whose module versions go.mod pins the same: the
# CLI's build then reuses the operator's compiled packages from the Go build cache. (GOFIPS140, the other
# difference, only changes the link step.) `make harness` builds the operator first, then this.
# The binary is cached outside the work tree in $TESTENV_CACHE/flux-operator-<version>-<stamp>/, where
# the stamp hashes go.mod, go.sum, the link flags and the toolchain (like ../build.sh): a change of any
# input rebuilds. $BIN_DIR (default <repo>/bin/flux-operator-cli) becomes a symlink to that directory,
# which is printed on stdout.
#   build.sh --check   prints the directory and exits 0 when the binary is cached, exits 1 without
#                      building when it is not (the tests use it to decide whether to build or skip).
# Cold on its own (about 190 MB downloaded: the go1.27.3 toolchain and ~195 modules, 0.9 GB module cache,
# 1.1 GB build cache; 2 shared cores): about 9.5 minutes, 285 s CPU, 1.2 GB peak RSS (measured with cgo,
# before CGO_ENABLED=0). Right after the operator's build: see ../../../README.md. Cached: instant.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin_dir=${BIN_DIR:-$root/bin/flux-operator-cli}
cache=${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-fluxinstance-testenv}
# Pinned rather than taken from the environment: the binary must not depend on the caller's Go.
toolchain=go1.27.3

version=$(awk '$1=="github.com/controlplaneio-fluxcd/flux-operator" {print $2}' "$here/go.mod")
[ -n "$version" ] || { echo "cannot find the flux-operator version in $here/go.mod" >&2; exit 1; }

# Stamped with its release version so that `flux-operator version` tells which one it is.
ldflags="-s -w -X main.VERSION=${version#v}"
pkg=github.com/controlplaneio-fluxcd/flux-operator/cmd/cli

cgo=0
stamp=$( { cat "$here/go.mod" "$here/go.sum"; echo "$ldflags"; echo "$toolchain"; echo "CGO_ENABLED=$cgo"; } |
         sha256sum | cut -c1-16)
out=$cache/flux-operator-$version-$stamp

if [ "${1:-}" = "--check" ]; then
  [ -x "$out/flux-operator" ] || exit 1
elif [ ! -x "$out/flux-operator" ]; then
  mkdir -p "$out"
  tmp=$(mktemp -d "$out/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "building flux-operator $version with $toolchain into $out ..." >&2
  start=$(date +%s)
  (cd "$here" && CGO_ENABLED=$cgo GOTOOLCHAIN=$toolchain GOFLAGS="-mod=readonly -buildvcs=false" \
     go build -trimpath -ldflags "$ldflags" -o "$tmp/flux-operator" "$pkg")
  mv "$tmp/flux-operator" "$out/flux-operator"
  echo "built in $(( $(date +%s) - start ))s" >&2
fi

mkdir -p "$(dirname "$bin_dir")"
if [ -L "$bin_dir" ] || [ ! -e "$bin_dir" ]; then
  ln -sfn "$out" "$bin_dir"
else
  echo "$bin_dir exists and is not a symlink; leaving it alone" >&2
fi
echo "$out"
