package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPostgresClientsThroughRedirect runs real clients through the kernel redirect and the
// proxy with every statement allowed: pgbench in all three protocol modes, psql meta-commands,
// COPY both ways and Ctrl-C cancel. Results must match a direct connection byte for byte.
func TestPostgresClientsThroughRedirect(t *testing.T) {
	e := newEnv(t, "bpf")
	pg, _, dsn := e.addPostgres()
	pg.Exec(t, `GRANT CREATE ON SCHEMA public TO agent_ro`)
	direct := pg.DSN("agent_ro", "postgres")

	// pgbench: initialise through the enforcer, then run each protocol mode.
	if out, code := e.run("pgbench", "-i", "-s", "1", "-q", dsn); code != 0 {
		t.Fatalf("pgbench -i: %s", out)
	}
	for _, mode := range []string{"simple", "extended", "prepared"} {
		out, code := e.run("pgbench", "-n", "-T", "2", "-c", "2", "-M", mode, dsn)
		if code != 0 || !strings.Contains(out, "number of failed transactions: 0") {
			t.Errorf("pgbench -M %s: exit %d\n%s", mode, code, out)
		}
	}

	// psql output, enforced vs direct.
	queries := []string{
		`\d pgbench_accounts`,
		`select aid, bid, abalance, filler from pgbench_accounts order by aid limit 200`,
		`select 1/0`,
		`select 'a'::text as x, null::int as y, 1.5::numeric as z, now() > '2000-01-01' as w`,
	}
	for _, q := range queries {
		enf, _ := e.run("psql", dsn, "-X", "-c", q)
		dir, _ := exec.Command("psql", direct, "-X", "-c", q).CombinedOutput()
		if enf != string(dir) {
			t.Errorf("%s: enforced output differs from direct\nenforced:\n%s\ndirect:\n%s", q, enf, dir)
		}
	}

	// COPY out and in through psql.
	csv := filepath.Join(e.dir, "accounts.csv")
	if out, code := e.run("psql", dsn, "-X", "-c", fmt.Sprintf(`\copy (select * from pgbench_accounts where aid <= 1000) to '%s' csv`, csv)); code != 0 {
		t.Fatalf("copy out: %s", out)
	}
	if b, _ := os.ReadFile(csv); strings.Count(string(b), "\n") != 1000 {
		t.Fatalf("copy out wrote %d lines", strings.Count(string(b), "\n"))
	}
	if out, code := e.run("psql", dsn, "-X", "-c", `create table copy_in (like pgbench_accounts)`, "-c", fmt.Sprintf(`\copy copy_in from '%s' csv`, csv)); code != 0 || !strings.Contains(out, "COPY 1000") {
		t.Fatalf("copy in: %s", out)
	}

	// pgx: pipelined queries and COPY both ways over the extended protocol.
	if got := e.pgxAgent(dsn, "@pipeline"); got != "ok 2450" {
		t.Errorf("pgx pipeline: %q", got)
	}
	pg.Exec(t, "CREATE TABLE pgx_copy (n int, s text); GRANT ALL ON pgx_copy TO agent_ro")
	if got := e.pgxAgent(dsn, "@copy", "pgx_copy"); got != "ok 1000 1000 1000" {
		t.Errorf("pgx copy: %q", got)
	}

	// Settings that would make the classifier read SQL differently from the server end the
	// session: a multibyte client encoding that can hide quotes, standard_conforming_strings off.
	out, _ := e.run("env", "PGCLIENTENCODING=SJIS", "psql", dsn, "-XAtc", "select 1")
	if !strings.Contains(out, "client_encoding=SJIS") {
		t.Errorf("SJIS client: %q", out)
	}
	// Such a SET is unclassifiable, so even `default: allow` blocks it; with a rule that allows
	// everything it reaches the server, whose ParameterStatus then ends the session.
	out, _ = e.run("psql", dsn, "-Xc", "SET standard_conforming_strings = off")
	if !strings.Contains(out, "unknown") {
		t.Errorf("scs off under default allow: %q", out)
	}
	e.tailYAML = "default: allow\nrules:\n  - {name: anything-goes, when: 'true', action: allow}\n"
	e.setPolicy()
	out, _ = e.run("psql", dsn, "-Xc", "SET standard_conforming_strings = off", "-c", "select 1")
	if !strings.Contains(out, "changed a setting the enforcer relies on") || strings.Contains(out, "(1 row)") {
		t.Errorf("scs off allowed by a rule: %q", out)
	}
	e.tailYAML = "default: allow\n"
	e.setPolicy()

	// Ctrl-C: psql sends a CancelRequest on a new connection, which is redirected too; the proxy
	// maps its key to the server's and the sleep ends at once.
	start := time.Now()
	out, _ = e.run("sh", "-c", fmt.Sprintf(`psql %q -X -c "select pg_sleep(30)" & p=$!; sleep 1; kill -INT $p; wait $p`, dsn))
	if time.Since(start) > 10*time.Second || !strings.Contains(out, "canceling statement due to user request") {
		t.Errorf("cancel took %v: %q", time.Since(start), out)
	}
}
