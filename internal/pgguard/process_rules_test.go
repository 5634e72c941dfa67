package pgguard

import (
	"context"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// TestRulesSeeTheProcess: rules on process.exe, comm and uid see the connecting process. The
// guard gave the rules everything but the executable, so `process.exe` was "" in the daemon
// (only `enforcer policy explain --exe` filled it): a rule allowing one client by its path
// allowed nothing, and one blocking a client by its path blocked nothing.
func TestRulesSeeTheProcess(t *testing.T) {
	pol := parsePolicy(t, `
version: 1
targets:
  - name: db
    match: {addresses: ["198.18.0.2"], ports: [5432]}
    protocol: postgres
    upstream: {user: agent, password_env: PW}
grants: [{groups: [eng], targets: [db]}]
rules:
  - {name: no-psql, when: 'process.exe == "/usr/bin/psql"', action: block}
  - {name: no-root, when: 'process.uid == 0', action: block}
  - {name: no-agent-comm, when: 'process.comm == "evil"', action: block}
`)
	cases := []struct {
		name   string
		exe    string
		comm   string
		uid    uint32
		refuse bool
	}{
		{"psql by path", "/usr/bin/psql", "psql", 1000, true},
		{"another client", "/usr/bin/pgcli", "pgcli", 1000, false},
		{"root", "/usr/bin/pgcli", "pgcli", 0, true},
		{"comm", "/opt/x", "evil", 1000, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := testShared(func() *policy.Policy { return pol }, nil).NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0],
				Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}},
				Origin:   redirect.Origin{Comm: c.comm, UID: c.uid}, Exe: c.exe})
			v := g.Statement(context.Background(), &postgres.Statement{Kind: postgres.KindQuery, SQL: "select 1"})
			if got := v.Action == postgres.Refuse; got != c.refuse {
				t.Errorf("refused %v, want %v (%+v)", got, c.refuse, v.Error)
			}
		})
	}
}
