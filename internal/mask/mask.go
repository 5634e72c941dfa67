package mask

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"unsafe"
)

// ErrTooLarge is returned for a value larger than Config.MaxValueBytes.
var ErrTooLarge = errors.New("value too large to mask")

// Postgres type OIDs that matter for masking.
const (
	oidBool        = 16
	oidBytea       = 17
	oidChar        = 18
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidXML         = 142
	oidCIDR        = 650
	oidFloat4      = 700
	oidFloat8      = 701
	oidUnknown     = 705
	oidInet        = 869
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidInterval    = 1186
	oidTimetz      = 1266
	oidUUID        = 2950
	oidJSONB       = 3802
)

// firstUserOID is FirstNormalObjectId: OIDs from here on are types created in the database.
const firstUserOID = 16384

// textArrayElem returns the element type of arrays of text-like types.
func textArrayElem(oid uint32) (uint32, bool) {
	switch oid {
	case 1009:
		return oidText, true
	case 1015:
		return oidVarchar, true
	case 1014:
		return oidBpchar, true
	case 1003:
		return oidName, true
	case 199:
		return oidJSON, true
	case 3807:
		return oidJSONB, true
	case 143:
		return oidXML, true
	case 1002:
		return oidChar, true
	}
	return 0, false
}

// textLike reports whether a type's binary wire format is its text (jsonb: after a version
// byte), so binary cells of it can be scanned like text.
func textLike(oid uint32) bool {
	switch oid {
	case oidText, oidVarchar, oidBpchar, oidName, oidJSON, oidJSONB, oidXML, oidUnknown, oidChar, oidRefcursor:
		return true
	}
	return false
}

// noPII reports whether a type's text form cannot hold what the detectors look for: booleans,
// dates and times, UUIDs, floats, OIDs.
func noPII(oid uint32) bool {
	switch oid {
	case oidBool, oidDate, oidTime, oidTimetz, oidTimestamp, oidTimestamptz, oidInterval, oidUUID,
		oidFloat4, oidFloat8, oidOID, oidInt2:
		return true
	}
	return false
}

// maskSpans appends in to dst with each span rewritten in its kind's style.
func (p *Plan) maskSpans(dst, in []byte, spans []span) ([]byte, error) {
	last := 0
	var err error
	for _, s := range spans {
		dst = append(dst, in[last:s.Start]...)
		dst, err = p.sty.apply(dst, p.styles[s.Kind], s.Kind, in[s.Start:s.End])
		if err != nil {
			return nil, fmt.Errorf("mask %v: %w", s.Kind, err)
		}
		p.stats.hits[s.Kind].Add(1)
		last = s.End
	}
	return append(dst, in[last:]...), nil
}

// maskDetect runs the detectors over in with context cx. When nothing is found it returns in
// and false without allocating.
func (p *Plan) maskDetect(in, dst []byte, cx ctxFlags) ([]byte, bool, error) {
	var buf [maxSpans]span
	spans := p.det.find(in, cx, buf[:0])
	if len(spans) == 0 {
		return in, false, nil
	}
	out, err := p.maskSpans(dst, in, spans)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// guard turns a panic in a detector into an error, so a bug fails closed instead of taking the
// connection (or the daemon) down with the value in clear on some path.
func (p *Plan) guard(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("masking panicked: %v", r)
	}
	if *err != nil {
		p.stats.failures.Add(1)
	}
}

// MaskText masks free text: ErrorResponse and NoticeResponse fields, log lines, whole COPY lines
// in CSV format. Findings are appended to dst as masked text and returned with changed=true;
// clean text is returned as in itself (no allocation). On error the text must not be passed on.
func (p *Plan) MaskText(in, dst []byte) (out []byte, changed bool, err error) {
	defer p.guard(&err)
	if len(in) > p.maxValue {
		return nil, false, ErrTooLarge
	}
	return p.maskDetect(in, dst, 0)
}

