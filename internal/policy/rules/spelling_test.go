package rules

import (
	"errors"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// TestComparisonWithMisspeltLiteralRefused: kinds are upper case and setting names lower case, so a
// rule comparing them with a literal spelt otherwise can never hold; a block rule written that way
// (sql.kind == "drop" under default allow) would let everything through, so it must not compile.
func TestComparisonWithMisspeltLiteralRefused(t *testing.T) {
	for _, when := range []string{
		`sql.kind == "drop"`,
		`"Drop" == sql.kind`,
		`sql.kind != "select"`,
		`sql.kind in ["DROP", "truncate"]`,
		`"truncate" in sql.kinds`,
		`sql.object == "table"`,
		`sql.wrapper == "explain analyze"`,
		`sql.setting in ["DateStyle"]`,
		`sql.writes && (sql.setting == "TimeZone" || sql.kind == "drop")`,
	} {
		_, err := Compile([]Rule{{Name: "r", When: when, Action: "block", Line: 7}}, DefaultAllow)
		var ce *CompileError
		if !errors.As(err, &ce) || ce.Errors[0].Line != 7 || !strings.Contains(ce.Errors[0].Err, "never") {
			t.Errorf("%s: compiled (err %v)", when, err)
		}
	}
	// Spelt as the classifier spells them, they compile and decide.
	e := mustCompile(t, []Rule{
		{Name: "no-drop", When: `sql.kind == "DROP" || "TRUNCATE" in sql.kinds || sql.object == "ROLE"`, Action: "block"},
		{Name: "display", When: `sql.setting in ["datestyle", "timezone"] && sql.wrapper != "EXPLAIN ANALYZE"`, Action: "allow"},
		{Name: "text-is-free", When: `sql.text == "drop" || identity.subject == "Drop"`, Action: "block"},
	}, DefaultAllow)
	for sql, want := range map[string]Action{"DROP TABLE t": Block, "SET DateStyle = ISO": Allow, "SELECT 1": Allow} {
		if d := e.Decide(alice, sqlclass.Classify(sql), nil); d.Verdict != want {
			t.Errorf("%s: %s, want %s", sql, d.Verdict, want)
		}
	}
}
