package rules

import (
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// TestSettingMsOfUnreadTimeoutFailsClosed: a timeout value the classifier does not read as the
// server does ('1e9' is 11.6 days, '010000000' octal) neither slips under a block rule on large
// values nor passes an allow rule that bounds them; other statements are not affected.
func TestSettingMsOfUnreadTimeoutFailsClosed(t *testing.T) {
	blockLarge := mustCompile(t, []Rule{
		{Name: "sessions", When: `sql.session && !sql.privilege && !sql.unknown && !sql.search_path`, Action: "allow"},
		{Name: "no-long-timeouts", When: `sql.setting == "statement_timeout" && (sql.setting_ms == 0 || sql.setting_ms > 5000)`, Action: "block"},
		{Name: "no-long-lock-waits", When: `sql.setting_ms > 5000`, Action: "block"},
	}, DefaultAllowReads)
	allowBounded := mustCompile(t, []Rule{
		{Name: "bounded-timeouts", When: `sql.kind == "SET" && sql.setting == "statement_timeout" && sql.setting_ms <= 5000`, Action: "allow"},
	}, DefaultAllowReads)
	for _, tc := range []struct {
		sql            string
		block, bounded Action
	}{
		{"SET statement_timeout = '4s'", Allow, Allow},
		{"SET statement_timeout = '6s'", Block, Block},
		{"SET statement_timeout = '1e9'", Block, Block},
		{"SET statement_timeout = '010000000'", Block, Block},
		{"SET statement_timeout = '0x7fffffff'", Block, Block},
		{"SET lock_timeout = '1e9'", Block, Block},
		{"SET statement_timeout TO DEFAULT", Allow, Allow}, // -1: back to the role's value
		{"SET application_name = '1e9'", Allow, Block},
		{"SELECT 1", Allow, Allow},
	} {
		res := sqlclass.Classify(tc.sql)
		if d := blockLarge.Decide(alice, res, nil); d.Verdict != tc.block {
			t.Errorf("%s under a block rule on large values: %s, want %s", tc.sql, d.Verdict, tc.block)
		}
		if d := allowBounded.Decide(alice, res, nil); d.Verdict != tc.bounded {
			t.Errorf("%s under an allow rule bounding them: %s, want %s", tc.sql, d.Verdict, tc.bounded)
		}
	}
}