// MaskString is MaskText for a string kept in a record or shown to people: statement text,
// a process's arguments. It returns s itself when nothing is found (no copy) and the redaction
// marker when masking fails. A nil plan masks nothing.
func (p *Plan) MaskString(s string) string {
	if p == nil || s == "" {
		return s
	}
	out, changed, err := p.MaskText(unsafe.Slice(unsafe.StringData(s), len(s)), nil)
	switch {
	case err != nil:
		return string(p.Redacted())
	case !changed:
		return s
	}
	return string(out)
}

// MaskValueOf masks v, a value a statement writes to or compares with the table columns srcs
// (a parameter, a literal): by the first column rule covering one of them, as in a result, or
// else by the detectors, as MaskText.
func (p *Plan) MaskValueOf(v, dst []byte, srcs []Source) (out []byte, changed bool, err error) {
	defer p.guard(&err)
	if r := p.columnStyle(Column{Sources: srcs}); r != nil && len(srcs) > 0 {
		if r.style == StylePass {
			return v, false, nil
		}
		p.stats.hits[ColumnKind].Add(1)
		out, err = p.applyRule(r, dst, v)
		return out, err == nil, err
	}
	return p.MaskText(v, dst)
}

// RuleCovers reports whether a column rule that masks covers one of the table columns srcs.
func (p *Plan) RuleCovers(srcs []Source) bool {
	if len(srcs) == 0 {
		return false
	}
	r := p.columnStyle(Column{Sources: srcs})
	return r != nil && r.style != StylePass
}

// MaskStrings is MaskString of each of ss, returning ss itself when none changes.
func (p *Plan) MaskStrings(ss []string) []string {
	for i, s := range ss {
		if m := p.MaskString(s); m != s {
			out := slices.Clone(ss)
			out[i] = m
			for j := i + 1; j < len(ss); j++ {
				out[j] = p.MaskString(ss[j])
			}
			return out
		}
	}
	return ss
}

// MaskStringMap is MaskString of each key and value of m (a connection's parameters, as the
// agent sent them), returning m itself when none changes. Keys that mask alike keep the last
// value in key order, which only a hostile client would send.
func (p *Plan) MaskStringMap(m map[string]string) map[string]string {
	if p == nil {
		return m
	}
	changed := false
	for k, v := range m {
		if p.MaskString(k) != k || p.MaskString(v) != v {
			changed = true
			break
		}
	}
	if !changed {
		return m
	}
	out := make(map[string]string, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out[p.MaskString(k)] = p.MaskString(m[k])
	}
	return out
}

// action is what a ResultPlan does with one column.
type action uint8

const (
	actScan    action = iota // run detectors (text, or binary text-like)
	actInspect               // binary non-text cell: read it (binaryFinding), NULL on a finding
	actPass                  // type cannot hold findings
	actForce                 // a column rule applies its style
	actNull                  // binary non-text cell under a column rule: replaced by NULL
)

type colPlan struct {
	act   action
	array bool // binary array of a text-like element type
	rule  *columnRule
	cx    ctxFlags
	json  bool // json/jsonb: scan with JSON key context, keep the output valid JSON
	jsonb bool // binary jsonb: a version byte precedes the text
	// bytea: text-format bytea, scanned as the bytes it encodes.
	bytea bool
	// userBinary: a binary cell of a type created in the database: text for most, but a cell
	// starting with a zero byte (no text does) is read as binaryFinding reads it.
	userBinary bool
	oid        uint32 // the column's type, for actInspect
}

// ResultPlan is the masking plan of one result set (one RowDescription). It is immutable and
// safe for concurrent use.
type ResultPlan struct {
	p    *Plan
	cols []colPlan
}

