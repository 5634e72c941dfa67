package sqlclass

import (
	"strings"
	"unicode/utf8"
)

// A shape key is a statement text with every literal token replaced by a
// placeholder: a NUL byte followed by the literal's class. Everything else
// (keywords, identifiers, operators, parameters, whitespace, comments) is
// kept byte for byte, so two texts with the same key differ only inside
// literal tokens of the same class at the same places.
//
// The lexer below follows PostgreSQL's scan.l (PostgreSQL 17, as built into
// pg_query_go v6) with standard_conforming_strings=on. It does not need to
// tokenise everything, only to find exactly where literal tokens begin and
// end; everything it cannot be sure about makes it give up (ok=false), and
// the text is then only cached under its exact bytes.
//
// What a literal's value can change in the parse, and how the key keeps it
// out:
//   - Token type: decimal integers that fit int32 are ICONST, larger ones
//     FCONST (pg_strtoint32_safe); E'…', '…' and $…$ are SCONST, B'…' BCONST,
//     X'…' XCONST. Each class has its own placeholder.
//   - Grammar checks on an Iconst's value: FLOAT(p) is float4 for p ≤ 24,
//     float8 for p ≤ 53 and an error outside 1..53; ALTER … ALTER COLUMN n
//     SET STATISTICS needs 1 ≤ n ≤ 32767. These are the only value tests on
//     literals in gram.y (checked against the generated gram.c), so
//     integers are classed by the ranges 0, 1–24, 25–53, 54–32767, larger.
//   - Lexer errors inside literals: E'…' escapes other than \\ \' \" \b \f
//     \n \r \t (octal, \x, \u, which can fail or produce bytes that are then
//     verified), U&'…' and UESCAPE, numeric literals with trailing junk, hex,
//     octal, binary or underscore-separated numbers: not normalised.
//   - A NUL byte would end the text early on the C side: not normalised.
//     Invalid UTF-8 anywhere: not normalised.
//   - String continuation ('a'<newline>'b' is one literal): the continuation
//     of a plain string is lexed as a plain string, which is what the lexer
//     below does anyway; an E'…', B'…' or X'…' string followed by another quote
//     is not normalised.
const (
	litMark = 0x00

	clsString = 's' // '…'
	clsEscape = 'e' // E'…' with simple escapes only
	clsDollar = 'd' // $tag$…$tag$
	clsBit    = 'b' // B'…'
	clsHex    = 'x' // X'…'
	clsFloat  = 'f' // FCONST: has . or exponent, or an integer beyond int32
	clsInt0   = '0' // ICONST 0
	clsInt24  = '1' // ICONST 1..24 (FLOAT(p) is float4)
	clsInt53  = '2' // ICONST 25..53 (FLOAT(p) is float8)
	clsInt16  = '3' // ICONST 54..32767 (valid column number)
	clsInt32  = '4' // ICONST 32768..2147483647
)

// litSpan says where the literals of a text are.
type litSpan struct {
	n           int // number of literal tokens
	first, last int // byte offset of the first literal, end of the last one
}

// literal is one literal token found by shapeLex.
type literal struct {
	cls        byte
	start, end int
	// body: the literal is where a DO block's or a function's body goes (see bodies).
	body bool
}

// shapeKey appends the shape key of sql to dst. ok is false when the text
// uses anything the lexer is not certain about.
func shapeKey(dst []byte, sql string) (key []byte, sp litSpan, ok bool) {
	return shapeLex(dst, sql, nil, nil)
}

// lexNotes is what shapeLex notes of a text besides its literals.
type lexNotes struct {
	otherLanguage bool // a LANGUAGE clause names something other than sql or plpgsql
}

