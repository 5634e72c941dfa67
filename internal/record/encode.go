package record

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// appendPayload appends the canonical JSON of ev's payload to dst.
//
// The payloads written on every statement (statement, result, notice, approval, session end) are
// encoded by hand: encoding/json's reflection was most of the recorder's cost on the read path.
// The others, written once per session or by the recorder itself, go through encoding/json. Both
// produce exactly what canonicalize produces (members in key order, encoding/json's escaping, raw
// U+FFFD for invalid UTF-8); encode_test.go checks the hand-written half against encoding/json.
func appendPayload(dst []byte, ev *Event) ([]byte, error) {
	p, err := ev.payload()
	if err != nil {
		return dst, err
	}
	switch v := p.(type) {
	case *Statement:
		return appendStatement(dst, v), nil
	case *Result:
		return appendResult(dst, v), nil
	case *Notice:
		return appendNotice(dst, v), nil
	case *Approval:
		return appendApproval(dst, v), nil
	case *SessionEnd:
		return appendSessionEnd(dst, v), nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return dst, fmt.Errorf("encode %s payload: %w", ev.Type, err)
	}
	return append(dst, fixInvalidUTF8(b)...), nil
}

// object writes the members of one JSON object in the order they are added, which callers keep
// sorted by key.
type object struct {
	b     []byte
	first bool
}

func beginObject(dst []byte) object { return object{b: append(dst, '{'), first: true} }

func (o *object) key(k string) {
	if o.first {
		o.first = false
		o.b = append(o.b, '"')
	} else {
		o.b = append(o.b, ',', '"')
	}
	o.b = append(o.b, k...) // keys are fixed ASCII identifiers
	o.b = append(o.b, '"', ':')
}

func (o *object) str(k, v string) {
	o.key(k)
	o.b = appendJSONString(o.b, v)
}

// strOmit writes a string member unless it is empty (omitempty).
func (o *object) strOmit(k, v string) {
	if v != "" {
		o.str(k, v)
	}
}

func (o *object) int(k string, v int64) {
	o.key(k)
	o.b = strconv.AppendInt(o.b, v, 10)
}

func (o *object) intOmit(k string, v int64) {
	if v != 0 {
		o.int(k, v)
	}
}

func (o *object) uintOmit(k string, v uint64) {
	if v != 0 {
		o.key(k)
		o.b = strconv.AppendUint(o.b, v, 10)
	}
}

// trueOmit writes a bool member if it is true (omitempty).
func (o *object) trueOmit(k string, v bool) {
	if v {
		o.key(k)
		o.b = append(o.b, "true"...)
	}
}

func (o *object) strings(k string, vs []string) {
	if len(vs) == 0 {
		return
	}
	o.key(k)
	o.b = append(o.b, '[')
	for i, v := range vs {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = appendJSONString(o.b, v)
	}
	o.b = append(o.b, ']')
}

func (o *object) end() []byte { return append(o.b, '}') }

// appendNullableStrings appends a JSON array of strings and nulls; a nil slice is null, as
// encoding/json writes it.
func appendNullableStrings(dst []byte, vs []*string) []byte {
	if vs == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, v := range vs {
		if i > 0 {
			dst = append(dst, ',')
		}
		if v == nil {
			dst = append(dst, "null"...)
		} else {
			dst = appendJSONString(dst, *v)
		}
	}
	return append(dst, ']')
}

func appendStatement(dst []byte, s *Statement) []byte {
	o := beginObject(dst)
	o.strOmit("approval_id", s.ApprovalID)
	o.strOmit("class", s.Class)
	o.uintOmit("id", s.ID)
	if len(s.Params) > 0 {
		o.key("params")
		o.b = appendNullableStrings(o.b, s.Params)
	}
	o.strOmit("protocol", s.Protocol)
	if s.Result != nil {
		o.key("result")
		o.b = appendResult(o.b, s.Result)
	}
	o.strOmit("rule", s.Rule)
	o.str("text", s.Text)
	o.str("verdict", s.Verdict)
	return o.end()
}

