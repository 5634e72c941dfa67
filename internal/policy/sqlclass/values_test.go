package sqlclass

import (
	"fmt"
	"strings"
	"testing"
)

func TestValues(t *testing.T) {
	for _, c := range []struct {
		sql  string
		want string // "$n:cols" or "#k:cols" or "#k->$n" for EXECUTE arguments, space-separated
	}{
		{"insert into customers (id, tel) values ($1, $2)", "$1:customers.id $2:customers.tel"},
		{"insert into customers (id, tel) values (1, '415'), (2, '416')",
			"#0:customers.id #1:customers.tel #2:customers.id #3:customers.tel"},
		{"insert into customers values (1, '415')", "#0:customers.* #1:customers.*"},
		{"insert into customers (tel) select $1", "$1:customers.tel"},
		{"update customers set tel = $1, name = upper('x') where id = $2",
			"$1:customers.tel #0:customers.name $2:customers.id"},
		{"select name from customers c where c.tel = '415' and id > -5",
			"#0:customers.tel #1:customers.id"},
		{"select * from customers where lower(tel) like lower($1) or tel in ('a', 'b')",
			"$1:customers.tel #0:customers.tel #1:customers.tel"},
		{"select * from customers where tel between $1 and $2", "$1:customers.tel $2:customers.tel"},
		{"insert into customers (id, tel) values ($1, $2) on conflict (id) do update set tel = $3",
			"$1:customers.id $2:customers.tel $3:customers.tel"},
		{"select * from a join b on a.x = b.y where b.z = $1", "$1:b.z"},
		{"select * from customers where tel = E'\\101'", "#-1:customers.tel"}, // lexer gives up on escapes
		{"select 1 where true", ""},
		{"execute p(1, 'x')", "#0->$1 #1->$2"},
		{"select $1::text", ""},
	} {
		t.Run(c.sql, func(t *testing.T) {
			res := Classify(c.sql)
			if len(res.Statements) != 1 || res.Statements[0].Unknown {
				t.Fatalf("%+v", res)
			}
			var got []string
			for _, v := range res.Statements[0].Values {
				var cols []string
				for _, s := range v.Columns {
					col := s.Column
					if col == "" {
						col = "*"
					}
					cols = append(cols, s.Table+"."+col)
				}
				switch {
				case v.ExecuteParam > 0:
					got = append(got, fmt.Sprintf("#%d->$%d", v.Literal, v.ExecuteParam))
				case v.Param > 0:
					got = append(got, fmt.Sprintf("$%d:%s", v.Param, strings.Join(cols, ",")))
				default:
					got = append(got, fmt.Sprintf("#%d:%s", v.Literal, strings.Join(cols, ",")))
				}
			}
			if g := strings.Join(got, " "); g != c.want {
				t.Errorf("got  %q\nwant %q", g, c.want)
			}
		})
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