// ForColumns plans a result set: per column, a column rule's style, a detector scan with the
// context the column name gives, or nothing (types that cannot hold findings).
func (p *Plan) ForColumns(cols []Column) *ResultPlan {
	rp := &ResultPlan{p: p, cols: make([]colPlan, len(cols))}
	for i, c := range cols {
		cp := &rp.cols[i]
		binary := c.Format == 1
		isJSON := c.TypeOID == oidJSON || c.TypeOID == oidJSONB
		cp.json = isJSON
		cp.jsonb = binary && c.TypeOID == oidJSONB
		if r := p.columnStyle(c); r != nil {
			cp.rule = r
			if r.style == StylePass {
				cp.act = actPass
				continue
			}
			cp.act = actForce
			if binary && !textLike(c.TypeOID) {
				cp.act = actNull
			}
			continue
		}
		elem, isArray := textArrayElem(c.TypeOID)
		switch {
		case binary && isArray:
			cp.array = true
			cp.json = elem == oidJSON || elem == oidJSONB
			cp.jsonb = elem == oidJSONB
			cp.act = actScan
		case binary && !textLike(c.TypeOID) && c.TypeOID != oidBytea && c.TypeOID < firstUserOID:
			// Binary numbers, records, arrays, text search types: passed only where the bytes
			// cannot hold a finding, else read (see binaryFinding).
			cp.cx = columnContext(c)
			cp.oid = c.TypeOID
			cp.act = actInspect
			if cleanBinary(c.TypeOID, cp.cx) {
				cp.act = actPass
			}
		case !binary && noPII(c.TypeOID):
			cp.act = actPass
		default:
			// Text, binary text-like types and bytea (the bytes themselves), and binary types
			// created in the database (citext, domains, enums: for most the binary form is the
			// text).
			cp.act = actScan
			cp.cx = columnContext(c)
			cp.bytea = !binary && c.TypeOID == oidBytea
			cp.userBinary = binary && c.TypeOID >= firstUserOID
			cp.oid = c.TypeOID
		}
	}
	return rp
}

// columnContext is the detector context a column's names and type give.
func columnContext(c Column) ctxFlags {
	cx := nameContext([]byte(c.Name))
	if c.Field != "" && c.Field != c.Name {
		cx |= nameContext([]byte(c.Field))
	}
	if c.TypeOID == oidInet || c.TypeOID == oidCIDR {
		cx |= ctxIP
	}
	return cx
}

// NumColumns is the number of columns planned.
func (rp *ResultPlan) NumColumns() int { return len(rp.cols) }

// Forced reports whether column col is covered by a column rule (useful to decide, for instance,
// whether a COPY of the table can be masked field by field).
func (rp *ResultPlan) Forced(col int) bool {
	return col >= 0 && col < len(rp.cols) && rp.cols[col].act >= actForce
}

// MaskCell masks one DataRow cell (not NULL; the caller passes NULL cells through). in is the
// cell's bytes in the column's format.
//
//   - Nothing to mask: out is in itself, changed=false, no allocation.
//   - Masked: out is dst with the masked cell appended (pass dst[:0] to reuse a buffer),
//     changed=true.
//   - null=true: the cell must be sent as NULL (length -1): a binary cell of a non-text type
//     that a column rule covers, or in which a detector finds something, has no safe text
//     rendering.
//   - err != nil: the cell could not be masked; the caller must not send it (use Fallback).
func (rp *ResultPlan) MaskCell(col int, in, dst []byte) (out []byte, changed, null bool, err error) {
	// Fast path without the deferred recover: columns that are never scanned, and text cells too
	// short to hold any finding (the shortest is an IPv6 "::1").
	if col >= 0 && col < len(rp.cols) {
		if cp := &rp.cols[col]; cp.act == actPass || (cp.act == actScan && len(in) < 3 && !cp.array && !cp.jsonb) {
			return in, false, false, nil
		}
	}
	return rp.maskCell(col, in, dst)
}

