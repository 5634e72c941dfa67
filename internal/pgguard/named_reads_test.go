package pgguard

// Functions that read what an argument names, through the proxy to a real server (from a review,
// 2026-12-08): table_to_xml('t', …) reads every row of t, cursor_to_xml('p', …) fetches from
// cursor or portal p, which runs a portal's statement. Neither may escape the rules the
// statement that names t, or the Execute of p, is judged by.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// tableRulePolicy: reads only; writes wait for a reviewer (none here, so a held statement is
// refused); table t is off limits by a rule on its name.
const tableRulePolicy = `version: 1
targets:
  - name: db
    match: {addresses: [198.18.0.2], ports: [5432]}
    protocol: postgres
    upstream: {user: agent_rw, password_file: /nonexistent, tls: disable}
grants:
  - {groups: [engineering], targets: [db]}
default: allow_reads
rules:
  - {name: no-ddl, when: 'sql.ddl', action: block, message: no DDL}
  - {name: no-secret-table, when: '"t" in sql.tables', action: block, message: t is off limits}
  - {name: writes-need-review, when: 'sql.writes', action: approve, approvers: [dba], message: reviewed}
`

// trustsCursorToXML is tableRulePolicy with cursor_to_xml trusted by name, as a rule on
// sql.functions may trust a function: with a computed cursor name the call is code that may
// fetch from any portal.
var trustsCursorToXML = tableRulePolicy +
	`  - {name: xml-export, when: 'sql.functions == ["cursor_to_xml"] && !sql.writes', action: allow}
`

// codesAndMessages shows errors as "E(code: message)", the rest as fullTranscript does.
func codesAndMessages(t *testing.T, fe *pgproto3.Frontend, n int, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	return exchange(t, fe, n, func(m pgproto3.BackendMessage) string {
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Sprintf("E(%s: %s)", m.Code, m.Message)
		case *pgproto3.DataRow:
			return "D(" + string(m.Values[0]) + ")"
		case *pgproto3.ReadyForQuery:
			return "Z(" + string(m.TxStatus) + ")"
		}
		return strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3.")
	}, msgs...)
}

