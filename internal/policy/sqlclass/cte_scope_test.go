package sqlclass

import (
	"slices"
	"testing"
)

// TestCTENamesAreScoped: an unqualified relation named like a CTE reads no table only where
// PostgreSQL resolves it to that CTE; elsewhere the name is a table, and rules on sql.tables must
// see it (a CTE named t hid "select secret from public.t" and table_to_xml('t', …) from a rule on
// "t").
func TestCTENamesAreScoped(t *testing.T) {
	for _, c := range []struct {
		sql           string
		read, written []string
	}{
		{"WITH t AS (SELECT 1) SELECT * FROM t", nil, nil},
		{"WITH t AS (SELECT 1) SELECT secret FROM public.t", []string{"public.t", "t"}, nil},
		{"WITH t AS (SELECT 1) SELECT table_to_xml('t', true, false, '')", []string{"t"}, nil},
		{"WITH t AS (SELECT 1) SELECT * FROM t UNION SELECT * FROM u", []string{"u"}, nil},
		// A CTE's query sees only the CTEs before it, unless the WITH is RECURSIVE.
		{"WITH a AS (SELECT * FROM t), t AS (SELECT 1) SELECT * FROM a, t", []string{"t"}, nil},
		{"WITH t AS (SELECT * FROM t) SELECT * FROM t", []string{"t"}, nil},
		{"WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT * FROM t", nil, nil},
		// A CTE is seen only within the statement that defines it.
		{"SELECT * FROM t, (WITH t AS (SELECT 1) SELECT * FROM t) x", []string{"t"}, nil},
		{"WITH x AS (WITH t AS (SELECT 1) SELECT * FROM t) SELECT * FROM x, t", []string{"t"}, nil},
		{"SELECT (WITH t AS (SELECT 1) SELECT * FROM t), (SELECT 1 FROM t)", []string{"t"}, nil},
		// Outer CTEs are seen in nested queries; a write's target is always a table.
		{"WITH t AS (SELECT 1) SELECT * FROM (SELECT * FROM t) s", nil, nil},
		{"WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t", nil, []string{"t"}},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", nil, []string{"t"}},
		{"WITH u AS (SELECT 1) UPDATE t SET a = 1 FROM u, v", []string{"v"}, []string{"t"}},
	} {
		for _, how := range []string{"uncached", "cached"} {
			res := Classify(c.sql)
			if how == "cached" {
				cl := New(Options{})
				cl.Classify(c.sql)
				res = cl.Classify(c.sql)
			}
			st := res.Statements[0]
			if !slices.Equal(st.TablesRead, c.read) || !slices.Equal(st.TablesWritten, c.written) {
				t.Errorf("%s %q: read %q written %q, want %q %q", how, c.sql, st.TablesRead, st.TablesWritten, c.read, c.written)
			}
		}
	}
}
