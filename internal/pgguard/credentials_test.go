package pgguard

// Credentials a statement gives in SQL's own syntax (ALTER ROLE … PASSWORD '…', a user
// mapping's password option) are shown nowhere: not in the session log (whether the statement
// runs or not), not to reviewers, not in the daemon's log (from a review, 2026-12-07).

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// credentialStatement is a statement giving a credential; secret is a part of it that must not
// be shown.
type credentialStatement struct {
	kind   postgres.Kind
	sql    string
	secret string
}

var credentialStatements = []credentialStatement{
	{postgres.KindQuery, `ALTER ROLE app PASSWORD 'Tr0ub4dor&3horse'`, "Tr0ub4dor"},
	{postgres.KindQuery, `CREATE USER bob WITH ENCRYPTED PASSWORD E'Kx9-pl0ugh\'mare' LOGIN`, "pl0ugh"},
	{postgres.KindQuery, `CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'rep', password 'Wq7-lantern-fig')`, "lantern"},
	{postgres.KindQuery, `ALTER USER MAPPING FOR app SERVER remote OPTIONS (SET password /* rotated */ $$Vb2-harbor-kiln$$)`, "harbor"},
	{postgres.KindQuery, `ALTER SERVER remote OPTIONS (ADD "sslpassword" U&'Rt6-\0063edar-moth')`, "edar-moth"},
	// psql's \password sends the SCRAM verifier, as good as the password for cracking offline.
	{postgres.KindQuery, `ALTER ROLE app PASSWORD 'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5MTI=:c2VydmVya2V5c2VydmVya2V5c2VydmVya2V5MTI='`, "c3RvcmVka2V5"},
	{postgres.KindQuery, "select 1;\nALTER USER app PASSWORD 'Mn5-cobalt-reef'", "cobalt"},
	// A statement that does not parse is recorded too.
	{postgres.KindQuery, `ALTER ROLE app PASSWORD 'Jd8-unparsed-gale' LOGN`, "unparsed"},
	{postgres.KindQuery, `ALTER ROLE app PASSWORD 'Pq1-unterminated-dune`, "unterminated"},
	// The extended protocol: Parse, then Execute.
	{postgres.KindParse, `ALTER ROLE app PASSWORD 'Ht3-parsed-wren'`, "parsed-wren"},
	{postgres.KindExecute, `ALTER ROLE app PASSWORD 'Ht3-parsed-wren'`, "parsed-wren"},
}

// TestCredentialsNotShown: under every masking configuration (off, exempt, other styles,
// another label), a statement's credential is in neither the session log nor the daemon's
// log, allowed or blocked.
func TestCredentialsNotShown(t *testing.T) {
	dblink := credentialStatement{postgres.KindQuery, `SELECT dblink_connect('host=db.internal dbname=prod user=admin password=Zr4-quartz-oven')`, "quartz"}
	for _, c := range []struct {
		name, policy, target string
		groups               []string
		label                string
		stmts                []credentialStatement
	}{
		// Every detector, the rules blocking these statements; dblink's connection string is the
		// generic_secret detector's.
		{"shipped policy", "", "prod-db", []string{"engineering"}, "[REDACTED:generic_secret]", append([]credentialStatement{dblink}, credentialStatements...)},
		{"masking off", allowAllPolicy + "masking: {disabled: true}\n", "db", []string{"eng"}, "[REDACTED:generic_secret]", credentialStatements},
		{"exempt group", allowAllPolicy + "masking: {exempt_groups: [eng]}\n", "db", []string{"eng"}, "[REDACTED:generic_secret]", credentialStatements},
		{"column rules", secretRule, "db", []string{"eng"}, "", credentialStatements},
		{"secrets partly shown", allowAllPolicy + "masking: {detectors: [{detectors: [all], style: partial}]}\n", "db", []string{"eng"}, "[REDACTED:generic_secret]", credentialStatements},
		{"another label", allowAllPolicy + "masking: {redact_format: '<{kind} withheld>'}\n", "db", []string{"eng"}, "<generic_secret withheld>", credentialStatements},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := c.policy
			if text == "" {
				text = shippedPolicyText(t)
			}
			pol := parsePolicy(t, text)
			var target *policy.Target
			for _, tg := range pol.Targets {
				if tg.Name == c.target {
					target = tg
				}
			}
			dir := t.TempDir()
			rec, err := record.Open(record.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			sh := testShared(func() *policy.Policy { return pol }, rec)
			var daemonLog lockedBuffer
			sh.Log = slog.New(slog.NewTextHandler(&daemonLog, nil))
			// The agent's command line carries a statement too (psql -c "ALTER ROLE …").
			argv := []string{"psql", "-X", "-c", c.stmts[len(c.stmts)-1].sql}
			g := sh.NewGuard(ConnInfo{ID: "1", Target: target, Identity: identity.Session{Subject: "alice", Groups: c.groups},
				Exe: "/usr/bin/psql", Argv: argv, Cmdline: strings.Join(argv, " ")})
			ctx := context.Background()
			for i, s := range c.stmts {
				st := postgres.Statement{ID: uint64(i + 1), Kind: s.kind, SQL: s.sql, Known: true}
				g.Statement(ctx, &st)
			}
			g.End("done", 0, 0)
			replay := replayText(t, closeAndLoad(t, rec, dir, g.SessionID()))
			files := filesUnder(t, dir)
			for _, s := range c.stmts {
				for where, text := range map[string]string{"the session log": replay, "the session log's files": files, "the daemon's log": daemonLog.String()} {
					if strings.Contains(text, s.secret) {
						t.Errorf("%s shows the credential of %s", where, s.sql)
					}
				}
			}
			if c.label != "" && !strings.Contains(replay, "PASSWORD '"+c.label+"'") {
				t.Errorf("the session log does not show the label %q for a password:\n%s", c.label, replay)
			}
			if t.Failed() {
				t.Logf("the session log:\n%s\nthe daemon's log:\n%s", replay, daemonLog.String())
			}
		})
	}
}

