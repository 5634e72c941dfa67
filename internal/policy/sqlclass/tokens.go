package sqlclass

import (
	"errors"
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// TokenKind says what a token of a statement's text is to someone reading it.
type TokenKind uint8

const (
	// TokenCode is a keyword, an unquoted name, an operator, punctuation or a parameter.
	TokenCode TokenKind = iota
	// TokenNumber is a numeric constant.
	TokenNumber
	// TokenString is a string constant: '…', E'…', $tag$…$tag$, U&'…', B'…' or X'…'.
	TokenString
	// TokenName is a quoted identifier: "…" or U&"…".
	TokenName
	// TokenComment is a comment: -- … or /* … */ (nested comments are one token).
	TokenComment
)

// Token is one token of a statement's text, [Start, End) in bytes.
type Token struct {
	Start, End int
	// Inner is where what the token holds is: a string's or a name's content without its quotes,
	// a comment without its marks, the whole of any other token.
	InnerStart, InnerEnd int
	Kind                 TokenKind
	// Body says the token is a string given as the body of a DO block (after DO or DO LANGUAGE
	// name) or of a function (after AS in CREATE … FUNCTION or PROCEDURE): code, not a value.
	Body bool
}

// errNUL: the server's lexer reads a statement as a C string.
var errNUL = errors.New("the text holds a NUL byte")

// Tokens splits sql into its tokens, comments included, as the server's lexer does (pg_query's
// scanner is PostgreSQL 17's, which reads standard_conforming_strings on, as the proxy makes every
// session keep it). Only white space lies between tokens. A text it cannot split (an unterminated
// string or comment, junk after a number) is one the server refuses as a syntax error before
// running any of it.
func Tokens(sql string) ([]Token, error) {
	if strings.IndexByte(sql, 0) >= 0 {
		return nil, errNUL
	}
	res, err := pg.Scan(sql)
	if err != nil {
		return nil, err
	}
	toks := make([]Token, 0, len(res.Tokens))
	var b bodies
	last := 0
	for _, st := range res.Tokens {
		s, e := int(st.Start), int(st.End)
		if s < last || e <= s || e > len(sql) {
			return nil, fmt.Errorf("scanner gave token [%d,%d) after offset %d", s, e, last)
		}
		if gap := sql[last:s]; strings.TrimLeft(gap, " \t\n\r\f\v") != "" {
			return nil, fmt.Errorf("scanner skipped %q at offset %d", gap, last)
		}
		last = e
		text := sql[s:e]
		t := Token{Start: s, End: e, InnerStart: s, InnerEnd: e}
		switch st.Token {
		case pg.Token_SQL_COMMENT:
			t.Kind, t.InnerStart = TokenComment, s+2
		case pg.Token_C_COMMENT:
			t.Kind, t.InnerStart, t.InnerEnd = TokenComment, s+2, e-2
		case pg.Token_SCONST, pg.Token_USCONST, pg.Token_BCONST, pg.Token_XCONST:
			t.Kind = TokenString
			lead, trail := stringQuotes(text)
			t.InnerStart, t.InnerEnd = s+lead, e-trail
			t.Body = b.literal()
		case pg.Token_ICONST, pg.Token_FCONST:
			t.Kind = TokenNumber
			b.literal()
		case pg.Token_IDENT, pg.Token_UIDENT:
			b.word(text)
			if lead, trail := nameQuotes(text); lead > 0 {
				t.Kind, t.InnerStart, t.InnerEnd = TokenName, s+lead, e-trail
			}
		default:
			if st.KeywordKind != pg.KeywordKind_NO_KEYWORD {
				b.word(text)
			} else {
				b.other(text[0])
			}
		}
		if t.InnerStart > t.InnerEnd {
			return nil, fmt.Errorf("token %q at offset %d is shorter than its quotes", text, s)
		}
		toks = append(toks, t)
	}
	if strings.TrimLeft(sql[last:], " \t\n\r\f\v") != "" {
		return nil, fmt.Errorf("scanner skipped %q at offset %d", sql[last:], last)
	}
	return toks, nil
}

// stringQuotes returns the lengths of a string constant's opening and closing quotes.
func stringQuotes(text string) (lead, trail int) {
	switch {
	case text[0] == '$':
		tag := strings.IndexByte(text[1:], '$') + 2
		return tag, tag
	case text[0] == '\'':
		return 1, 1
	case len(text) > 2 && text[1] == '&': // U&'…'
		return 3, 1
	}
	return 2, 1 // E'…', B'…', X'…'
}

// nameQuotes returns the lengths of a quoted identifier's quotes, 0 for an unquoted name.
func nameQuotes(text string) (lead, trail int) {
	switch {
	case text[0] == '"':
		return 1, 1
	case len(text) > 2 && text[1] == '&' && text[2] == '"': // U&"…"
		return 3, 1
	}
	return 0, 0
}