// shapeLex is shapeKey that also appends every literal to *lits when lits
// is not nil, and then fills *notes.
func shapeLex(dst []byte, sql string, lits *[]literal, notes *lexNotes) (key []byte, sp litSpan, ok bool) {
	n := len(sql)
	if !utf8.ValidString(sql) || strings.IndexByte(sql, 0) >= 0 {
		return dst, sp, false
	}
	var b bodies // with lits only
	lit := func(cls byte, from, to int) {
		dst = append(dst, litMark, cls)
		if sp.n == 0 {
			sp.first = from
		}
		sp.n++
		sp.last = to
		if lits != nil {
			*lits = append(*lits, literal{cls, from, to, b.literal()})
		}
	}

	i := 0
	for i < n {
		c := sql[i]
		var next byte
		if i+1 < n {
			next = sql[i+1]
		}
		switch {
		case c == 0:
			return dst, sp, false
		case c == '\'':
			j, ok := endQuoted(sql, i+1, '\'')
			if !ok {
				return dst, sp, false
			}
			lit(clsString, i, j)
			i = j
		case c == '"':
			j, ok := endQuoted(sql, i+1, '"')
			if !ok {
				return dst, sp, false
			}
			dst = append(dst, sql[i:j]...)
			if lits != nil {
				b.word(sql[i:j])
			}
			i = j
		case c == '$':
			j, cls, ok := scanDollar(sql, i)
			if !ok {
				return dst, sp, false
			}
			if cls == 0 { // parameter
				dst = append(dst, sql[i:j]...)
				if lits != nil {
					b.other(c)
				}
			} else {
				lit(cls, i, j)
			}
			i = j
		case c == '-' && next == '-':
			j := i + 2
			for j < n && sql[j] != '\n' && sql[j] != '\r' {
				j++
			}
			dst = append(dst, sql[i:j]...)
			i = j
		case c == '/' && next == '*':
			j, ok := endComment(sql, i)
			if !ok {
				return dst, sp, false
			}
			dst = append(dst, sql[i:j]...)
			i = j
		case c == '.' && next == '.': // DOT_DOT
			dst = append(dst, ".."...)
			if lits != nil {
				b.other(0)
			}
			i += 2
		case isDigit(c) || (c == '.' && isDigit(next)):
			j, cls, ok := scanNumber(sql, i)
			if !ok {
				return dst, sp, false
			}
			lit(cls, i, j)
			i = j
		case isIdentStart(c):
			if next == '\'' {
				var cls byte
				switch c {
				case 'e', 'E':
					cls = clsEscape
				case 'b', 'B':
					cls = clsBit
				case 'x', 'X':
					cls = clsHex
				}
				if cls != 0 {
					j, ok := scanPrefixed(sql, i+2, cls)
					if !ok {
						return dst, sp, false
					}
					lit(cls, i, j)
					i = j
					continue
				}
				// N'…' is the keyword NCHAR and a plain string; any
				// other letter is a one-letter identifier before one.
			}
			if (c == 'u' || c == 'U') && next == '&' {
				return dst, sp, false // U&'…', U&"…", UESCAPE
			}
			j := i + 1
			for j < n && isIdentCont(sql[j]) {
				j++
			}
			dst = append(dst, sql[i:j]...)
			if lits != nil {
				b.word(sql[i:j])
			}
			i = j
		default:
			dst = append(dst, c)
			if lits != nil && !isSpace(c) {
				b.other(c)
			}
			i++
		}
	}
	if lits != nil {
		notes.otherLanguage = b.otherLanguage
	}
	return dst, sp, true
}

// bodies tells, token by token, which literals of a text are the bodies of DO blocks and
// functions: a literal after DO or DO LANGUAGE name in a DO statement, or after AS in a CREATE …
// FUNCTION or PROCEDURE statement. Keywords compare in ASCII only, as the server's do.
type bodies struct {
	words         [3]string // the words just before the current token, most recent first; any other token clears them
	lead          string    // the first word of the current statement
	started       bool      // the current statement has a first word
	function      bool      // the current statement is CREATE … FUNCTION or PROCEDURE
	afterDot      bool      // the last token was '.': the next word is part of a name, not a keyword
	otherLanguage bool      // a LANGUAGE clause names something other than sql or plpgsql, or names it with a string
}

func (b *bodies) word(w string) {
	if b.afterDot {
		w, b.afterDot = "", false // x.do is a name
	}
	if asciiFold(b.words[0], "language") && !asciiFold(w, "sql") && !asciiFold(w, "plpgsql") {
		b.otherLanguage = true
	}
	if !b.started {
		b.started, b.lead = true, w
	}
	if asciiFold(b.lead, "create") && (asciiFold(w, "function") || asciiFold(w, "procedure")) {
		b.function = true
	}
	b.words = [3]string{w, b.words[0], b.words[1]}
}

// other notes any other token, c its first byte (0 for a literal).
func (b *bodies) other(c byte) {
	if asciiFold(b.words[0], "language") {
		b.otherLanguage = true
	}
	b.words = [3]string{}
	b.afterDot = c == '.'
	if c == ';' {
		b.lead, b.started, b.function = "", false, false
	}
}

// literal notes a literal token and reports whether it is a body.
func (b *bodies) literal() bool {
	body := asciiFold(b.lead, "do") && (asciiFold(b.words[0], "do") || asciiFold(b.words[1], "language") && asciiFold(b.words[2], "do")) ||
		b.function && asciiFold(b.words[0], "as")
	b.other(0)
	return body
}

// asciiFold reports whether a and b are equal but for the case of ASCII letters.
func asciiFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isSpace: scan.l space [ \t\n\r\f\v].
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// isIdentStart: scan.l ident_start [A-Za-z\200-\377_].
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

// isIdentCont: scan.l ident_cont [A-Za-z\200-\377_0-9\$].
func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// endQuoted returns the offset after the quote closing a '…' string or
// "…" identifier whose body starts at i; a doubled quote is part of the body.
func endQuoted(sql string, i int, q byte) (int, bool) {
	for {
		k := strings.IndexByte(sql[i:], q)
		if k < 0 {
			return 0, false
		}
		i += k + 1
		if i < len(sql) && sql[i] == q {
			i++
			continue
		}
		return i, true
	}
}

