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