func (rp *ResultPlan) maskCell(col int, in, dst []byte) (out []byte, changed, null bool, err error) {
	p := rp.p
	defer p.guard(&err)
	if col < 0 || col >= len(rp.cols) {
		return nil, false, false, fmt.Errorf("mask cell: column %d of %d", col, len(rp.cols))
	}
	if len(in) > p.maxValue {
		return nil, false, false, ErrTooLarge
	}
	cp := &rp.cols[col]
	switch cp.act {
	case actPass:
		return in, false, false, nil
	case actNull:
		p.stats.nulled.Add(1)
		p.stats.hits[ColumnKind].Add(1)
		return nil, true, true, nil
	}
	// One return for the cells read as something other than their bytes: past 15 returns the
	// deferred guard is no longer open-coded, which costs every cell.
	if cp.act == actInspect || cp.bytea || cp.userBinary && len(in) > 0 && in[0] == 0 {
		return rp.maskDecoded(cp, in, dst)
	}
	if cp.array {
		out, changed, err := rp.maskBinaryArray(cp, in, dst)
		if err != nil {
			return nil, false, false, err
		}
		if !changed {
			return in, false, false, nil
		}
		return out, true, false, nil
	}
	body := in
	if cp.jsonb {
		if len(in) == 0 || in[0] != 1 {
			return nil, false, false, fmt.Errorf("mask cell: jsonb binary version %v not understood", firstByte(in))
		}
		body = in[1:]
		dst = append(dst, 1)
	}
	if cp.act == actForce {
		out, err := rp.forced(cp, body, dst)
		if err != nil {
			return nil, false, false, err
		}
		return out, true, false, nil
	}
	var masked []byte
	var ch bool
	if cp.json {
		masked, ch, err = p.maskJSON(body, dst, cp.cx)
		if err != nil {
			// Not valid JSON after all (should not happen for json/jsonb): treat as text.
			masked, ch, err = p.maskDetect(body, dst, cp.cx)
		}
	} else {
		masked, ch, err = p.maskDetect(body, dst, cp.cx)
	}
	if err != nil {
		return nil, false, false, err
	}
	if !ch {
		return in, false, false, nil
	}
	return masked, true, false, nil
}

// maskDecoded masks a text bytea cell in the bytes it holds, and withholds a binary cell read as
// its type's text (binaryFinding) if a detector finds something there.
func (rp *ResultPlan) maskDecoded(cp *colPlan, in, dst []byte) (out []byte, changed, null bool, err error) {
	if cp.bytea {
		out, changed, err := rp.p.maskByteaText(in, dst, cp.cx)
		return out, changed, false, err
	}
	kind, found, err := rp.p.binaryFinding(cp.oid, in, cp.cx, 0)
	if err != nil {
		return nil, false, false, err
	}
	if !found {
		return in, false, false, nil
	}
	rp.p.stats.nulled.Add(1)
	rp.p.stats.hits[kind].Add(1)
	return nil, true, true, nil
}

func firstByte(b []byte) any {
	if len(b) == 0 {
		return "(empty)"
	}
	return b[0]
}

// forced applies a column rule to a whole value; for JSON columns the result is a JSON string so
// the cell stays valid JSON.
func (rp *ResultPlan) forced(cp *colPlan, body, dst []byte) ([]byte, error) {
	p := rp.p
	p.stats.hits[ColumnKind].Add(1)
	if cp.json {
		var tmp [128]byte
		v, err := p.applyRule(cp.rule, tmp[:0], body)
		if err != nil {
			return nil, err
		}
		return appendJSONString(dst, v), nil
	}
	return p.applyRule(cp.rule, dst, body)
}

func (p *Plan) applyRule(r *columnRule, dst, v []byte) ([]byte, error) {
	if r.style == StyleRedact {
		return append(dst, r.label...), nil
	}
	out, err := p.sty.apply(dst, r.style, ColumnKind, v)
	if err != nil {
		return nil, fmt.Errorf("column rule: %w", err)
	}
	return out, nil
}

