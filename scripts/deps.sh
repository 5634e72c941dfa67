#!/usr/bin/env bash
# Installs what building, testing and the lab need on Debian 12 (root). Idempotent.
set -euo pipefail
need=()
# gcc and libc6-dev: the race detector (cgo).
for pkg in clang-14 llvm-14 libbpf-dev gcc libc6-dev postgresql pgbouncer nftables iproute2 python3 curl ca-certificates; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# node and npm: the Express server an HTTP test runs (internal/proto/http/testdata/express).
{ command -v node && command -v npm; } >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package starts a cluster on 5432; tests start their own servers in namespaces.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect 15 main stop 2>/dev/null || true
fi
express=internal/proto/http/testdata/express
if [ ! -d "$express/node_modules/method-override" ]; then
  (cd "$express" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
# bpffs for pinned programs.
if ! grep -q ' /sys/fs/bpf bpf ' /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