// filesUnder returns the contents of every file under dir, joined.
func filesUnder(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		b.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestCredentialsThroughTheProxy: with a real server behind the proxy, statements setting a
// role's password and a user mapping's are held for review and approved. The server gets the
// password as sent (the role logs in with it), while the session log, the approval requests and
// the daemon's log show none.
func TestCredentialsThroughTheProxy(t *testing.T) {
	var mu sync.Mutex
	var requests []string
	var broker *approval.Broker
	broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: 10 * time.Second, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type != approval.EventCreated || e.Request == nil {
				return
			}
			mu.Lock()
			requests = append(requests, e.Request.SQL)
			mu.Unlock()
			go broker.Approve(context.Background(), e.Request.ID, approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}, "")
		}})
	pol := strings.Replace(allowAllPolicy, "rules:\n", "rules:\n  - {name: review-privileges, when: 'sql.privilege || sql.unsafe_io', action: approve, approvers: [ops]}\n", 1)
	p := startGuardedProxyWith(t, pol, func(sh *Shared) { sh.Approvals = broker })
	p.db.Exec(t, "create role app login; create role app2 login; create foreign data wrapper w; create server remote foreign data wrapper w")
	c := p.connect(t)
	for _, sql := range []string{
		"ALTER ROLE app PASSWORD 'Tr0ub4dor&3horse'",
		"CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'rep', password 'Wq7-lantern-fig')",
		"ALTER USER MAPPING FOR app SERVER remote OPTIONS (SET password E'Vb2-harbor\\'kiln'); ALTER SERVER remote OPTIONS (ADD password 'Rt6-cedar-moth')",
	} {
		if _, err := c.Exec(context.Background(), sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// The extended protocol: Parse, Bind, Execute.
	if res := c.ExecParams(context.Background(), "ALTER ROLE app2 PASSWORD 'Jd8-extended-gale'", nil, nil, nil, nil).Read(); res.Err != nil {
		t.Fatal(res.Err)
	}
	c.Close(context.Background())
	records := p.session(t)

	for role, password := range map[string]string{"app": "Tr0ub4dor&3horse", "app2": "Jd8-extended-gale"} {
		login, err := pgconn.Connect(context.Background(), p.db.DSN(pgtest.SuperUser, "postgres", "user="+role, "password="+password))
		if err != nil {
			t.Fatalf("the server did not get %s's password as sent: %v", role, err)
		}
		login.Close(context.Background())
	}
	if got := p.direct(t, "select array_to_string(umoptions, ',') from pg_user_mappings where srvname = 'remote'"); got != "user=rep,password=Vb2-harbor'kiln" {
		t.Errorf("the server holds the user mapping's options as %q", got)
	}

	replay := replayText(t, records)
	mu.Lock()
	shownToReviewers := strings.Join(requests, "\n")
	mu.Unlock()
	if len(requests) != 4 {
		t.Errorf("%d approval requests, want 4:\n%s", len(requests), shownToReviewers)
	}
	for where, text := range map[string]string{"the session log": replay, "the session log's files": filesUnder(t, p.dir),
		"the approval requests": shownToReviewers, "the daemon's log": p.log.String()} {
		for _, secret := range []string{"Tr0ub4dor", "lantern", "harbor", "cedar", "extended-gale"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %q:\n%s", where, secret, text)
			}
		}
	}
	if !strings.Contains(shownToReviewers, "ALTER ROLE app PASSWORD '[REDACTED:generic_secret]'") ||
		!strings.Contains(replay, "ALTER ROLE app2 PASSWORD '[REDACTED:generic_secret]'") {
		t.Errorf("reviewers were shown:\n%s\nthe session log:\n%s", shownToReviewers, replay)
	}
}
