package mask

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Binary results (format code 1) of types whose binary form is not their text. Such a cell is
// passed only when its type is on the allow-list of cleanBinary; otherwise binaryFinding reads it
// the way the server wrote it (numbers decoded to the text numeric_out or int8out would give,
// records, arrays and ranges element by element, the lexemes of text search types) and runs the
// detectors over that text. A masked value cannot be written back in a binary number or a
// record, so a cell with a finding is sent as NULL, as a column rule's binary cell is. A
// built-in type not known here is withheld whole: its bytes cannot be judged.

// OIDs of built-in types read in binary form, beyond those of mask.go.
const (
	oidRegproc       = 24
	oidInt2Vector    = 22
	oidTID           = 27
	oidXID           = 28
	oidCID           = 29
	oidOIDVector     = 30
	oidPoint         = 600
	oidLseg          = 601
	oidPath          = 602
	oidBox           = 603
	oidPolygon       = 604
	oidLine          = 628
	oidCircle        = 718
	oidMacaddr8      = 774
	oidMacaddr       = 829
	oidBit           = 1560
	oidVarbit        = 1562
	oidNumeric       = 1700
	oidRefcursor     = 1790
	oidRegprocedure  = 2202
	oidRegoper       = 2203
	oidRegoperator   = 2204
	oidRegclass      = 2205
	oidRegtype       = 2206
	oidRecord        = 2249
	oidVoid          = 2278
	oidPgLSN         = 3220
	oidTSVector      = 3614
	oidTSQuery       = 3615
	oidRegconfig     = 3734
	oidRegdictionary = 3769
	oidJSONPath      = 4072
	oidRegnamespace  = 4089
	oidRegrole       = 4096
	oidRegcollation  = 4191
	oidXID8          = 5069
)

// arrayElems maps built-in array types to their element type (int2vector and oidvector are
// sent as arrays too). Arrays of other types are read through the element type in their header.
var arrayElems = map[uint32]uint32{
	1000: oidBool, 1001: oidBytea, 1005: oidInt2, oidInt2Vector: oidInt2, 1007: oidInt4, 1016: oidInt8,
	1021: oidFloat4, 1022: oidFloat8, 1028: oidOID, oidOIDVector: oidOID, 1182: oidDate, 1183: oidTime,
	1115: oidTimestamp, 1185: oidTimestamptz, 1187: oidInterval, 1270: oidTimetz, 2951: oidUUID,
	1231: oidNumeric, 1041: oidInet, 651: oidCIDR, 1040: oidMacaddr, 775: oidMacaddr8, 1010: oidTID,
	1011: oidXID, 1012: oidCID, 271: oidXID8, 3221: oidPgLSN, 1017: oidPoint, 1018: oidLseg,
	1019: oidPath, 1020: oidBox, 1027: oidPolygon, 629: oidLine, 719: oidCircle, 1561: oidBit,
	1563: oidVarbit, 2287: oidRecord, 3643: oidTSVector, 3645: oidTSQuery, 2201: oidRefcursor,
	4073: oidJSONPath, 1008: oidRegproc, 2207: oidRegprocedure, 2208: oidRegoper,
	2209: oidRegoperator, 2210: oidRegclass, 2211: oidRegtype, 3735: oidRegconfig,
	3770: oidRegdictionary, 4090: oidRegnamespace, 4097: oidRegrole, 4192: oidRegcollation,
	3905: 3904, 3907: 3906, 3909: 3908, 3911: 3910, 3913: 3912, 3927: 3926,
	6150: 4451, 6151: 4532, 6152: 4533, 6153: 4534, 6155: 4535, 6157: 4536,
}

// rangeSubtypes maps built-in range types to their subtype.
var rangeSubtypes = map[uint32]uint32{
	3904: oidInt4, 3906: oidNumeric, 3908: oidTimestamp, 3910: oidTimestamptz, 3912: oidDate, 3926: oidInt8,
}

// multirangeRanges maps built-in multirange types to their range type.
var multirangeRanges = map[uint32]uint32{4451: 3904, 4532: 3906, 4533: 3908, 4534: 3910, 4535: 3912, 4536: 3926}

