#!/usr/bin/env bash
# Builds the Flux Operator itself (github.com/controlplaneio-fluxcd/flux-operator/cmd/operator, the version
# in go.mod) from the Go module proxy, for the tests that run the real operator out of cluster against the
# test API server (test/operatorenv, test/operatorparity). AGPL-3.0: it is built and run as a separate
# process, never imported, and none of its files are committed here.
#
# The module zip does not build as is, so this wrapper module replaces it with ./src (gitignored), a
# writable copy of the module source that this script fills from the Go module cache (`go mod download`):
#   - web/embed.go embeds web/dist/*, the web UI built by a separate frontend step that is not in the zip:
#     a placeholder web/dist/index.html stands in (the web server is turned off at run time);
#   - its go.mod asks for go-containerregistry/pkg/authn/kubernetes v0.0.0-20260604213829-6849394e8a65,
#     which the proxy refuses (403): go.mod here replaces it with v0.0.0-20260224031529-85f2bf5f7303.
# Built with GOFIPS140=latest like the upstream Dockerfile: the operator refuses to start outside FIPS
# 140-3 mode, and this way no GODEBUG=fips140=on is needed at run time. Needs Go 1.27 (GOTOOLCHAIN below,
# fetched from the proxy).
#
# The binary is cached outside the work tree in $TESTENV_CACHE/flux-operator-controller-<version>-<stamp>/,
# where the stamp hashes go.mod, go.sum, the link flags, GOFIPS140, the placeholder and the toolchain: a
# change of any input rebuilds. Beside it, crds/ holds the operator's CRDs (config/crd/bases/*.yaml of the
# same module source), which the tests apply. $BIN_DIR (default <repo>/bin/flux-operator) becomes a symlink
# to that directory, which is printed on stdout.
#   build.sh --check   prints the directory and exits 0 when the binary is cached, exits 1 without
#                      building when it is not (the tests use it to decide whether to build or skip).
# Measured on 2 shared cores (busy with other work): cold, empty module and build caches (1.3 GB of
# modules incl. the go1.27.3 toolchain, 1.4 GB build cache): 2m38s wall, 270 s CPU, 1.3 GB peak RSS.
# Warm module cache and a build cache holding the Flux Operator CLI's build (little of it is reused;
# GOFIPS140 differs): 3m11s at load ~4.
# Warm Go caches (a stamp change): 3 s. Cached: instant.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin_dir=${BIN_DIR:-$root/bin/flux-operator}
cache=${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-fluxinstance-testenv}
# Pinned rather than taken from the environment: the binary must not depend on the caller's Go.
toolchain=go1.27.3
module=github.com/controlplaneio-fluxcd/flux-operator

version=$(awk -v m="$module" '$1==m {print $2} $1=="require" && $2==m {print $3}' "$here/go.mod" | head -1)
[ -n "$version" ] || { echo "cannot find the $module version in $here/go.mod" >&2; exit 1; }

# Stamped with its release version, as the upstream Dockerfile does.
ldflags="-s -w -X main.VERSION=${version#v}"
fips=latest
placeholder='<!doctype html><title>flux-operator web UI not built (kubectl-fluxinstance tests)</title>'
pkg=$module/cmd/operator

stamp=$( { cat "$here/go.mod" "$here/go.sum"; echo "$ldflags"; echo "$fips"; echo "$placeholder"; echo "$toolchain"; } |
         sha256sum | cut -c1-16)
out=$cache/flux-operator-controller-$version-$stamp

built() { [ -x "$out/flux-operator" ] && [ -n "$(ls "$out"/crds/*.yaml 2>/dev/null)" ]; }

if [ "${1:-}" = "--check" ]; then
  built || exit 1
elif ! built; then
  mkdir -p "$cache"
  # Test packages run concurrently: one build at a time, the others then find it cached.
  exec 9>"$cache/.flux-operator-controller-build.lock"
  flock 9
fi
if [ "${1:-}" != "--check" ] && ! built; then
  mkdir -p "$out"
  tmp=$(mktemp -d "$out/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "building the flux-operator controller $version with $toolchain into $out ..." >&2
  start=$(date +%s)
  # Outside any module, so that the replace in go.mod does not answer for the download.
  dir=$(cd "$tmp" && GOTOOLCHAIN=$toolchain GOFLAGS= go mod download -json "$module@$version" |
        sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] && [ -d "$dir" ] || { echo "cannot download $module@$version" >&2; exit 1; }
  rm -rf "$here/src"
  cp -r "$dir" "$here/src"
  chmod -R u+w "$here/src"
  mkdir -p "$here/src/web/dist"
  printf '%s\n' "$placeholder" > "$here/src/web/dist/index.html"
  (cd "$here" && CGO_ENABLED=0 GOFIPS140=$fips GOTOOLCHAIN=$toolchain GOFLAGS="-mod=readonly -buildvcs=false" \
     go build -trimpath -ldflags "$ldflags" -o "$tmp/flux-operator" "$pkg")
  mkdir -p "$tmp/crds"
  cp "$here"/src/config/crd/bases/*.yaml "$tmp/crds/"
  rm -rf "$out/crds"
  mv "$tmp/crds" "$out/crds"
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
