package pgguard

// Tests of the shipped policy (examples/policy.yaml) through a proxy that logs in upstream as a
// plain role with a password, as a production target would (from a review, 2026-12-07).

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// shippedPolicyText is examples/policy.yaml as shipped, with TLS to the upstream off (the test server has
// none) and the target's address left as it is (the proxy is given the upstream directly).
func shippedPolicyText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "tls: verify-full", "tls: disable", 1)
	s = regexp.MustCompile(`(?m)^\s*ca_file:.*\n`).ReplaceAllString(s, "")
	return s
}

// plainRoleProxy is the proxy with a guard in front of a real server, logging in upstream as agent_rw, a
// plain role with a password (as a production target would), never the superuser.
type plainRoleProxy struct {
	db   *pgtest.Server
	addr string
}

func startPlainRoleProxy(t *testing.T, policyText, target string, setup string) *plainRoleProxy {
	t.Helper()
	db := pgtest.Start(t)
	pw, err := db.CreateUser(context.Background(), "agent_rw", false)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `create table customers (id int primary key, name text, phone text);
insert into customers values (1, 'Ada', '4155550100'), (2, 'Bob', '4155550101');
grant select, insert, update, delete on customers to agent_rw;
create table t (id int primary key, secret text);
insert into t select g, 'v'||g from generate_series(1,5) g;
grant select, insert, update, delete on t to agent_rw;`)
	if setup != "" {
		db.Exec(t, setup)
	}
	rec, err := record.Open(record.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pol := parsePolicy(t, policyText)
	var tgt *policy.Target
	for _, x := range pol.Targets {
		if x.Name == target {
			tgt = x
		}
	}
	if tgt == nil {
		t.Fatalf("no target %q", target)
	}
	sh := &Shared{
		Policy:     func() *policy.Policy { return pol },
		Classifier: sqlclass.New(sqlclass.Options{}),
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		Recorder:   rec,
	}
	srv := postgres.NewServer(postgres.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &plainRoleProxy{db: db, addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g := sh.NewGuard(ConnInfo{ID: "1", Target: tgt, Identity: identity.Session{Subject: "mallory", Groups: []string{"engineering"}},
				DBUser: "agent_rw",
				Connect: func(ctx context.Context, database string) (*pgconn.PgConn, error) {
					return pgconn.Connect(ctx, db.DSN("agent_rw", database))
				}})
			go func() {
				srv.Serve(context.Background(), c, postgres.Session{ID: "1", Upstream: db.Addr.String(), User: "agent_rw", Password: pw, Hook: g})
				g.End("closed", 0, 0)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		rec.Close()
	})
	return p
}

// connect opens a client connection through the proxy with the given startup parameters.
func (p *plainRoleProxy) connect(t *testing.T, params map[string]string) *pgconn.PgConn {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.addr)
	cfg, err := pgconn.ParseConfig("host=" + host + " port=" + port + " user=agent dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	c, err := pgconn.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// direct runs sql on the server as its superuser and returns the first value (or "" if none).
func (p *plainRoleProxy) direct(t *testing.T, sql string) (string, error) {
	t.Helper()
	c, err := pgconn.Connect(context.Background(), p.db.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	return firstValue(c, sql)
}

// firstValue runs sql (any number of statements) and returns the first value of the last result
// with rows, or "" if none has any.
func firstValue(c *pgconn.PgConn, sql string) (string, error) {
	rs, err := c.Exec(context.Background(), sql).ReadAll()
	if err != nil {
		return "", err
	}
	for i := len(rs) - 1; i >= 0; i-- {
		if len(rs[i].Rows) > 0 {
			return string(rs[i].Rows[0][0]), nil
		}
	}
	return "", nil
}

// TestPgSettingsWriteCannotSmuggle: UPDATE pg_settings is set_config (a rule on the view). It was
// classified as an ordinary write, so a policy that allows or approves writes let it SET ROLE or
// turn standard_conforming_strings off; the proxy's backstop, the ParameterStatus it watches,
// comes after the server has read what the client pipelined behind, so a statement the proxy
// read as one string literal ran as code. Must hold: such a write is unknown (and privilege),
// refused under a policy that allows writes, and the pipelined DROP never runs.
func TestPgSettingsWriteCannotSmuggle(t *testing.T) {
	for _, sql := range []string{
		`update pg_settings set setting = 'off' where name = 'standard_conforming_strings'`,
		`update pg_settings set setting = 'app_owner' where name = 'role'`,
	} {
		res := sqlclass.Classify(sql)
		st := res.Statements[0]
		if !st.Unknown && !st.Privilege {
			t.Errorf("%s: classified %s writes=%v session=%v privilege=%v unknown=%v", sql, st.Kind, st.Writes, st.Session, st.Privilege, st.Unknown)
		}
	}

	// Writes allowed, DROP blocked (the test policy of this package).
	p := startPlainRoleProxy(t, strings.Replace(allowAllPolicy, "user: u,", "user: agent_rw,", 1), "db", "alter table t owner to agent_rw")
	c := p.connect(t, nil)
	// DROP is refused as it should be.
	if _, err := firstValue(c, "drop table t"); err == nil {
		t.Fatal("drop table was not blocked")
	}
	smuggled := `select '\', ';drop table t;--'` // one SELECT of two literals, with standard_conforming_strings on
	if r := sqlclass.Classify(smuggled); r.Statements[0].Kind != sqlclass.KindSelect || len(r.Statements) != 1 {
		t.Fatalf("classifier reads the smuggled text differently: %+v", r.Statements)
	}
	fe := pgproto3.NewFrontend(c.Conn(), c.Conn())
	fe.Send(&pgproto3.Query{String: `update pg_settings set setting = 'off' where name = 'standard_conforming_strings'`})
	fe.Send(&pgproto3.Query{String: smuggled})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		m, err := fe.Receive()
		if err != nil {
			break
		}
		t.Logf("%T %+v", m, m)
	}
	time.Sleep(500 * time.Millisecond)
	exists, err := p.direct(t, "select count(*) from pg_class where relname = 't'")
	if err != nil || exists != "1" {
		t.Errorf("table t was dropped through the proxy, whose policy blocks DROP (pg_class count %q, %v)", exists, err)
	}
}

// TestRowLocksRefusedUnderShippedPolicy: SELECT … FOR UPDATE passed as a read, yet it locks the
// rows (PostgreSQL refuses it in a read-only transaction), so an agent could hold production's
// rows for as long as it kept its transaction open. Must hold: the shipped policy refuses it.
func TestRowLocksRefusedUnderShippedPolicy(t *testing.T) {
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db", "")
	c := p.connect(t, nil)
	if _, err := firstValue(c, "begin"); err != nil {
		t.Fatal(err)
	}
	_, err := firstValue(c, "select id from customers for update")
	if err == nil {
		_, werr := p.direct(t, "set lock_timeout = '1s'; update customers set name = 'Ada L' where id = 1")
		t.Errorf("SELECT … FOR UPDATE passed as a read under the shipped policy; the application's update then fails: %v", werr)
	}
}

// TestShippedPolicyRefusesEscapes: must hold: the shipped policy refuses every way a review tried
// to change the role, read server files, run code or write unreviewed; t keeps its rows.
func TestShippedPolicyRefusesEscapes(t *testing.T) {
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db", "")
	c := p.connect(t, nil)
	for _, sql := range []string{
		`alter user current_user password 'x'`, `alter role agent_rw with password 'x'`,
		`set session authorization default`, `set role none`, `reset all`, `discard all`, `reset role`,
		`select set_config('role', 'none', false)`, `select pg_catalog.set_config('ro'||'le', 'none', false)`,
		`select pg_read_file('/etc/passwd')`, `select lo_import('/etc/passwd')`,
		`copy (select 1) to program 'id'`, `copy t from '/etc/passwd'`, `select dblink_connect('x')`,
		`explain analyze delete from t where id = 1`, `explain (analyze 'on') delete from t where id = 1`,
		`with d as (delete from t where id = 1 returning *) select * from d`,
		`do $$ begin delete from t; end $$`, `call p()`, `prepare p as delete from t where id = 1`,
		`set standard_conforming_strings = off`, `set client_encoding = 'SJIS'`, `select nextval('s')`,
		`create rule r as on insert to t do also delete from t`, `create temp table x (a int)`,
		`select * from t; delete from t where id = 1`, `listen x`, `load 'plpgsql'`,
		`select upper('x') from t where id = 1 for update`, `lock table t`,
		`set search_path = public, pg_catalog`, `set schema 'public'`, `set U&"\0073earch_path" = public`,
		`update pg_settings set setting = 'off' where name = 'standard_conforming_strings'`,
	} {
		if _, err := firstValue(c, sql); err == nil {
			t.Errorf("%s: allowed", sql)
		}
		firstValue(c, "rollback")
	}
	if left, _ := p.direct(t, "select count(*) from t"); left != "5" {
		t.Errorf("t has %s rows", left)
	}
	// Startup: options= and replication= do not reach the server.
	c2 := p.connect(t, map[string]string{"options": "-c role=pg_monitor -c search_path=evil"})
	if sp, _ := firstValue(c2, "show search_path"); strings.Contains(sp, "evil") {
		t.Errorf("options= reached the server")
	}
}

// TestCreateTableAsExecuteKeepsItsDefault (from a review, 2026-12-07): a statement that runs a
// prepared name got only the prepared body's default verdict, right for EXECUTE but not for
// CREATE TABLE … AS EXECUTE, which the shipped policy (allow_reads) then let create tables as
// the SELECT it named. Must hold: it is refused as CREATE TABLE … AS SELECT is.
func TestCreateTableAsExecuteKeepsItsDefault(t *testing.T) {
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db", "grant create on schema public to agent_rw")
	c := p.connect(t, nil)
	if _, err := firstValue(c, "create table loot0 as select id, phone from customers with no data"); err == nil {
		t.Fatal("CREATE TABLE AS SELECT passed: the baseline is wrong")
	}
	if _, err := firstValue(c, "prepare p as select id, phone from customers"); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	_, err := firstValue(c, "create table loot as execute p with no data")
	exists, _ := p.direct(t, "select count(*) from pg_class where relname = 'loot'")
	if err == nil || exists != "0" {
		t.Errorf("CREATE TABLE AS EXECUTE ... WITH NO DATA passed the shipped policy (err %v; table exists: %s)", err, exists)
	}
}

// TestAgentCannotLiftDBALimits (from a review, 2026-12-07): the shipped policy allowed any SET
// that was not privilege, unknown or search_path, so the agent lifted the limits a DBA set on its
// role: it held a transaction open past the role's idle timeout, its lock blocking the
// application's ALTER TABLE, or sorted with terabytes of work_mem. Must hold: the settings stay,
// and an ALTER TABLE 3 s after the agent's read succeeds.
func TestAgentCannotLiftDBALimits(t *testing.T) {
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db",
		"alter role agent_rw set idle_in_transaction_session_timeout = '1s'; alter role agent_rw set statement_timeout = '5s'; alter role agent_rw set work_mem = '4MB'")
	c := p.connect(t, nil)
	for _, sql := range []string{"set idle_in_transaction_session_timeout = 0", "set statement_timeout = 0", "set work_mem = '2000GB'", "set lock_timeout = 0"} {
		if _, err := firstValue(c, sql); err == nil {
			t.Errorf("%s: allowed under the shipped policy", sql)
		}
	}
	if v, _ := firstValue(c, "show work_mem"); v != "4MB" {
		t.Errorf("the agent raised work_mem from the DBA's 4MB to %s", v)
	}
	if _, err := firstValue(c, "begin"); err != nil {
		t.Fatal(err)
	}
	if _, err := firstValue(c, "select count(*) from customers"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	_, err := p.direct(t, "set lock_timeout = '1s'; alter table customers add column note text")
	if err != nil {
		t.Errorf("the application's ALTER TABLE is blocked by the agent's idle transaction past the role's 1 s idle timeout: %v", err)
	}
	c.Exec(context.Background(), "rollback").ReadAll()
}

// TestAgentCannotLiftReadOnlyDefault (from a review, 2026-12-07): a read-only default the DBA set
// on the agent's role was lifted by transaction modes the classifier took for plain transaction
// control (BEGIN READ WRITE, START TRANSACTION … READ WRITE, SET TRANSACTION READ WRITE). Must
// hold: inside any transaction the agent opens, transaction_read_only stays on (or the
// statement is refused).
func TestAgentCannotLiftReadOnlyDefault(t *testing.T) {
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db", "alter role agent_rw set default_transaction_read_only = on")
	c := p.connect(t, nil)
	if v, _ := firstValue(c, "show transaction_read_only"); v != "on" {
		t.Fatalf("baseline: transaction_read_only = %q", v)
	}
	for _, open := range []string{"begin read write", "start transaction read write", "begin isolation level read committed, read write"} {
		_, err := firstValue(c, open)
		if err == nil {
			if v, _ := firstValue(c, "show transaction_read_only"); v != "on" {
				t.Errorf("%q passed the shipped policy and lifted the role's default_transaction_read_only (transaction_read_only = %s)", open, v)
			}
		}
		firstValue(c, "rollback")
	}
	if _, err := firstValue(c, "begin"); err == nil {
		if _, err := firstValue(c, "set transaction read write"); err == nil {
			if v, _ := firstValue(c, "show transaction_read_only"); v != "on" {
				t.Errorf("SET TRANSACTION READ WRITE passed the shipped policy and lifted the role's default_transaction_read_only (transaction_read_only = %s)", v)
			}
		}
		firstValue(c, "rollback")
	}
}

// TestFrameworkConnectionSetupPasses: what ActiveRecord's PostgreSQL adapter sends on every new
// connection passes the shipped policy, so a Rails console or script the agent runs can connect.
// Must hold: each statement runs at the server (its value is then in effect).
func TestFrameworkConnectionSetupPasses(t *testing.T) {
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db", "")
	c := p.connect(t, nil)
	for _, sql := range []string{
		"SET client_min_messages TO 'warning'",
		"SET standard_conforming_strings = on",
		"SET intervalstyle = iso_8601",
		"SET SESSION timezone TO 'UTC'",
	} {
		if _, err := firstValue(c, sql); err != nil {
			t.Errorf("%s: %v", sql, err)
		}
	}
	for setting, want := range map[string]string{"client_min_messages": "warning", "IntervalStyle": "iso_8601", "TimeZone": "UTC", "standard_conforming_strings": "on"} {
		if v, err := firstValue(c, "show "+setting); v != want {
			t.Errorf("%s is %q (%v), want %q", setting, v, err, want)
		}
	}
}

// TestSQLJSONSpellingsOfUserFunctionsRefused (from a review, 2026-12-07): the classifier parses
// with PostgreSQL 17's grammar, where JSON_VALUE(…) and the other SQL/JSON forms and
// MERGE_ACTION() are syntax, not calls; PostgreSQL 15 calls a function of that name found on
// search_path. select json_value('{}', '$') passed the shipped policy (allow_reads) as a read
// and ran public.json_value, which writes. Must hold: each is refused and no such function runs,
// while the legacy json_object(text[]), pg_catalog's, still reads.
func TestSQLJSONSpellingsOfUserFunctionsRefused(t *testing.T) {
	cases := []struct{ sql, function string }{
		{"select json_value('{}', '$')", "json_value(text, text)"},
		{"select json_query('{}', '$')", "json_query(text, text)"},
		{"select json_exists('{}', '$')", "json_exists(text, text)"},
		{"select json_scalar(1)", "json_scalar(int)"},
		{"select json_serialize('{}')", "json_serialize(text)"},
		{"select json('{}'::text)", "json(text)"},
		{"select json_object()", "json_object()"},
		{"select json_array()", "json_array()"},
		{"select json_array(1, 2)", "json_array(int, int)"},
		{"select json_arrayagg(id) from customers", "json_arrayagg(int)"},
		{"select merge_action()", "merge_action()"},
	}
	setup := "create table calls (f text); grant insert on calls to agent_rw;\n"
	for _, c := range cases {
		setup += "create function public." + c.function +
			" returns text language sql as $$ insert into calls values ('" + c.function + "') returning 'x' $$;\n"
	}
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db", setup)
	c := p.connect(t, nil)
	for _, tc := range cases {
		if v, err := firstValue(c, tc.sql); err == nil {
			t.Errorf("%s: allowed under the shipped policy (result %q), calling public.%s", tc.sql, v, tc.function)
		}
	}
	if called, _ := p.direct(t, "select string_agg(f, ', ') from calls"); called != "" {
		t.Errorf("functions ran through the proxy: %s", called)
	}
	if v, err := firstValue(c, "select json_object('{a,1}')"); err != nil || v != `{"a" : "1"}` {
		t.Errorf("legacy json_object(text[]): %q, %v; want it read", v, err)
	}
}
