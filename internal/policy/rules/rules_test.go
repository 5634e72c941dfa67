package rules

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// agentRules is a policy like the one shipped for agents on production.
var agentRules = []Rule{
	{Name: "no-destructive-ddl", When: `sql.kind in ["DROP", "TRUNCATE"]`, Action: "block",
		Message: "DROP and TRUNCATE are not allowed on production", Line: 10},
	{Name: "no-unsafe-io", When: `sql.unsafe_io || sql.privilege || sql.procedural`, Action: "block",
		Message: "server files, programs, roles and procedural code are off limits", Line: 11},
	{Name: "no-unbounded-writes", When: `sql.writes && sql.kinds.exists(k, k in ["UPDATE", "DELETE", "MERGE"]) && (!sql.has_where || sql.where_is_constant)`,
		Action: "block", Message: "UPDATE/DELETE need a WHERE clause that selects rows", Line: 12},
	{Name: "writes-need-review", When: `sql.writes`, Action: "approve", Approvers: []string{"dba"},
		Message: "writes are reviewed by a DBA", Line: 13},
	{Name: "engineers-read", When: `"engineering" in identity.groups && sql.read_only`, Action: "allow", Line: 14},
	{Name: "pii-tables", When: `sets.intersects(sql.tables, ["users", "payments"]) && !("privacy" in identity.groups)`,
		Action: "approve", Approvers: []string{"privacy"}, Message: "personal data needs a privacy review", Line: 15},
}

