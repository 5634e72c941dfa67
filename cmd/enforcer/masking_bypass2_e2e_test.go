package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgconnScript runs, for the pgx agent's "@script" mode, a script of protocol steps on its
// connection, so a probe can choose simple queries, extended-protocol queries, Parse without
// Execute, or a pipelined batch. Each step is one of:
//
//	Q:sql         simple query (every result of a multi-statement text)
//	X:sql         extended query (unnamed Parse, Bind, Describe, Execute, Sync)
//	P:name:sql    Parse and Describe only (pgconn.Prepare): the statement never executes
//	E:name        Bind and Execute of a prepared statement
//	B:sql\x1esql… pgx batch: all statements pipelined before any result is read
//	L:n:sql       extended query of sql with PAD replaced by n spaces (texts too long for argv)

func pgconnErr(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Sprintf("err %s %s | detail %s | hint %s | where %s", pe.Code, pe.Message, pe.Detail, pe.Hint, pe.Where)
	}
	return fmt.Sprintf("err %v", err)
}

func pgconnRows(rows [][][]byte) string {
	var out []string
	for _, r := range rows {
		var cells []string
		for _, v := range r {
			if v == nil {
				cells = append(cells, "NULL")
			} else {
				cells = append(cells, string(v))
			}
		}
		out = append(out, strings.Join(cells, "|"))
	}
	return strings.Join(out, ",")
}

func pgconnScript(ctx context.Context, c *pgx.Conn, steps []string) {
	pc := c.PgConn()
	for _, step := range steps {
		kind, arg, _ := strings.Cut(step, ":")
		short := arg
		if len(short) > 120 {
			short = short[:120] + "…"
		}
		switch kind {
		case "Q":
			results, err := pc.Exec(ctx, arg).ReadAll()
			for _, r := range results {
				if r.Err != nil {
					fmt.Printf("Q %s => %s\n", short, pgconnErr(r.Err))
				} else {
					fmt.Printf("Q %s => ok %s\n", short, pgconnRows(r.Rows))
				}
			}
			if err != nil {
				fmt.Printf("Q %s => %s\n", short, pgconnErr(err))
			}
		case "L", "X": // L:N:sql has PAD replaced by N spaces
			sql := arg
			if kind == "L" {
				n, rest, _ := strings.Cut(arg, ":")
				var k int
				fmt.Sscan(n, &k)
				sql = strings.Replace(rest, "PAD", strings.Repeat(" ", k), 1)
			}
			r := pc.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
			if r.Err != nil {
				fmt.Printf("%s %s => %s\n", kind, short, pgconnErr(r.Err))
			} else {
				fmt.Printf("%s %s => ok %s\n", kind, short, pgconnRows(r.Rows))
			}
		case "P":
			name, sql, _ := strings.Cut(arg, ":")
			if _, err := pc.Prepare(ctx, name, sql, nil); err != nil {
				fmt.Printf("P %s => %s\n", short, pgconnErr(err))
			} else {
				fmt.Printf("P %s => ok\n", short)
			}
		case "E":
			r := pc.ExecPrepared(ctx, arg, nil, nil, nil).Read()
			if r.Err != nil {
				fmt.Printf("E %s => %s\n", arg, pgconnErr(r.Err))
			} else {
				fmt.Printf("E %s => ok %s\n", arg, pgconnRows(r.Rows))
			}
		case "B":
			b := &pgx.Batch{}
			stmts := strings.Split(arg, "\x1e")
			for _, s := range stmts {
				b.Queue(s)
			}
			br := c.SendBatch(ctx, b)
			for i, s := range stmts {
				fmt.Printf("B[%d] %.80s => ", i, s)
				printResult(br.Query())
			}
			br.Close()
		default:
			fmt.Println("bad step", step)
		}
	}
}

