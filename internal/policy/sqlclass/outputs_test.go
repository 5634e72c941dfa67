package sqlclass

import (
	"fmt"
	"strings"
	"testing"
)

// srcs writes sources compactly: "customers.phone", "c.*" for a whole row, ".x" for a column of
// no relation in particular, schema-qualified as "s.t.c".
func srcs(ss []ColumnSource) string {
	var out []string
	for _, s := range ss {
		t := s.Table
		if s.Schema != "" {
			t = s.Schema + "." + t
		}
		c := s.Column
		if c == "" {
			c = "*"
		}
		out = append(out, t+"."+c)
	}
	return strings.Join(out, " ")
}

func TestOutputs(t *testing.T) {
	for _, c := range []struct {
		sql        string
		byPosition []string // nil: positions unknown
		all        string
	}{
		{"select upper(email), phone || '' as p from customers",
			[]string{"customers.email", "customers.phone"}, "customers.email customers.phone"},
		{"select c.id, length(c.phone) from customers c join orders o on o.cid = c.id",
			[]string{"customers.id", "customers.phone"}, "customers.id customers.phone"},
		{"select upper(name) from customers c join orders o on o.cid = c.id",
			[]string{"customers.name orders.name"}, "customers.name orders.name"},
		{"select row_to_json(c) from customers c",
			[]string{"customers.c customers.*"}, "customers.c customers.*"},
		{"select to_jsonb(c.*) from public.customers c",
			[]string{"public.customers.*"}, "public.customers.*"},
		{"select public.customers.phone || '' from public.customers",
			[]string{"public.customers.phone"}, "public.customers.phone"},
		{"select count(*) from customers", []string{""}, ""},
		{"select (row()).*, upper(tel) as u, (row(1, 2)).* from customers", nil, "customers.tel"}, // (expr).* expands
		{"select 1", []string{""}, ""},
		{"select lower(x) from (select phone || '' as x from customers) s",
			nil, "customers.phone customers.x"},
		{"with c as (select phone as x from customers) select x || '' from c",
			nil, "c.phone customers.phone c.x customers.x"},
		{"select (select max(phone) from customers) as p", nil, "customers.phone"},
		{"select *, upper(name) from customers", nil, "customers.name"},
		{"select upper(phone) from customers union select name from staff",
			nil, "customers.phone staff.phone customers.name staff.name"},
		{"update customers set name = 'x' where id = 1 returning phone || ''",
			nil, "customers.id customers.phone"}, // RETURNING shows what SET wrote
		{"insert into notes select id, tel from customers returning x || ''",
			nil, "notes.id customers.id notes.tel customers.tel notes.x customers.x"},
		// Function arguments in FROM are output.
		{"select x from customers, upper(tel) x", nil, "customers.tel customers.x"},
		// An alias that renames columns: c(i, n, x).x is some column of customers.
		{"select upper(x) from customers c(i, n, x)", []string{"customers.x customers.*"}, "customers.x customers.*"},
		{"select j.x || '' from (a cross join b) as j(i, x)", []string{"a.* b.* a.x b.x .x"}, "a.* b.* a.x b.x .x"},
		{"delete from customers returning *", nil, ""},
		{"delete from customers returning upper(phone)", []string{"customers.phone"}, "customers.phone"},
		{"declare k cursor for select phone || '' from customers",
			[]string{"customers.phone"}, "customers.phone"},
		{"prepare p as select upper(phone) from customers where id = $1",
			[]string{"customers.phone"}, "customers.phone"},
		{"insert into customers (id, phone) values (1, 'x')", nil, "-"},
		{"insert into customers (id, phone) values (1, 'x') returning lower(phone)", nil, "customers.phone"}, // VALUES: a nested query
		{"explain select phone from customers", nil, "-"},
		{"create table t (a int)", nil, "-"},
		{"select upper(x) from generate_series(1, 3) x", nil, ".x"},
	} {
		t.Run(c.sql, func(t *testing.T) {
			res := Classify(c.sql)
			if len(res.Statements) != 1 {
				t.Fatalf("%d statements (%s)", len(res.Statements), res.ParseError)
			}
			o := res.Statements[0].Outputs
			if c.all == "-" {
				if o != nil {
					t.Fatalf("outputs %+v, want none", o)
				}
				return
			}
			if o == nil {
				t.Fatal("no outputs")
			}
			if got := srcs(o.All); got != c.all {
				t.Errorf("all: %q, want %q", got, c.all)
			}
			var pos []string
			for _, p := range o.ByPosition {
				pos = append(pos, srcs(p))
			}
			if fmt.Sprint(pos) != fmt.Sprint(c.byPosition) || (pos == nil) != (c.byPosition == nil) {
				t.Errorf("by position: %q, want %q", pos, c.byPosition)
			}
		})
	}
}

// TestOpaqueOutputs: a function that reads a table or cursor by name has outputs of unknown
// origin (every rule covers them).
func TestOpaqueOutputs(t *testing.T) {
	for _, sql := range []string{
		"select table_to_xml('customers', false, false, '')",
		"select x from cursor_to_xml('k', 10, false, false, '') x",
		"select upper(name) from customers",
	} {
		o := Classify(sql).Statements[0].Outputs
		if want := !strings.Contains(sql, "upper"); o == nil || o.Opaque != want {
			t.Errorf("%s: outputs %+v, want opaque %v", sql, o, want)
		}
	}
}

// TestSourcesBounded: a statement naming a thousand tables and comparing a column four
// thousand times would pair every reference with every table (four million sources); past
// maxSources it may name any column instead.
func TestSourcesBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("select 1 from t")
	for i := range 1000 {
		fmt.Fprintf(&b, ", t%d", i)
	}
	b.WriteString(" where coalesce(" + strings.Repeat("secret = 'a', ", 4000) + "true)")
	n := Classify(b.String()).Statements[0].Names
	if !n.Any || len(n.Columns) > maxSources {
		t.Errorf("%d columns named, any %v", len(n.Columns), n.Any)
	}
	// The same bound holds for outputs: a target list of 4,000 references to a column of any
	// of 1,000 tables.
	b.Reset()
	b.WriteString("select " + strings.Repeat("upper(secret), ", 4000) + "1 from t")
	for i := range 1000 {
		fmt.Fprintf(&b, ", t%d", i)
	}
	if o := Classify(b.String()).Statements[0].Outputs; !o.Opaque || len(o.All) > maxSources {
		t.Errorf("%d sources in all, opaque %v", len(o.All), o.Opaque)
	}
}
