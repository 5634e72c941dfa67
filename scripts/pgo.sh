#!/usr/bin/env bash
# `make pgo`: regenerate cmd/enforcer/default.pgo, the CPU profile `go build` uses for
# profile-guided optimisation of the daemon (Go applies it automatically to the main package).
# It is the daemon's profile under its hot load: enforced pgbench select-only at 8 clients, simple
# and extended protocol, with the default policy's rules, masking and recording on; the two
# profiles are merged. Root (real BPF, namespaces, PostgreSQL), about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"
scripts/deps.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for mode in simple extended; do
  ENFORCER_BENCH_SECONDS=15 ENFORCER_BENCH_PROFILE="$tmp/$mode.pprof" ENFORCER_BENCH_PROFILE_MODE=$mode \
    ENFORCER_BENCH_PROFILE_CLIENTS=8 go test -run '^$' -bench Postgres -benchtime 1x -timeout 10m ./cmd/enforcer
done
go tool pprof -proto "$tmp/simple.pprof" "$tmp/extended.pprof" > cmd/enforcer/default.pgo
echo "wrote cmd/enforcer/default.pgo; rebuild (make build) and compare with make bench"
