package sqlclass

import "testing"

// TestSettingValue: a rule that reads sql.setting_value sees the value the server will set, and
// a cached classification of another value of the same shape never stands in for it.
func TestSettingValue(t *testing.T) {
	c := New(Options{})
	for _, tc := range []struct{ sql, setting, value string }{
		{"SET standard_conforming_strings = on", "standard_conforming_strings", "on"},
		{"SET standard_conforming_strings = 'ON'", "standard_conforming_strings", "ON"},
		{"set statement_timeout to '5s'", "statement_timeout", "5s"},
		{"SET LOCAL statement_timeout = 5000", "statement_timeout", "5000"},
		{"SET SESSION lock_timeout = 1.5", "lock_timeout", "1.5"},
		{"SET datestyle = ISO, MDY", "datestyle", "iso, mdy"},
		{"SET TIME ZONE 'UTC'", "timezone", "UTC"},
		{"SET search_path = public, \"Other\"", "search_path", "public, Other"},
		{"SET statement_timeout TO DEFAULT", "statement_timeout", ""},
		{"RESET statement_timeout", "statement_timeout", ""},
		{"SET statement_timeout FROM CURRENT", "statement_timeout", ""},
		{"SHOW statement_timeout", "statement_timeout", ""},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "transaction", ""},
	} {
		// Twice, and after another value of the same shape: the second level of the cache
		// must not answer with that value.
		for _, sql := range []string{tc.sql, tc.sql + " ", "SET statement_timeout = '7min'", tc.sql} {
			res := c.Classify(sql)
			if len(res.Statements) != 1 {
				t.Fatalf("%q: %d statements (%s)", sql, len(res.Statements), res.ParseError)
			}
			if sql != tc.sql {
				continue
			}
			st := &res.Statements[0]
			if st.Setting != tc.setting || st.SettingValue != tc.value {
				t.Errorf("%q: setting %q = %q, want %q = %q", sql, st.Setting, st.SettingValue, tc.setting, tc.value)
			}
		}
	}
}

// TestSettingMillis: timeouts are read as the server reads them (its units, rounding and
// spaces), and every spelling this reading could get wrong is refused (ok false), never misread.
func TestSettingMillis(t *testing.T) {
	for _, tc := range []struct {
		sql string
		ms  int64
		ok  bool
	}{
		{"SET statement_timeout = 5000", 5000, true},
		{"SET statement_timeout = '5s'", 5000, true},
		{"SET statement_timeout = ' 5 s '", 5000, true},
		{"SET statement_timeout = '1.5s'", 1500, true},
		{"SET statement_timeout = '2min'", 120_000, true},
		{"SET statement_timeout = '1h'", 3_600_000, true},
		{"SET statement_timeout = '1d'", 86_400_000, true},
		{"SET statement_timeout = '1500us'", 2, true},
		{"SET statement_timeout = '2500us'", 2, true},         // rint: half to even
		{"SET statement_timeout = '1.0001min'", 60_000, true}, // to a whole second first
		{"SET statement_timeout = '0.0001h'", 0, true},        // to a whole minute: off
		{"SET statement_timeout = '1.'", 1, true},
		{"SET statement_timeout = 0", 0, true},
		{"SET statement_timeout = '0.4ms'", 0, true},
		{"SET lock_timeout = '250ms'", 250, true},
		{"SET idle_in_transaction_session_timeout = '30s'", 30_000, true},
		{"SET LOCAL idle_session_timeout = 10", 10, true},
		{"SET statement_timeout = '25d'", 0, false}, // past the server's int range
		{"SET statement_timeout = '5S'", 0, false},  // units are case sensitive
		{"SET statement_timeout = '5 sec'", 0, false},
		{"SET statement_timeout = '0x10'", 0, false},
		{"SET statement_timeout = '010'", 0, false},
		{"SET statement_timeout = '1e3'", 0, false},
		{"SET statement_timeout = '-5s'", 0, false},
		{"SET statement_timeout = '+5s'", 0, false},
		{"SET statement_timeout = 'inf'", 0, false},
		{"SET statement_timeout = '.5s'", 0, false},
		{"SET statement_timeout = '5s 5s'", 0, false},
		{"SET statement_timeout = '\u00a05s'", 0, false},
		{"SET statement_timeout = ''", 0, false},
		{"SET statement_timeout TO DEFAULT", 0, false},
		{"RESET statement_timeout", 0, false},
		{"SET work_mem = '4MB'", 0, false},
		{"SET application_name = '5s'", 0, false},
		{"SELECT set_config('statement_timeout', '5s', false)", 0, false},
	} {
		res := Classify(tc.sql)
		if len(res.Statements) != 1 {
			t.Fatalf("%q: %d statements (%s)", tc.sql, len(res.Statements), res.ParseError)
		}
		ms, ok := res.Statements[0].SettingMillis()
		if ms != tc.ms || ok != tc.ok {
			t.Errorf("%q: SettingMillis() = %d, %v; want %d, %v", tc.sql, ms, ok, tc.ms, tc.ok)
		}
	}
}