func mustCompile(t testing.TB, rules []Rule, def Default) *Engine {
	t.Helper()
	e, err := Compile(rules, def)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var alice = NewConn(
	Identity{Subject: "alice", Email: "alice@example.com", Groups: []string{"engineering"}, Provider: "https://idp"},
	Process{Comm: "cursor", Exe: "/usr/bin/cursor", PID: 4242, UID: 1000},
	Target{Name: "prod-db", Protocol: "postgres", Database: "app", User: "agent_ro"},
)

func TestStrictestWins(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	for _, c := range []struct {
		sql     string
		verdict Action
		rule    string // "" = default decided
		matched []string
	}{
		{"SELECT * FROM orders WHERE id = 1", Allow, "engineers-read", []string{"engineers-read"}},
		{"SELECT * FROM users WHERE id = 1", Approve, "pii-tables", []string{"engineers-read", "pii-tables"}},
		{"DROP TABLE orders", Block, "no-destructive-ddl", []string{"no-destructive-ddl", "writes-need-review"}},
		{"DELETE FROM orders", Block, "no-unbounded-writes", []string{"no-unbounded-writes", "writes-need-review"}},
		{"DELETE FROM orders WHERE 1=1", Block, "no-unbounded-writes", nil},
		{"DELETE FROM orders WHERE id = 7", Approve, "writes-need-review", []string{"writes-need-review"}},
		{"WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", Block, "no-unbounded-writes", nil},
		{"EXPLAIN ANALYZE DELETE FROM orders", Block, "no-unbounded-writes", nil},
		{"EXPLAIN DELETE FROM orders", Allow, "engineers-read", nil},
		{"COPY (DELETE FROM orders RETURNING *) TO STDOUT", Block, "no-unbounded-writes", nil},
		{"SELECT pg_read_file('/etc/passwd')", Block, "no-unsafe-io", nil},
		{"SET ROLE postgres", Block, "no-unsafe-io", nil},
		{"DO $$ BEGIN DELETE FROM orders; END $$", Block, "no-unsafe-io", nil},
		{"DELETE FROM users WHERE id = 1", Approve, "writes-need-review", []string{"writes-need-review", "pii-tables"}},
		{"SELECT nextval('s')", Approve, "writes-need-review", nil},
		{"SET search_path = evil", Block, "", nil},
		{"BEGIN", Allow, "", nil},
		{"DELETE FROM", Block, "", nil},
	} {
		t.Run(c.sql, func(t *testing.T) {
			d := e.Decide(alice, sqlclass.Classify(c.sql), nil)
			if d.Verdict != c.verdict {
				t.Errorf("verdict %s, want %s\n%s", d.Verdict, c.verdict, Explain(&d))
			}
			got := ""
			if d.Rule != nil {
				got = d.Rule.Rule
			}
			if got != c.rule {
				t.Errorf("decided by %q, want %q", got, c.rule)
			}
			if c.matched != nil {
				var names []string
				for _, m := range d.Matches() {
					names = append(names, m.Rule)
				}
				if strings.Join(names, ",") != strings.Join(c.matched, ",") {
					t.Errorf("matched %v, want %v", names, c.matched)
				}
			}
			if d.Verdict != Allow && d.Message == "" {
				t.Errorf("no message for a %s", d.Verdict)
			}
		})
	}
}

func TestWinningRuleCarriesMessageAndApprovers(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	d := e.Decide(alice, sqlclass.Classify("UPDATE orders SET x = 1 WHERE id = 2"), nil)
	if d.Verdict != Approve || d.Rule == nil || d.Rule.Rule != "writes-need-review" {
		t.Fatalf("got %s by %+v", d.Verdict, d.Rule)
	}
	if d.Message != "writes are reviewed by a DBA" || len(d.Rule.Approvers) != 1 || d.Rule.Approvers[0] != "dba" || d.Rule.Line != 13 {
		t.Fatalf("winning rule %+v, message %q", d.Rule, d.Message)
	}
}

func TestDefaults(t *testing.T) {
	for _, c := range []struct {
		def     Default
		sql     string
		verdict Action
	}{
		{DefaultAllowReads, "SELECT * FROM t", Allow},
		{DefaultAllowReads, "SHOW search_path", Allow},
		{DefaultAllowReads, "BEGIN", Allow},
		{DefaultAllowReads, "COMMIT", Allow},
		{DefaultAllowReads, "EXPLAIN DELETE FROM t", Allow},
		{DefaultAllowReads, "DELETE FROM t WHERE id = 1", Block},
		{DefaultAllowReads, "SELECT nextval('s')", Block},
		{DefaultAllowReads, "SET search_path = x", Block},
		// Must hold: row locks are not reads.
		{DefaultAllowReads, "SELECT * FROM t FOR UPDATE", Block},
		{DefaultAllowReads, "SELECT * FROM t WHERE id = 1 FOR KEY SHARE", Block},
		{DefaultAllowReads, "SELECT * FROM pg_settings", Allow},
		{DefaultAllowReads, "UPDATE pg_settings SET setting = 'x' WHERE name = 'role'", Block},
		// Must hold: default allow still refuses a write to pg_settings (unknown: it may turn
		// standard_conforming_strings off, after which the proxy reads text unlike the server).
		{DefaultAllow, "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", Block},
		{DefaultAllowReads, "CREATE TABLE x (a int)", Block},
		{DefaultAllowReads, "VACUUM", Block},
		{DefaultAllowReads, "SELEC 1", Block},
		{DefaultAllow, "DELETE FROM t", Allow},
		{DefaultAllow, "DROP TABLE t", Allow},
		{DefaultAllow, "SELEC 1", Block},
		{DefaultBlock, "SELECT 1", Block},
		{DefaultBlock, "BEGIN", Block},
		{"", "SELECT 1", Allow},
		{"", "DELETE FROM t", Block},
	} {
		e := mustCompile(t, nil, c.def)
		d := e.Decide(alice, sqlclass.Classify(c.sql), nil)
		if d.Verdict != c.verdict || d.Rule != nil {
			t.Errorf("default %q, %q: verdict %s rule %+v, want %s by default", c.def, c.sql, d.Verdict, d.Rule, c.verdict)
		}
		if d.Message == "" {
			t.Errorf("default %q, %q: no reason given", c.def, c.sql)
		}
	}
	if _, err := Compile(nil, "allow_everything"); err == nil {
		t.Error("unknown default accepted")
	}
}

func TestEmptyQueryAllowed(t *testing.T) {
	e := mustCompile(t, nil, DefaultBlock)
	d := e.Decide(alice, sqlclass.Classify("-- nothing"), nil)
	if d.Verdict != Allow || d.Statement != -1 {
		t.Fatalf("empty query: %s statement %d", d.Verdict, d.Statement)
	}
}

func TestMultiStatement(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	d := e.Decide(alice, sqlclass.Classify("SELECT 1; UPDATE orders SET a = 1 WHERE id = 2; DROP TABLE orders; SELECT 2"), nil)
	if d.Verdict != Block || d.Statement != 2 || d.Rule.Rule != "no-destructive-ddl" {
		t.Fatalf("got %s by %+v at statement %d", d.Verdict, d.Rule, d.Statement)
	}
	want := []Action{Allow, Approve, Block, Allow}
	for i, w := range want {
		if d.Statements[i].Verdict != w {
			t.Errorf("statement %d verdict %s, want %s", i, d.Statements[i].Verdict, w)
		}
	}
	// A rule can refuse multi-statement strings outright.
	e = mustCompile(t, []Rule{{Name: "one-at-a-time", When: "sql.statement_count > 1", Action: "block", Line: 1}}, DefaultAllow)
	if d := e.Decide(alice, sqlclass.Classify("SELECT 1; SELECT 2"), nil); d.Verdict != Block {
		t.Fatalf("statement_count rule did not apply: %s", d.Verdict)
	}
	if d := e.Decide(alice, sqlclass.Classify("SELECT 1"), nil); d.Verdict != Allow {
		t.Fatalf("single statement blocked: %s", d.Verdict)
	}
}

func TestExecuteJudgedAsPrepared(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	prepared := map[string]*sqlclass.Statement{}
	prepare := func(sql string) {
		st := &sqlclass.Classify(sql).Statements[0]
		prepared[st.Prepare] = st
	}
	prepare("PREPARE wipe AS DELETE FROM orders")
	prepare("PREPARE look AS SELECT * FROM orders WHERE id = $1")
	lookup := func(name string) *sqlclass.Statement { return prepared[name] }

	// PREPARE is judged by its body.
	if d := e.Decide(alice, sqlclass.Classify("PREPARE wipe AS DELETE FROM orders"), lookup); d.Verdict != Block {
		t.Errorf("PREPARE of an unbounded delete: %s", d.Verdict)
	}
	for _, c := range []struct {
		sql     string
		verdict Action
	}{
		{"EXECUTE wipe", Block},
		{"EXPLAIN ANALYZE EXECUTE wipe", Block},
		{"EXECUTE look(1)", Allow},
		{"EXECUTE look(pg_read_file('/etc/passwd'))", Block}, // the arguments count too
		{"EXECUTE never_seen", Block},
		// Must hold: a statement that does more than run the name keeps its own default
		// (allow_reads refuses creating a table), whatever the name runs.
		{"CREATE TABLE loot AS EXECUTE look(1) WITH NO DATA", Block},
		{"EXPLAIN ANALYZE CREATE TABLE loot AS EXECUTE look(1)", Approve}, // it writes: writes-need-review
		// ...and plain EXPLAIN of a prepared read only plans it.
		{"EXPLAIN EXECUTE look(1)", Allow},
		{"EXPLAIN (COSTS OFF) EXECUTE look(1)", Allow},
	} {
		d := e.Decide(alice, sqlclass.Classify(c.sql), lookup)
		if d.Verdict != c.verdict {
			t.Errorf("%q: %s, want %s\n%s", c.sql, d.Verdict, c.verdict, Explain(&d))
		}
	}
	// Names prepared earlier in the same string are known to its EXECUTEs.
	for _, c := range []struct {
		sql     string
		verdict Action
	}{
		{"PREPARE x AS SELECT 1; EXECUTE x", Allow},
		{"PREPARE x AS DELETE FROM orders; EXECUTE x", Block},
		{"PREPARE look AS DELETE FROM orders; EXECUTE look", Block}, // shadows the caller's look
		{"DEALLOCATE look; EXECUTE look(1)", Block},
		{"DEALLOCATE other; EXECUTE look(1)", Allow},
		{"PREPARE x AS SELECT 1; DEALLOCATE x; EXECUTE x", Block},
		{"PREPARE x AS SELECT 1; DEALLOCATE ALL; EXECUTE look(1)", Block},
		{"DISCARD ALL; EXECUTE look(1)", Block},
	} {
		// The last statement's verdict: PREPARE and DEALLOCATE have their own.
		d := e.Decide(alice, sqlclass.Classify(c.sql), lookup)
		if last := d.Statements[len(d.Statements)-1]; last.Verdict != c.verdict {
			t.Errorf("%q: %s, want %s\n%s", c.sql, last.Verdict, c.verdict, Explain(&d))
		}
	}
	// An unseen name is refused even when a rule would allow everything,
	// and so is any EXECUTE when the caller keeps no prepared statements.
	all := mustCompile(t, []Rule{{Name: "yolo", When: "true", Action: "allow", Line: 1}}, DefaultAllow)
	if d := all.Decide(alice, sqlclass.Classify("EXECUTE never_seen"), lookup); d.Verdict != Block || !strings.Contains(d.Message, "never_seen") {
		t.Errorf("unseen prepared name: %s %q", d.Verdict, d.Message)
	}
	if d := all.Decide(alice, sqlclass.Classify("EXECUTE look(1)"), nil); d.Verdict != Block {
		t.Errorf("EXECUTE without a prepared lookup: %s", d.Verdict)
	}
}

func TestRequestFields(t *testing.T) {
	bob := NewConn(
		Identity{Subject: "bob", Email: "bob@example.com", Groups: []string{"support"}, Provider: "https://idp"},
		Process{Comm: "python3", Exe: "/usr/bin/python3", PID: 7, UID: 0},
		Target{Name: "staging", Protocol: "postgres", Database: "app_staging", User: "rw"},
	)
	for _, c := range []struct {
		when       string
		alice, bob bool
	}{
		{`identity.subject == "alice"`, true, false},
		{`identity.email.endsWith("@example.com")`, true, true},
		{`"support" in identity.groups`, false, true},
		{`identity.provider == "https://idp"`, true, true},
		{`process.comm == "cursor" && process.exe.startsWith("/usr/bin/")`, true, false},
		{`process.uid == 0`, false, true},
		{`process.pid > 100`, true, false},
		{`target.name == "prod-db" && target.protocol == "postgres"`, true, false},
		{`target.database.matches("^app_")`, false, true},
		{`target.user == "rw"`, false, true},
		{`sql.tables.exists(t, t.startsWith("pg_"))`, false, false},
		{`size(identity.groups) == 1`, true, true},
		{`identity.email.lowerAscii() == "alice@example.com"`, true, false},
	} {
		e := mustCompile(t, []Rule{{Name: "r", When: c.when, Action: "block", Line: 1}}, DefaultAllow)
		res := sqlclass.Classify("SELECT 1")
		if got := e.Decide(alice, res, nil).Verdict == Block; got != c.alice {
			t.Errorf("%s for alice: %v", c.when, got)
		}
		if got := e.Decide(bob, res, nil).Verdict == Block; got != c.bob {
			t.Errorf("%s for bob: %v", c.when, got)
		}
	}
}

func TestSQLFields(t *testing.T) {
	for _, c := range []struct {
		when, sql string
		want      bool
	}{
		{`sql.kind == "DELETE"`, "DELETE FROM t WHERE id = 1", true},
		{`"DELETE" in sql.kinds`, "WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d", true},
		{`sql.object == "INDEX"`, "DROP INDEX i", true},
		{`sql.wrapper == "EXPLAIN ANALYZE"`, "EXPLAIN ANALYZE SELECT 1", true},
		{`!sql.executes`, "EXPLAIN DELETE FROM t", true},
		{`sql.text.contains("orders")`, "SELECT * FROM orders", true},
		{`sql.reads && !sql.writes`, "SELECT 1", true},
		{`sql.ddl`, "CREATE TABLE x (a int)", true},
		{`sql.session`, "SET search_path = x", true},
		{`sql.transaction`, "BEGIN", true},
		{`sql.maintenance`, "VACUUM", true},
		{`sql.side_effects`, "SELECT pg_advisory_lock(1)", true},
		{`sql.locks`, "SELECT * FROM t WHERE id = 1 FOR UPDATE", true},
		{`sql.locks`, "LOCK TABLE t", true},
		{`sql.locks`, "SELECT * FROM t WHERE id = 1", false},
		{`sql.search_path`, "SET SCHEMA 'evil'", true},
		{`sql.search_path`, `SET U&"\0073earch_path" = evil`, true},
		{`sql.search_path`, "SELECT set_config('search_path', 'evil', false)", true},
		{`sql.search_path`, "UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'", true},
		{`sql.search_path`, "SHOW search_path", false},
		{`sql.search_path`, "SET application_name = 'search_path'", false},
		{`sql.unknown`, "SELEC 1", true},
		{`"public.users" in sql.tables_read`, "SELECT * FROM public.users", true},
		{`"users" in sql.tables`, "SELECT * FROM public.users", true},
		{`"t" in sql.tables_written`, "INSERT INTO t VALUES (1)", true},
		{`"pg_read_file" in sql.functions`, "SELECT pg_catalog.pg_read_file('x')", true},
		{`sql.has_where && !sql.where_is_constant`, "DELETE FROM t WHERE id = 1", true},
		{`sql.where_is_constant`, "DELETE FROM t WHERE 'a' = 'a'", true},
		{`sql.prepare == "p"`, "PREPARE p AS SELECT 1", true},
		{`sql.execute == "p"`, "EXECUTE p", true},
		{`sql.setting == "timezone"`, "SET TIME ZONE 'UTC'", true},
		{`sql.setting == "work_mem"`, "SHOW work_mem", true},
		{`sql.setting == ""`, "SELECT 1", true},
		{`sql.statement_count == 2`, "SELECT 1; SELECT 2", true},
		{`sql.kind == "SELECT"`, "DELETE FROM t", false},
	} {
		e := mustCompile(t, []Rule{{Name: "r", When: c.when, Action: "approve", Line: 1}}, DefaultAllow)
		res := sqlclass.Classify(c.sql)
		d := e.Decide(alice, res, func(string) *sqlclass.Statement { return &sqlclass.Classify("SELECT 1").Statements[0] })
		got := false
		for _, m := range d.Matches() {
			got = got || (m.Rule == "r" && !m.Prepared)
		}
		if got != c.want {
			t.Errorf("%s on %q: matched %v\n%s", c.when, c.sql, got, Explain(&d))
		}
	}
}

func TestHTTP(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "no-delete", When: `http.method == "DELETE" && http.path.startsWith("/api/")`, Action: "block", Line: 1},
		{Name: "json", When: `http.host == "api.internal" && http.headers["content-type"] == "application/json"`, Action: "approve", Line: 2},
	}, DefaultAllow)
	d := e.DecideHTTP(alice, HTTP{Method: "DELETE", Path: "/api/users/1", Host: "api.internal",
		Headers: map[string]string{"Content-Type": "application/json"}})
	if d.Action != Block || d.Rule.Rule != "no-delete" || len(d.Matches) != 2 {
		t.Fatalf("got %s by %+v, %d matches", d.Action, d.Rule, len(d.Matches))
	}
}

