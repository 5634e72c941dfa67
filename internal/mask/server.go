package mask

import "bytes"

// MaskServerMessage masks one field of an ErrorResponse or NoticeResponse (message, detail, hint,
// context). Besides running the detectors it redacts the data values PostgreSQL quotes in its
// messages, because such a value may come from a column a rule covers, where no detector would
// recognise it (SELECT password_hash::int FROM users → invalid input syntax for type integer:
// "$2b$12$…"). The templates handled:
//
//	invalid input syntax for type T: "V"      invalid input value for enum T: "V"
//	malformed array|record|range literal: "V" value "V" is out of range for type T
//	Token "V" is invalid.                     Key (c)=(V) already exists. (and other Key … forms)
//	Failing row contains (V).
//
// Identifiers in messages (relation "users") are left alone. Clean messages are returned as in
// itself without allocating.
func (p *Plan) MaskServerMessage(in, dst []byte) (out []byte, changed bool, err error) {
	defer p.guard(&err)
	if len(in) > p.maxValue {
		return nil, false, ErrTooLarge
	}
	var buf [maxSpans]span
	spans := p.det.find(in, 0, buf[:0])
	n := len(spans)
	spans = echoedValues(in, spans)
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
func echoedValues(in []byte, spans []span) []span {
	for line := 0; line < len(in); {
		end := bytes.IndexByte(in[line:], '\n')
		if end < 0 {
			end = len(in)
		} else {
			end += line
		}
		spans = echoedInLine(in, line, end, spans)
		line = end + 1
	}
	return spans
}

func echoedInLine(in []byte, ls, le int, spans []span) []span {
	l := in[ls:le]
	add := func(s, e int) {
		if s < e {
			spans = append(spans, span{ls + s, ls + e, EchoedValue})
		}
	}
	// `…: "V"` after an input-syntax phrase: V runs to the last quote of the line (values may
	// contain quotes; the server does not escape them).
	for _, phrase := range [...]string{"invalid input syntax for", "invalid input value for", "literal: \""} {
		if i := bytes.Index(l, []byte(phrase)); i >= 0 {
			if q := bytes.Index(l[i:], []byte(`: "`)); q >= 0 {
				s := i + q + 3
				if e := bytes.LastIndexByte(l, '"'); e >= s {
					add(s, e)
				}
			}
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