// TestPortalsHeldForApprovalStayHeld: a write that needs approval passes Parse (approval is asked
// at Execute, when its parameters are known) and its Bind reaches the server, which then holds a
// portal that runs the write. cursor_to_xml fetches from any cursor by name, portals included:
// naming the portal is refused as FETCH is, and code that could name it as it runs (here
// cursor_to_xml of a computed name, trusted by a rule) is refused while the portal is open. The
// DELETE never runs.
func TestPortalsHeldForApprovalStayHeld(t *testing.T) {
	const deleteAda = "delete from customers where id = 1 returning name"
	proxies := map[string]*plainRoleProxy{} // by policy
	long := strings.Repeat("n", 63)
	for _, c := range []struct {
		name   string
		policy string
		portal string // the held DELETE's portal
		// attack is a simple query, or (extended) Parse, Bind to portal "q" and Execute of it.
		attack   string
		extended bool
		refusal  string // in the error's message
	}{
		{"named portal", tableRulePolicy, "p", "select cursor_to_xml('p', 10, false, false, '')", false, "cannot use its name"},
		{"named portal, as refcursor", tableRulePolicy, "p", "select cursor_to_xml('p'::refcursor, 10, false, false, '')", false, "cannot use its name"},
		{"named portal, schema only", tableRulePolicy, "p", "select cursor_to_xmlschema('p', false, false, '')", false, "cannot use its name"},
		{"named portal, from an Execute", tableRulePolicy, "p", "select cursor_to_xml('p', 10, false, false, '')", true, "cannot use its name"},
		{"unnamed portal, from an Execute", tableRulePolicy, "", "select cursor_to_xml('', 10, false, false, '')", true, "cannot use its name"},
		// The server looks a cursor's name up by its first 63 bytes.
		{"name cut to 63 bytes", tableRulePolicy, long, "select cursor_to_xml('" + long + "more', 10, false, false, '')", false, "cannot use its name"},
		{"computed name", tableRulePolicy, "p", "select cursor_to_xml(('p' || '')::refcursor, 10, false, false, '')", false, "default allow_reads blocks it"},
		{"computed name, trusted", trustsCursorToXML, "p", "select cursor_to_xml(('p' || '')::refcursor, 10, false, false, '')", false, "code such as this statement could run it"},
		{"computed name, trusted, from an Execute", trustsCursorToXML, "p", "select cursor_to_xml(('p' || '')::refcursor, 10, false, false, '')", true, "code such as this statement could run it"},
		{"computed name, trusted, unnamed portal", trustsCursorToXML, "", "select cursor_to_xml(('' || '')::refcursor, 10, false, false, '')", true, "code such as this statement could run it"},
		{"computed name, trusted, prepared before", trustsCursorToXML, "p", "execute c2x('p')", false, "code such as this statement could run it"},
		// A PREPAREd read of the portal by its literal name is no code: its EXECUTE is what names it.
		{"named portal, prepared before", tableRulePolicy, "p", "execute lit", false, "cannot use its name"},
		{"named portal, prepared in the same query", tableRulePolicy, "p", "prepare lit2 as select cursor_to_xml('p', 10, false, false, ''); execute lit2", false, "cannot use its name"},
		// The server evaluates an EXECUTE's arguments: naming the portal there is the same.
		{"named portal, in an EXECUTE's argument", tableRulePolicy, "p", "execute one(cursor_to_xml('p', 10, false, false, ''))", false, "cannot use its name"},
		{"named portal, in an EXECUTE's argument, prepared in the same query", tableRulePolicy, "p", "prepare one2(xml) as select $1; execute one2(cursor_to_xml('p', 10, false, false, ''))", false, "cannot use its name"},
	} {
		p := proxies[c.policy]
		if p == nil {
			p = startPlainRoleProxy(t, c.policy, "db", "")
			proxies[c.policy] = p
		}
		t.Run(c.name, func(t *testing.T) {
			fe := p.connect(t, nil).Frontend()
			if got := codesAndMessages(t, fe, 1, &pgproto3.Query{String: "prepare c2x(text) as select cursor_to_xml(($1 || '')::refcursor, 10, false, false, '')"}); strings.Contains(strings.Join(got, " "), "E(") && c.policy == trustsCursorToXML {
				t.Fatalf("PREPARE: %v", got)
			}
			for _, prepare := range []string{"prepare lit as select cursor_to_xml('p', 10, false, false, '')", "prepare one(xml) as select $1"} {
				if got := codesAndMessages(t, fe, 1, &pgproto3.Query{String: prepare}); strings.Contains(strings.Join(got, " "), "E(") {
					t.Fatalf("%s: %v", prepare, got)
				}
			}
			codesAndMessages(t, fe, 1, &pgproto3.Query{String: "begin"})
			if got := codesAndMessages(t, fe, 1, &pgproto3.Parse{Name: "w", Query: deleteAda},
				&pgproto3.Bind{DestinationPortal: c.portal, PreparedStatement: "w"}, &pgproto3.Sync{}); strings.Join(got, " ") != "ParseComplete BindComplete Z(T)" {
				t.Fatalf("Parse and Bind of the held DELETE: %v", got)
			}
			var got []string
			if c.extended {
				got = codesAndMessages(t, fe, 1, &pgproto3.Parse{Name: "x", Query: c.attack},
					&pgproto3.Bind{DestinationPortal: "q", PreparedStatement: "x"}, &pgproto3.Execute{Portal: "q"}, &pgproto3.Sync{})
			} else {
				got = codesAndMessages(t, fe, 1, &pgproto3.Query{String: c.attack})
			}
			codesAndMessages(t, fe, 1, &pgproto3.Query{String: "commit"})
			if n, _ := p.direct(t, "select count(*) from customers"); n != "2" {
				t.Errorf("the held DELETE ran: customers has %s rows; %q answered %v", n, c.attack, got)
				p.direct(t, "insert into customers values (1, 'Ada', '4155550100')")
			}
			shown := strings.Join(got, " ")
			if !strings.Contains(shown, "E(42501: ") || !strings.Contains(shown, c.refusal) {
				t.Errorf("%q answered %v, want a 42501 saying %q", c.attack, got, c.refusal)
			}
		})
	}
}