// numberContext: the column-name contexts under which a number can be a finding whatever its
// length (an SSN or a phone number needs ctxSSN or ctxPhone; a password needs no entropy).
// Without them, the only finding in a number's text (sign, digits, a decimal point) is a card
// number, a run of at least minCardDigits digits: the other detectors need letters, '@', or a
// context word before the value, and a cell has none.
const numberContext = ctxSSN | ctxPhone | ctxSecret | ctxPassword

const minCardDigits = 12

// cleanBinary reports whether the binary form of type oid cannot hold a finding in a column
// with context cx, so its cells pass unread.
//
// Booleans, floats, date and time types, UUIDs, OIDs and the reg* types (an OID), int2 (at most
// 6 bytes of text), tid, MAC addresses, LSNs and geometric types (floats) are bytes no detector
// reads and whose text is not scanned either (noPII) or holds no card, address or token. int4,
// xid and cid print as at most 11 bytes of digits: too short for a card (12 or more) and, without
// a context from the column name, no SSN, phone or password (those need a context word, and a lone
// number has none before it). Under such a context they are decoded and scanned, as their text
// would be.
func cleanBinary(oid uint32, cx ctxFlags) bool {
	if cleanScalar(oid, cx) {
		return true
	}
	if elem, ok := arrayElems[oid]; ok {
		return cleanBinary(elem, cx)
	}
	if sub, ok := rangeSubtypes[oid]; ok {
		return cleanBinary(sub, cx)
	}
	if rng, ok := multirangeRanges[oid]; ok {
		return cleanBinary(rng, cx)
	}
	return false
}

// cleanScalar is cleanBinary for types other than arrays and ranges.
func cleanScalar(oid uint32, cx ctxFlags) bool {
	switch oid {
	case oidBool, oidInt2, oidFloat4, oidFloat8, oidOID, oidDate, oidTime, oidTimetz, oidTimestamp,
		oidTimestamptz, oidInterval, oidUUID, oidTID, oidMacaddr, oidMacaddr8, oidPgLSN, oidPoint,
		oidLseg, oidPath, oidBox, oidPolygon, oidLine, oidCircle, oidVoid, oidRegproc,
		oidRegprocedure, oidRegoper, oidRegoperator, oidRegclass, oidRegtype, oidRegconfig,
		oidRegdictionary, oidRegnamespace, oidRegrole, oidRegcollation:
		return true
	case oidInt4, oidXID, oidCID:
		return cx&numberContext == 0
	}
	return false
}

// maxBinaryDepth bounds the nesting of records, arrays and ranges read (the server nests
// deeper only for contrived values, which are withheld).
const maxBinaryDepth = 32

var errBinaryTooDeep = errors.New("binary value nested too deep to read")

// withheld is the finding of a value withheld because its bytes cannot be judged.
const withheld = kindNone

