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

func TestLiteralSpans(t *testing.T) {
	sql := "select * from t where a = 'x''y' and b = 42 and c = $$z$$"
	spans, ok := LiteralSpans(sql)
	var got []string
	for _, s := range spans {
		got = append(got, sql[s[0]:s[1]])
	}
	if !ok || strings.Join(got, "|") != "'x''y'|42|$$z$$" {
		t.Errorf("%q %v", got, ok)
	}
	if _, ok := LiteralSpans("select E'\\101'"); ok {
		t.Error("an escape the lexer does not normalise was accepted")
	}
}