// Fallback is the value to send for column col when MaskCell failed: NULL for binary non-text
// cells, else the redaction label (as a JSON string for JSON columns, hex-encoded for bytea).
func (rp *ResultPlan) Fallback(col int, dst []byte) (out []byte, null bool) {
	if col < 0 || col >= len(rp.cols) {
		return nil, true
	}
	cp := &rp.cols[col]
	if cp.act == actNull || cp.act == actPass || cp.act == actInspect || cp.array || cp.userBinary {
		return nil, true
	}
	if cp.bytea {
		return encodeBytea(dst, rp.p.Redacted(), true), false
	}
	if cp.jsonb {
		dst = append(dst, 1)
	}
	if cp.json {
		return appendJSONString(dst, rp.p.Redacted()), false
	}
	return append(dst, rp.p.Redacted()...), false
}

// maskBinaryArray masks the elements of a binary array of a text-like type (array_send format:
// ndim, has-nulls flag, element OID, ndim × (length, lower bound), then per element a 4-byte
// length, -1 for NULL, and the bytes), rebuilding element lengths.
func (rp *ResultPlan) maskBinaryArray(cp *colPlan, in, dst []byte) ([]byte, bool, error) {
	p := rp.p
	be := func(b []byte) int32 {
		return int32(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	}
	if len(in) < 12 {
		return nil, false, fmt.Errorf("mask array: %d-byte header", len(in))
	}
	ndim := be(in)
	if ndim < 0 || ndim > 6 || len(in) < 12+8*int(ndim) {
		return nil, false, fmt.Errorf("mask array: bad dimensions %d", ndim)
	}
	count := 0
	if ndim > 0 {
		count = 1
	}
	for d := 0; d < int(ndim); d++ {
		n := be(in[12+8*d:])
		if n < 0 || int(n) > len(in) || count*int(n) > len(in) {
			return nil, false, fmt.Errorf("mask array: bad dimension length %d", n)
		}
		count *= int(n)
	}
	pos := 12 + 8*int(ndim)
	var out []byte
	copied := 0
	for e := 0; e < count; e++ {
		if pos+4 > len(in) {
			return nil, false, fmt.Errorf("mask array: truncated at element %d", e)
		}
		n := be(in[pos:])
		if n == -1 {
			pos += 4
			continue
		}
		if n < 0 || pos+4+int(n) > len(in) {
			return nil, false, fmt.Errorf("mask array: bad element length %d", n)
		}
		elem := in[pos+4 : pos+4+int(n)]
		var prefix []byte
		if cp.jsonb {
			if len(elem) == 0 || elem[0] != 1 {
				return nil, false, fmt.Errorf("mask array: jsonb element version %v not understood", firstByte(elem))
			}
			prefix, elem = elem[:1], elem[1:]
		}
		var masked []byte
		var changed bool
		var err error
		var tmp [256]byte
		if cp.json {
			masked, changed, err = p.maskJSON(elem, tmp[:0], cp.cx)
			if err != nil {
				masked, changed, err = p.maskDetect(elem, tmp[:0], cp.cx)
			}
		} else {
			masked, changed, err = p.maskDetect(elem, tmp[:0], cp.cx)
		}
		if err != nil {
			return nil, false, err
		}
		if changed {
			if out == nil {
				out = append(dst, in[:pos]...)
			} else {
				out = append(out, in[copied:pos]...)
			}
			l := len(prefix) + len(masked)
			out = append(out, byte(l>>24), byte(l>>16), byte(l>>8), byte(l))
			out = append(append(out, prefix...), masked...)
			copied = pos + 4 + int(n)
		}
		pos += 4 + int(n)
	}
	if pos != len(in) {
		return nil, false, fmt.Errorf("mask array: %d trailing bytes", len(in)-pos)
	}
	if out == nil {
		return in, false, nil
	}
	return append(out, in[copied:]...), true, nil
}
