package sqlclass

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFunctionCallsNotInert: a call to a function that is not known to be
// free of effects makes the statement neither read-only nor inert, also
// when the answer comes from either cache level.
func TestFunctionCallsNotInert(t *testing.T) {
	for _, c := range []struct {
		sql             string
		readOnly, inert bool
		procedural      bool
	}{
		{"SELECT purge_old_rows()", false, false, true},
		{"SELECT purge_old_rows(30)", false, false, true},
		{"SELECT public.f(1)", false, false, true},
		{"SELECT * FROM t WHERE id = 5 AND f(id)", false, false, true},
		{"SELECT * FROM f(5)", false, false, true},
		{"SELECT id FROM t ORDER BY f(id) LIMIT 5", false, false, true},
		{"VALUES (f(1))", false, false, true},
		{"WITH x AS (SELECT f(1)) SELECT * FROM x", false, false, true},
		{"SELECT (SELECT f(1))", false, false, true},
		{"EXPLAIN SELECT f(1)", false, false, true},
		{"SELECT 1 OPERATOR(public.+) 2", false, false, true},
		{"SELECT a <=> b FROM t", false, false, true},
		{"SELECT nextval('s')", false, false, false},
		{"SELECT setval('s', 5)", false, false, false},
		{"SELECT pg_advisory_lock(5)", false, false, false},
		{"SELECT pg_terminate_backend(5)", false, false, false},
		{"SELECT set_config('application_name', 'x', false)", false, false, false},
		{"SELECT dblink_exec('c', 'DELETE FROM t')", false, false, false},
		{"SELECT lo_unlink(5)", false, false, false},
		{"SELECT lower('X'), now(), count(*), coalesce(1, 2), abs(-5) FROM t", true, true, false},
		{"SELECT pg_catalog.lower('X')", true, true, false},
		{"SELECT * FROM t WHERE created_at > now() - interval '1 day' ORDER BY lower(name)", true, true, false},
		{"SELECT * FROM generate_series(1, 5)", true, true, false},
		{"BEGIN", false, true, false},
		{"COMMIT", false, true, false},
		{"COMMIT AND CHAIN", false, true, false},
		{"ROLLBACK", false, true, false},
		{"SAVEPOINT s", false, true, false},
		{"COMMIT PREPARED 'x'", false, false, false},
	} {
		check := func(how string, st *Statement) {
			t.Helper()
			if st.ReadOnly() != c.readOnly || st.Inert() != c.inert || st.Procedural != c.procedural {
				t.Errorf("%s %q: ReadOnly %v Inert %v Procedural %v, want %v %v %v",
					how, c.sql, st.ReadOnly(), st.Inert(), st.Procedural, c.readOnly, c.inert, c.procedural)
			}
		}
		check("uncached", &Classify(c.sql).Statements[0])
		cl := New(Options{})
		cl.Classify(c.sql)
		check("exact hit", &cl.Classify(c.sql).Statements[0])
		// A sibling with other literal values is answered from the shape.
		if sib := strings.NewReplacer("5", "7", "'X'", "'Y'", "30", "31").Replace(c.sql); sib != c.sql {
			res := cl.Classify(sib)
			check("shape hit", &res.Statements[0])
			if res.Statements[0].Text != sib {
				t.Errorf("%q: text %q", sib, res.Statements[0].Text)
			}
		}
	}
}

func TestClassifyCall(t *testing.T) {
	for _, c := range []struct {
		schema, name string
		want         funcClass
	}{
		{"", "lower", 0},
		{"pg_catalog", "lower", 0},
		{"", "now", 0},
		{"", "count", 0},
		{"", "random", 0},
		{"", "currval", 0},
		{"information_schema", "_pg_expandarray", 0},
		{"", "_pg_expandarray", fnProcedural},
		{"information_schema", "lower", fnProcedural},
		{"public", "lower", fnProcedural},
		{"", "Lower", fnProcedural},
		{"PG_CATALOG", "lower", fnProcedural},
		{"", "purge_old_rows", fnProcedural},
		{"myschema", "purge_old_rows", fnProcedural},
		{"", "nextval", fnSideEffect},
		{"pg_catalog", "nextval", fnSideEffect},
		{"public", "nextval", fnSideEffect | fnProcedural},
		{"", "NEXTVAL", fnSideEffect | fnProcedural},
		{"", "txid_current", fnSideEffect},
		{"", "pg_current_xact_id", fnSideEffect},
		{"", "pg_read_file", fnUnsafeIO},
		{"", "dblink_exec", fnUnsafeIO | fnSideEffect},
		{"", "lo_get", fnSideEffect},
		{"", "query_to_xml", fnProcedural},
		{"", "table_to_xml", fnTableArg},
		{"public", "table_to_xml", fnTableArg | fnProcedural},
		{"", "cursor_to_xml", fnCursorArg},
		{"", "cursor_to_xmlschema", fnCursorArg},
		{"", "database_to_xml", fnProcedural},
		{"", "pg_logical_slot_peek_changes", fnProcedural},
		{"", "pg_logical_slot_get_changes", fnSideEffect | fnProcedural},
		{"", "set_config", fnSession},
		{"", "uuid_generate_v4", fnProcedural},
	} {
		if got := classifyCall(c.schema, c.name); got != c.want {
			t.Errorf("classifyCall(%q, %q) = %b, want %b", c.schema, c.name, got, c.want)
		}
	}
}

