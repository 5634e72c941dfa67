package mask

import "bytes"

// MaskServerMessage masks one field of an ErrorResponse or NoticeResponse (message, detail, hint,
// context). Besides running the detectors it redacts the data values PostgreSQL quotes in its
// messages, because such a value may come from a column a rule covers, where no detector would
// recognise it (SELECT password_hash::int FROM users → invalid input syntax for type integer:
// "$2b$12$…"). The templates handled:
//
//	…: "V" ending a line (invalid input syntax for type T: "V", date/time field value out of
//	range: "V", malformed array literal: "V", cross-database references …: "V", …)
//	invalid … "V" ending a line (invalid type name "V")
//	value "V" is out of range for type T       invalid value "V" for "F"
//	Token "V" is invalid.                      Key (c)=(V) already exists. (and other Key … forms)
//	Failing row contains (V).                  JSON data, line N: V
//	line N: <parser message> followed by the input line (XML parser details)
//
// Identifiers in messages (relation "users") are left alone, which keeps errors useful; but a
// value cast to an identifier type (email::regclass → schema "ada@example" does not exist) is
// then only caught by the detectors. When the statement read columns a rule covers, use
// MaskServerMessageStrict.
func (p *Plan) MaskServerMessage(in, dst []byte) (out []byte, changed bool, err error) {
	return p.maskServer(in, dst, false)
}

// MaskServerMessageStrict is MaskServerMessage that also redacts every double-quoted string
// (identifiers included), every number, a key's values in a detail and everything after
// "at or near".
func (p *Plan) MaskServerMessageStrict(in, dst []byte) (out []byte, changed bool, err error) {
	return p.maskServer(in, dst, true)
}

func (p *Plan) maskServer(in, dst []byte, strict bool) (out []byte, changed bool, err error) {
	defer p.guard(&err)
	if len(in) > p.maxValue {
		return nil, false, ErrTooLarge
	}
	var buf [maxSpans]span
	spans := p.det.find(in, 0, buf[:0])
	n := len(spans)
	spans = echoedValues(in, spans, strict)
	if len(spans) == 0 {
		return in, false, nil
	}
	if len(spans) > n {
		normalize(spans)
		spans = spans[:mergeOverlaps(spans)]
	}
	out, err = p.maskSpans(dst, in, spans)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// echoedValues appends spans for values quoted by known message templates.
func echoedValues(in []byte, spans []span, strict bool) []span {
	afterParserLine := false
	for line := 0; line < len(in); {
		end := bytes.IndexByte(in[line:], '\n')
		if end < 0 {
			end = len(in)
		} else {
			end += line
		}
		l := in[line:end]
		switch {
		case afterParserLine && len(bytes.Trim(l, " ^")) > 0:
			// The input line an XML (libxml) parser error quotes under "line N: …".
			spans = append(spans, span{line, end, EchoedValue})
		default:
			spans = echoedInLine(in, line, end, spans, strict)
		}
		afterParserLine = isParserLine(l)
		line = end + 1
	}
	return spans
}

// isParserLine: "line 12: Start tag expected, '<' not found".
func isParserLine(l []byte) bool {
	if !hasPrefix(l, "line ") {
		return false
	}
	j := 5
	for j < len(l) && isDigit(l[j]) {
		j++
	}
	return j > 5 && j < len(l) && l[j] == ':'
}

func echoedInLine(in []byte, ls, le int, spans []span, strict bool) []span {
	l := in[ls:le]
	add := func(s, e int) {
		if s < e {
			spans = append(spans, span{ls + s, ls + e, EchoedValue})
		}
	}
	// `…: "V"` closing the line: how the server quotes rejected input (invalid input syntax for
	// type T: "V", date/time field value out of range: "V", malformed array literal: "V", …).
	// V runs to the last quote of the line (values may contain quotes; they are not escaped).
	if len(l) > 0 && l[len(l)-1] == '"' {
		if q := bytes.Index(l, []byte(`: "`)); q >= 0 && q+3 <= len(l)-1 {
			add(q+3, len(l)-1)
		}
	}
	if hasPrefix(l, "invalid ") && l[len(l)-1] == '"' && !bytes.Contains(l, []byte(`" for "`)) {
		if q := bytes.IndexByte(l, '"'); q < len(l)-1 {
			add(q+1, len(l)-1)
		}
	}
	if i := bytes.Index(l, []byte("JSON data, line ")); i >= 0 {
		if c := bytes.Index(l[i:], []byte(": ")); c >= 0 {
			add(i+c+2, len(l))
		}
	}
	if strict {
		for i := 0; i < len(l); {
			q := bytes.IndexByte(l[i:], '"')
			if q < 0 {
				break
			}
			s := i + q + 1
			e := bytes.IndexByte(l[s:], '"')
			if e < 0 {
				add(s, len(l))
				break
			}
			add(s, s+e)
			i = s + e + 1
		}
		if i := bytes.Index(l, []byte("at or near ")); i >= 0 {
			add(i+11, len(l))
		}
		// Numbers, which messages print bare (requested character too large for encoding:
		// 415555010; date field value out of range: 4155-13-01), and key values in details
		// (Key (tel)=(…) already exists).
		for i := 0; i < len(l); {
			if !isDigit(l[i]) {
				i++
				continue
			}
			s := i
			for i < len(l) && isDigit(l[i]) {
				i++
			}
			add(s, i)
		}
		if i := bytes.Index(l, []byte(")=(")); i >= 0 {
			if e := bytes.LastIndexByte(l, ')'); e > i+3 {
				add(i+3, e)
			}
		}
	}
	if i := bytes.Index(l, []byte(`invalid value "`)); i >= 0 {
		s := i + 15
		if e := bytes.LastIndex(l, []byte(`" for "`)); e >= s {
			add(s, e)
		}
	}
	if i := bytes.Index(l, []byte(`value "`)); i >= 0 {
		s := i + 7
		if e := bytes.LastIndex(l, []byte(`" is out of range`)); e >= s {
			add(s, e)
		}
	}
	if i := bytes.Index(l, []byte(`Token "`)); i >= 0 {
		s := i + 7
		if e := bytes.LastIndex(l, []byte(`" is invalid`)); e >= s {
			add(s, e)
		}
	}
	if i := bytes.Index(l, []byte("Key (")); i >= 0 {
		if q := bytes.Index(l[i:], []byte(")=(")); q >= 0 {
			s := i + q + 3
			e := -1
			for _, suffix := range [...]string{") already exists", ") is not present", ") is still referenced", ") conflicts with", ") is duplicated"} {
				if k := bytes.LastIndex(l, []byte(suffix)); k >= s {
					e = k
					break
				}
			}
			if e < 0 {
				e = bytes.LastIndexByte(l, ')')
			}
			if e >= s {
				add(s, e)
			}
		}
	}
	if i := bytes.Index(l, []byte("Failing row contains (")); i >= 0 {
		s := i + 22
		if e := bytes.LastIndexByte(l, ')'); e >= s {
			add(s, e)
		}
	}
	return spans
}
