package rules

import (
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// TestSettingValueAndMillis: rules can tighten a setting without lifting it (sql.setting_ms) and
// allow one value of a setting (sql.setting_value); a value the classifier does not read as the
// server does is -1, so a bound on it refuses.
func TestSettingValueAndMillis(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "tighter-timeouts", When: `sql.kind == "SET" && sql.setting in ["statement_timeout", "lock_timeout"] && sql.setting_ms > 0 && sql.setting_ms <= 5000`, Action: "allow"},
		{Name: "conforming-strings", When: `sql.kind == "SET" && sql.setting == "standard_conforming_strings" && sql.setting_value in ["on", "true"]`, Action: "allow"},
	}, DefaultAllowReads)
	for sql, want := range map[string]Action{
		"SET statement_timeout = '5s'":                        Allow,
		"SET LOCAL lock_timeout = 250":                        Allow,
		"SET statement_timeout = '0.5s'":                      Allow,
		"SET statement_timeout = 0":                           Block, // off
		"SET statement_timeout = '0.0001h'":                   Block, // the server reads 0
		"SET statement_timeout = '6s'":                        Block,
		"SET statement_timeout = '1e3'":                       Block, // not read: -1
		"SET statement_timeout TO DEFAULT":                    Block,
		"SET idle_session_timeout = '1s'":                     Block, // not listed
		"SET standard_conforming_strings = on":                Allow,
		"SET standard_conforming_strings TO true":             Allow,
		"SET standard_conforming_strings = off":               Block,
		"RESET standard_conforming_strings":                   Block,
		"SELECT set_config('statement_timeout', '1s', false)": Block,
	} {
		if d := e.Decide(alice, sqlclass.Classify(sql), nil); d.Verdict != want {
			t.Errorf("%s: %s, want %s", sql, d.Verdict, want)
		}
	}
}
