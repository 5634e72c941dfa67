#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZTIME each (default 30s, at least 10s: a target
# with a large cached corpus needs a few seconds to replay it before fuzzing), one after another,
# and stops at the first failure (the failing input is then in that package's testdata/fuzz).
# New coverage inputs are minimised for at most 200 runs: with Go's default (60 s each) a slow
# target spends a short run minimising instead of fuzzing.
#
# A run that fails with only "context deadline exceeded", right as FUZZTIME ends and with no
# failing input written, is Go's fuzzing coordinator racing its own deadline (go.dev/issue/75804,
# fixed in Go 1.27; seen here on a busy 2-core machine): that target runs once more, and fails
# for real only if it fails again.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
git grep -n '^func Fuzz' -- '*_test.go' | while IFS=: read -r file _ decl; do
  name=${decl#func }
  name=${name%%(*}
  pkg="./$(dirname "$file")"
  for attempt in 1 2; do
    echo "== $pkg $name"
    if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 200x "$pkg" >"$log" 2>&1; then
      grep -v "^fuzz: elapsed" "$log"
      break
    fi
    grep -v "^fuzz: elapsed" "$log"
    if [ "$attempt" = 1 ] && grep -q "context deadline exceeded" "$log" && ! grep -q "Failing input written\|panic:\|_test.go:[0-9]" "$log"; then
      echo "   (the fuzzing coordinator's deadline race, go.dev/issue/75804: running $name again)"
      continue
    fi
    exit 1
  done
done
