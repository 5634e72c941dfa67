package postgres

import "testing"

func TestLexicalProblem(t *testing.T) {
	cases := []struct {
		name, value string
		bad         bool
	}{
		{"standard_conforming_strings", "on", false},
		{"standard_conforming_strings", "off", true},
		{"Standard_Conforming_Strings", "false", true},
		{"client_encoding", "UTF8", false},
		{"client_encoding", "utf-8", false},
		{"client_encoding", "SQL_ASCII", false},
		{"client_encoding", "LATIN1", false},
		{"client_encoding", "SJIS", true},
		{"client_encoding", "Shift_JIS_2004", true},
		{"client_encoding", "big5", true},
		{"client_encoding", "GB18030", true},
		{"client_encoding", "win936", true},
		{"application_name", "off", false},
	}
	for _, c := range cases {
		if got := lexicalProblem(c.name, c.value) != ""; got != c.bad {
			t.Errorf("%s=%s: bad=%v, want %v", c.name, c.value, got, c.bad)
		}
	}
}

// TestMayCopyIn: a statement that could run COPY FROM STDIN spells both keywords, in any case;
// one that spells them elsewhere is taken to be one too, which only costs pipelining.
func TestMayCopyIn(t *testing.T) {
	cases := []struct {
		sql  string
		want bool
	}{
		{"copy t from stdin", true},
		{"COPY t (a, b) FROM STDIN WITH (FORMAT csv)", true},
		{"CoPy\tt\nFrOm\n-- c\nStDiN", true},
		{"select 1; copy t from stdin; select 2", true},
		{"select 'stdin is a copy'", true},
		{"copy t to stdout", false},
		{"copy t from '/tmp/f'", false},
		{"select stdin from inputs", false},
		{"select 1", false},
		{"", false},
		{"cop", false},
	}
	for _, c := range cases {
		if got := mayCopyIn(c.sql); got != c.want {
			t.Errorf("mayCopyIn(%q) = %v, want %v", c.sql, got, c.want)
		}
	}
}
