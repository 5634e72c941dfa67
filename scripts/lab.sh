#!/usr/bin/env bash
# The lab demo, the README's first command: builds the enforcer and runs scripts/lab, a Go program
# that sets up a stand-in for production on this machine (a network namespace on 198.18.0.0/15 with
# PostgreSQL and HTTP services, a development OIDC provider), starts the daemon with an example
# policy and plays a narrated session of agent commands under `enforcer run`. It exits non-zero if
# anything behaves unexpectedly and removes everything it created, also on failure and Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"
scripts/deps.sh
go build -o bin/enforcer ./cmd/enforcer
exec go run ./scripts/lab "$@"