// TestPureFuncs checks the list of effect-free built-ins: well-formed, not
// contradicting the list of built-ins with effects, and complete for the
// functions the grammar itself calls (EXTRACT, SUBSTRING, TRIM, AT TIME ZONE,
// SIMILAR TO, …: SystemFuncName in gram.y of PostgreSQL 17).
func TestPureFuncs(t *testing.T) {
	ident := regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	if len(pureFuncs) < 2000 {
		t.Fatalf("only %d pure functions", len(pureFuncs))
	}
	for name := range pureFuncs {
		if !ident.MatchString(name) {
			t.Errorf("pure function %q is not a lower-case identifier", name)
		}
		if c := effectClass(name); c != 0 {
			t.Errorf("pure function %q has effects %b", name, c)
		}
	}
	for _, name := range []string{
		// gram.y SystemFuncName
		"btrim", "extract", "is_normalized", "json_object", "like_escape", "ltrim", "normalize",
		"overlaps", "overlay", "pg_collation_for", "position", "rtrim", "similar_to_escape",
		"substring", "system_user", "timezone", "xmlexists",
		// everyday built-ins
		"now", "lower", "upper", "count", "sum", "avg", "min", "max", "abs", "round", "length",
		"date_trunc", "to_char", "array_agg", "string_agg", "json_agg", "jsonb_build_object",
		"generate_series", "unnest", "current_setting", "version", "pg_backend_pid", "format",
		"quote_ident", "pg_get_userbyid", "format_type", "pg_get_expr", "pg_table_is_visible",
		"obj_description", "has_table_privilege", "pg_relation_size", "random", "gen_random_uuid",
		"clock_timestamp", "currval", "lastval", "pg_lock_status", "row_number", "lag",
	} {
		if !pureFuncs[name] {
			t.Errorf("%q is not known to be pure", name)
		}
	}
	for _, name := range []string{"nextval", "setval", "set_config", "pg_advisory_lock", "pg_terminate_backend",
		"lo_unlink", "lo_import", "pg_read_file", "query_to_xml", "txid_current", "dblink", "pg_notify",
		"table_to_xml", "cursor_to_xml", "schema_to_xml", "database_to_xml", "pg_logical_slot_peek_changes"} {
		if pureFuncs[name] {
			t.Errorf("%q has effects but is listed as pure", name)
		}
	}
}

