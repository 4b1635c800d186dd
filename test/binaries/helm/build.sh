#!/usr/bin/env bash
# Builds the real Helm CLI (helm.sh/helm/v3/cmd/helm, the version in go.mod) from the Go module proxy,
# for the tests that install the Flux community chart (../shared/helm-charts/flux2) with it
# (test/helmenv). It lives in this module of its own so that Helm's dependencies never reach the
# plugin's go.mod.
# Stamped like Helm's own Makefile does for a release (internal/version), so that `helm version`
# says v3.22.0 rather than the source default "v3.22".
# The binary is cached outside the work tree in $TESTENV_CACHE/helm-<version>-<stamp>/, where the stamp
# hashes go.mod, go.sum, the link flags and the Go version (like ../build.sh): a change of any input
# rebuilds. $BIN_DIR (default <repo>/bin/helm) becomes a symlink to that directory, which is printed on
# stdout.
#   build.sh --check   prints the directory and exits 0 when the binary is cached, exits 1 without
#                      building when it is not (test/helmenv uses it to decide whether to build or skip).
# `make helm-tools` (part of `make test`'s harness) runs it before the tests, which then find it cached.
# Cold, measured on 2 shared cores (load 2-3) with an empty build cache and the module cache filled
# (182 MB of module zips, about 10 s to download here): 130 s wall, 198 s CPU, 0.87 GB peak RSS.
# Cached: instant (`build.sh --check` 0.05 s).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin_dir=${BIN_DIR:-$root/bin/helm}
cache=${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-fluxinstance-testenv}

helm_version=$(awk '$1=="helm.sh/helm/v3" {print $2}' "$here/go.mod")
[ -n "$helm_version" ] || { echo "cannot find the helm.sh/helm/v3 version in $here/go.mod" >&2; exit 1; }

v=helm.sh/helm/v3/internal/version
ldflags="-s -w -X $v.version=$helm_version -X $v.gitTreeState=clean"
pkg=helm.sh/helm/v3/cmd/helm

stamp=$( { cat "$here/go.mod" "$here/go.sum"; echo "$ldflags"; (cd "$here" && go env GOVERSION); } |
         sha256sum | cut -c1-16)
out=$cache/helm-$helm_version-$stamp

if [ "${1:-}" = "--check" ]; then
  [ -x "$out/helm" ] || exit 1
elif [ ! -x "$out/helm" ]; then
  mkdir -p "$out"
  # Test packages may ask for it concurrently: one build at a time, the others then find it cached.
  exec 9>"$cache/.helm-build.lock"
  flock 9
  if [ ! -x "$out/helm" ]; then
    tmp=$(mktemp -d "$out/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "building helm ($helm_version) into $out ..." >&2
    start=$(date +%s)
    (cd "$here" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
      go build -trimpath -ldflags "$ldflags" -o "$tmp/helm" "$pkg")
    mv "$tmp/helm" "$out/helm"
    echo "built helm in $(( $(date +%s) - start ))s" >&2
  fi
fi

mkdir -p "$(dirname "$bin_dir")"
if [ -L "$bin_dir" ] || [ ! -e "$bin_dir" ]; then
  ln -sfn "$out" "$bin_dir"
else
  echo "$bin_dir exists and is not a symlink; leaving it alone" >&2
fi
echo "$out"
