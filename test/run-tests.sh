#!/usr/bin/env bash
# Runs `go test -v` with its full output in LOG and prints a short account: every package result,
# failed and skipped tests, and a closing "N passed, N failed, N skipped" line. The processes a test
# starts (etcd, kube-apiserver) run in this script's session and are killed when it ends, even after
# a panic or a go test timeout. With CI=true a skipped test fails the run: in CI every real-cluster
# test and every test on the distribution data must run.
#   usage: test/run-tests.sh LOG [go test flags] PACKAGES...
set -uo pipefail
log=$1; shift
mkdir -p "$(dirname "$log")"

sidfile=$(mktemp)
setsid --wait bash -c 'echo $$ > "$0"; exec go test -v "$@"' "$sidfile" "$@" >"$log" 2>&1
rc=$?
sid=$(cat "$sidfile"); rm -f "$sidfile"
left=$(ps -eo pid=,sid= | awk -v s="$sid" '$2==s {print $1}')
if [ -n "$left" ]; then
  echo "run-tests: killing processes the tests left behind: $left" >&2
  kill $left 2>/dev/null; sleep 2; kill -KILL $left 2>/dev/null
fi

grep -E '^(ok|FAIL|---|panic:|\?)|^\s+--- (FAIL|SKIP)' "$log" | grep -v -- '--- PASS' || true
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
if [ "$rc" -ne 0 ]; then
  echo "---- go test failed (exit $rc); the failing output, from $log:"
  grep -B2 -A40 -E '^\s*--- FAIL|^panic:|^FAIL\s|build failed|\[setup failed\]' "$log" | head -400
fi
echo "$passed passed, $failed failed, $skipped skipped"
if [ "${CI:-}" = true ] && [ "$skipped" -gt 0 ]; then
  echo "CI=true: $skipped test(s) were skipped; in CI every real-cluster and distribution test must run:" >&2
  grep -A3 -E '^\s*--- SKIP' "$log" >&2
  exit 1
fi
exit "$rc"
