package sqlclass

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	for _, c := range []struct{ sql, want string }{
		{"insert into customers (id, tel) values ($1, $2)", "customers.id customers.tel"},
		{"update customers c set name = 'x' where c.tel = '415'", "customers.name customers.tel"},
		{"insert into customers(tel) select x from (values ('hunter2')) v(x)", "customers.tel customers.x"},
		{"select * from t where starts_with(tel, 'x')", "t.tel"},
		{"select 1 where true", ""},
		{"select table_to_xml('customers', false, false, '')", "any"},
		// Whole rows and columns no reference names (probes of a review, 2026-12-06).
		{"insert into customers values (1, 'x')", "customers."},
		{"insert into s.customers select 1, 'x'", "customers."},
		{"select * from json_populate_record(null::customers, '{}')", "customers."},
		{"select * from a join b using (tel)", "a.tel b.tel"},
		{"select * from a natural join b", "any"},
	} {
		n := Classify(c.sql).Statements[0].Names
		var got []string
		for _, s := range n.Columns {
			got = append(got, s.Table+"."+s.Column)
		}
		if n.Any {
			got = append(got, "any")
		}
		if g := strings.Join(got, " "); g != c.want {
			t.Errorf("%s: got %q, want %q", c.sql, g, c.want)
		}
	}
}

func TestLiterals(t *testing.T) {
	for _, c := range []struct {
		sql, want string // want: the literals, code ones marked with a *
	}{
		{"select * from t where a = 'x''y' and b = 42 and c = $$z$$", "'x''y'|42|$$z$$"},
		{"do $$ begin end $$", "*$$ begin end $$"},
		{"DO LANGUAGE plpgsql 'x'", "*'x'"},
		{"do language PLPGSQL $b$x$b$; select 'v'", "*$b$x$b$|'v'"},
		{"create function f() returns int language sql as 'select 1'", "*'select 1'"},
		{"create function f() returns int as $$select 1$$ language sql", "*$$select 1$$"},
		// Another language's body is not SQL; nor is one whose language is named by a string.
		{"do $$x$$ language plpython3u", "$$x$$"},
		{"do language plperl 'x'", "'x'"},
		{"create function f() returns int language 'sql' as 'select 1'", "'sql'|'select 1'"},
		// A value after a word that only looks like DO or AS.
		{"select 1 = -- as\n'v'", "1|'v'"},
		{"select x$as 'v'", "'v'"},
		{"select éas 'v'", "'v'"},
		{"select a as \"as\", 'v'", "'v'"},
		{"select 1 as x, 'v'", "1|'v'"},
		{"select x As'v'", "'v'"},
		{"update t set a = x.do 'v'", "'v'"},
		{"select * from t where a = x . do $$v$$", "$$v$$"},
		{"select * from t where a = \"x\"./**/do 'v'", "'v'"},
		{"select function from t where a = x.as 'v'", "'v'"},
		{"create function f() returns int language sql as 'select x.do ''v'''; select 1 as 'v'", "*'select x.do ''v'''|1|'v'"},
		{"select function from t where a = aſ 'v'", "'v'"},
		{"update t set a = do 'v'", "'v'"},
		{"select 1; do 'x'", "1|*'x'"},
		{"copy t from stdin with null as 'v'", "'v'"},
		{"create procedure p() language plpgsql as $$begin end$$", "*$$begin end$$"},
	} {
		lits, ok := Literals(c.sql)
		var got []string
		for _, l := range lits {
			mark := ""
			if l.Code {
				mark = "*"
			}
			got = append(got, mark+c.sql[l.Start:l.End])
		}
		if !ok || strings.Join(got, "|") != c.want {
			t.Errorf("%s: got %q (ok %v), want %s", c.sql, got, ok, c.want)
		}
	}
	if _, ok := Literals("select E'\\101'"); ok {
		t.Error("an escape the lexer does not normalise was accepted")
	}
}