func TestEvaluationErrorFailsClosed(t *testing.T) {
	// A header that is absent makes the map lookup fail at run time.
	e := mustCompile(t, []Rule{
		{Name: "allow-if-header", When: `http.headers["x-ok"] == "1"`, Action: "allow", Line: 1},
		{Name: "block-if-header", When: `http.headers["x-bad"] == "1"`, Action: "block", Message: "bad header", Line: 2},
	}, DefaultAllow)
	d := e.DecideHTTP(alice, HTTP{Method: "GET", Path: "/"})
	if d.Action != Block || d.Rule == nil || d.Rule.Rule != "block-if-header" || d.Rule.Err == "" {
		t.Fatalf("got %s by %+v", d.Action, d.Rule)
	}
	for _, m := range d.Matches {
		if m.Rule == "allow-if-header" {
			t.Fatal("an allow rule that failed to evaluate matched")
		}
	}
	if !strings.Contains(ExplainHTTP(&d), "evaluation error") {
		t.Error("explanation does not mention the evaluation error")
	}
}

func TestCompileErrors(t *testing.T) {
	_, err := Compile([]Rule{
		{Name: "ok", When: "sql.writes", Action: "block", Line: 3},
		{Name: "syntax", When: "sql.kind ==", Action: "block", Line: 4},
		{Name: "type", When: `sql.kind == 1`, Action: "block", Line: 5},
		{Name: "not-bool", When: `sql.kind`, Action: "block", Line: 6},
		{Name: "no-field", When: `sql.drop_table`, Action: "block", Line: 7},
		{Name: "no-var", When: `request.user == "x"`, Action: "block", Line: 8},
		{Name: "bad-action", When: `true`, Action: "deny", Line: 9},
		{Name: "ok", When: `true`, Action: "allow", Line: 10},
		{Name: "", When: `true`, Action: "allow", Line: 11},
		{Name: "empty", When: ` `, Action: "allow", Line: 12},
		{Name: "construct", When: `enforcer.SQL{kind: "x"}.reads`, Action: "allow", Line: 13},
	}, DefaultAllowReads)
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("want *CompileError, got %v", err)
	}
	want := []struct {
		line int
		name string
		text string
	}{
		{4, "syntax", "Syntax error"},
		{5, "type", "no matching overload"},
		{6, "not-bool", "must be a bool expression, got string"},
		{7, "no-field", "undefined field 'drop_table'"},
		{8, "no-var", "undeclared reference to 'request'"},
		{9, "bad-action", `unknown action "deny"`},
		{10, "ok", "duplicate rule name"},
		{11, "", "no name"},
		{12, "empty", "empty condition"},
		{13, "construct", "constructs an object"},
	}
	if len(ce.Errors) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(ce.Errors), len(want), err)
	}
	for i, w := range want {
		got := ce.Errors[i]
		if got.Line != w.line || got.Rule != w.name || !strings.Contains(got.Err, w.text) {
			t.Errorf("error %d: %v; want line %d rule %q containing %q", i, got, w.line, w.name, w.text)
		}
	}
	if !strings.Contains(err.Error(), `line 5: rule "type": invalid condition`) {
		t.Errorf("error text does not name line and rule:\n%v", err)
	}
}

