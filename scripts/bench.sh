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