// binaryFinding reports what a detector finds in the binary value b of type oid (the first
// kind), found=false when nothing. A value it cannot judge is found as withheld; one it cannot
// parse is an error.
func (p *Plan) binaryFinding(oid uint32, b []byte, cx ctxFlags, depth int) (kind Kind, found bool, err error) {
	if depth > maxBinaryDepth {
		return 0, false, errBinaryTooDeep
	}
	if cleanScalar(oid, cx) {
		return 0, false, nil
	}
	var num [64]byte
	switch oid {
	case oidText, oidVarchar, oidBpchar, oidName, oidChar, oidJSON, oidXML, oidUnknown, oidRefcursor, oidBytea:
		// The binary form is the text (bytea: the bytes themselves).
		return p.findIn(b, cx)
	case oidJSONB, oidJSONPath:
		if len(b) == 0 || b[0] != 1 {
			return 0, false, fmt.Errorf("binary type %d: version %v not understood", oid, firstByte(b))
		}
		return p.findIn(b[1:], cx)
	case oidInt4, oidXID, oidCID:
		if len(b) != 4 {
			return 0, false, fmt.Errorf("binary type %d: %d bytes, want 4", oid, len(b))
		}
		v := binary.BigEndian.Uint32(b)
		if oid == oidInt4 {
			return p.findIn(strconv.AppendInt(num[:0], int64(int32(v)), 10), cx)
		}
		return p.findIn(strconv.AppendUint(num[:0], uint64(v), 10), cx)
	case oidInt8, oidXID8:
		if len(b) != 8 {
			return 0, false, fmt.Errorf("binary type %d: %d bytes, want 8", oid, len(b))
		}
		v := binary.BigEndian.Uint64(b)
		const short = 1e11 // fewer than minCardDigits digits
		if oid == oidInt8 {
			if cx&numberContext == 0 && int64(v) > -short && int64(v) < short {
				return 0, false, nil
			}
			return p.findIn(strconv.AppendInt(num[:0], int64(v), 10), cx)
		}
		if cx&numberContext == 0 && v < short {
			return 0, false, nil
		}
		return p.findIn(strconv.AppendUint(num[:0], v, 10), cx)
	case oidNumeric:
		if short, err := shortNumeric(b); err != nil || short && cx&numberContext == 0 {
			return 0, false, err
		}
		text, err := appendNumericText(num[:0], b)
		if err != nil {
			return 0, false, err
		}
		return p.findIn(text, cx)
	case oidInet, oidCIDR:
		// The text form of an address is always scanned as one (type context): withhold it
		// whenever that detector is on.
		if p.det.on.has(IPAddress) {
			return IPAddress, true, nil
		}
		return 0, false, nil
	case oidBit, oidVarbit:
		// A bit string holds any bytes: ('x' || encode(email::bytea, 'hex'))::bit(192).
		if len(b) < 4 {
			return 0, false, fmt.Errorf("binary bit string: %d bytes", len(b))
		}
		return p.findIn(b[4:], cx)
	case oidRecord:
		return p.recordFinding(b, cx, depth)
	case oidTSVector:
		return p.tsvectorFinding(b, cx)
	case oidTSQuery:
		return p.tsqueryFinding(b, cx)
	}
	if elem, ok := arrayElems[oid]; ok {
		if cleanBinary(elem, cx) {
			return 0, false, nil
		}
		return p.arrayFinding(b, cx, depth)
	}
	if sub, ok := rangeSubtypes[oid]; ok {
		if cleanBinary(sub, cx) {
			return 0, false, nil
		}
		return p.rangeFinding(sub, b, cx, depth)
	}
	if rng, ok := multirangeRanges[oid]; ok {
		if cleanBinary(rng, cx) {
			return 0, false, nil
		}
		return p.multirangeFinding(rng, b, cx, depth)
	}
	if oid >= firstUserOID {
		return p.userTypeFinding(oid, b, cx, depth)
	}
	return withheld, true, nil
}

// userTypeFinding reads a type created in the database. Most (citext, enums, domains over text)
// send their text; a composite sends a record and an array of one an array, whose first byte,
// unlike text's, is zero. What parses as neither is scanned as raw bytes.
func (p *Plan) userTypeFinding(oid uint32, b []byte, cx ctxFlags, depth int) (Kind, bool, error) {
	if len(b) > 0 && b[0] == 0 {
		if k, found, err := p.recordFinding(b, cx, depth); err == nil {
			return k, found, nil
		}
		if k, found, err := p.arrayFinding(b, cx, depth); err == nil {
			return k, found, nil
		}
	}
	return p.findIn(b, cx)
}

// findIn runs the detectors over text and reports the first finding's kind.
func (p *Plan) findIn(text []byte, cx ctxFlags) (Kind, bool, error) {
	var buf [maxSpans]span
	spans := p.det.find(text, cx, buf[:0])
	if len(spans) == 0 {
		return 0, false, nil
	}
	return spans[0].Kind, true, nil
}

func be32(b []byte) int32 { return int32(binary.BigEndian.Uint32(b)) }

// lengthPrefixed splits b into the value a 4-byte length (-1: NULL) gives and the rest.
func lengthPrefixed(b []byte) (v, rest []byte, null bool, err error) {
	if len(b) < 4 {
		return nil, nil, false, fmt.Errorf("%d bytes left, want a length", len(b))
	}
	n := be32(b)
	if n == -1 {
		return nil, b[4:], true, nil
	}
	if n < 0 || int(n) > len(b)-4 {
		return nil, nil, false, fmt.Errorf("bad length %d", n)
	}
	return b[4 : 4+n], b[4+n:], false, nil
}