func TestParseActionAndDefault(t *testing.T) {
	for _, s := range []string{"allow", "approve", "block"} {
		if a, err := ParseAction(s); err != nil || string(a) != s {
			t.Errorf("ParseAction(%q) = %q, %v", s, a, err)
		}
	}
	if _, err := ParseAction("Block"); err == nil {
		t.Error("ParseAction accepted a wrong spelling")
	}
	if d, err := ParseDefault(""); err != nil || d != DefaultAllowReads {
		t.Errorf("ParseDefault(\"\") = %q, %v", d, err)
	}
	if !Block.Stricter(Approve) || !Approve.Stricter(Allow) || Allow.Stricter(Allow) {
		t.Error("strictness order is wrong")
	}
}

func TestExplain(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	d := e.Decide(alice, sqlclass.Classify("SELECT * FROM orders WHERE id = 1; DELETE FROM orders WHERE true"), nil)
	out := Explain(&d)
	for _, want := range []string{
		"statement 1 of 2: SELECT * FROM orders WHERE id = 1",
		"statement 2 of 2: DELETE FROM orders WHERE true",
		"kind: DELETE",
		"effects: writes",
		"tables: read [] written [orders]",
		"where: present but constant (matches every row)",
		"block   no-unbounded-writes (line 12): UPDATE/DELETE need a WHERE clause that selects rows",
		"approve writes-need-review (line 13): writes are reviewed by a DBA [approvers: dba]",
		"verdict: allow by rule engineers-read",
		"verdict: block by rule no-unbounded-writes (statement 2 decides; the strictest verdict wins)",
		"message: UPDATE/DELETE need a WHERE clause that selects rows",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explanation lacks %q:\n%s", want, out)
		}
	}
	d = e.Decide(alice, sqlclass.Classify("SET search_path = evil"), nil)
	out = Explain(&d)
	if !strings.Contains(out, "rules matched: none") || !strings.Contains(out, "verdict: block by default allow_reads") || !strings.Contains(out, "session") {
		t.Errorf("default explanation:\n%s", out)
	}
	d = e.Decide(alice, sqlclass.Classify("DELETE FROM"), nil)
	if out := Explain(&d); !strings.Contains(out, "parse error: syntax error") || !strings.Contains(out, "unknown") {
		t.Errorf("parse error explanation:\n%s", out)
	}
}

