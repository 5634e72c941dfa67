package sqlclass

import "testing"

// TestTokens: comments are tokens (a nested comment is one), each token says where what it holds
// is, and a string after DO or after AS in CREATE FUNCTION is a body; a text the server's lexer
// refuses is an error.
func TestTokens(t *testing.T) {
	type tok struct {
		inner string
		kind  TokenKind
		body  bool
	}
	for _, c := range []struct {
		sql  string
		want []tok // nil: an error
	}{
		{"SELECT 1 /* a /* b */ c */ -- d", []tok{{"SELECT", TokenCode, false}, {"1", TokenNumber, false}, {" a /* b */ c ", TokenComment, false}, {" d", TokenComment, false}}},
		{`SELECT 'a''b', E'\n', $f$x$f$, U&'d', B'01', "Q""x", U&"n", 1.5`, []tok{{"SELECT", TokenCode, false}, {"a''b", TokenString, false}, {",", TokenCode, false},
			{`\n`, TokenString, false}, {",", TokenCode, false}, {"x", TokenString, false}, {",", TokenCode, false}, {"d", TokenString, false}, {",", TokenCode, false},
			{"01", TokenString, false}, {",", TokenCode, false}, {`Q""x`, TokenName, false}, {",", TokenCode, false}, {"n", TokenName, false}, {",", TokenCode, false}, {"1.5", TokenNumber, false}}},
		{"DO $$x$$; x.do 'y'", []tok{{"DO", TokenCode, false}, {"x", TokenString, true}, {";", TokenCode, false}, {"x", TokenCode, false}, {".", TokenCode, false}, {"do", TokenCode, false}, {"y", TokenString, false}}},
		{"SELECT 'unterminated", nil},
		{"SELECT 1 /* unterminated", nil},
		{"SELECT 123abc", nil},
		{"SELECT 1\x00, 2", nil},
	} {
		got, err := Tokens(c.sql)
		if c.want == nil {
			if err == nil {
				t.Errorf("%q: no error", c.sql)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Errorf("%q: %d tokens %v, want %d", c.sql, len(got), err, len(c.want))
			continue
		}
		for i, w := range c.want {
			g := got[i]
			if inner := c.sql[g.InnerStart:g.InnerEnd]; inner != w.inner || g.Kind != w.kind || g.Body != w.body {
				t.Errorf("%q token %d: %q kind %d body %v, want %+v", c.sql, i, inner, g.Kind, g.Body, w)
			}
		}
	}
	fn, err := Tokens("create or replace function f() returns int language sql as 'select 1'")
	if err != nil || !fn[len(fn)-1].Body {
		t.Errorf("a function's body is not one: %+v %v", fn, err)
	}
}
