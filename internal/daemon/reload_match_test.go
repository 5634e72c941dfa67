package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// TestReloadEndsConnectionsWhoseMatchOrUpstreamItChanged: a reload ends a connection matched by
// its ClientHello whose name, port or precedence the new policy no longer gives that target, and
// a connection whose target now logs in or relays otherwise (another upstream user or address);
// it leaves alone those it changes nothing for.
func TestReloadEndsConnectionsWhoseMatchOrUpstreamItChanged(t *testing.T) {
	const base = `version: 1
targets:
  - name: db
    match: {addresses: ["198.18.1.2"], ports: [5432]}
    protocol: postgres
    upstream: {user: agent_rw, password_file: /dev/null}
  - name: llm
    match: {sni: ["*.openai.com", "*.anthropic.com"], ports: [443, 8443]}
    protocol: tls-passthrough
grants:
  - {groups: [eng], targets: [db, llm]}
masking: {disabled: true}
`
	const other = `  - name: other
    match: {addresses: ["198.18.0.0/15"], ports: [443]}
    protocol: tcp
`
	parse := func(t *testing.T, text string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse("p.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	conn := func(p *policy.Policy, target, dst, sni string) *proxy.Conn {
		i := 0
		for i < len(p.Targets) && p.Targets[i].Name != target {
			i++
		}
		c := &proxy.Conn{
			Target:   p.Targets[i],
			Origin:   redirect.Origin{Dst: netip.MustParseAddrPort(dst)},
			Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}},
			SNI:      sni,
		}
		if sni != "" {
			c.Peeked = []byte{0x16}
		}
		return c
	}
	baseWithOther := strings.Replace(base, "grants:", other+"grants:\n  - {groups: [eng], targets: [other]}", 1)
	old := parse(t, base)
	anthropic := conn(old, "llm", "198.18.5.5:443", "api.anthropic.com")
	alt := conn(old, "llm", "198.18.5.5:8443", "api.openai.com")
	db := conn(old, "db", "198.18.1.2:5432", "")
	for _, c := range []struct {
		name    string
		new     string
		conn    *proxy.Conn
		revoked bool
	}{
		{"nothing changed, by name", base, anthropic, false},
		{"nothing changed, db", base, db, false},
		{"name taken off the target", strings.Replace(base, `, "*.anthropic.com"`, "", 1), anthropic, true},
		{"another name taken off", strings.Replace(base, `"*.openai.com", `, "", 1), anthropic, false},
		{"port taken off the target", strings.Replace(base, "443, 8443", "443", 1), alt, true},
		{"an address target now takes it first", baseWithOther, anthropic, true},
		{"upstream user changed", strings.Replace(base, "agent_rw", "agent_ro", 1), db, true},
		{"upstream address set", strings.Replace(base, "user: agent_rw", "address: \"198.18.1.7:5432\", user: agent_rw", 1), db, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := revokedBy(old, parse(t, c.new), c.conn); got != c.revoked {
				t.Errorf("revoked %v, want %v", got, c.revoked)
			}
		})
	}
}
