#!/usr/bin/env bash
# Builds krew's own tools, `krew` and `validate-krew-manifest` (sigs.k8s.io/krew, the version in
# go.mod), from the Go module proxy, for the Krew distribution tests (test/krew). They live in this
# module of their own because krew pins an ancient client-go that must never reach the plugin's
# go.mod.
# Binaries are cached outside the work tree in $TESTENV_CACHE/krew-<version>-<stamp>/, where the stamp
# hashes go.mod, go.sum and the Go version (like ../build.sh): a change of any input rebuilds.
# $BIN_DIR (default <repo>/bin/krew) becomes a symlink to that directory, which is printed on stdout.
# `make krew-tools` (part of `make test`'s harness) runs it before the tests, which then find it cached.
# Cold: about 30 s with the module cache filled, 41 s with an empty one at load ~11; cached: instant.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin_dir=${BIN_DIR:-$root/bin/krew}
cache=${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-fluxinstance-testenv}

krew_version=$(awk '$1=="sigs.k8s.io/krew" {print $2}' "$here/go.mod")
[ -n "$krew_version" ] || { echo "cannot find the sigs.k8s.io/krew version in $here/go.mod" >&2; exit 1; }

# Left unstamped: a development build of krew never phones home for upgrade checks.
ldflags="-s -w"
pkgs=(sigs.k8s.io/krew/cmd/krew sigs.k8s.io/krew/cmd/validate-krew-manifest)
want=(krew validate-krew-manifest)

stamp=$( { cat "$here/go.mod" "$here/go.sum"; echo "$ldflags"; (cd "$here" && go env GOVERSION); } |
         sha256sum | cut -c1-16)
out=$cache/krew-$krew_version-$stamp

missing=0
for b in "${want[@]}"; do [ -x "$out/$b" ] || missing=1; done
if [ "$missing" = 1 ]; then
  mkdir -p "$out"
  tmp=$(mktemp -d "$out/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "building ${want[*]} (krew $krew_version) into $out ..." >&2
  (cd "$here" && GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  for b in "${want[@]}"; do mv "$tmp/$b" "$out/$b"; done
fi

mkdir -p "$(dirname "$bin_dir")"
if [ -L "$bin_dir" ] || [ ! -e "$bin_dir" ]; then
  ln -sfn "$out" "$bin_dir"
else
  echo "$bin_dir exists and is not a symlink; leaving it alone" >&2
fi
echo "$out"
