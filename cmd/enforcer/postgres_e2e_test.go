package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// TestPsqlWithoutPassword: an enforced psql with no password reaches the real server as the
// target's own user; the password never appears in anything the client receives.
func TestPsqlWithoutPassword(t *testing.T) {
	e := newEnv(t, "bpf")
	pg := pgtest.Start(t, pgtest.WithNetns(e.ns))
	ctx := t.Context()
	pw, err := pg.CreateUser(ctx, "agent_ro", false)
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(e.dir, "prod-db.secret")
	if err := os.WriteFile(secret, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(fmt.Sprintf(`  - name: prod-db
    match: {addresses: ["%s"], ports: [5432]}
    protocol: postgres
    upstream: {user: agent_ro, password_file: %s, tls: verify-full, ca_file: %s}
`, e.ns.PeerAddr, secret, pg.CAFile))

	dsn := fmt.Sprintf("host=%s port=5432 dbname=postgres user=whoever sslmode=disable", e.ns.PeerAddr)
	out, code := e.run("psql", dsn, "-XAtc", "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()")
	if code != 0 || strings.TrimSpace(out) != "agent_ro|t" {
		t.Fatalf("psql through the enforcer: exit %d, %q", code, out)
	}
	if strings.Contains(out, pw) {
		t.Fatal("password reached the client")
	}

	// A secret file others can read is refused with a message naming the problem's owner.
	os.Chmod(secret, 0o644)
	out, code = e.run("psql", dsn, "-XAtc", "select 1")
	if code == 0 || !strings.Contains(out, "cannot read the credential") {
		t.Fatalf("world-readable secret: exit %d, %q", code, out)
	}
}
