package mask

import "unsafe"

// Field is a part of a text that is masked on its own, [Start, End) in bytes: a token of a
// statement, a header field of a request, a pair of a form. What lies between fields is never
// masked.
type Field struct{ Start, End int }

// Finds reports whether MaskString would change s or fail on it; on clean text it costs what
// MaskString costs there and does not allocate. It counts nothing: the masking that follows does.
func (p *Plan) Finds(s string) (found bool) {
	defer func() {
		if recover() != nil {
			found = true // the masking that follows fails the same way, and says so
		}
	}()
	if p == nil || s == "" {
		return false
	}
	if len(s) > p.maxValue {
		return true
	}
	var buf [maxSpans]span
	return len(p.det.find(unsafe.Slice(unsafe.StringData(s), len(s)), 0, buf[:0])) > 0
}

// MaskFields masks the fields of in, which must be in order and must not overlap, without ever
// masking across one's edge: masked[i] is fields[i] masked, or nil when it is unchanged. The
// detectors read the whole of in, so that a finding within one field is masked as MaskText masks
// it, with its context (the key before a value) wherever it lies. A finding that crosses a
// field's edge or lies between fields is not masked; crossed says there was one, and every field
// it touches is masked as MaskText masks that field's text alone. So a finding that runs from one
// field into another (a private key's BEGIN line in one comment, its END line in another) never
// hides what lies between them. On error nothing of in may be shown.
func (p *Plan) MaskFields(in []byte, fields []Field) (masked [][]byte, crossed bool, err error) {
	defer p.guard(&err)
	if len(in) > p.maxValue {
		return nil, false, ErrTooLarge
	}
	var buf [maxSpans]span
	spans := p.det.find(in, 0, buf[:0])
	if len(spans) == 0 {
		return nil, false, nil
	}
	alone := make([]bool, len(fields)) // touched by a finding that crosses an edge
	f := 0
	for _, s := range spans {
		for f < len(fields) && fields[f].End <= s.Start {
			f++
		}
		if f < len(fields) && fields[f].Start <= s.Start && s.End <= fields[f].End {
			continue
		}
		crossed = true
		for t := f; t < len(fields) && fields[t].Start < s.End; t++ {
			alone[t] = true
		}
	}
	masked = make([][]byte, len(fields))
	next := 0 // the first span not yet past
	var own []span
	for i, fl := range fields {
		field := in[fl.Start:fl.End]
		own = own[:0]
		for next < len(spans) && spans[next].Start < fl.End {
			if s := spans[next]; s.Start >= fl.Start && s.End <= fl.End {
				own = append(own, span{s.Start - fl.Start, s.End - fl.Start, s.Kind})
			}
			next++
		}
		if alone[i] {
			out, changed, err := p.maskDetect(field, nil, 0)
			if err != nil {
				return nil, false, err
			}
			if changed {
				masked[i] = out
			}
			continue
		}
		if len(own) > 0 {
			if masked[i], err = p.maskSpans(nil, field, own); err != nil {
				return nil, false, err
			}
		}
	}
	return masked, crossed, nil
}