// TestExplainHidesCredentials: enforcer policy explain shows a statement's text without the
// credentials it gives, as the session log does (the explanation ends up in tickets).
func TestExplainHidesCredentials(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	for _, c := range []struct{ sql, want string }{
		{"ALTER ROLE app PASSWORD 'Tr0ub4dor&3horse'; SELECT 1", "statement 1 of 2: ALTER ROLE app PASSWORD '[REDACTED:generic_secret]'\n"},
		{"CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'rep', password 'Tr0ub4dor&3horse')",
			"statement 1 of 1: CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'rep', password '[REDACTED:generic_secret]')\n"},
		{"ALTER ROLE app PASSWORD 'Tr0ub4dor&3horse' LOGN", "statement 1 of 1: ALTER ROLE app PASSWORD '[REDACTED:generic_secret]' LOGN\n"},
	} {
		d := e.Decide(alice, sqlclass.Classify(c.sql), nil)
		if out := Explain(&d); !strings.Contains(out, c.want) || strings.Contains(out, "Tr0ub4dor") {
			t.Errorf("%s: explained as\n%s\nwant %q", c.sql, out, c.want)
		}
	}
}

// TestDecideInto decides a sequence of strings into one reused Decision and
// checks each against a fresh Decide: fewer statements after more, none,
// rule matches after defaults, and (with no rules to evaluate) no
// allocation once warm.
func TestDecideInto(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	var d Decision
	for _, sql := range []string{
		"SELECT 1; SELECT 2; DELETE FROM t WHERE id = 1",
		"SELECT * FROM orders WHERE id = 1",
		"",
		"DROP TABLE orders",
		"PREPARE p AS SELECT 1; EXECUTE p",
		"SELECT 1",
	} {
		res := sqlclass.Classify(sql)
		e.DecideInto(&d, alice, res, nil)
		want := e.Decide(alice, res, nil)
		got := d
		if len(got.Statements) == 0 && len(want.Statements) == 0 {
			got.Statements, want.Statements = nil, nil // empty either way
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q:\n got %+v\nwant %+v", sql, got, want)
		}
	}
	// Rules evaluate in CEL, which allocates; without rules nothing may.
	plain := mustCompile(t, nil, DefaultAllow)
	res := sqlclass.Classify("SELECT * FROM orders WHERE id = 1")
	if n := testing.AllocsPerRun(100, func() { plain.DecideInto(&d, alice, res, nil) }); n != 0 {
		t.Errorf("DecideInto allocates %.1f times without rules", n)
	}
}

