package pgguard

import (
	"slices"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
)

// TestShownSQLProbes: values written to or compared with t.secret that shownSQL showed in clear
// (probes of a second review, 2026-12-06). Every case is valid SQL for PostgreSQL's parser unless noted.
func TestShownSQLProbes(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	for _, sql := range []string{
		// A typed literal whose (qualified) type name ends in the keyword DO or AS: the word
		// tracking took the value for a code body and showed it as "code" (it has no literals of
		// its own). Runs (and writes hunter2) once a domain x."do" exists.
		"update t set secret = x.do 'hunter2'",
		"select * from t where secret = x . do $$hunter2$$",
		"select * from t where secret = \"x\"./**/do 'hunter2'",
		"select function from t where secret = x.as 'hunter2'", // AS needs FUNCTION/PROCEDURE earlier: any word
		"select function from t where secret = aſ 'hunter2'",   // U+017F folds to s: EqualFold("aſ", "as")
		"do $$ begin update t set secret = x.do 'hunter2'; end $$",
		// Not valid SQL, but shown (the server refuses it): a value right after DO.
		"update t set secret = do 'hunter2'",
		// The statement writes t.secret but names no column: INSERT without a column list.
		"insert into t values (1, 'hunter2')",
		"insert into t select 1, 'hunter2'",
		"insert into t select * from json_populate_record(null::t, '{\"secret\":\"hunter2\"}')",
		// Compares t.secret without naming it.
		"select * from t natural join (values (1, 'hunter2')) v(id, secret)",
	} {
		res := g.sh.Classifier.Classify(sql)
		if got := g.shownSQL(sql, res, g.ruledColumns(res)); strings.Contains(got, "hunter2") {
			t.Errorf("%s\n shown as %s", sql, got)
		}
	}
}

// TestArgumentProbes: psql commands whose values reached the reviewers' command line
// and the session log's argv in clear (probes of the same review).
func TestArgumentProbes(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	for _, argv := range [][]string{
		// -c bundled with other flags (psql -Atc, -tAc, -Xc: common): the command is taken for SQL
		// only if it lexed and had a non-number literal.
		{"psql", "-Atc", "update t set secret = 'hunter2' where id = 0x1F"},        // hex: lexer gives up
		{"psql", "-Atc", "update t set secret = U&'hunter2'"},                      // U&: lexer gives up
		{"psql", "-Atc", "update t set secret = 'hunter2' where note = 'O'Brien'"}, // unbalanced
		{"psql", "-Atc", "update t set secret = 20231231 where id = 7"},            // numbers only
		{"psql", "--comm", "update t set secret = 'hunter2' where id = 1_000"},     // getopt prefix of --command
		{"psql", "--comm=update t set secret = 'hunter2' where id = 1_000"},
		// attached -c after another flag, no '=' in it
		{"psql", "-Xcselect * from t where secret in ('hunter2')"},
		// the typed-literal case above
		{"psql", "-c", "update t set secret = x.do 'hunter2'"},
		// positional INSERT
		{"psql", "-c", "insert into t values (1, 'hunter2')"},
	} {
		g := testShared(func() *policy.Policy { return pol }, nil).NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0],
			Identity: identity.Session{Subject: "alice"}, Argv: argv, Cmdline: strings.Join(argv, " ")})
		for _, v := range []string{"hunter2", "20231231"} {
			if slices.ContainsFunc(g.info.Argv, func(a string) bool { return strings.Contains(a, v) }) || strings.Contains(g.info.Cmdline, v) {
				t.Errorf("%q shown as %q / %q", argv, g.info.Argv, g.info.Cmdline)
				break
			}
		}
	}
}
