package sqlclass

import (
	"slices"
	"strings"
	"testing"
)

// TestSQLJSONSyntaxJudgedAsOlderServersCall: PostgreSQL 17's grammar reads the SQL/JSON
// functions and constructors and MERGE_ACTION() as syntax of their own, where PostgreSQL 15 and
// 16 call a function of that name found on search_path (public.json_value, created by anyone
// with CREATE there, which may write). Each is judged as that call: procedural, its name in
// Functions. SQL/JSON syntax an older server refuses stays a read.
func TestSQLJSONSyntaxJudgedAsOlderServersCall(t *testing.T) {
	for _, c := range []struct {
		sql  string
		call string // "" when no call of an unknown function is judged
	}{
		{"SELECT json_value('{}', '$')", "json_value"},
		{"SELECT JSON_VALUE('{\"a\": 5}', '$.a' RETURNING int)", "json_value"},
		{"SELECT json_query('{}', '$')", "json_query"},
		{"SELECT json_exists('{}', '$')", "json_exists"},
		{"SELECT json_scalar(5)", "json_scalar"},
		{"SELECT json_serialize('{}')", "json_serialize"},
		{"SELECT json('{}'::text)", "json"},
		{"SELECT json_object()", "json_object"},
		{"SELECT json_array()", "json_array"},
		{"SELECT json_array(5, 6)", "json_array"},
		{"SELECT json_array((SELECT 5))", "json_array"},
		{"SELECT json_arrayagg(x) FROM t", "json_arrayagg"},
		{"SELECT json_arrayagg(x ORDER BY x) FROM t", "json_arrayagg"},
		{"SELECT merge_action()", "merge_action"},
		{"SELECT * FROM t WHERE id = 5 AND json_exists(doc, '$.a')", "json_exists"},
		{"WITH x AS (SELECT json_value(doc, '$.a') FROM t) SELECT * FROM x", "json_value"},
		{"DELETE FROM t WHERE json_value(doc, '$.a') = 'x'", "json_value"},
		{"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE RETURNING merge_action()", "merge_action"},
		{"EXPLAIN SELECT json_value('{}', '$')", "json_value"},

		// Older servers refuse these as syntax errors: nothing there to call.
		{"SELECT '{}' IS JSON", ""},
		{"SELECT '{}' IS NOT JSON OBJECT", ""},
		{"SELECT json_object('a': 5)", ""},
		{"SELECT json_object('a' VALUE 5 ABSENT ON NULL)", ""},
		{"SELECT json_objectagg(k: v) FROM t", ""},
		{"SELECT json_array(SELECT 5)", ""},
		{"SELECT * FROM json_table('{}', '$' COLUMNS (a int PATH '$.a'))", ""},
		// The legacy json_object(text[]) is pg_catalog's, as before.
		{"SELECT json_object('{a,1}')", ""},
	} {
		check := func(how string, st *Statement) {
			t.Helper()
			if got := st.Procedural; got != (c.call != "") {
				t.Errorf("%s %q: Procedural %v, want %v", how, c.sql, got, c.call != "")
			}
			if c.call != "" && (st.ReadOnly() || st.Inert()) {
				t.Errorf("%s %q: ReadOnly %v Inert %v, want neither", how, c.sql, st.ReadOnly(), st.Inert())
			}
			if c.call != "" && !slices.Contains(st.Functions, c.call) {
				t.Errorf("%s %q: Functions %v, want %s among them", how, c.sql, st.Functions, c.call)
			}
		}
		check("uncached", &Classify(c.sql).Statements[0])
		cl := New(Options{})
		cl.Classify(c.sql)
		check("exact hit", &cl.Classify(c.sql).Statements[0])
		if sib := strings.ReplaceAll(c.sql, "5", "7"); sib != c.sql {
			check("shape hit", &cl.Classify(sib).Statements[0])
		}
	}
}