// pgconnScript runs steps (see pgconnScript) on one connection through the enforcer.
func (e *env) pgconnScript(dsn string, steps ...string) string {
	return e.pgxAgent(dsn, "@script", steps...)
}

// TestColumnRulesUnderAllowReads holds a second review's probes (2026-12-06) of column rules
// under the shipped default, allow_reads: every probe is a statement the policy lets through as
// a read; any whose output shows a ruled tel value (or an easily reversed form) fails the test.
// The comments of groups 1–7 say how each probe got through before the fixes of that day.
func TestColumnRulesUnderAllowReads(t *testing.T) {
	e := newEnv(t, "bpf")
	pg, _, dsn := e.addPostgres()
	pg.Exec(t, `CREATE TABLE customers (id int PRIMARY KEY, name text, tel text);
INSERT INTO customers VALUES (1, 'Ada', '4155550100'), (2, 'Bob', '4155550101');
GRANT SELECT ON customers TO agent_ro;
CREATE VIEW contacts AS SELECT name, tel AS num FROM customers;
GRANT SELECT ON contacts TO agent_ro;
-- Objects an administrator may well have: an archive table inheriting the ruled one, a schema
-- where customers is partitioned, views that call functions.
CREATE TABLE customers_archive () INHERITS (customers);
INSERT INTO customers_archive VALUES (3, 'Cy', '4155550100');
GRANT SELECT ON customers_archive TO agent_ro;
CREATE SCHEMA part;
GRANT USAGE ON SCHEMA part TO agent_ro;
CREATE TABLE part.customers (id int, name text, tel text) PARTITION BY RANGE (id);
CREATE TABLE part.customers_1 PARTITION OF part.customers FOR VALUES FROM (0) TO (100);
INSERT INTO part.customers VALUES (1, 'Ada', '4155550100');
GRANT SELECT ON ALL TABLES IN SCHEMA part TO agent_ro;
CREATE VIEW xml_export AS SELECT table_to_xml('public.customers', false, false, '') AS doc;
GRANT SELECT ON xml_export TO agent_ro;
CREATE FUNCTION tel_of(int) RETURNS text LANGUAGE sql STABLE AS 'SELECT tel FROM customers WHERE id = $1';
CREATE VIEW customer_cards AS SELECT id, tel_of(id) AS card FROM customers;
GRANT SELECT ON customer_cards TO agent_ro;
CREATE VIEW later_cv AS SELECT name AS x FROM customers;
GRANT SELECT ON later_cv TO agent_ro;
-- Tables an administrator alters later (group 7).
CREATE SCHEMA late;
CREATE SCHEMA late2;
GRANT USAGE ON SCHEMA late, late2 TO agent_ro;
CREATE TABLE late.customers (id int, name text);
CREATE TABLE late2.customers (id int, info text);
INSERT INTO late.customers VALUES (1, 'Ada');
INSERT INTO late2.customers VALUES (1, 'n/a');
GRANT SELECT ON late.customers, late2.customers TO agent_ro;
ANALYZE customers;`)
	e.tailYAML = "default: allow_reads\nmasking:\n  columns:\n    - {match: customers.tel, style: redact}\n"
	e.setPolicy()

	leaks := 0
	check := func(name, client string, stmts []string, out string) {
		t.Helper()
		if how, leak := telLeaked(out); leak {
			leaks++
			t.Errorf("BYPASS %s (%s, %s):\n  %s\n%s", name, client, how, strings.Join(stmts, "\n  "), out)
		} else {
			t.Logf("held %s (%s):\n%s", name, client, out)
		}
	}
	psql := func(name string, stmts ...string) string {
		t.Helper()
		args := []string{"psql", dsn, "-X"}
		for _, s := range stmts {
			args = append(args, "-c", s)
		}
		out, _ := e.run(args...)
		check(name, "psql", stmts, out)
		return out
	}
	script := func(name string, steps ...string) string {
		t.Helper()
		out := e.pgconnScript(dsn, steps...)
		check(name, "pgconn", steps, out)
		return out
	}

	// 1. Source tracing gives up past maxSources references (outputs.go appendSources), but
	// outputs() copied w.opaque into Outputs.Opaque before the loop that overflows: the
	// statement's outputs are neither opaque nor complete, and upper(tel) has no source.
	ids := strings.Repeat("id,", 8300) + "id"
	psql("source limit overflow", `select upper(tel) as u, array_length(array[`+ids+`], 1) as n from customers`)
	script("source limit overflow (extended)", `X:select upper(tel) as u, array_length(array[`+ids+`], 1) as n from customers`)

	// 2. Cursor bookkeeping (origins.go noteOrigins): a WITH HOLD cursor outlives COMMIT, which
	// clears the guard's cursor map; a second DECLARE of the name then fails on the server but
	// is noted as what the name reads.
	psql("with hold cursor, commit, failed re-DECLARE",
		`declare k cursor with hold for select upper(tel) as u from customers`,
		`commit`,
		`declare k cursor with hold for select upper(name) as u from customers`,
		`fetch all from k`)
	// A CLOSE that never ran (its query failed first) is noted as run.
	psql("CLOSE that did not run",
		`declare k cursor with hold for select upper(tel) as u from customers`,
		`select 1/0; close k`,
		`declare k cursor with hold for select upper(name) as u from customers`,
		`fetch all from k`)
	// Parse runs nothing, but noteOrigins runs at Parse (guard.go Statement, KindParse): a CLOSE
	// and a DECLARE only parsed rewrite the cursor map.
	script("CLOSE and DECLARE only parsed",
		`Q:declare k cursor with hold for select upper(tel) as u from customers`,
		`P:a:close k`,
		`P:b:declare k cursor with hold for select upper(name) as u from customers`,
		`Q:fetch all from k`)
	script("CLOSE and DECLARE only parsed, extended FETCH",
		`Q:declare k cursor with hold for select upper(tel) as u from customers`,
		`P:a:close k`,
		`P:b:declare k cursor with hold for select upper(name) as u from customers`,
		`X:fetch all from k`)

	// 3. Server messages of statements that read a ruled column without naming it are masked
	// only by the lenient templates (masking.go result: ruled comes from Names, which follow
	// neither views nor statistics): identifiers and bare numbers pass.
	psql("pg_stats value in an error", `select histogram_bounds::text::regclass from pg_stats where tablename = 'customers' and attname = 'tel'`)
	psql("pg_stats value in a date error", `select make_date(substr(histogram_bounds::text, 2, 4)::int, 13, 1) from pg_stats where tablename = 'customers' and attname = 'tel'`)
	psql("view column in an error", `select num::regclass from contacts`)
	psql("view column in a date error", `select make_date(substr(num, 1, 4)::int, 13, 1) from contacts`)
	psql("view column in a chr error", `select chr(substr(num, 1, 9)::int) from contacts`)

	// 4. A rule naming a table does not cover the tables that hold its rows under another name.
	// (A plain tel column is caught by the phone detector, whose context is the column's name;
	// a computed column has no such context.)
	psql("inheritance child", `select tel from customers_archive`, `select upper(tel) as u from customers_archive`)
	psql("partition", `select tel from part.customers_1`, `select upper(tel) as u from part.customers_1`)
	psql("partitioned parent in another schema", `select upper(tel) as u from part.customers`)

	// 5. Views: derive (views.go) ignores Outputs.Opaque and cannot see into functions.
	psql("view over table_to_xml", `select doc from xml_export`)
	psql("view over table_to_xml, detector context removed", `select replace(doc::text, 'tel>', 'x>') as d from xml_export`)
	psql("view calling a function", `select card from customer_cards`)

	// 6. Result columns are paired with target entries by position when the counts agree
	// (origins.go sources); a target like (row(...)).* is not a ColumnRef star (isStar) and can
	// expand to zero or several columns, shifting the pairing.
	psql("positional shift by (row()).*", `select (row()).*, upper(tel) as u, (row(1, 2)).* from customers`)
	psql("positional shift by (row()).* 2", `select upper(name) as a, (row()).*, upper(tel) as u, (row(1, 2)).* from customers`)

	// Ideas that held, kept as regression probes.
	psql("ONLY", `select tel || '' from only customers`)
	psql("explain analyze verbose", `explain (analyze, verbose, costs off, timing off, summary off) select upper(tel) from customers where tel > (select min(tel) from customers)`)
	psql("pg_prepared_statements / pg_cursors", `prepare p as select upper(tel) from customers`, `select statement from pg_prepared_statements`, `select statement from pg_cursors`)
	psql("pg_input_error_info (PostgreSQL 16+; absent on 15)", `select (pg_input_error_info(tel, 'int2')).message from customers`)
	psql("xpath over table_to_xml", `select xpath('//tel/text()', table_to_xml('public.customers', false, false, ''))::text`)
	psql("json_populate_record", `select (json_populate_record(null::customers, row_to_json(c))).tel || '' from customers c`)
	psql("grouping/distinct on/window", `select distinct on (tel) tel || '' , grouping(tel) from customers group by tel`)
	psql("order oracle (side channel, ordering only)", `select name, row_number() over (order by tel) from customers order by 2`)
	psql("prepared name reuse", `prepare q as select upper(tel) as u from customers`, `prepare q as select upper(name) as u from customers`, `execute q`)
	script("extended: statement name reuse",
		`P:s:select upper(tel) as u from customers`,
		`P:s:select upper(name) as u from customers`,
		`E:s`)
	if out := script("statement over the classifier's length limit", fmt.Sprintf("L:%d:select upper(tel) as u PAD from customers", 1<<20+10)); !strings.Contains(out, "blocked by the policy default") {
		t.Errorf("a read longer than the classifier's limit was not refused:\n%.500s", out)
	}
	var batch []string
	for i := 0; i < 70; i++ {
		batch = append(batch, `select upper(name) as u from customers`)
		if i%10 == 5 {
			batch = append(batch, `select upper(tel) as u from customers`)
		}
	}
	script("pipelined batch past the origins ring", "B:"+strings.Join(batch, "\x1e"))

	// 7. The catalog keeps what it looked up for pgguard's catalogTTL (10 s): a view an
	// administrator redefines, or creates under a name looked up before (here as a CTE), and a
	// column renamed to a ruled name are followed once it has passed. A column added to a table
	// looked up before is looked up at once.
	psql("view before redefinition", `select x from later_cv`, `with later_v as (select 'a'::text as num) select upper(num) from later_v`)
	psql("tables before they are altered", `select name as a from late.customers`, `select info as b from late2.customers`)
	pg.Exec(t, `CREATE OR REPLACE VIEW later_cv AS SELECT tel AS x FROM customers;
CREATE VIEW later_v AS SELECT tel AS num FROM customers;
GRANT SELECT ON later_v TO agent_ro;
ALTER TABLE late.customers ADD COLUMN tel text;
UPDATE late.customers SET tel = '4155550100';
ALTER TABLE late2.customers RENAME COLUMN info TO tel;
UPDATE late2.customers SET tel = '4155550100';`)
	psql("column added after its table was looked up", `select tel as x from late.customers`)
	time.Sleep(11 * time.Second)
	psql("view redefined by an administrator", `select x from later_cv`)
	psql("view created after its name was looked up", `select upper(num) from later_v`)
	psql("column renamed to a ruled name", `select tel as x from late2.customers`)

	if direct := scalar(t, pg, "select tel || '' from customers where id = 1"); direct != "4155550100" {
		t.Fatalf("seed: %q", direct)
	}
	t.Logf("%d probes leaked", leaks)
}
