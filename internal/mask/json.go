package mask

import (
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// MaskJSON masks a JSON document (an HTTP body, a json/jsonb value): string values, and numbers
// that hold a finding (replaced by a JSON string), with the enclosing object key as context, so
// {"ssn": "078-05-1121"} or {"api_key": "…"} are found, and bare column rules applied to keys
// ({"password_hash": …} under rule "*password_hash"). The output is valid JSON. Clean documents
// are returned as in itself without allocating. Invalid JSON is an error: the caller must not
// pass the document on unmasked (it may fall back to MaskText).
func (p *Plan) MaskJSON(in, dst []byte) (out []byte, changed bool, err error) {
	defer p.guard(&err)
	if len(in) > p.maxValue {
		return nil, false, ErrTooLarge
	}
	return p.maskJSON(in, dst, 0)
}

func (p *Plan) maskJSON(in, dst []byte, cx ctxFlags) ([]byte, bool, error) {
	m := jsonMasker{p: p, in: in, dst: dst}
	i, err := m.value(skipWS(in, 0), cx, nil, 0)
	if err != nil {
		return nil, false, err
	}
	if i = skipWS(in, i); i != len(in) {
		return nil, false, fmt.Errorf("json: unexpected %q after value at offset %d", in[i], i)
	}
	if m.out == nil {
		return in, false, nil
	}
	return append(m.out, in[m.copied:]...), true, nil
}

type jsonMasker struct {
	p       *Plan
	in      []byte
	dst     []byte
	out     []byte // nil until the first replacement
	copied  int    // in[:copied] is already in out
	scratch []byte
}

const maxJSONDepth = 512

var errJSONDepth = errors.New("json: nesting too deep")

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// replace substitutes in[s:e] with a JSON string holding v.
func (m *jsonMasker) replace(s, e int, v []byte) {
	if m.out == nil {
		m.out = append(m.dst, m.in[:s]...)
	} else {
		m.out = append(m.out, m.in[m.copied:s]...)
	}
	m.out = appendJSONString(m.out, v)
	m.copied = e
}

func jsonErr(b []byte, i int, what string) error {
	if i >= len(b) {
		return fmt.Errorf("json: unexpected end of input, want %s", what)
	}
	return fmt.Errorf("json: unexpected %q at offset %d, want %s", b[i], i, what)
}

// value walks one JSON value at in[i] (no leading space) and returns its end.
func (m *jsonMasker) value(i int, cx ctxFlags, rule *columnRule, depth int) (int, error) {
	in := m.in
	if i >= len(in) {
		return i, jsonErr(in, i, "a value")
	}
	if depth > maxJSONDepth {
		return i, errJSONDepth
	}
	switch c := in[i]; {
	case c == '{':
		i = skipWS(in, i+1)
		if i < len(in) && in[i] == '}' {
			return i + 1, nil
		}
		for {
			if i >= len(in) || in[i] != '"' {
				return i, jsonErr(in, i, "an object key")
			}
			ke, esc, err := stringEnd(in, i)
			if err != nil {
				return i, err
			}
			key := in[i+1 : ke-1]
			kcx, krule := cx, rule
			if !esc {
				kcx = nameContext(key)
				if krule == nil {
					krule = m.p.keyStyle(key)
				}
			}
			// Keys are data too: jsonb_object_agg(email, id), or an API's {"by_email":
			// {"ada@example.com": …}}. A key is masked by the detectors (rules name keys, they
			// do not apply to them), out of context: an enclosing "password" makes any word a
			// secret.
			if rule == nil || rule.style != StylePass {
				kraw := key
				if esc {
					m.scratch = unescapeJSON(m.scratch[:0], key)
					kraw = m.scratch
				}
				if err := m.scalar(i, ke, kraw, 0, nil); err != nil {
					return i, err
				}
			}
			i = skipWS(in, ke)
			if i >= len(in) || in[i] != ':' {
				return i, jsonErr(in, i, "':'")
			}
			if i, err = m.value(skipWS(in, i+1), kcx, krule, depth+1); err != nil {
				return i, err
			}
			i = skipWS(in, i)
			if i < len(in) && in[i] == ',' {
				i = skipWS(in, i+1)
				continue
			}
			if i < len(in) && in[i] == '}' {
				return i + 1, nil
			}
			return i, jsonErr(in, i, "',' or '}'")
		}
	case c == '[':
		i = skipWS(in, i+1)
		if i < len(in) && in[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = m.value(i, cx, rule, depth+1); err != nil {
				return i, err
			}
			i = skipWS(in, i)
			if i < len(in) && in[i] == ',' {
				i = skipWS(in, i+1)
				continue
			}
			if i < len(in) && in[i] == ']' {
				return i + 1, nil
			}
			return i, jsonErr(in, i, "',' or ']'")
		}
	case c == '"':
		e, esc, err := stringEnd(in, i)
		if err != nil {
			return i, err
		}
		raw := in[i+1 : e-1]
		if esc {
			m.scratch = unescapeJSON(m.scratch[:0], raw)
			raw = m.scratch
		}
		return e, m.scalar(i, e, raw, cx, rule)
	case c == '-' || isDigit(c):
		e, err := numberEnd(in, i)
		if err != nil {
			return i, err
		}
		return e, m.scalar(i, e, in[i:e], cx, rule)
	case c == 't':
		return literal(in, i, "true", rule, m)
	case c == 'f':
		return literal(in, i, "false", rule, m)
	case c == 'n':
		if hasPrefix(in[i:], "null") {
			return i + 4, nil
		}
	}
	return i, jsonErr(in, i, "a value")
}

func literal(in []byte, i int, lit string, rule *columnRule, m *jsonMasker) (int, error) {
	if !hasPrefix(in[i:], lit) {
		return i, jsonErr(in, i, lit)
	}
	e := i + len(lit)
	if rule != nil {
		return e, m.scalar(i, e, in[i:e], 0, rule)
	}
	return e, nil
}

// scalar masks one string/number/bool value whose JSON text is in[s:e] and decoded value v.
func (m *jsonMasker) scalar(s, e int, v []byte, cx ctxFlags, rule *columnRule) error {
	p := m.p
	if rule != nil && rule.style == StylePass {
		return nil // the key is exempt from masking
	}
	if rule != nil {
		p.stats.hits[ColumnKind].Add(1)
		var tmp [128]byte
		out, err := p.applyRule(rule, tmp[:0], v)
		if err != nil {
			return err
		}
		m.replace(s, e, out)
		return nil
	}
	var buf [maxSpans]span
	spans := p.det.find(v, cx, buf[:0])
	if len(spans) == 0 {
		return nil
	}
	var tmp [256]byte
	out, err := p.maskSpans(tmp[:0], v, spans)
	if err != nil {
		return err
	}
	m.replace(s, e, out)
	return nil
}

// stringEnd returns the index after the closing quote of the string at b[i] and whether it
// contains escapes; it validates escapes and rejects control characters.
func stringEnd(b []byte, i int) (int, bool, error) {
	esc := false
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, esc, nil
		case c == '\\':
			esc = true
			if j+1 >= len(b) {
				return j, esc, jsonErr(b, j+1, "an escape")
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j++
			case 'u':
				if j+5 >= len(b) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) || !isHex(b[j+5]) {
					return j, esc, fmt.Errorf("json: bad \\u escape at offset %d", j)
				}
				j += 5
			default:
				return j, esc, fmt.Errorf("json: bad escape at offset %d", j)
			}
		case c < 0x20:
			return j, esc, fmt.Errorf("json: control character in string at offset %d", j)
		}
	}
	return len(b), esc, jsonErr(b, len(b), "'\"'")
}

