package main

import (
	"strings"
	"testing"
)

// pgxSeq runs stmts in order on one pgx connection (extended protocol) through the enforcer.
func (e *env) pgxSeq(dsn string, stmts ...string) string {
	return e.pgxAgent(dsn, "@seq", stmts...)
}

// telLeaked reports whether out shows a ruled tel value (4155550100, 4155550101) in clear or
// in an easily reversed form.
func telLeaked(out string) (string, bool) {
	forms := map[string]string{
		"415555010":               "clear",
		"010555514":               "reversed",
		"343135353535303130":      "hex",
		"4,1,5,5,5,5,0,1,0":       "split into characters",
		"\"4\",\"1\",\"5\",\"5\"": "split into characters (json)",
		"4155-":                   "first digits in a date error",
		"41:55:":                  "first digits in a time error",
		"NDE1NTU1MDEw":            "base64",
	}
	for f, how := range forms {
		if strings.Contains(out, f) {
			return how, true
		}
	}
	return "", false
}

// TestColumnRulesAgainstBypasses tries to read values protected by the column rule
// customers.tel through the enforcer (probes from a review, 2026-12-06). Every probe whose
// output shows a tel value (or a reversible form of it) fails the test. The tel values match no
// detector, so only the rule (and the origins the guard computes) can mask them. What a rule by
// column name cannot follow (the agent copying values into a table of its own, code the guard
// cannot see into) is refused by the shipped default, allow_reads: checked at the end.
func TestColumnRulesAgainstBypasses(t *testing.T) {
	e := newEnv(t, "bpf")
	pg, _, dsn := e.addPostgres()
	pg.Exec(t, `CREATE TABLE customers (id int PRIMARY KEY, name text, tel text);
INSERT INTO customers VALUES (1, 'Ada', '4155550100'), (2, 'Bob', '4155550101');
GRANT SELECT ON customers TO agent_ro;
CREATE TABLE notes (id int, x text);
GRANT ALL ON notes TO agent_ro;
CREATE VIEW contacts AS SELECT name, tel AS num FROM customers;
CREATE MATERIALIZED VIEW tels AS SELECT tel AS digits FROM customers;
GRANT SELECT ON contacts, tels TO agent_ro;
ANALYZE customers;`)
	e.tailYAML = "default: allow\nmasking:\n  columns:\n    - {match: customers.tel, style: redact}\n"
	e.setPolicy()

	type probe struct {
		name  string
		stmts []string // run in order by one psql (-c each: one simple query each)
	}
	probes := []probe{
		// Expressions the task lists: expected masked.
		{"lateral subquery", []string{`select s.x || '' from customers c, lateral (select c.tel) s(x)`}},
		{"window", []string{`select lag(tel) over (order by id), first_value(tel) over () from customers`}},
		{"rollup", []string{`select tel || '', count(*) from customers group by rollup(tel)`}},
		{"array subquery", []string{`select array(select tel from customers)`}},
		{"aggregates", []string{`select array_agg(tel), json_agg(tel), string_agg(tel, ','), jsonb_build_object('k', max(tel)) from customers`}},
		{"row constructor", []string{`select row(id, tel) from customers`}},
		{"field selection", []string{`select (c).tel from customers c`}},
		{"functional notation", []string{`select tel(c) from customers c`}},
		{"case/coalesce", []string{`select case when id > 0 then tel end, coalesce(tel, ''), nullif(tel, ''), greatest(tel, '') from customers`}},
		{"recursive cte", []string{`with recursive r(x) as (select tel from customers union all select x from r where false) select x || '' from r`}},
		{"table", []string{`table customers`}},
		{"values in from", []string{`select x || '' from (values ((select tel from customers limit 1))) v(x)`}},
		{"union order by", []string{`select name from customers union select tel from customers order by 1`}},
		{"format whole row", []string{`select format('%s', c) from customers c`}},
		{"to_json star", []string{`select to_json(c.*) from customers c`}},
		{"cast to row type", []string{`select c::customers from customers c`}},
		{"split", []string{`select string_to_array(tel, null), regexp_split_to_array(tel, '') from customers`}},
		{"hex/reverse/base64", []string{`select encode(tel::bytea, 'hex'), reverse(tel), encode(tel::bytea, 'base64') from customers`}},
		{"quoted/qualified", []string{`select public.customers."tel" || '' from public.customers`}},
		{"search_path", []string{`set search_path = pg_catalog`, `select upper(tel) from public.customers`}},
		{"multi-statement", []string{`select upper(name) as u from customers; select upper(tel) as u from customers`}},
		{"fetch variants", []string{`begin; declare "K" scroll cursor for select tel || '' from customers; fetch next from "K"; fetch absolute 2 from "K"; move first in "K"; fetch backward from "K"; commit`}},
		{"with hold across commit", []string{`begin`, `declare h cursor with hold for select tel || '' from customers`, `commit`, `fetch all from h`}},
		{"cast error", []string{`select tel::date from customers`}},
		{"regclass error", []string{`select tel::regclass from customers`}},
		{"regtype error", []string{`select tel::regtype from customers`}},
		{"setting name error", []string{`select current_setting(tel) from customers`}},
		{"copy query", []string{`copy (select tel || '' from customers) to stdout`}},

		// Bypasses.
		// 1. A function in FROM reads the ruled column outside any target list.
		{"function in FROM (implicit lateral)", []string{`select x from customers, upper(tel) x`}},
		{"unnest in FROM", []string{`select x from customers, unnest(array[tel]) x`}},
		{"function in FROM, copy", []string{`copy (select x from customers, upper(tel) x) to stdout`}},
		// 2. Column aliases in FROM rename the ruled column.
		{"column alias list", []string{`select upper(x) from customers c(i, n, x)`}},
		{"join alias column list", []string{`select j.x || '' from (customers cross join (select 1) o) as j(i, n, x)`}},
		{"xmltable in FROM", []string{`select x from customers, xmltable('/a' passing xmlelement(name a, tel) columns x text path '.')`}},
		{"insert ... on conflict ... returning", []string{`create temp table u (id int primary key, v text)`,
			`insert into u select id, tel from customers on conflict (id) do update set v = excluded.v returning v || ''`}},
		// 3. DML RETURNING a column written from the ruled one.
		{"insert ... select ... returning", []string{`insert into notes select id, tel from customers returning x || ''`}},
		{"update ... from ... returning", []string{`insert into notes values (1, 'a')`, `update notes n set x = c.tel from customers c where c.id = n.id returning n.x || ''`}},
		{"table_to_xml", []string{`select table_to_xml('public.customers', false, false, '')`}},
		{"pg_stats histogram", []string{`select histogram_bounds from pg_stats where tablename = 'customers' and attname = 'tel'`}},
		// 6. Server messages whose values are not quoted, NOTICE and NOTIFY text.
		{"make_date error", []string{`select make_date(substr(tel, 1, 4)::int, 13, 1) from customers`}},
		{"chr error", []string{`select chr(substr(tel, 1, 9)::int) from customers`}},
		// 7. Views the catalog cached, redefined under the same OID.
		{"temp view", []string{`create temp view v as select tel from customers`, `select * from v`}},
		{"temp view with function in FROM", []string{`create temp view v3 as select x from customers, upper(tel) x`, `select * from v3`}},
		// Expressions over a view's column are not followed through the view.
		{"expression over a view column", []string{`select upper(num) from contacts`}},
		{"expression over a materialized view column", []string{`select digits || '' from tels`}},
		{"expression over a temp view column", []string{`create temp view v4 as select tel from customers`, `select upper(tel) from v4`}},
		// 8. Cursor bookkeeping.
		{"cursor name reused by a failed DECLARE", []string{
			`declare k cursor with hold for select upper(tel) as u from customers`,
			`declare k cursor with hold for select upper(name) as u from customers`,
			`fetch all from k`}},
		{"result plan cache: same FETCH text, other cursor", []string{
			`begin`, `declare k cursor for select upper(name) as u from customers`, `fetch all from k`, `close k`,
			`declare k cursor for select upper(tel) as u from customers`, `fetch all from k`, `commit`}},
		{"cursor reopened by a DO block", []string{`begin; declare k cursor for select upper(name) as u from customers;
do $$ declare r refcursor := 'k'; begin close r; open r for select upper(tel) as u from customers; end $$;
fetch all from k; commit`}},
		// 9. Prepared statement bookkeeping.
		{"result plan cache: same EXECUTE text, other statement", []string{
			`prepare p as select upper(name) as u from customers`, `execute p`, `deallocate p`,
			`prepare p as select upper(tel) as u from customers`, `execute p`}},
		{"DEALLOCATE that did not run", []string{
			`prepare q as select upper(tel) as u from customers`,
			`select 1/0; deallocate q`,
			`prepare q as select upper(name) as u from customers`,
			`execute q`}},
	}
	for _, p := range probes {
		args := []string{"psql", dsn, "-X"}
		for _, s := range p.stmts {
			args = append(args, "-c", s)
		}
		out, _ := e.run(args...)
		if how, leak := telLeaked(out); leak {
			t.Errorf("BYPASS %s (psql, %s):\n  %s\n%s", p.name, how, strings.Join(p.stmts, "\n  "), out)
		} else {
			t.Logf("masked %s:\n%s", p.name, out)
		}
	}

	// pgx: extended protocol, binary results where pgx can.
	for _, p := range []probe{
		{"pgx: function in FROM", []string{`SELECT x FROM customers, upper(tel) x`}},
		{"pgx: column alias list", []string{`SELECT lower(x) FROM customers c(i, n, x)`}},
		{"pgx: binary array_agg", []string{`SELECT array_agg(tel) FROM customers`}},
		{"pgx: EXECUTE of an SQL PREPARE", []string{`PREPARE p AS SELECT upper(tel) AS u FROM customers`, `EXECUTE p`}},
		{"pgx: DECLARE/FETCH", []string{`BEGIN`, `DECLARE k CURSOR FOR SELECT tel || '' FROM customers`, `FETCH ALL FROM k`, `COMMIT`}},
		{"pgx: same EXECUTE text, other statement", []string{
			`PREPARE p AS SELECT upper(name) AS u FROM customers`, `EXECUTE p`, `DEALLOCATE p`,
			`PREPARE p AS SELECT upper(tel) AS u FROM customers`, `EXECUTE p`}},
		{"pgx: cursor name reused by a failed DECLARE", []string{
			`DECLARE k CURSOR WITH HOLD FOR SELECT upper(tel) AS u FROM customers`,
			`DECLARE k CURSOR WITH HOLD FOR SELECT upper(name) AS u FROM customers`,
			`FETCH ALL FROM k`}},
	} {
		out := e.pgxSeq(dsn, p.stmts...)
		if how, leak := telLeaked(out); leak {
			t.Errorf("BYPASS %s (%s):\n  %s\n%s", p.name, how, strings.Join(p.stmts, "\n  "), out)
		} else {
			t.Logf("masked %s:\n%s", p.name, out)
		}
	}

	// Beyond what a rule by column name can follow: writes, DDL, procedural code and session
	// settings. Under allow_reads each is refused before it runs. (notes holds copies the
	// RETURNING probes above wrote while writes were allowed.)
	pg.Exec(t, "TRUNCATE notes")
	e.tailYAML = "default: allow_reads\nmasking:\n  columns:\n    - {match: customers.tel, style: redact}\n"
	e.setPolicy()
	for _, p := range []probe{
		{"temp table as", []string{`create temp table t as select tel as v from customers`, `select * from t`}},
		{"select into", []string{`select tel as v into temp t2 from customers`, `select * from t2`}},
		{"insert into a writable table", []string{`insert into notes select id, tel from customers`, `select x from notes`}},
		{"temp sql function", []string{`create function pg_temp.f() returns setof text language sql as 'select tel from customers'`, `select pg_temp.f()`}},
		{"query_to_xml", []string{`select query_to_xml('select tel as v from customers', false, false, '')`}},
		{"set_config then current_setting", []string{`select set_config('my.t', (select string_agg(tel, ',') from customers), false) is not null`, `select current_setting('my.t')`, `show my.t`}},
		{"raise notice", []string{`do $$ begin raise notice '%', (select tel from customers limit 1); end $$`}},
		{"raise exception", []string{`do $$ begin raise exception '%', (select string_agg(tel, ',') from customers); end $$`}},
		{"notify payload", []string{`listen ch`, `select pg_notify('ch', tel) from customers`}},
		{"view replaced under the same OID", []string{
			`create temp view v2 as select name as x from customers`, `select x from v2`,
			`create or replace temp view v2 as select tel as x from customers`, `select x from v2`}},
	} {
		args := []string{"psql", dsn, "-X"}
		for _, s := range p.stmts {
			args = append(args, "-c", s)
		}
		out, _ := e.run(args...)
		if how, leak := telLeaked(out); leak || !strings.Contains(out, "blocked by the policy default") {
			t.Errorf("%s under allow_reads (leak: %s):\n  %s\n%s", p.name, how, strings.Join(p.stmts, "\n  "), out)
		}
	}

	// Over-masking (not a leak; logged only): values not computed from tel.
	for _, c := range []struct{ q, want string }{
		{`select upper(name), (select count(tel) from customers) from customers order by 1`, "ADA"},
		{`select upper(name) from customers where id in (select id from customers) order by 1`, "ADA"},
		{`with c as (select name from customers) select upper(name) from c order by 1`, "ADA"},
		{`select upper(name) as u from customers; select 1 from customers where tel <> ''`, "ADA"},
		{`select length(tel) from customers`, "10"},
		{`select count(distinct tel) from customers`, "2"},
	} {
		out, _ := e.run("psql", dsn, "-XAt", "-c", c.q)
		if strings.Contains(out, "REDACTED") || !strings.Contains(out, c.want) {
			t.Logf("over-masked: %s: %q", c.q, out)
		}
	}
	if direct := scalar(t, pg, "select tel || '' from customers where id = 1"); direct != "4155550100" {
		t.Fatalf("seed: %q", direct)
	}
}
