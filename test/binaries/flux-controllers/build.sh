#!/usr/bin/env bash
# Builds the real Flux binaries of the end-to-end tests (test/fluxenv) from the Go module proxy:
#   source-controller/     source-controller v1.9.4     } the pair shipped in Flux v2.9.4, each from a
#   kustomize-controller/  kustomize-controller v1.9.4  } wrapper module (`require` + `tool` + go build)
#   fluxgen/               the bootstrap files generator (flux2/v2 pkg/manifestgen v2.9.5)
#   flux                   the Flux CLI (v2.9.4): its module source with cmd/flux/manifests filled from
#                          the distribution data (the release manifests; `make` generates them upstream, so
#                          they are not in the module zip). Skipped, with a warning, without the data.
# Each binary is cached outside the work tree in $TESTENV_CACHE/flux-<name>-<version>-<stamp>/, where the
# stamp hashes its inputs (go.mod, go.sum, sources, link flags, Go version, and for the CLI the embedded
# manifests): a fresh clone on the same machine reuses them, a change of any input rebuilds that binary.
# $BIN_DIR (default <repo>/bin/flux) gets one symlink per binary; its path is printed on stdout.
# Cold (empty Go caches, 2 cores): see test/fluxenv/README.md; cached: instant.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin_dir=${BIN_DIR:-$root/bin/flux}
cache=${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-fluxinstance-testenv}
dist=${FLUX_DISTRIBUTION_DIR:-$root/../shared/flux-distribution}
cli_version=v2.9.4

export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
goversion=$(cd "$here" && go env GOVERSION)
mkdir -p "$cache" "$bin_dir"
# Test packages build concurrently (go test ./...): one build at a time, the others then find it cached.
exec 9>"$cache/.flux-build.lock"
flock 9

# install NAME OUT_DIR: make $bin_dir/NAME point at OUT_DIR/NAME.
install() {
  ln -sfn "$2/$1" "$bin_dir/$1"
}

# build_module NAME PKG MODULE: one wrapper module, one binary, named after the version of MODULE.
build_module() {
  local name=$1 pkg=$2 module=$3 mod=$here/$1 version stamp out tmp start
  version=$(awk -v m="$module" '$1=="require" && $2==m {print $3}' "$mod/go.mod")
  [ -n "$version" ] || { echo "cannot find the version of $module in $mod/go.mod" >&2; exit 1; }
  stamp=$( { cat "$mod"/go.mod "$mod"/go.sum; cat "$mod"/*.go 2>/dev/null || true; echo "$goversion"; } | sha256sum | cut -c1-16)
  out=$cache/flux-$name-$version-$stamp
  if [ ! -x "$out/$name" ]; then
    mkdir -p "$out"
    tmp=$(mktemp -d "$out/.build.XXXXXX")
    echo "building $name ($version) into $out ..." >&2
    start=$(date +%s)
    (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$tmp/$name" "$pkg")
    mv "$tmp/$name" "$out/$name"
    rm -rf "$tmp"
    echo "built $name in $(( $(date +%s) - start ))s" >&2
  fi
  install "$name" "$out"
}

# build_cli: the Flux CLI from its module source plus the distribution's release manifests.
build_cli() {
  local manifests=$dist/flux/$cli_version ldflags stamp out tmp src start
  if [ ! -d "$manifests" ]; then
    echo "warning: $manifests not found (set FLUX_DISTRIBUTION_DIR): not building the flux CLI" >&2
    rm -f "$bin_dir/flux"
    return
  fi
  ldflags="-s -w -X main.VERSION=${cli_version#v}"
  stamp=$( { cat "$manifests"/*.yaml; echo "$ldflags"; echo "$goversion"; } | sha256sum | cut -c1-16)
  out=$cache/flux-cli-$cli_version-$stamp
  if [ ! -x "$out/flux" ]; then
    mkdir -p "$out"
    tmp=$(mktemp -d "$out/.build.XXXXXX")
    echo "building the flux CLI ($cli_version) into $out ..." >&2
    start=$(date +%s)
    src=$(cd "$here" && go mod download -json "github.com/fluxcd/flux2/v2@$cli_version" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
    [ -n "$src" ] || { echo "cannot download github.com/fluxcd/flux2/v2@$cli_version" >&2; exit 1; }
    cp -r "$src" "$tmp/src"
    chmod -R u+w "$tmp/src"
    mkdir -p "$tmp/src/cmd/flux/manifests"
    cp "$manifests"/*.yaml "$tmp/src/cmd/flux/manifests/"
    (cd "$tmp/src" && go build -trimpath -ldflags "$ldflags" -o "$tmp/flux" ./cmd/flux)
    mv "$tmp/flux" "$out/flux"
    rm -rf "$tmp"
    echo "built the flux CLI in $(( $(date +%s) - start ))s" >&2
  fi
  install flux "$out"
}

build_module source-controller github.com/fluxcd/source-controller github.com/fluxcd/source-controller
build_module kustomize-controller github.com/fluxcd/kustomize-controller github.com/fluxcd/kustomize-controller
build_module fluxgen . github.com/fluxcd/flux2/v2
if [ "${FLUX_CLI:-1}" = 1 ]; then build_cli; fi
echo "$bin_dir"
