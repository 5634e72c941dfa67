#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZTIME each (default 30s, at least 10s: a target
# with a large cached corpus needs a few seconds to replay it before fuzzing), one after another,
# and stops at the first failure (the failing input is then in that package's testdata/fuzz).
# New coverage inputs are minimised for at most 200 runs: with Go's default (60 s each) a slow
# target spends a short run minimising instead of fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
git grep -n '^func Fuzz' -- '*_test.go' | while IFS=: read -r file _ decl; do
  name=${decl#func }
  name=${name%%(*}
  echo "== ./$(dirname "$file") $name"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 200x "./$(dirname "$file")" | grep -v "^fuzz: elapsed"
done
