package mask

import (
	"errors"
	"fmt"
)

// CSVFormat describes COPY … (FORMAT csv) output: DELIMITER, QUOTE and ESCAPE options.
// Zero fields take PostgreSQL's defaults (',', '"', and ESCAPE equal to QUOTE).
type CSVFormat struct {
	Delimiter, Quote, Escape byte
}

func (f CSVFormat) withDefaults() CSVFormat {
	if f.Delimiter == 0 {
		f.Delimiter = ','
	}
	if f.Quote == 0 {
		f.Quote = '"'
	}
	if f.Escape == 0 {
		f.Escape = f.Quote
	}
	return f
}

var errCSVQuote = errors.New("unterminated quoted field")

// MaskCSV masks COPY … TO STDOUT (FORMAT csv) data: one row or several, fields possibly quoted
// (with newlines inside quotes). Each field is decoded, masked with its column's plan (cols may
// be nil: detectors only) and, when changed, written back quoted. An unquoted empty field is NULL
// and left alone. The caller skips a HEADER row. Clean data is returned as data itself without
// allocating.
func (p *Plan) MaskCSV(data, dst []byte, cols *ResultPlan, format CSVFormat) (out []byte, changed bool, err error) {
	defer p.guard(&err)
	if len(data) > p.maxValue {
		return nil, false, ErrTooLarge
	}
	f := format.withDefaults()
	if f.Delimiter == f.Quote || f.Delimiter == '\n' || f.Delimiter == '\r' || f.Quote == '\n' || f.Quote == '\r' {
		return nil, false, fmt.Errorf("csv format: delimiter %q and quote %q must differ and not be newlines", f.Delimiter, f.Quote)
	}
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
	for start <= len(data) {
		// Parse one field at data[start:].
		end, quoted := start, false
		var value []byte
		if start < len(data) && data[start] == f.Quote {
			quoted = true
			scratch = scratch[:0]
			j := start + 1
			for {
				if j >= len(data) {
					return nil, false, fmt.Errorf("csv field %d: %w", col+1, errCSVQuote)
				}
				c := data[j]
				if c == f.Escape && j+1 < len(data) && (data[j+1] == f.Quote || (f.Escape != f.Quote && data[j+1] == f.Escape)) {
					scratch = append(scratch, data[j+1])
					j += 2
					continue
				}
				if c == f.Quote {
					j++
					break
				}
				scratch = append(scratch, c)
				j++
			}
			end = j
			value = scratch
			if end < len(data) && data[end] != f.Delimiter && data[end] != '\n' && !crlf(data, end) {
				return nil, false, fmt.Errorf("csv field %d: text after closing quote", col+1)
			}
		} else {
			// A row ends at \n or \r\n; a lone \r is data (the server quotes fields holding one).
			for end < len(data) && data[end] != f.Delimiter && data[end] != '\n' && !crlf(data, end) {
				end++
			}
			value = data[start:end]
		}
		if quoted || end > start { // an unquoted empty field is NULL
			var cp *colPlan
			if cols != nil && col < len(cols.cols) {
				cp = &cols.cols[col]
			}
			res, ch, err := p.maskCopyField(cp, value, masked[:0])
			if err != nil {
				return nil, false, fmt.Errorf("csv field %d: %w", col+1, err)
			}
			if ch {
				masked = res
				if out == nil {
					out = append(dst, data[:start]...)
				} else {
					out = append(out, data[copied:start]...)
				}
				out = appendCSVQuoted(out, res, f)
				copied = end
			}
		}
		if end >= len(data) {
			break
		}
		switch data[end] {
		case f.Delimiter:
			col++
			start = end + 1
			continue
		case '\r':
			end++ // \r\n
		}
		// End of row.
		col = 0
		start = end + 1
		if start == len(data) {
			break
		}
	}
	if out == nil {
		return data, false, nil
	}
	return append(out, data[copied:]...), true, nil
}

func crlf(b []byte, i int) bool { return b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' }

func appendCSVQuoted(dst, v []byte, f CSVFormat) []byte {
	dst = append(dst, f.Quote)
	for _, c := range v {
		if c == f.Quote || c == f.Escape {
			dst = append(dst, f.Escape)
		}
		dst = append(dst, c)
	}
	return append(dst, f.Quote)
}