func numberEnd(b []byte, i int) (int, error) {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && isDigit(b[j]):
		for j < len(b) && isDigit(b[j]) {
			j++
		}
	default:
		return j, jsonErr(b, j, "a digit")
	}
	if j < len(b) && b[j] == '.' {
		j++
		if j >= len(b) || !isDigit(b[j]) {
			return j, jsonErr(b, j, "a digit")
		}
		for j < len(b) && isDigit(b[j]) {
			j++
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j >= len(b) || !isDigit(b[j]) {
			return j, jsonErr(b, j, "a digit")
		}
		for j < len(b) && isDigit(b[j]) {
			j++
		}
	}
	return j, nil
}

func hexVal(c byte) rune {
	switch {
	case isDigit(c):
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	}
	return rune(c - 'A' + 10)
}

// unescapeJSON appends the decoded content of a validated JSON string body.
func unescapeJSON(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		switch s[i] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hexVal(s[i+1])<<12 | hexVal(s[i+2])<<8 | hexVal(s[i+3])<<4 | hexVal(s[i+4])
			i += 4
			if utf16.IsSurrogate(r) && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				r2 := hexVal(s[i+3])<<12 | hexVal(s[i+4])<<8 | hexVal(s[i+5])<<4 | hexVal(s[i+6])
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					i += 6
				}
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, s[i])
		}
	}
	return dst
}

// appendJSONString appends s as a JSON string literal (invalid UTF-8 becomes U+FFFD).
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+n]...)
		}
		i += n
	}
	return append(dst, '"')
}
