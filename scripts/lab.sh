#!/usr/bin/env bash
# The lab demo: a "prod" network namespace (198.18.0.2) runs services; the enforcer daemon runs
# with an example policy; an agent command started with `enforcer run` reaches what the policy
# allows through the proxy and nothing else. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
[ "$(id -u)" = 0 ] || exec sudo -E "$0" "$@"

scripts/deps.sh
ENF=$PWD/bin/enforcer
go build -o "$ENF" ./cmd/enforcer
LAB=$(mktemp -d /tmp/enforcer-lab.XXXXXX)
NS=enforcer-prod
HOST_IF=enflab0h
PROD=198.18.0.2
export ENFORCER_SOCKET=$LAB/enforcer.sock

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
agent() { printf "$ enforcer run -- %s\n" "$*"; "$ENF" run -- "$@"; }

cleanup() {
  set +e
  [ "${OK:-}" = 1 ] || { echo "--- daemon log"; cat "$LAB/daemon.log"; }
  [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
  "$ENF" uninstall --config "$LAB/enforcer.yaml" >/dev/null 2>&1
  [ -n "${SERVICES:-}" ] && kill $SERVICES 2>/dev/null
  ip link del "$HOST_IF" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$LAB"
}
trap cleanup EXIT

say "network namespace '$NS' stands in for production at $PROD"
ip netns del "$NS" 2>/dev/null || true
ip link del "$HOST_IF" 2>/dev/null || true
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name enflab0p
ip link set enflab0p netns "$NS"
ip addr add 198.18.0.1/24 dev "$HOST_IF"; ip link set "$HOST_IF" up
ip -n "$NS" addr add "$PROD/24" dev enflab0p; ip -n "$NS" link set enflab0p up; ip -n "$NS" link set lo up
mkdir -p "$LAB/www"; echo "hello from the internal API in prod" > "$LAB/www/index.html"
ip netns exec "$NS" python3 -m http.server 8080 --bind "$PROD" --directory "$LAB/www" >/dev/null 2>&1 & SERVICES="$!"
ip netns exec "$NS" python3 -m http.server 9090 --bind "$PROD" --directory "$LAB/www" >/dev/null 2>&1 & SERVICES="$SERVICES $!"
for _ in $(seq 50); do curl -s -o /dev/null "http://$PROD:8080/" && curl -s -o /dev/null "http://$PROD:9090/" && break; sleep 0.1; done
echo "services: http://$PROD:8080 (allowed by policy), http://$PROD:9090 (not in policy)"

cat > "$LAB/policy.yaml" <<POLICY
version: 1
dns:
  resolvers: [$PROD]
targets:
  - name: internal-api
    match: {addresses: [$PROD], ports: [8080]}
    protocol: tcp
POLICY
cat > "$LAB/enforcer.yaml" <<CONFIG
policy: policy.yaml
state_dir: state
socket: $ENFORCER_SOCKET
bpf_pin_dir: /sys/fs/bpf/enforcer-lab
cgroup: enforcer-lab.slice
nft_table: enforcer_lab
proxy_port: 700
metrics: 127.0.0.1:9464
CONFIG
say "policy ($LAB/policy.yaml)"; cat "$LAB/policy.yaml"

say "starting the daemon"
"$ENF" daemon --config "$LAB/enforcer.yaml" 2>"$LAB/daemon.log" & DAEMON=$!
for _ in $(seq 100); do [ -S "$ENFORCER_SOCKET" ] && break; sleep 0.1; done
[ -S "$ENFORCER_SOCKET" ] || { cat "$LAB/daemon.log"; exit 1; }

say "agent: allowed service, through the proxy"
agent curl -sS --max-time 5 "http://$PROD:8080/"
say "agent: a service the policy does not name (refused by the proxy)"
agent curl -sS --max-time 5 "http://$PROD:9090/" || echo "-> refused (curl exit $?)"
say "agent: UDP that is not DNS to the named resolver (refused by the kernel)"
agent python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('$PROD', 9999))" 2>&1 | tail -1 || true
say "outside enforcement, the same host is reachable directly (for comparison)"
curl -sS --max-time 5 "http://$PROD:9090/"

say "enforcer status"
"$ENF" status
say "daemon log"
cat "$LAB/daemon.log"
say "done; cleaning up"
OK=1
