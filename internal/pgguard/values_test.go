package pgguard

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
)

// TestShownSQL: a statement naming a ruled column (or one the guard cannot parse) is shown with
// every literal masked by the rule; a text the lexer cannot split is hidden whole; other
// statements are left to the detectors.
func TestShownSQL(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	ctx := context.Background()
	if v := g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "prepare p as select * from t where secret = $1 and id = $2"}); v.Action != postgres.Allow {
		t.Fatal("PREPARE refused")
	}
	for _, c := range []struct{ sql, want string }{
		{"select * from t where secret = 'hunter2' and id = 7", "select * from t where secret = '[REDACTED:column]' and id = '[REDACTED:column]'"},
		{"select * from t where secret in ('a''b', 'c')", "select * from t where secret in ('[REDACTED:column]', '[REDACTED:column]')"},
		{"insert into t(secret) select x from (values ('hunter2')) v(x)", "insert into t(secret) select x from (values ('[REDACTED:column]')) v(x)"},
		{"select * from t where secret = ''\n'hunter2'", "select * from t where secret = '[REDACTED:column]'\n'[REDACTED:column]'"},
		{"execute p('hunter2', 5)", "execute p('[REDACTED:column]', '[REDACTED:column]')"},
		{"prepare q as insert into t(secret) values ($1); execute q('hunter2')", "prepare q as insert into t(secret) values ($1); execute q('[REDACTED:column]')"},
		{"update t set secret = 'hunter2' wher id = 1", "update t set secret = '[REDACTED:column]' wher id = '[REDACTED:column]'"},
		{"select * from t where secret = E'\\101'", "[REDACTED:unmaskable]"},
		// An E'…' string's value is masked, not its quotes and escapes.
		{"select * from t where secret = E'hun\\'ter\\n2' or secret = e'x''y'", "select * from t where secret = '[REDACTED:column]' or secret = '[REDACTED:column]'"},
		{"select * from u where name = 'a@example.com' and n = 3", "select * from u where name = '[REDACTED:email]' and n = 3"},
		// Code the guard does not parse may name any column; a body stays readable, its values
		// masked.
		{"do $$ begin update t set secret = 'hunter2' where id = 1; end $$",
			"do $$ begin update t set secret = '[REDACTED:column]' where id = '[REDACTED:column]'; end $$"},
		{"DO LANGUAGE plpgsql 'begin raise notice ''%'', ''hunter2''; end'",
			"DO LANGUAGE plpgsql 'begin raise notice ''[REDACTED:column]'', ''[REDACTED:column]''; end'"},
		{"create function f() returns void language sql as $f$ update t set secret = 'hunter2' $f$",
			"create function f() returns void language sql as $f$ update t set secret = '[REDACTED:column]' $f$"},
		{"do $$ begin execute 'update t set secret = ''hunter2'''; end $$", "do $$ begin execute '[REDACTED:column]'; end $$"},
		{"do /* x */ $$ select 'hunter2' $$", "do /* x */ $$ select '[REDACTED:column]' $$"},
		// A body in another language is masked whole: its strings are not SQL literals.
		{"do language plpython3u $$ plpy.execute(\"update t set secret = 'hunter2'\") $$", "do language plpython3u '[REDACTED:column]'"},
		{"create function f() returns text language plperl as $$ return \"hunter2\"; $$",
			"create function f() returns text language plperl as '[REDACTED:column]'"},
		// Values after words that only look like DO or AS (probes of a review, 2026-12-06).
		{"select * from t where secret = -- as\n'hunter2'", "select * from t where secret = -- as\n'[REDACTED:column]'"},
		{"update t set secret = -- do\n'hunter2' where id = 1", "update t set secret = -- do\n'[REDACTED:column]' where id = '[REDACTED:column]'"},
		{"select * from t where secret = x$as 'hunter2'", "select * from t where secret = x$as '[REDACTED:column]'"},
		{"select * from t where secret = éas 'hunter2'", "select * from t where secret = éas '[REDACTED:column]'"},
		{"do $a$ do $b$ do $c$ do $d$ do $e$ select 'hunter2' $e$ $d$ $c$ $b$ $a$", // deeper than maxBodyDepth
			"do $a$ do $b$ do $c$ do $d$ do '[REDACTED:column]' $d$ $c$ $b$ $a$"},
		{"select some_function('hunter2')", "select some_function('[REDACTED:column]')"},
	} {
		res := g.sh.Classifier.Classify(c.sql)
		if got := g.shownSQL(c.sql, res, g.ruledColumns(res)); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.sql, got, c.want)
		}
	}
}

