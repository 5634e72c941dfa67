#!/usr/bin/env bash
# Runs the whole test suite as root: real BPF in real cgroups, network namespaces, PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
if [ "$(id -u)" != 0 ]; then
  exec sudo -E "$0" "$@"
fi
scripts/deps.sh
gofmt_out=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$gofmt_out" ]; then echo "gofmt needed on:"; echo "$gofmt_out"; exit 1; fi
go vet ./...
go build -o bin/enforcer ./cmd/enforcer
# The end-to-end tests run a daemon built with the race detector; a race it reports fails them.
ENFORCER_E2E_RACE=1 go test -count=1 -timeout 30m "$@" ./...
# The concurrent core (recorder, guards, wire proxies, approvals) again under the race detector.
if [ $# -eq 0 ]; then
  go test -count=1 -race -timeout 10m ./internal/record/... ./internal/pgguard ./internal/proto/postgres ./internal/proto/http ./internal/httpguard ./internal/approval
  # The recorder again with its own fdatasync, the path taken where io_uring is disabled.
  ENFORCER_RECORD_SYSCALLS=1 go test -count=1 -timeout 5m ./internal/record/
fi
