package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// TestRevokedByReload: a reload ends exactly the live connections it takes something from (the
// target, the grant, or masking as the session had it), and leaves the others alone.
func TestRevokedByReload(t *testing.T) {
	const base = `version: 1
targets:
  - name: db
    match: {addresses: ["198.18.1.2"], ports: [5432]}
    protocol: postgres
    upstream: {user: agent, password_file: /dev/null}
  - name: api
    match: {addresses: ["198.18.1.3"], ports: [80]}
    protocol: tcp
grants:
  - {groups: [eng], targets: [db, api]}
`
	old := parsePolicy(t, base+"masking: {disabled: true}\n")
	db, api := aliceConn(old, "db", "198.18.1.2:5432", ""), aliceConn(old, "api", "198.18.1.3:80", "")
	for _, c := range []struct {
		name     string
		old, new string
		conn     *proxy.Conn
		revoked  bool
	}{
		{"nothing changed", base + "masking: {disabled: true}\n", base + "masking: {disabled: true}\n", db, false},
		{"grant taken away", base + "masking: {disabled: true}\n", strings.Replace(base, "targets: [db, api]}", "targets: [db]}", 1) + "masking: {disabled: true}\n", api, true},
		{"grant of another target taken away", base + "masking: {disabled: true}\n", strings.Replace(base, "targets: [db, api]}", "targets: [db]}", 1) + "masking: {disabled: true}\n", db, false},
		{"target moved elsewhere", base, strings.Replace(base, "198.18.1.2", "198.18.1.9", 1) + "masking: {disabled: true}\n", db, true},
		{"masking turned on", base + "masking: {disabled: true}\n", base, db, true},
		{"a column rule added", base, base + "masking: {columns: [{match: \"customers.email\", style: redact}]}\n", db, true},
		{"masking turned on, relay", base + "masking: {disabled: true}\n", base, api, false},
		{"masking turned off", base, base + "masking: {disabled: true}\n", db, false},
		{"person exempted", base, base + "masking: {exempt_groups: [eng]}\n", db, false},
		{"same masking, rules changed", base, base + "rules: [{name: r, when: 'sql.writes', action: block}]\n", db, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := revokedBy(parsePolicy(t, c.old), parsePolicy(t, c.new), c.conn); got != c.revoked {
				t.Errorf("revoked %v, want %v", got, c.revoked)
			}
		})
	}
}

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
	baseWithOther := strings.Replace(base, "grants:", other+"grants:\n  - {groups: [eng], targets: [other]}", 1)
	old := parsePolicy(t, base)
	anthropic := aliceConn(old, "llm", "198.18.5.5:443", "api.anthropic.com")
	alt := aliceConn(old, "llm", "198.18.5.5:8443", "api.openai.com")
	db := aliceConn(old, "db", "198.18.1.2:5432", "")
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
			if got := revokedBy(old, parsePolicy(t, c.new), c.conn); got != c.revoked {
				t.Errorf("revoked %v, want %v", got, c.revoked)
			}
		})
	}
}

// parsePolicy parses a policy text for a test.
func parsePolicy(t *testing.T, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("p.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// aliceConn is a live connection of alice (group eng) to target of p at dst, matched by its
// ClientHello's name sni if that is not "".
func aliceConn(p *policy.Policy, target, dst, sni string) *proxy.Conn {
	i := slices.IndexFunc(p.Targets, func(t *policy.Target) bool { return t.Name == target })
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
