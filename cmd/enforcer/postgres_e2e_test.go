package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// addPostgres starts a real PostgreSQL in the env's "prod" namespace and adds target prod-db,
// reached as agent_ro with a password only the daemon can read. It returns the server, the
// password and a DSN an agent uses (no password, any user name).
func (e *env) addPostgres() (*pgtest.Server, string, string) {
	e.t.Helper()
	pg := pgtest.Start(e.t, pgtest.WithNetns(e.ns))
	pw, err := pg.CreateUser(e.t.Context(), "agent_ro", false)
	if err != nil {
		e.t.Fatal(err)
	}
	secret := filepath.Join(e.dir, "prod-db.secret")
	if err := os.WriteFile(secret, []byte(pw+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.targetsYAML = fmt.Sprintf(`  - name: prod-db
    match: {addresses: ["%s"], ports: [5432]}
    protocol: postgres
    upstream: {user: agent_ro, password_file: %s, tls: verify-full, ca_file: %s}
`, e.ns.PeerAddr, secret, pg.CAFile)
	// Tests of the proxy itself run with every statement allowed; policy tests set their rules.
	e.tailYAML = "default: allow\n"
	e.setPolicy()
	return pg, pw, fmt.Sprintf("host=%s port=5432 dbname=postgres user=whoever sslmode=disable", e.ns.PeerAddr)
}

// TestPsqlWithoutPassword: an enforced psql with no password reaches the real server as the
// target's own user; the password never appears in anything the client receives.
func TestPsqlWithoutPassword(t *testing.T) {
	e := newEnv(t, "bpf")
	_, pw, dsn := e.addPostgres()
	out, code := e.run("psql", dsn, "-XAtc", "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()")
	if code != 0 || strings.TrimSpace(out) != "agent_ro|t" {
		t.Fatalf("psql through the enforcer: exit %d, %q", code, out)
	}
	if strings.Contains(out, pw) {
		t.Fatal("password reached the client")
	}

	// A secret file others can read is refused with a message naming the problem's owner.
	os.Chmod(filepath.Join(e.dir, "prod-db.secret"), 0o644)
	out, code = e.run("psql", dsn, "-XAtc", "select 1")
	if code == 0 || !strings.Contains(out, "cannot read the credential") {
		t.Fatalf("world-readable secret: exit %d, %q", code, out)
	}
}

// TestClientTLSOnTheLoopbackHop: with postgres_client_tls configured, a client that insists on
// TLS (sslmode=require) gets it from the proxy; without it the proxy answers 'N'.
func TestClientTLSOnTheLoopbackHop(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedPEM(t, "enforcer.local")
	certFile, keyFile := filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o600)
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {kind: local}\npostgres_client_tls: {cert_file: %s, key_file: %s}\n", certFile, keyFile))
	e.login()
	_, _, dsn := e.addPostgres()
	tlsDSN := strings.Replace(dsn, "sslmode=disable", "sslmode=require", 1)
	out, code := e.run("psql", tlsDSN, "-XAtc", "select current_user")
	if code != 0 || strings.TrimSpace(out) != "agent_ro" {
		t.Fatalf("psql sslmode=require: %d %q", code, out)
	}
}

func selfSignedPEM(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	c := selfSigned(t, name)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return certPEM, keyPEM
}
