package pgguard

import (
	"context"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// fuzzCard is a card number the masking must never let into the log as it is, and
// fuzzCardMasked how the test policy shows it.
const (
	fuzzCard       = "4111 1111 1111 1111"
	fuzzCardMasked = "**** **** **** 1111"
)

var fuzzSQL = []string{
	"select a, b from t",
	"select 1; select 2",
	"update t set a = 1 where b = 2",
	"drop table t",
	"begin",
	"select $1::text",
	"not sql at all (",
	"insert into t values ('" + fuzzCard + "')",
	"select 1 /* " + fuzzCard + " */",
}

// FuzzGuardRecording drives the guard's hooks in any order the input says: statements of both
// protocols, results for any statement or none, rows with hostile cells, errors, notices,
// deliveries, forwards and other connections' statements (which decide whether a read waits
// for the next statement), as a confused or hostile pair of peers could make the proxy report them. The log
// must then verify, hold exactly one statement record per judged statement in the order they
// were judged, and hold the card number nowhere unmasked: not in a row, a parameter, an error
// or a statement's text.
func FuzzGuardRecording(f *testing.F) {
	f.Add([]byte{0, 0, 2, 1, 3, 0, 4, 1, 6, 0})
	f.Add([]byte{1, 5, 0, 3, 2, 0, 3, 7, 4, 0, 4, 2, 5, 1, 6, 1, 0, 1})
	f.Add([]byte{0, 7, 0, 8, 4, 1, 6, 0})                                                 // card numbers in statement text
	f.Add([]byte{0, 1, 6, 2, 4, 1, 6, 0, 0, 2, 6, 2, 3, 0, 4, 1, 6, 3, 6, 0, 0, 3, 6, 0}) // late reads
	f.Fuzz(func(t *testing.T, in []byte) {
		g, rec, dir := loggedGuard(t, record.Options{MaxResultRows: 3})
		ctx := context.Background()
		var stmts []*postgres.Statement
		var judged []string
		var rd *pgproto3.RowDescription
		pick := func(arg byte) *postgres.Statement {
			if len(stmts) == 0 || arg%5 == 0 {
				return nil
			}
			return stmts[int(arg)%len(stmts)]
		}
		for len(in) >= 2 {
			op, arg := in[0]%7, in[1]
			in = in[2:]
			switch op {
			case 0, 1:
				st := &postgres.Statement{ID: uint64(len(stmts) + 1), Kind: postgres.KindQuery, SQL: fuzzSQL[int(arg)%len(fuzzSQL)]}
				if op == 1 {
					st.Kind, st.Known = postgres.KindExecute, true
					st.Params = [][]byte{[]byte(fuzzCard), nil, in[:min(len(in), int(arg%8))]}
				}
				g.Statement(ctx, st)
				stmts = append(stmts, st)
				judged = append(judged, strings.ReplaceAll(st.SQL, fuzzCard, fuzzCardMasked))
			case 2:
				rd = &pgproto3.RowDescription{}
				for i := range int(arg%3) + 1 {
					rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte{'c', '0' + byte(i)}, DataTypeOID: 25})
				}
				g.Result(ctx, &postgres.Result{Kind: postgres.ResultRowDescription, Statement: pick(arg), Columns: rd})
			case 3:
				vals := [][]byte{[]byte("card " + fuzzCard), nil, in[:min(len(in), int(arg%16))]}
				if rd != nil {
					vals = vals[:min(len(vals), len(rd.Fields))]
				}
				g.Result(ctx, &postgres.Result{Kind: postgres.ResultRow, Statement: pick(arg), Columns: rd, Formats: []int16{int16(arg & 1)}, Values: vals})
			case 4:
				if arg&2 == 0 {
					g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: pick(arg), Tag: []byte("SELECT 1")})
				} else {
					g.Result(ctx, &postgres.Result{Kind: postgres.ResultPortalSuspended, Statement: pick(arg)})
				}
			case 5:
				g.Result(ctx, &postgres.Result{Kind: postgres.ResultError, Statement: pick(arg),
					Error: &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P01", Message: "no " + fuzzCard}})
			case 6:
				switch arg % 4 {
				case 0:
					g.Delivered()
				case 1:
					g.Result(ctx, &postgres.Result{Kind: postgres.ResultNotice, Statement: pick(arg),
						Error: &pgproto3.ErrorResponse{Severity: "NOTICE", Code: "00000", Message: "hello"}})
				case 2:
					g.Forwarded()
				case 3: // another connection records a statement
					g.sh.lastStatement.Store(&Guard{})
				}
			}
		}
		g.End("fuzz", 0, 0)
		recs := closeAndLoad(t, rec, dir, g.SessionID())
		rep, err := record.Verify(dir, nil)
		if err != nil || !rep.OK() {
			t.Fatalf("the log does not verify: %v %+v", err, rep.Problem)
		}
		var texts []string
		for _, r := range recs {
			if strings.Contains(string(r.Data), fuzzCard) {
				t.Fatalf("an unmasked card number in a record: %s", r.Data)
			}
			ev, err := r.Event()
			if err != nil {
				t.Fatal(err)
			}
			res := ev.Result
			if ev.Statement != nil {
				texts = append(texts, ev.Statement.Text)
				res = ev.Statement.Result
			}
			if res == nil {
				continue
			}
			for _, row := range res.Rows {
				for _, c := range row {
					if c != nil && strings.Contains(*c, fuzzCard) {
						t.Fatalf("an unmasked card number in a recorded row: %q", *c)
					}
				}
			}
		}
		if strings.Join(texts, "\n") != strings.Join(judged, "\n") {
			t.Fatalf("statement records:\n%s\nstatements judged:\n%s", strings.Join(texts, "\n"), strings.Join(judged, "\n"))
		}
	})
}

