#!/usr/bin/env bash
# `make bench`: every benchmark that compares the enforcer with a direct connection in one run.
# Root (real BPF, namespaces, PostgreSQL). Prints tables with ratios; nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"
scripts/deps.sh
echo "### kernel redirect: connect() latency and relay throughput"
go test -run '^$' -bench Redirect -benchtime 1x ./cmd/enforcer
echo
echo "### Postgres proxy alone (pass-through hook, loopback, no redirect) vs pgbouncer vs direct"
go test -run '^$' -bench Pgbench -benchtime 1x -timeout 30m ./internal/proto/postgres
echo
echo "### Postgres through the enforcer with every feature on, vs pgbouncer vs direct"
go test -run '^$' -bench Postgres -benchtime 1x -timeout 30m ./cmd/enforcer
echo
echo "### classification, rules, masking and recording micro-benchmarks"
go test -run '^$' -bench . -benchmem -benchtime 300ms ./internal/policy/sqlclass ./internal/policy/rules ./internal/mask
go test -run '^$' -bench 'Append|Encode' -benchmem -benchtime 1s ./internal/record
go test -run '^$' -bench Guard -benchmem -cpu 1 ./internal/pgguard
go test -run '^$' -bench 'Relay(Rows|Extended)' -benchmem ./internal/proto/postgres
