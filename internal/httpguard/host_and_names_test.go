package httpguard

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
)

const hostRulesPolicy = `version: 1
targets:
  - name: api
    match: {addresses: [198.18.0.2], ports: [8080]}
    protocol: http
grants:
  - {groups: [eng], targets: [api]}
rules:
  - {name: no-bare-address, when: 'http.host == "198.18.0.2"', action: block, message: the default virtual host is the admin console}
  - {name: no-prod-tenant, when: '"x-tenant" in http.headers && http.headers["x-tenant"] == "prod"', action: block}
`

// hostGuard is alice's guard on the policy's target reached at 198.18.0.2:8080, with sent the
// Host the daemon pins ("" when the agent's is forwarded); nothing is recorded.
func hostGuard(t *testing.T, pol *policy.Policy, sent string) *Guard {
	t.Helper()
	sh := &Shared{Policy: func() *policy.Policy { return pol }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}},
		Upstream: "198.18.0.2:8080", Host: sent})
}

// TestHostlessRequestJudgedByTheHostSent: an HTTP/1.0 request without Host, on a target that
// forwards the agent's Host, reaches the service with the upstream's address as its Host
// (net/http's Transport puts it there; TestHostlessRequestReachesUpstreamWithItsAddress in
// internal/proto/http). Rules must judge that Host, not an empty one: a rule keeping agents off
// the virtual host a bare address selects would otherwise pass it.
func TestHostlessRequestJudgedByTheHostSent(t *testing.T) {
	pol := parsePolicy(t, hostRulesPolicy)
	for _, c := range []struct {
		name       string
		pinned     string
		clientHost string
		allow      bool
	}{
		{"no Host, the agent's forwarded", "", "", false},
		{"the address as Host", "", "198.18.0.2:8080", false},
		{"a name as Host", "", "api.internal", true},
		{"no Host, a Host pinned", "api.internal", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := hostGuard(t, pol, c.pinned)
			r := request("GET", "/v1/orders", "")
			r.Host = c.clientHost
			if v := g.Request(context.Background(), r); v.Allow != c.allow {
				t.Errorf("allowed %v, want %v (%s)", v.Allow, c.allow, v.Message)
			}
		})
	}
}

// TestUnderscoreHeaderMeetsBlockRules: the proxy hands the guard "X_Tenant" as sent (canonical
// "X_tenant"); Puma and PHP services read it as X-Tenant, so a block rule on x-tenant applies.
func TestUnderscoreHeaderMeetsBlockRules(t *testing.T) {
	g := hostGuard(t, parsePolicy(t, hostRulesPolicy), "api.internal")
	for _, name := range []string{"X-Tenant", "X_tenant", "X_Tenant"} {
		if v := g.Request(context.Background(), request("GET", "/v1/orders", "", name, "prod")); v.Allow || v.Status != 403 {
			t.Errorf("%s: prod: allowed %v status %d, want 403", name, v.Allow, v.Status)
		}
		if v := g.Request(context.Background(), request("GET", "/v1/orders", "", name, "eu")); !v.Allow {
			t.Errorf("%s: eu: refused (%s)", name, v.Message)
		}
	}
}
