package mask

import (
	"bytes"
	"fmt"
	"sync"
)

var copyScratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// MaskCopyLine masks data of COPY … TO STDOUT in text format: one row (the server sends one per
// CopyData message) or several newline-terminated rows; tab-separated fields, backslash escapes,
// \N for NULL. Each field is unescaped, masked and
// re-escaped. With cols (the COPY's column list, planned with ForColumns) column rules and
// column-name context apply per field; with cols nil, or for fields beyond it, the detectors run
// alone. Clean lines are returned as line itself without allocating.
//
// For CSV format, mask the whole line with MaskText: its replacements contain no quotes,
// delimiters or newlines, so the CSV structure survives (column rules do not apply then).
// Binary COPY cannot be masked field by field here; the caller must refuse it.
func (p *Plan) MaskCopyLine(line, dst []byte, cols *ResultPlan) (out []byte, changed bool, err error) {
	defer p.guard(&err)
	if len(line) > p.maxValue {
		return nil, false, ErrTooLarge
	}
	// Unescaped fields go to a pooled buffer: fields with escapes are common in clean data.
	sp := copyScratch.Get().(*[]byte)
	defer copyScratch.Put(sp)
	scratch := (*sp)[:0]
	defer func() {
		if cap(scratch) <= 1<<16 {
			*sp = scratch[:0]
		}
	}()
	var masked []byte
	copied, start, col := 0, 0, 0
	for {
		// A field ends at a tab or at a newline (end of a row: several rows may come at once).
		end := start
		for end < len(line) && line[end] != '\t' && line[end] != '\n' {
			end++
		}
		if field := line[start:end]; string(field) != `\N` {
			value := field
			if bytes.IndexByte(field, '\\') >= 0 {
				scratch, err = unescapeCopy(scratch[:0], field)
				if err != nil {
					return nil, false, fmt.Errorf("copy field %d: %w", col+1, err)
				}
				value = scratch
			}
			var cp *colPlan
			if cols != nil && col < len(cols.cols) {
				cp = &cols.cols[col]
			}
			res, ch, err := p.maskCopyField(cp, value, masked[:0])
			if err != nil {
				return nil, false, fmt.Errorf("copy field %d: %w", col+1, err)
			}
			if ch {
				masked = res
				if out == nil {
					out = append(dst, line[:start]...)
				} else {
					out = append(out, line[copied:start]...)
				}
				out = appendCopyEscaped(out, res)
				copied = end
			}
		}
		if end == len(line) || (line[end] == '\n' && end+1 == len(line)) {
			break
		}
		if line[end] == '\n' {
			col = 0
		} else {
			col++
		}
		start = end + 1
	}
	if out == nil {
		return line, false, nil
	}
	return append(out, line[copied:]...), true, nil
}

func (p *Plan) maskCopyField(cp *colPlan, value, dst []byte) ([]byte, bool, error) {
	if cp == nil {
		return p.maskDetect(value, dst, 0)
	}
	switch cp.act {
	case actPass:
		return value, false, nil
	case actForce, actNull:
		// COPY text is always text: a rule's style applies even for non-text types.
		p.stats.hits[ColumnKind].Add(1)
		if cp.json {
			var tmp [128]byte
			v, err := p.applyRule(cp.rule, tmp[:0], value)
			if err != nil {
				return nil, false, err
			}
			return appendJSONString(dst, v), true, nil
		}
		out, err := p.applyRule(cp.rule, dst, value)
		return out, err == nil, err
	}
	if cp.json {
		if out, ch, err := p.maskJSON(value, dst, cp.cx); err == nil {
			return out, ch, nil
		}
	}
	if cp.bytea {
		return p.maskByteaText(value, dst, cp.cx)
	}
	return p.maskDetect(value, dst, cp.cx)
}

// unescapeCopy decodes COPY text-format escapes: \b \f \n \r \t \v \\ \NNN (octal) \xHH, and a
// backslash before any other character stands for that character.
func unescapeCopy(dst, f []byte) ([]byte, error) {
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(f) {
			return nil, fmt.Errorf("trailing backslash")
		}
		switch c = f[i]; c {
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
		case 'v':
			dst = append(dst, '\v')
		case 'x':
			if i+1 < len(f) && isHex(f[i+1]) {
				v := byte(hexVal(f[i+1]))
				i++
				if i+1 < len(f) && isHex(f[i+1]) {
					v = v<<4 | byte(hexVal(f[i+1]))
					i++
				}
				dst = append(dst, v)
			} else {
				dst = append(dst, 'x')
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := c - '0'
			for k := 0; k < 2 && i+1 < len(f) && f[i+1] >= '0' && f[i+1] <= '7'; k++ {
				v = v<<3 | (f[i+1] - '0')
				i++
			}
			dst = append(dst, v)
		default:
			dst = append(dst, c)
		}
	}
	return dst, nil
}

// appendCopyEscaped appends v escaped for COPY text format.
func appendCopyEscaped(dst, v []byte) []byte {
	for _, c := range v {
		switch c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\v':
			dst = append(dst, '\\', 'v')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