// TestEscapedStringsUnderPartialMasking: the partial style keeps a value's last characters; of
// an E'…' string, those of the value, not of its escapes and quote; and a standard string with
// the same value is shown the same.
func TestEscapedStringsUnderPartialMasking(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: partial}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	var shown []string
	for _, sql := range []string{
		"update t set secret = E'4155550\\'123'",
		"update t set secret = '4155550''123'",
		"update t set secret = E'4155550\\n123\\\\'",
	} {
		res := g.sh.Classifier.Classify(sql)
		shown = append(shown, g.shownSQL(sql, res, g.ruledColumns(res)))
	}
	if shown[0] != shown[1] || strings.Contains(shown[0], "E'") || !strings.HasSuffix(shown[2], "23\\'") {
		t.Errorf("shown as %q", shown)
	}
}

// TestStatementsInArguments: a statement in the process's arguments (psql -c) that names a ruled
// column is shown with its values masked, as its text would be; other arguments get the
// detectors.
func TestStatementsInArguments(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	argv := []string{"psql", "-c", "update t set secret = 'hunter2' where id = 1", "--command=select * from t where secret = 'x1'",
		"-v", "ON_ERROR_STOP=1", "-c", "select 'kept'", "-cupdate t set secret = 'x2'", "-c", "update t set secret = 'x3' wher id = 1",
		"-c", "update t set secret = 'x4'; set client_encoding = 'SJIS'", "-p", "5432", "postgres://app:S3cretPass@db/prod"}
	g := testShared(func() *policy.Policy { return pol }, nil).NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0],
		Identity: identity.Session{Subject: "alice"}, Argv: argv, Cmdline: strings.Join(argv, " ")})
	want := []string{"psql", "-c", "update t set secret = '[REDACTED:column]' where id = '[REDACTED:column]'",
		"--command=select * from t where secret = '[REDACTED:column]'", "-v", "ON_ERROR_STOP=1", "-c", "select 'kept'",
		"-cupdate t set secret = '[REDACTED:column]'", "-c", "update t set secret = '[REDACTED:column]' wher id = '[REDACTED:column]'",
		"-c", "update t set secret = '[REDACTED:column]'; set client_encoding = '[REDACTED:column]'", "-p", "5432"}
	if got := g.info.Argv; !slices.Equal(got[:len(want)], want) || strings.Contains(got[len(want)], "S3cretPass") {
		t.Errorf("arguments shown as\n%q\nwant\n%q and the password masked", got, want)
	}
	for _, clear := range []string{"hunter2", "x1", "x2", "x3", "x4", "S3cretPass"} {
		if strings.Contains(g.info.Cmdline, clear) {
			t.Errorf("reviewers' command line %q shows %s", g.info.Cmdline, clear)
		}
	}
}

