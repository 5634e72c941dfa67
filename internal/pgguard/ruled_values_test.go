package pgguard

import (
	"context"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// ruledPolicy: writes allowed, customers.tel under a redact column rule. The ruled value used
// below, 'hunter2', is one no detector recognises.
const ruledPolicy = allowAllPolicy + "masking:\n  columns:\n    - {match: customers.tel, style: redact}\n"

const ruledValue = "hunter2"

// ruledStmt is one message of a probe: a simple query, or (params != nil) a Parse + Execute.
type ruledStmt struct {
	sql    string
	params []string
}

// ruledRecorded runs stmts through a recording guard and returns the recorded statements
// (text, then parameters) as lines.
func ruledRecorded(t *testing.T, stmts []ruledStmt) []string {
	t.Helper()
	opts := record.Options{Dir: t.TempDir()}
	rec, err := record.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	pol := parsePolicy(t, ruledPolicy)
	g := guardFor(func() *policy.Policy { return pol }, rec)
	ctx := context.Background()
	id := uint64(0)
	for _, s := range stmts {
		id++
		if s.params == nil {
			st := &postgres.Statement{ID: id, Kind: postgres.KindQuery, SQL: s.sql}
			g.Statement(ctx, st)
			g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: st, Tag: []byte("OK")})
			g.Delivered()
			continue
		}
		g.Statement(ctx, &postgres.Statement{ID: id, Kind: postgres.KindParse, SQL: s.sql, StatementName: "s"})
		id++
		var ps [][]byte
		for _, p := range s.params {
			ps = append(ps, []byte(p))
		}
		st := &postgres.Statement{ID: id, Kind: postgres.KindExecute, SQL: s.sql, StatementName: "s", Known: true, Params: ps}
		g.Statement(ctx, st)
		g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: st, Tag: []byte("OK")})
		g.Delivered()
	}
	g.End("done", 0, 0)
	var out []string
	for _, ev := range eventsOf(t, closeAndLoad(t, rec, opts.Dir, g.SessionID())) {
		if ev.Statement == nil {
			continue
		}
		line := ev.Statement.Verdict + ": " + ev.Statement.Text
		for _, p := range ev.Statement.Params {
			if p != nil {
				line += " | param " + *p
			}
		}
		out = append(out, line)
	}
	return out
}

func ruledQueries(sql ...string) []ruledStmt {
	var out []ruledStmt
	for _, s := range sql {
		out = append(out, ruledStmt{sql: s})
	}
	return out
}

// TestRuledValuesNotRecordedInClear: each statement writes 'hunter2' to, or compares it with,
// customers.tel (probes from a review, 2026-12-06); the session log must not hold it in clear.
func TestRuledValuesNotRecordedInClear(t *testing.T) {
	deep := "update customers set tel = 'hunter2' where id = " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000)
	for _, c := range []struct {
		name  string
		stmts []ruledStmt
	}{
		// The walker looks at VALUES rows and target lists of the INSERT's own SELECT only.
		{"insert select from values", ruledQueries("insert into customers(tel) select x from (values ('hunter2')) v(x)")},
		{"insert with cte", ruledQueries("with x as (select 'hunter2' as v) insert into customers(tel) select v from x")},
		{"insert select with cte", ruledQueries("insert into customers(tel) with x as (select 'hunter2' as v) select v from x")},
		{"insert select union", ruledQueries("insert into customers(tel) select 'hunter2' union all select 'x'")},
		// Values in a nested query next to the column.
		{"update from values", ruledQueries("update customers set tel = v.s from (values ('hunter2', 1)) v(s, id) where customers.id = v.id")},
		{"update set scalar subquery", ruledQueries("update customers set tel = (select 'hunter2') where id = 1")},
		{"update multi-assign subquery", ruledQueries("update customers set (name, tel) = (select 'x', 'hunter2') where id = 1")},
		{"insert values scalar subquery", ruledQueries("insert into customers(tel) values ((select 'hunter2'))")},
		{"where = scalar subquery", ruledQueries("delete from customers where tel = (select 'hunter2')")},
		{"where in (values)", ruledQueries("delete from customers where tel in (values ('hunter2'))")},
		{"merge using values", ruledQueries("merge into customers c using (values (1, 'hunter2')) s(id, v) on c.id = s.id when matched then update set tel = s.v")},
		// Comparisons that are not operator expressions.
		{"where starts_with", ruledQueries("delete from customers where starts_with(tel, 'hunter2')")},
		{"where case tel when", ruledQueries("delete from customers where case tel when 'hunter2' then true else false end")},
		// A column of a subquery that is the ruled column.
		{"subquery alias column", ruledQueries("select * from (select id, tel as x from customers) s where x = 'hunter2'")},
		// String continuation: one constant, two tokens; only the first is masked.
		{"string continuation", ruledQueries("delete from customers where tel = ''\n'hunter2'")},
		// EXECUTE in the same query as its PREPARE: the guard learns the PREPARE only after
		// recording the query.
		{"prepare+execute in one query", ruledQueries("prepare q as insert into customers(tel) values ($1); execute q('hunter2')")},
		// DEALLOCATE and PREPARE again in one query: the old statement's columns are used.
		{"re-prepare in one query", ruledQueries(
			"prepare p as insert into customers(name, tel) values ($1, $2)",
			"deallocate p; prepare p as insert into customers(tel, name) values ($1, $2); execute p('hunter2', 'x')")},
		// Text the classifier gives up on (too deep, too long, syntax error) gets the detectors only.
		{"too deep to classify", ruledQueries(deep)},
		{"syntax error", ruledQueries("update customers set tel = 'hunter2' wher id = 1")},
		{"too long to classify", ruledQueries("update customers set tel = 'hunter2' where id = 1 /*" + strings.Repeat("x", 1<<20) + "*/")},
		// Code the guard does not parse: a DO block, a function's body, a function it does not
		// know, SQL text given to a function.
		{"do block", ruledQueries("do $$ begin update customers set tel = 'hunter2' where id = 1; end $$")},
		{"do block quoted", ruledQueries("do 'begin update customers set tel = ''hunter2''; end'")},
		{"function body", ruledQueries("create function f() returns void language sql as 'update customers set tel = ''hunter2'''")},
		{"sql-standard function body", ruledQueries("create procedure p() begin atomic update customers set tel = 'hunter2'; end")},
		{"unknown function", ruledQueries("select set_tel(1, 'hunter2')")},
		{"value after a comment ending in AS", ruledQueries("update customers set tel = -- as\n'hunter2' where id = 1")},
		{"do block in another language", ruledQueries("do language plpython3u $$ plpy.execute(\"update customers set tel = 'hunter2'\") $$")},
		{"query_to_xml", ruledQueries("select query_to_xml('select 1 from customers where tel = ''hunter2''', true, false, '')")},
		// Parameters of the extended protocol, through the same walker.
		{"param insert select from values", []ruledStmt{{sql: "insert into customers(tel) select x from (values ($1::text)) v(x)", params: []string{"hunter2"}}}},
		{"param scalar subquery", []ruledStmt{{sql: "update customers set tel = (select $1::text) where id = 1", params: []string{"hunter2"}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := ruledRecorded(t, c.stmts)
			for _, line := range got {
				if strings.Contains(line, ruledValue) {
					if len(line) > 300 {
						line = line[:150] + " … " + line[len(line)-150:]
					}
					t.Errorf("ruled value recorded in clear:\n%s", line)
				}
			}
			if len(got) == 0 {
				t.Errorf("nothing recorded")
			}
		})
	}
}