// recordFinding reads record_send's format: field count, then per field its type OID and a
// length-prefixed value.
func (p *Plan) recordFinding(b []byte, cx ctxFlags, depth int) (Kind, bool, error) {
	if len(b) < 4 {
		return 0, false, fmt.Errorf("binary record: %d bytes", len(b))
	}
	n := be32(b)
	if n < 0 || int(n) > (len(b)-4)/8 {
		return 0, false, fmt.Errorf("binary record: %d fields in %d bytes", n, len(b))
	}
	rest := b[4:]
	var first Kind
	found := false
	for range n {
		if len(rest) < 4 {
			return 0, false, errors.New("binary record: truncated")
		}
		oid := binary.BigEndian.Uint32(rest)
		v, r, null, err := lengthPrefixed(rest[4:])
		if err != nil {
			return 0, false, fmt.Errorf("binary record: %w", err)
		}
		rest = r
		if null || found {
			continue // still parsed to the end, so a misread value is an error
		}
		if first, found, err = p.binaryFinding(oid, v, cx, depth+1); err != nil {
			return 0, false, err
		}
	}
	if len(rest) != 0 {
		return 0, false, fmt.Errorf("binary record: %d trailing bytes", len(rest))
	}
	return first, found, nil
}

// arrayFinding reads array_send's format: dimensions, a has-nulls flag, the element OID, per
// dimension its length and lower bound, then the elements, length-prefixed.
func (p *Plan) arrayFinding(b []byte, cx ctxFlags, depth int) (Kind, bool, error) {
	if len(b) < 12 {
		return 0, false, fmt.Errorf("binary array: %d-byte header", len(b))
	}
	ndim := be32(b)
	if ndim < 0 || ndim > 6 || len(b) < 12+8*int(ndim) {
		return 0, false, fmt.Errorf("binary array: bad dimensions %d", ndim)
	}
	if flags := be32(b[4:]); flags != 0 && flags != 1 {
		return 0, false, fmt.Errorf("binary array: flags %d", flags)
	}
	elem := binary.BigEndian.Uint32(b[8:])
	count := 0
	if ndim > 0 {
		count = 1
	}
	for d := range int(ndim) {
		n := be32(b[12+8*d:])
		if n < 0 || int(n) > len(b) || count*int(n) > len(b) {
			return 0, false, fmt.Errorf("binary array: bad dimension length %d", n)
		}
		count *= int(n)
	}
	rest := b[12+8*int(ndim):]
	var first Kind
	found := false
	for range count {
		v, r, null, err := lengthPrefixed(rest)
		if err != nil {
			return 0, false, fmt.Errorf("binary array: %w", err)
		}
		rest = r
		if null || found {
			continue
		}
		if first, found, err = p.binaryFinding(elem, v, cx, depth+1); err != nil {
			return 0, false, err
		}
	}
	if len(rest) != 0 {
		return 0, false, fmt.Errorf("binary array: %d trailing bytes", len(rest))
	}
	return first, found, nil
}

// Range flags of range_send.
const (
	rangeEmpty = 0x01
	rangeLBInf = 0x08
	rangeUBInf = 0x10
)

// rangeFinding reads range_send's format: a flags byte, then the bounds present,
// length-prefixed, in the subtype's binary form.
func (p *Plan) rangeFinding(sub uint32, b []byte, cx ctxFlags, depth int) (Kind, bool, error) {
	if len(b) < 1 {
		return 0, false, errors.New("binary range: empty")
	}
	flags, rest := b[0], b[1:]
	var bounds [][]byte
	if flags&rangeEmpty == 0 {
		for _, inf := range []byte{rangeLBInf, rangeUBInf} {
			if flags&inf != 0 {
				continue
			}
			v, r, null, err := lengthPrefixed(rest)
			if err != nil || null {
				return 0, false, fmt.Errorf("binary range: bad bound (%v)", err)
			}
			bounds, rest = append(bounds, v), r
		}
	}
	if len(rest) != 0 {
		return 0, false, fmt.Errorf("binary range: %d trailing bytes", len(rest))
	}
	for _, v := range bounds {
		if k, found, err := p.binaryFinding(sub, v, cx, depth+1); err != nil || found {
			return k, found, err
		}
	}
	return 0, false, nil
}