func BenchmarkDecide(b *testing.B) {
	e := mustCompile(b, agentRules, DefaultAllowReads)
	c := sqlclass.New(sqlclass.Options{})
	for _, q := range []struct{ name, sql string }{
		{"select-pk", "SELECT id, name, email FROM orders WHERE id = $1"},
		{"pgbench-update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"},
		{"pii-select", "SELECT * FROM users WHERE id = $1"},
		{"drop", "DROP TABLE orders"},
	} {
		c.Classify(q.sql)
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d := e.Decide(alice, c.Classify(q.sql), nil)
				if d.Verdict == "" {
					b.Fatal("no verdict")
				}
			}
		})
	}
}

func TestDecideConcurrent(t *testing.T) {
	e := mustCompile(t, agentRules, DefaultAllowReads)
	c := sqlclass.New(sqlclass.Options{})
	carol := NewConn(Identity{Subject: "carol", Groups: []string{"sales"}}, Process{}, Target{Name: "prod-db"})
	cases := []struct {
		conn    *Conn
		sql     string
		verdict Action
	}{
		{alice, "SELECT * FROM orders WHERE id = 1", Allow},
		{carol, "SELECT * FROM orders WHERE id = 1", Allow}, // default allow_reads
		{alice, "DELETE FROM orders", Block},
		{carol, "UPDATE orders SET a = 1 WHERE id = 1", Approve},
		{alice, "SELECT 1; DROP TABLE orders", Block},
	}
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func(g int) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 500; i++ {
				k := cases[(i+g)%len(cases)]
				if d := e.Decide(k.conn, c.Classify(k.sql), nil); d.Verdict != k.verdict {
					t.Errorf("%q: %s, want %s", k.sql, d.Verdict, k.verdict)
					return
				}
			}
		}(g)
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}

func TestSchema(t *testing.T) {
	s := Schema()
	for _, want := range []string{"identity.groups: list(string)\n", "process.pid: int\n", "target.database: string\n",
		"sql.where_is_constant: bool\n", "sql.statement_count: int\n", "sql.locks: bool\n", "sql.search_path: bool\n", "http.headers: map(string, string)\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("schema lacks %q:\n%s", want, s)
		}
	}
	// Every declared sql field compiles.
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		expr := strings.SplitN(line, ":", 2)[0]
		if _, err := Compile([]Rule{{Name: "f", When: "has(" + expr + ") || true", Action: "allow", Line: 1}}, ""); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}
}