// TestFunctionsReadingByName: table_to_xml and the like read the relation, and cursor_to_xml the
// cursor or protocol portal, their first argument names. A literal name is a read of that
// relation (Tables) or cursor (CursorsRead); any other may name anything, and is Procedural, as
// are the functions that read tables the statement does not name at all. A text of the same
// shape naming another relation or cursor is not answered from the first one's shape.
func TestFunctionsReadingByName(t *testing.T) {
	for _, c := range []struct {
		sql, sibling string
		tables       []string
		cursors      []string
		procedural   bool
	}{
		{sql: "SELECT table_to_xml('t', true, false, '')", sibling: "SELECT table_to_xml('u', true, false, '')", tables: []string{"t"}},
		{sql: "SELECT table_to_xmlschema('t', true, false, '')", tables: []string{"t"}},
		{sql: "SELECT table_to_xml_and_xmlschema('public.t', true, false, '')", tables: []string{"public.t", "t"}},
		{sql: `SELECT table_to_xml(' Public . "Mixed""Case" ', true, false, '')`, tables: []string{`public.Mixed"Case`, `Mixed"Case`}},
		{sql: "SELECT table_to_xml('db.s.t'::regclass, true, false, '')", tables: []string{"db.s.t", "t"}},
		{sql: "SELECT table_to_xml(CAST('t' AS pg_catalog.regclass), true, false, '')", tables: []string{"t"}},
		{sql: "SELECT pg_catalog.table_to_xml('T', true, false, '')", tables: []string{"t"}},
		{sql: "SELECT pg_sequence_last_value('s')", sibling: "SELECT pg_sequence_last_value('s2')", tables: []string{"s"}},
		{sql: "SELECT * FROM customers WHERE table_to_xml('t', true, false, '') IS NOT NULL", tables: []string{"customers", "t"}},
		{sql: "SELECT table_to_xml('16384', true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml(16384, true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml('-', true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml('tx'::char(1), true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml('t'::text::regclass, true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml('t'::myschema.regclass, true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml(tbl => 't', nulls => true, tableforest => false, targetns => '')", procedural: true},
		{sql: "SELECT table_to_xml(relname::regclass, true, false, '') FROM pg_class", tables: []string{"pg_class"}, procedural: true},
		{sql: "SELECT table_to_xml('a.b.c.d', true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml('t\v', true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml('tÉ', true, false, '')", procedural: true},
		{sql: "SELECT table_to_xml(NULL, true, false, '')", procedural: true},
		{sql: "SELECT cursor_to_xml('p', 10, false, false, '')", sibling: "SELECT cursor_to_xml('q', 10, false, false, '')", cursors: []string{"p"}},
		{sql: "SELECT cursor_to_xml('My Portal'::refcursor, 10, false, false, '')", cursors: []string{"My Portal"}},
		{sql: "SELECT cursor_to_xml('', 10, false, false, '')", cursors: []string{""}},
		{sql: "SELECT cursor_to_xmlschema('p', false, false, '')", cursors: []string{"p"}},
		{sql: "EXPLAIN SELECT cursor_to_xml('p', 10, false, false, '')", cursors: []string{"p"}},
		{sql: "DECLARE c CURSOR FOR SELECT cursor_to_xml('p', 10, false, false, '')", cursors: []string{"p"}},
		{sql: "SELECT cursor_to_xml('p' || '', 10, false, false, '')", procedural: true},
		{sql: "SELECT cursor_to_xml(name, 10, false, false, '') FROM pg_cursors", tables: []string{"pg_cursors"}, procedural: true},
		{sql: "SELECT query_to_xml('SELECT secret FROM t', true, false, '')", procedural: true},
		{sql: "SELECT schema_to_xml('public', true, false, '')", procedural: true},
		{sql: "SELECT schema_to_xmlschema('public', true, false, '')", procedural: true},
		{sql: "SELECT database_to_xml(true, false, '')", procedural: true},
		{sql: "SELECT database_to_xml_and_xmlschema(true, false, '')", procedural: true},
		{sql: "SELECT * FROM pg_logical_slot_peek_changes('s', NULL, NULL)", procedural: true},
		{sql: "SELECT * FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL)", procedural: true},
		{sql: "SELECT ts_stat('SELECT body FROM t')", procedural: true},
	} {
		check := func(how, sql string, st *Statement, tables, cursors []string, procedural bool) {
			t.Helper()
			if !slices.Equal(st.Tables, tables) || !slices.Equal(st.CursorsRead, cursors) || st.Procedural != procedural {
				t.Errorf("%s %q: Tables %q CursorsRead %q Procedural %v, want %q %q %v",
					how, sql, st.Tables, st.CursorsRead, st.Procedural, tables, cursors, procedural)
			}
			if !procedural && !st.ReadOnly() {
				t.Errorf("%s %q: not read-only", how, sql)
			}
		}
		check("uncached", c.sql, &Classify(c.sql).Statements[0], c.tables, c.cursors, c.procedural)
		cl := New(Options{})
		cl.Classify(c.sql)
		check("exact hit", c.sql, &cl.Classify(c.sql).Statements[0], c.tables, c.cursors, c.procedural)
		if c.sibling != "" {
			want := Classify(c.sibling).Statements[0]
			check("sibling", c.sibling, &cl.Classify(c.sibling).Statements[0], want.Tables, want.CursorsRead, want.Procedural)
			if slices.Equal(want.Tables, c.tables) && slices.Equal(want.CursorsRead, c.cursors) {
				t.Errorf("sibling %q reads what %q does", c.sibling, c.sql)
			}
		}
	}
}

// TestRegclassName: relation names read as the server's regclassin reads them, or not at all.
func TestRegclassName(t *testing.T) {
	long := strings.Repeat("n", 63)
	for _, c := range []struct {
		in   string
		want []string // nil: not read
	}{
		{"t", []string{"t"}},
		{"T", []string{"t"}},
		{"public.t", []string{"public", "t"}},
		{" public . t ", []string{"public", "t"}},
		{"\tpublic.\n\"T\"\r\f", []string{"public", "T"}},
		{`"a.b"`, []string{"a.b"}},
		{`"a""b"`, []string{`a"b`}},
		{`a"b`, []string{`a"b`}},
		{"db.s.t", []string{"db", "s", "t"}},
		{"123abc", []string{"123abc"}},
		{" 123", []string{"123"}},
		{"a-b", []string{"a-b"}},
		{long, []string{long}},
		{long + "n", nil},
		{`"` + long + `n"`, nil},
		{"123", nil},
		{"-", nil},
		{"", nil},
		{"  ", nil},
		{`""`, nil},
		{`"t`, nil},
		{"a..b", nil},
		{"a.", nil},
		{".a", nil},
		{"a b", nil},
		{`"a"b`, nil},
		{"a.b.c.d", nil},
		{"t\v", nil},
		{"é", nil},
		{`"é"`, []string{"é"}},
	} {
		got, ok := regclassName(c.in)
		if ok != (c.want != nil) || !slices.Equal(got, c.want) {
			t.Errorf("regclassName(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
}