// multirangeFinding reads multirange_send's format: a range count, then the ranges,
// length-prefixed.
func (p *Plan) multirangeFinding(rng uint32, b []byte, cx ctxFlags, depth int) (Kind, bool, error) {
	if len(b) < 4 {
		return 0, false, fmt.Errorf("binary multirange: %d bytes", len(b))
	}
	n := be32(b)
	if n < 0 || int(n) > (len(b)-4)/4 {
		return 0, false, fmt.Errorf("binary multirange: %d ranges in %d bytes", n, len(b))
	}
	rest := b[4:]
	for range n {
		v, r, null, err := lengthPrefixed(rest)
		if err != nil || null {
			return 0, false, fmt.Errorf("binary multirange: bad range (%v)", err)
		}
		rest = r
		if k, found, err := p.binaryFinding(rng, v, cx, depth+1); err != nil || found {
			return k, found, err
		}
	}
	if len(rest) != 0 {
		return 0, false, fmt.Errorf("binary multirange: %d trailing bytes", len(rest))
	}
	return 0, false, nil
}

// cString splits b at its first NUL.
func cString(b []byte) (s, rest []byte, ok bool) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:], true
		}
	}
	return nil, nil, false
}

// tsvectorFinding reads tsvectorsend's format: a lexeme count, then per lexeme its text
// (NUL-terminated), a position count and the 2-byte positions. Each lexeme is scanned alone.
func (p *Plan) tsvectorFinding(b []byte, cx ctxFlags) (Kind, bool, error) {
	if len(b) < 4 {
		return 0, false, fmt.Errorf("binary tsvector: %d bytes", len(b))
	}
	n := be32(b)
	if n < 0 || int(n) > (len(b)-4)/3 {
		return 0, false, fmt.Errorf("binary tsvector: %d lexemes in %d bytes", n, len(b))
	}
	rest := b[4:]
	for range n {
		lexeme, r, ok := cString(rest)
		if !ok || len(r) < 2 {
			return 0, false, errors.New("binary tsvector: truncated lexeme")
		}
		npos := int(binary.BigEndian.Uint16(r))
		if len(r) < 2+2*npos {
			return 0, false, errors.New("binary tsvector: truncated positions")
		}
		rest = r[2+2*npos:]
		if k, found, err := p.findIn(lexeme, cx); found {
			return k, found, err
		}
	}
	if len(rest) != 0 {
		return 0, false, fmt.Errorf("binary tsvector: %d trailing bytes", len(rest))
	}
	return 0, false, nil
}

// tsquery item types and the phrase operator (tsquerysend).
const (
	tsqueryValue    = 1
	tsqueryOperator = 2
	tsqueryPhrase   = 4
)

// tsqueryFinding reads tsquerysend's format: an item count, then per item its type and either
// an operand (weight, prefix flag, NUL-terminated text) or an operator (and a phrase's distance).
func (p *Plan) tsqueryFinding(b []byte, cx ctxFlags) (Kind, bool, error) {
	if len(b) < 4 {
		return 0, false, fmt.Errorf("binary tsquery: %d bytes", len(b))
	}
	n := be32(b)
	if n < 0 || int(n) > (len(b)-4)/2 {
		return 0, false, fmt.Errorf("binary tsquery: %d items in %d bytes", n, len(b))
	}
	rest := b[4:]
	for range n {
		if len(rest) < 2 {
			return 0, false, errors.New("binary tsquery: truncated item")
		}
		switch rest[0] {
		case tsqueryValue:
			if len(rest) < 3 {
				return 0, false, errors.New("binary tsquery: truncated operand")
			}
			operand, r, ok := cString(rest[3:])
			if !ok {
				return 0, false, errors.New("binary tsquery: unterminated operand")
			}
			rest = r
			if k, found, err := p.findIn(operand, cx); found {
				return k, found, err
			}
		case tsqueryOperator:
			if rest[1] == tsqueryPhrase {
				if len(rest) < 4 {
					return 0, false, errors.New("binary tsquery: truncated phrase operator")
				}
				rest = rest[4:]
			} else {
				rest = rest[2:]
			}
		default:
			return 0, false, fmt.Errorf("binary tsquery: item type %d", rest[0])
		}
	}
	if len(rest) != 0 {
		return 0, false, fmt.Errorf("binary tsquery: %d trailing bytes", len(rest))
	}
	return 0, false, nil
}

