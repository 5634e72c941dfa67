package pgguard

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestDeriveViewColumns follows view columns through their definitions to table columns (the
// catalog is filled by hand here; TestColumnRulesFollowComputedColumns does it with PostgreSQL).
func TestDeriveViewColumns(t *testing.T) {
	c := &catalog{rels: map[uint32]*relation{
		1: {schema: "public", name: "customers", cols: []string{"id", "name", "tel"}},
		2: {schema: "public", name: "contacts", view: true, cols: []string{"name", "num"}, uses: []uint32{1},
			def: "SELECT customers.name, customers.tel AS num FROM customers;"},
		3: {schema: "public", name: "contacts2", view: true, cols: []string{"n", "p"}, uses: []uint32{2},
			def: "SELECT upper(contacts.name) AS n, (contacts.num || '-'::text) AS p FROM contacts;"},
		4: {schema: "public", name: "broken", view: true, cols: []string{"x"}, def: "SELECT FROM WHERE"},
		5: {schema: "public", name: "unioned", view: true, cols: []string{"v"}, uses: []uint32{1},
			def: "SELECT customers.name AS v FROM customers UNION SELECT customers.tel FROM customers;"},
		6: {schema: "public", name: "calls", view: true, cols: []string{"card"}, uses: []uint32{1},
			def: "SELECT tel_of(customers.id) AS card FROM customers;"},
		7: {schema: "public", name: "xml", view: true, cols: []string{"doc"},
			def: "SELECT table_to_xml('customers'::regclass, false, false, ''::text) AS doc;"},
	}}
	// A chain of views deeper than maxViewDepth.
	for i := uint32(100); i < 100+maxViewDepth+2; i++ {
		c.rels[i] = &relation{name: fmt.Sprintf("v%d", i), view: true, cols: []string{"tel"}, uses: []uint32{i + 1},
			def: fmt.Sprintf("SELECT v%d.tel FROM v%d;", i+1, i+1)}
	}
	c.rels[100+maxViewDepth+2] = &relation{name: fmt.Sprintf("v%d", 100+maxViewDepth+2), cols: []string{"tel"}}
	for _, tc := range []struct {
		oid     uint32
		attnum  int
		want    string
		unknown bool
	}{
		{1, 3, "public.customers.tel", false},
		{2, 1, "public.customers.name", false},
		{2, 2, "public.customers.tel", false},
		{2, 0, "public.customers.name public.customers.tel", false},
		{3, 1, "public.customers.name", false},
		{3, 2, "public.customers.tel", false},
		{4, 1, "", true},
		{5, 1, "public.customers.name public.customers.tel", false},
		{6, 1, "", true}, // a function may read anything
		{7, 1, "", true}, // a table read by name
		{100, 1, "", true},
	} {
		from, unknown := c.derive(tc.oid, tc.attnum, 0)
		var got []string
		for _, f := range from {
			got = append(got, f.Schema+"."+f.Table+"."+f.Column)
		}
		if strings.Join(got, " ") != tc.want || unknown != tc.unknown {
			t.Errorf("%s column %d: %q unknown %v, want %q unknown %v", c.rels[tc.oid].name, tc.attnum, got, unknown, tc.want, tc.unknown)
		}
	}
}

// TestStatementsThroughViewsShownMasked: a statement that names a ruled column only through a
// view, or through a table that inherits the ruled one, is shown with its values masked, like
// one that names the column itself; the catalog tells which columns views show.
func TestStatementsThroughViewsShownMasked(t *testing.T) {
	p := startGuardedProxy(t, allowAllPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	p.db.Exec(t, `create view contacts as select id, secret as num, 'x'::text as other from t;
create view contacts2 as select num from contacts;
create table t_child (extra text) inherits (t);
create table plain (id int, note text)`)
	c := p.connect(t)
	<-p.guards
	ctx := context.Background()
	stmts := []string{
		"update contacts set num = 'hunter2' where id = 0",
		"select id from contacts where num = 'hunter2'",
		"select * from contacts2 where num like 'hunter2%'",
		"insert into contacts values (100, 'hunter2')",
		"select id from t_child where secret = 'hunter2'",
		// Not ruled: shown as sent.
		"select id from contacts where other = 'kept'",
		"select id from plain where note = 'kept'",
	}
	for _, sql := range stmts {
		if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	c.Close(ctx)
	var shown []string
	for _, ev := range eventsOf(t, p.session(t)) {
		if ev.Statement != nil {
			shown = append(shown, ev.Statement.Text)
		}
	}
	if len(shown) != len(stmts) {
		t.Fatalf("recorded %d statements, want %d: %q", len(shown), len(stmts), shown)
	}
	for i, sql := range stmts {
		ruled := !strings.Contains(sql, "kept")
		if leaked := strings.Contains(shown[i], "hunter2"); leaked {
			t.Errorf("%s: recorded in clear: %q", sql, shown[i])
		}
		if !ruled && shown[i] != sql {
			t.Errorf("%s: recorded as %q, want it as sent", sql, shown[i])
		}
	}
}