// TestCodeRunsBesidePortalsAllowedOutright: the refusal of code beside a held portal is only
// that: with the portal closed, or beside portals the policy allows, the same code runs, and
// cursor_to_xml reads SQL cursors.
func TestCodeRunsBesidePortalsAllowedOutright(t *testing.T) {
	p := startPlainRoleProxy(t, trustsCursorToXML, "db", "")
	fe := p.connect(t, nil).Frontend()
	steps := []struct {
		msgs []pgproto3.FrontendMessage
		want string // in the answer
	}{
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "begin"}}, "Z(T)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "declare c cursor for select name from customers order by id"}}, "Z(T)"},
		// A portal the policy allows outright, bound and left open.
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Name: "r", Query: "select id from customers"}, &pgproto3.Bind{DestinationPortal: "r", PreparedStatement: "r"}, &pgproto3.Sync{}}, "BindComplete Z(T)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "select cursor_to_xml('c', 1, false, false, '')"}}, "Ada"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "select cursor_to_xml(('c' || '')::refcursor, 1, false, false, '')"}}, "Bob"},
		// A held DELETE's portal: code is refused until it is closed.
		{[]pgproto3.FrontendMessage{&pgproto3.Parse{Name: "w", Query: "delete from customers where id = 1"}, &pgproto3.Bind{DestinationPortal: "w", PreparedStatement: "w"}, &pgproto3.Sync{}}, "BindComplete Z(T)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "select cursor_to_xml(('c' || '')::refcursor, 1, false, false, '')"}}, "E(42501: enforcer: portal \"w\" is open"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "rollback"}}, "Z(I)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "begin"}}, "Z(T)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "declare c cursor for select name from customers order by id"}}, "Z(T)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Bind{DestinationPortal: "w", PreparedStatement: "w"}, &pgproto3.Sync{}}, "BindComplete Z(T)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Close{ObjectType: 'P', Name: "w"}, &pgproto3.Sync{}}, "CloseComplete Z(T)"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "select cursor_to_xml(('c' || '')::refcursor, 1, false, false, '')"}}, "Ada"},
		{[]pgproto3.FrontendMessage{&pgproto3.Query{String: "commit"}}, "Z(I)"},
	}
	for i, s := range steps {
		got := strings.Join(codesAndMessages(t, fe, 1, s.msgs...), " ")
		if !strings.Contains(got, s.want) {
			t.Fatalf("step %d: %s, want %q in it", i, got, s.want)
		}
	}
	if n, _ := p.direct(t, "select count(*) from customers"); n != "2" {
		t.Errorf("customers has %s rows, want 2", n)
	}
}

// TestTableReadersSeeTableRules: a rule on a table's name holds for the functions that read a
// table by name (table_to_xml and its xmlschema forms, a literal or a cast one), and those that
// read tables the statement does not name (query_to_xml's query string, schema_to_xml,
// database_to_xml) are code the default refuses. Every one of them returns t's rows otherwise.
func TestTableReadersSeeTableRules(t *testing.T) {
	p := startPlainRoleProxy(t, tableRulePolicy, "db", "")
	c := p.connect(t, nil)
	for _, sql := range []string{
		"select secret from t",
		"select table_to_xml('t', true, false, '')",
		"select table_to_xml(' T ', true, false, '')",
		"select table_to_xml('public.t', true, false, '')",
		`select table_to_xml('"t"'::regclass, true, false, '')`,
		"select table_to_xml('t'::text::regclass, true, false, '')",
		"select table_to_xml('t'::regclass::oid, true, false, '')",
		"select table_to_xmlschema('t', true, false, '')",
		"select table_to_xml_and_xmlschema('t', true, false, '')",
		"select query_to_xml('select secret from t', true, false, '')",
		"select schema_to_xml('public', true, false, '')",
		"select database_to_xml(true, false, '')",
		"select database_to_xml_and_xmlschema(true, false, '')",
		// A CTE of the same name hides no table it does not stand for.
		"with t as (select 1) select table_to_xml('t', true, false, '')",
		"with t as (select 1) select secret from public.t",
		"with a as (select secret from t), t as (select 1) select * from a",
	} {
		v, err := firstValue(c, sql)
		if err == nil || !strings.Contains(err.Error(), "42501") {
			t.Errorf("%q: %.200q, %v; want the enforcer's 42501", sql, v, err)
		}
	}
	// Control: the functions read tables the rules let the agent read.
	if v, err := firstValue(c, "select table_to_xml('customers', true, false, '')"); err != nil || !strings.Contains(v, "Ada") {
		t.Errorf("table_to_xml of customers: %.200q, %v", v, err)
	}
}