// Sign words of numeric_send.
const (
	numericPos  = 0x0000
	numericNeg  = 0x4000
	numericNaN  = 0xC000
	numericPInf = 0xD000
	numericNInf = 0xF000
)

// numericHeader checks a binary numeric (numeric_send: digit count, weight, sign, display
// scale, then base-10000 digits, the first of weight `weight`) and returns its header.
func numericHeader(b []byte) (ndigits, weight int, sign uint16, dscale int, err error) {
	if len(b) < 8 {
		return 0, 0, 0, 0, fmt.Errorf("binary numeric: %d bytes", len(b))
	}
	ndigits = int(binary.BigEndian.Uint16(b))
	weight = int(int16(binary.BigEndian.Uint16(b[2:])))
	sign = binary.BigEndian.Uint16(b[4:])
	dscale = int(binary.BigEndian.Uint16(b[6:]))
	if len(b) != 8+2*ndigits || dscale > 0x3fff {
		return 0, 0, 0, 0, fmt.Errorf("binary numeric: %d digits, scale %d in %d bytes", ndigits, dscale, len(b))
	}
	switch sign {
	case numericPos, numericNeg, numericNaN, numericPInf, numericNInf:
	default:
		return 0, 0, 0, 0, fmt.Errorf("binary numeric: sign %#x", sign)
	}
	for i := range ndigits {
		if binary.BigEndian.Uint16(b[8+2*i:]) > 9999 {
			return 0, 0, 0, 0, errors.New("binary numeric: digit out of range")
		}
	}
	return ndigits, weight, sign, dscale, nil
}

// shortNumeric reports whether a binary numeric's text has no run of minCardDigits digits: at
// most 8 digits before the point (weight 1: two base-10000 digits) and fewer after it.
func shortNumeric(b []byte) (bool, error) {
	_, weight, _, dscale, err := numericHeader(b)
	if err != nil {
		return false, err
	}
	return 4*(weight+1) < minCardDigits && dscale < minCardDigits, nil
}

// appendNumericText appends the text numeric_out gives for a binary numeric.
func appendNumericText(dst, b []byte) ([]byte, error) {
	ndigits, weight, sign, dscale, err := numericHeader(b)
	if err != nil {
		return nil, err
	}
	digits := b[8:]
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return int(binary.BigEndian.Uint16(digits[2*i:]))
	}
	switch sign {
	case numericNaN:
		return append(dst, "NaN"...), nil
	case numericPInf:
		return append(dst, "Infinity"...), nil
	case numericNInf:
		return append(dst, "-Infinity"...), nil
	case numericNeg:
		dst = append(dst, '-')
	}
	if weight < 0 {
		dst = append(dst, '0')
	} else {
		dst = strconv.AppendInt(dst, int64(digit(0)), 10)
		for d := 1; d <= weight; d++ {
			dst = append4Digits(dst, digit(d), 4)
		}
	}
	if dscale > 0 {
		dst = append(dst, '.')
		for d, left := weight+1, dscale; left > 0; d, left = d+1, left-4 {
			dst = append4Digits(dst, digit(d), min(left, 4))
		}
	}
	return dst, nil
}

// append4Digits appends the first n of v's four decimal digits (zero-padded).
func append4Digits(dst []byte, v, n int) []byte {
	d := [4]byte{byte('0' + v/1000), byte('0' + v/100%10), byte('0' + v/10%10), byte('0' + v%10)}
	return append(dst, d[:n]...)
}