// FuzzMaskLiterals: showing any text as a statement under a column rule (bodies followed, quotes
// undone and redone) never panics, and in a text without code (a body is shown, with its own
// literals masked) never shows hunter2 from inside a literal.
func FuzzMaskLiterals(f *testing.F) {
	for _, s := range []string{"do $$ select 'a' $$", "do 'select ''a'''", "create function f() as $f$ do $g$ x $g$ $f$",
		"do language x 'y'", "select 1 as $$$$", "as ''", "x -- as\n'hunter2'", "do $a$ do $b$ do 'q' $b$ $a$"} {
		f.Add(s)
	}
	pol := parsePolicy(f, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	f.Fuzz(func(t *testing.T, sql string) {
		shown := g.maskLiterals(sql, []mask.Source{{Any: true}}, 0)
		lits, ok := sqlclass.Literals(sql)
		if !ok || slices.ContainsFunc(lits, func(l sqlclass.Literal) bool { return l.Code }) {
			return
		}
		// Outside literals (comments, identifiers) the text is shown as it is; in them, never.
		var outside strings.Builder
		last := 0
		for _, l := range lits {
			outside.WriteString(sql[last:l.Start])
			outside.WriteByte(' ')
			last = l.End
		}
		outside.WriteString(sql[last:])
		if strings.Count(shown, "hunter2") > strings.Count(outside.String(), "hunter2") {
			t.Errorf("%q shown as %q", sql, shown)
		}
	})
}

// FuzzMaskWithinTokens: masking any text for display never panics, and when it says it shows
// all of the code, the shown text splits into the same strings, names and comments as the text,
// in order, and keeps every operator and punctuation mark of it in order: no masked span hides
// code. (A masked number or name may show as marks of its own: ************1111.)
func FuzzMaskWithinTokens(f *testing.F) {
	for _, s := range []string{
		"UPDATE t SET a = 1 WHERE id = 7 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* -----END PRIVATE KEY----- */",
		"SELECT '-----BEGIN PRIVATE KEY-----', 1 - 2, $q$-----END PRIVATE KEY-----$q$",
		"DO $$ BEGIN PERFORM 1 /* -----BEGIN RSA PRIVATE KEY----- */; END $$; SELECT 4111111111111111",
		"SELECT 1 /* /4111111111111111 */ -- a@example.com\n, \"x@example.com\", E'\\'password=hunter22'",
	} {
		f.Add(s)
	}
	g := newGuard(f, nil)
	f.Fuzz(func(t *testing.T, sql string) {
		shown, whole := g.maskWithinTokens(sql, 0)
		in, err := sqlclass.Tokens(sql)
		if err != nil || !whole {
			return
		}
		out, err := sqlclass.Tokens(shown)
		if err != nil {
			t.Fatalf("%q shown as %q, which does not split: %v", sql, shown, err)
		}
		quotedIn, marksIn := structure(sql, in)
		quotedOut, marksOut := structure(shown, out)
		if !slices.Equal(quotedIn, quotedOut) || !subsequence(marksIn, marksOut) {
			t.Fatalf("%q shown as %q:\n %v %q\n %v %q", sql, shown, quotedIn, marksIn, quotedOut, marksOut)
		}
	})
}

// structure returns the kinds of a text's strings, names and comments, and its operators and
// punctuation, in order.
func structure(sql string, toks []sqlclass.Token) (quoted []sqlclass.TokenKind, marks []string) {
	for _, t := range toks {
		switch text := sql[t.Start:t.End]; {
		case t.Kind == sqlclass.TokenString || t.Kind == sqlclass.TokenName || t.Kind == sqlclass.TokenComment:
			quoted = append(quoted, t.Kind)
		case t.Kind == sqlclass.TokenCode && !strings.ContainsFunc(text, func(r rune) bool { return r == '_' || r == '$' || unicode.IsLetter(r) || unicode.IsDigit(r) }):
			marks = append(marks, text)
		}
	}
	return quoted, marks
}

// subsequence reports whether every element of a is in b, in order.
func subsequence(a, b []string) bool {
	for _, x := range b {
		if len(a) > 0 && a[0] == x {
			a = a[1:]
		}
	}
	return len(a) == 0
}
