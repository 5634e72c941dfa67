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
	parse := func(t *testing.T, text string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse("p.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := parse(t, base+"masking: {disabled: true}\n")
	conn := func(p *policy.Policy, target, dst string) *proxy.Conn {
		i := 0
		for i < len(p.Targets) && p.Targets[i].Name != target {
			i++
		}
		return &proxy.Conn{
			Target:   p.Targets[i],
			Origin:   redirect.Origin{Dst: netip.MustParseAddrPort(dst)},
			Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}},
		}
	}
	db, api := conn(old, "db", "198.18.1.2:5432"), conn(old, "api", "198.18.1.3:80")
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
			if got := revokedBy(parse(t, c.old), parse(t, c.new), c.conn); got != c.revoked {
				t.Errorf("revoked %v, want %v", got, c.revoked)
			}
		})
	}
}