func appendResult(dst []byte, r *Result) []byte {
	o := beginObject(dst)
	o.intOmit("bytes", r.Bytes)
	if len(r.ColumnTypes) > 0 {
		o.key("column_types")
		o.b = append(o.b, '[')
		for i, t := range r.ColumnTypes {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			o.b = strconv.AppendUint(o.b, uint64(t), 10)
		}
		o.b = append(o.b, ']')
	}
	o.strings("columns", r.Columns)
	o.strOmit("command_tag", r.CommandTag)
	o.strOmit("content_type", r.ContentType)
	o.intOmit("duration_us", r.DurationUS)
	o.strOmit("error", r.Error)
	o.strOmit("error_code", r.ErrorCode)
	o.int("row_count", r.RowCount)
	if len(r.Rows) > 0 {
		o.key("rows")
		o.b = append(o.b, '[')
		for i, row := range r.Rows {
			if i > 0 {
				o.b = append(o.b, ',')
			}
			o.b = appendNullableStrings(o.b, row)
		}
		o.b = append(o.b, ']')
	}
	o.trueOmit("skipped", r.Skipped)
	o.uintOmit("statement_id", r.StatementID)
	o.trueOmit("suspended", r.Suspended)
	o.trueOmit("truncated", r.Truncated)
	return o.end()
}

func appendNotice(dst []byte, n *Notice) []byte {
	o := beginObject(dst)
	o.strOmit("code", n.Code)
	o.str("message", n.Message)
	o.strOmit("severity", n.Severity)
	return o.end()
}

func appendApproval(dst []byte, a *Approval) []byte {
	o := beginObject(dst)
	o.strings("approvers", a.Approvers)
	o.strOmit("by", a.By)
	o.str("id", a.ID)
	o.strOmit("reason", a.Reason)
	o.str("state", a.State)
	return o.end()
}

func appendSessionEnd(dst []byte, e *SessionEnd) []byte {
	o := beginObject(dst)
	o.int("bytes_in", e.BytesIn)
	o.int("bytes_out", e.BytesOut)
	o.int("duration_us", e.DurationUS)
	o.strOmit("reason", e.Reason)
	return o.end()
}

// jsonPlain marks the ASCII bytes encoding/json writes unescaped (with HTML escaping on).
var jsonPlain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

const lowerHex = "0123456789abcdef"

// appendJSONString appends the canonical JSON string of s: encoding/json's escaping, except that
// each byte of invalid UTF-8 becomes a raw U+FFFD (canonical form, see fixInvalidUTF8) where
// encoding/json writes the escape \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonPlain[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\uFFFD"...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', lowerHex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendTimestamp appends t in UTC as TimeFormat lays it out (microseconds, truncated), without
// the general layout interpreter: this runs for every record.
func appendTimestamp(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, TimeFormat)
	}
	hour, minute, sec := t.Clock()
	dst = appendDigits(dst, year, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	dst = append(dst, '.')
	dst = appendDigits(dst, t.Nanosecond()/1000, 6)
	return append(dst, 'Z')
}

// appendDigits appends v (≥ 0) zero-padded to width digits.
func appendDigits(dst []byte, v, width int) []byte {
	var b [8]byte
	for i := width - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, b[:width]...)
}

// stampCache holds the text of one UTC second ("2006-01-02T15:04:05."), which every record
// stamped within that second shares.
type stampCache struct {
	sec  int64
	text [20]byte
}

// Unix seconds of the years TimeFormat writes in four digits.
const (
	minStampSec = -62135596800 // 0001-01-01T00:00:00Z
	maxStampSec = 253402300799 // 9999-12-31T23:59:59Z
)

// Unix seconds of the first and last second TimeFormat can write (years 0000 to 9999); Append
// refuses event times outside them.
const (
	minRecordSec = -62167219200 // 0000-01-01T00:00:00Z
	maxRecordSec = maxStampSec
)

// appendStamp is appendTimestamp with the date and clock of the second taken from c.
func appendStamp(c *atomic.Pointer[stampCache], dst []byte, t time.Time) []byte {
	sec := t.Unix()
	if sec < minStampSec || sec > maxStampSec {
		return appendTimestamp(dst, t)
	}
	p := c.Load()
	if p == nil || p.sec != sec {
		p = &stampCache{sec: sec}
		appendTimestamp(p.text[:0], t.Truncate(time.Second))
		c.Store(p)
	}
	dst = append(dst, p.text[:]...)
	dst = appendDigits(dst, t.Nanosecond()/1000, 6)
	return append(dst, 'Z')
}