// TestVariablesInArguments: under column rules, the values of psql's and pgbench's variables are
// masked in the recorded arguments (a script may interpolate them into any column: psql -v
// tel=… -f update.sql with update t set secret = :'tel' in it), and so are the arguments of a
// psql backslash command given with -c (\set tel …), except psql's own settings set to a word or
// a digit. The program is told by its executable or its argv[0].
func TestVariablesInArguments(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	const m = "[REDACTED:column]"
	for _, c := range []struct {
		exe        string
		argv, want []string
	}{
		{"", []string{"psql", "-v", "tel=hunter2", "-f", "update.sql"}, []string{"psql", "-v", "tel=" + m, "-f", "update.sql"}},
		{"", []string{"psql", "-vtel=hunter2"}, []string{"psql", "-vtel=" + m}},
		{"", []string{"psql", "-Xqvtel=hunter2"}, []string{"psql", "-Xqvtel=" + m}},
		{"", []string{"psql", "-Xv", "tel=hunter2"}, []string{"psql", "-Xv", "tel=" + m}},
		{"", []string{"psql", "-qXAtv", "tel=hunter2"}, []string{"psql", "-qXAtv", "tel=" + m}},
		{"", []string{"psql", "--set", "tel=hunter2"}, []string{"psql", "--set", "tel=" + m}},
		{"", []string{"psql", "--set=tel=hunter2"}, []string{"psql", "--set=tel=" + m}},
		{"", []string{"psql", "--se=tel=hunter2"}, []string{"psql", "--se=tel=" + m}},
		{"", []string{"psql", "--var=tel=hunter2"}, []string{"psql", "--var=tel=" + m}},
		{"", []string{"psql", "--va", "tel=hunter2"}, []string{"psql", "--va", "tel=" + m}},
		{"", []string{"/usr/lib/postgresql/16/bin/psql", "--variable", "tel=a=b"}, []string{"/usr/lib/postgresql/16/bin/psql", "--variable", "tel=" + m}},
		{"", []string{"pgbench", "-D", "tel=hunter2", "-f", "x.sql"}, []string{"pgbench", "-D", "tel=" + m, "-f", "x.sql"}},
		{"", []string{"pgbench", "-Dtel=hunter2", "--define=x=hunter2"}, []string{"pgbench", "-Dtel=" + m, "--define=x=" + m}},
		{"", []string{"pgbench", "--def", "tel=hunter2", "-nD", "x=hunter2"}, []string{"pgbench", "--def", "tel=" + m, "-nD", "x=" + m}},
		// pgbench's -S takes no value: the D after it is -D.
		{"", []string{"pgbench", "-SDtel=hunter2", "-SD", "x=hunter2"}, []string{"pgbench", "-SDtel=" + m, "-SD", "x=" + m}},
		// A backslash command given with -c: its arguments, after \set's variable.
		{"", []string{"psql", "-c", `\set tel hunter2`, "-f", "update.sql"}, []string{"psql", "-c", `\set tel ` + m, "-f", "update.sql"}},
		{"", []string{"psql", `--command=\set	tel  'hunter2'`}, []string{"psql", `--command=\set	tel  ` + m}},
		{"", []string{"psql", "-c", ` \copy t from 'hunter2.csv'`}, []string{"psql", "-c", ` \copy ` + m}},
		{"", []string{"psql", "-c", `\set'hunter2'`}, []string{"psql", "-c", `\set` + m}},
		{"", []string{"psql", "-c", `\conninfo`}, nil},
		// A renamed psql (exec -a) is told by its executable.
		{"/usr/lib/postgresql/16/bin/psql", []string{"pg", "-v", "tel=hunter2"}, []string{"pg", "-v", "tel=" + m}},
		// pgbench's -c is its number of clients, not a command.
		{"", []string{"pgbench", "-c", "8", "-j2", "-c4", "-T", "60", "-M", "prepared"}, nil},
		// Left as they are: psql's settings, a v that is the value of another option (-dv:
		// database v), other programs' -v, a -v without a NAME=.
		{"", []string{"psql", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-v", "ON_ERROR_STOP=on", "-P", "pager=off"}, nil},
		{"", []string{"psql", "-dv", "x=y"}, nil},
		{"/usr/bin/python3", []string{"python3", "-v", "tel=hunter2"}, nil},
		{"", []string{"psql", "-v", "ECHO"}, nil},
		// A setting with a value no setting has, or a number a script could use, is masked.
		{"", []string{"psql", "-v", "ON_ERROR_STOP=4155550100", "-v", "ECHO=a b", "-v", "FETCH_COUNT=424242"},
			[]string{"psql", "-v", "ON_ERROR_STOP=" + m, "-v", "ECHO=" + m, "-v", "FETCH_COUNT=" + m}},
	} {
		g := testShared(func() *policy.Policy { return pol }, nil).NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0],
			Identity: identity.Session{Subject: "alice"}, Exe: c.exe, Argv: c.argv, Cmdline: strings.Join(c.argv, " ")})
		want := c.want
		if want == nil {
			want = c.argv
		}
		if got := g.info.Argv; !slices.Equal(got, want) {
			t.Errorf("%q shown as\n%q, want\n%q", c.argv, got, want)
		}
		if c.want != nil && (strings.Contains(g.info.Cmdline, "hunter2") || strings.Contains(g.info.Cmdline, "424242")) {
			t.Errorf("%q: reviewers' command line %q", c.argv, g.info.Cmdline)
		}
	}
}