// scanPrefixed scans the body of E'…', B'…' or X'…' starting at i.
func scanPrefixed(sql string, i int, cls byte) (int, bool) {
	n := len(sql)
	switch cls {
	case clsBit, clsHex:
		// xbinside/xhinside [^']*: no escapes, no doubled quotes.
		k := strings.IndexByte(sql[i:], '\'')
		if k < 0 {
			return 0, false
		}
		i += k + 1
	default:
		for {
			if i >= n {
				return 0, false
			}
			switch sql[i] {
			case '\\':
				if i+1 >= n {
					return 0, false
				}
				switch sql[i+1] {
				case '\\', '\'', '"', 'b', 'f', 'n', 'r', 't':
					i += 2
					continue
				}
				return 0, false
			case '\'':
				if i+1 < n && sql[i+1] == '\'' {
					i += 2
					continue
				}
				i++
			default:
				i++
				continue
			}
			break
		}
	}
	// A quote after blanks and comments could continue this literal in its
	// own lexer state (E'a'<newline>'b\'…'); leave that to the parser.
	if nextSignificant(sql, i) == '\'' {
		return 0, false
	}
	return i, true
}

// nextSignificant returns the first byte at or after i that is not
// whitespace or inside a comment, or 0.
func nextSignificant(sql string, i int) byte {
	n := len(sql)
	for i < n {
		switch c := sql[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' && sql[i] != '\r' {
				i++
			}
		case c == '/' && i+1 < n && sql[i+1] == '*':
			j, ok := endComment(sql, i)
			if !ok {
				return c
			}
			i = j
		default:
			return c
		}
	}
	return 0
}

// endComment returns the offset after the (nested) C comment starting at i.
func endComment(sql string, i int) (int, bool) {
	n := len(sql)
	depth := 0
	for i < n {
		switch {
		case sql[i] == '/' && i+1 < n && sql[i+1] == '*':
			depth++
			i += 2
		case sql[i] == '*' && i+1 < n && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i, true
			}
		default:
			i++
		}
	}
	return 0, false
}

// scanDollar scans a parameter ($1, class 0) or a dollar-quoted string
// starting at the '$' at i.
func scanDollar(sql string, i int) (end int, cls byte, ok bool) {
	n := len(sql)
	j := i + 1
	if j < n && isDigit(sql[j]) {
		for j < n && isDigit(sql[j]) {
			j++
		}
		// param_junk, or $1$tag$ where the second '$' starts a quote.
		if j < n && isIdentCont(sql[j]) {
			return 0, 0, false
		}
		return j, 0, true
	}
	// dolqdelim \$({dolq_start}{dolq_cont}*)?\$
	if j < n && sql[j] != '$' {
		if !isIdentStart(sql[j]) {
			return 0, 0, false
		}
		for j < n && (isIdentStart(sql[j]) || isDigit(sql[j])) {
			j++
		}
		if j >= n || sql[j] != '$' {
			return 0, 0, false // dolqfailed
		}
	}
	if j >= n {
		return 0, 0, false
	}
	delim := sql[i : j+1]
	k := strings.Index(sql[j+1:], delim)
	if k < 0 {
		return 0, 0, false
	}
	return j + 1 + k + len(delim), clsDollar, true
}

// scanNumber scans a numeric literal starting at i (a digit, or a '.'
// followed by a digit).
func scanNumber(sql string, i int) (end int, cls byte, ok bool) {
	n := len(sql)
	j := i
	for j < n && isDigit(sql[j]) {
		j++
	}
	integer := true
	if j < n && sql[j] == '.' {
		if j+1 < n && sql[j+1] == '.' {
			return 0, 0, false // numericfail: 1..2
		}
		integer = false
		j++
		for j < n && isDigit(sql[j]) {
			j++
		}
	}
	if j < n && (sql[j] == 'e' || sql[j] == 'E') {
		k := j + 1
		if k < n && (sql[k] == '+' || sql[k] == '-') {
			k++
		}
		if k >= n || !isDigit(sql[k]) {
			return 0, 0, false // realfail, or trailing junk
		}
		for k < n && isDigit(sql[k]) {
			k++
		}
		integer, j = false, k
	}
	// Trailing junk (1abc, 0x1F, 1_000) is an error or another number
	// syntax; a following '.' is something we do not need to understand.
	if j < n && (isIdentCont(sql[j]) || sql[j] == '.') {
		return 0, 0, false
	}
	if !integer {
		return j, clsFloat, true
	}
	return j, intClass(sql[i:j]), true
}

// intClass classes a decimal integer literal as the lexer and grammar see
// it (see the comment on the classes).
func intClass(digits string) byte {
	for len(digits) > 1 && digits[0] == '0' {
		digits = digits[1:]
	}
	if len(digits) > 10 {
		return clsFloat
	}
	var v uint64
	for i := 0; i < len(digits); i++ {
		v = v*10 + uint64(digits[i]-'0')
	}
	switch {
	case v > 2147483647:
		return clsFloat
	case v == 0:
		return clsInt0
	case v <= 24:
		return clsInt24
	case v <= 53:
		return clsInt53
	case v <= 32767:
		return clsInt16
	}
	return clsInt32
}
