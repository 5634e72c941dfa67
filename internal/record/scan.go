package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// validCanonical reports whether b is exactly one JSON value in canonical form (see the package
// documentation), without decoding it. It is the allocation-free equivalent of
// canonicalize(b) == b, which FuzzValidCanonical checks.
func validCanonical(b []byte) bool {
	i, ok := scanValue(b, 0, 0)
	return ok && i == len(b)
}

const maxDepth = 10000 // encoding/json's nesting limit

func scanValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) || depth > maxDepth {
		return i, false
	}
	switch c := b[i]; {
	case c == '{':
		return scanObject(b, i, depth+1)
	case c == '[':
		return scanArray(b, i, depth+1)
	case c == '"':
		return scanString(b, i)
	case c == '-' || '0' <= c && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return i, false
}

func scanLiteral(b []byte, i int, lit string) (int, bool) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return i, false
	}
	return i + len(lit), true
}

// scanObject checks members with keys in strictly increasing order of their decoded bytes (Go
// sorts map keys by the decoded string; a duplicate key would collapse on decoding).
func scanObject(b []byte, i, depth int) (int, bool) {
	i++
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	var prev []byte
	first := true
	for {
		if i >= len(b) || b[i] != '"' {
			return i, false
		}
		end, ok := scanString(b, i)
		if !ok {
			return i, false
		}
		key := b[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var s string
			if json.Unmarshal(b[i:end], &s) != nil {
				return i, false
			}
			key = []byte(s)
		}
		if !first && bytes.Compare(prev, key) >= 0 {
			return i, false
		}
		prev, first = key, false
		i = end
		if i >= len(b) || b[i] != ':' {
			return i, false
		}
		if i, ok = scanValue(b, i+1, depth); !ok {
			return i, false
		}
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

func scanArray(b []byte, i, depth int) (int, bool) {
	i++
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = scanValue(b, i, depth); !ok || i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// scanString checks a string as Go's encoder writes it: \" \\ \b \f \n \r \t short escapes, other
// control characters and < > & as \u00xx (lower-case hex), U+2028 and U+2029 as \u2028 and \u2029,
// everything else as raw, valid UTF-8.
func scanString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, true
		case c == '\\':
			if j+1 >= len(b) {
				return j, false
			}
			switch b[j+1] {
			case '"', '\\', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) {
					return j, false
				}
				v, ok := lowerHex4(b[j+2 : j+6])
				if !ok {
					return j, false
				}
				switch {
				case v == '\b' || v == '\f' || v == '\n' || v == '\r' || v == '\t':
					return j, false // has a short form
				case v < 0x20, v == '<', v == '>', v == '&', v == 0x2028, v == 0x2029:
					j += 6
				default:
					return j, false
				}
			default:
				return j, false
			}
		case c < 0x20, c == '<', c == '>', c == '&':
			return j, false
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 || r == 0x2028 || r == 0x2029 {
				return j, false
			}
			j += size
		}
	}
	return len(b), false
}

func lowerHex4(h []byte) (rune, bool) {
	var v rune
	for _, c := range h {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | rune(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// scanNumber checks an integer without leading zeros that fits int64 or uint64.
func scanNumber(b []byte, i int) (int, bool) {
	j := i
	if b[j] == '-' {
		j++
	}
	start := j
	for j < len(b) && '0' <= b[j] && b[j] <= '9' {
		j++
	}
	digits := b[start:j]
	switch {
	case len(digits) == 0:
		return j, false
	case digits[0] == '0' && (len(digits) > 1 || b[i] == '-'):
		return j, false // leading zero, or -0
	case j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E'):
		return j, false
	case len(digits) > 20:
		return j, false
	}
	s := string(b[i:j])
	if _, err := strconv.ParseInt(s, 10, 64); err != nil {
		if _, err := strconv.ParseUint(s, 10, 64); err != nil {
			return j, false
		}
	}
	return j, true
}

// parseFast accepts exactly the lines parseSlow accepts, for the common case of an intact record,
// without decoding: it checks the line is canonical with validCanonical, takes the members from
// their fixed places in the canonical layout
//
//	{"data":{…},"hash":"H","prev":"P","seq":N[,"session":"S"],"time":"T","type":"Y"}
//
// and checks the hash over the line without its hash member. Anything else (including extra
// members) falls back to parseSlow for a diagnosis.
func parseFast(line []byte) (Record, bool) {
	var rec Record
	const dataKey = `{"data":{`
	if !bytes.HasPrefix(line, []byte(dataKey)) || !validCanonical(line) {
		return rec, false
	}
	marker := []byte(`,"hash":"`)
	hi := bytes.LastIndex(line, marker)
	if hi < 0 {
		return rec, false
	}
	rec.Data = json.RawMessage(line[len(dataKey)-1 : hi])
	rest := line[hi+len(marker):]
	if len(rest) < 64 {
		return rec, false
	}
	rec.Hash = string(rest[:64])
	rest = rest[64:]
	take := func(prefix string) bool {
		if !bytes.HasPrefix(rest, []byte(prefix)) {
			return false
		}
		rest = rest[len(prefix):]
		return true
	}
	if !take(`","prev":"`) || len(rest) < 64 {
		return rec, false
	}
	rec.Prev = string(rest[:64])
	rest = rest[64:]
	if !take(`","seq":`) {
		return rec, false
	}
	n := 0
	for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	if err != nil || seq == 0 {
		return rec, false
	}
	rec.Seq = seq
	rest = rest[n:]
	if take(`,"session":`) {
		end, ok := scanString(rest, 0)
		if !ok {
			return rec, false
		}
		if bytes.IndexByte(rest[:end], '\\') >= 0 {
			if json.Unmarshal(rest[:end], &rec.Session) != nil {
				return rec, false
			}
		} else {
			rec.Session = string(rest[1 : end-1])
		}
		if rec.Session == "" {
			return rec, false // canonical form omits an empty session
		}
		rest = rest[end:]
	}
	if !take(`,"time":"`) {
		return rec, false
	}
	ti := bytes.IndexByte(rest, '"')
	if ti < 0 {
		return rec, false
	}
	rec.Time = string(rest[:ti])
	rest = rest[ti:]
	if !take(`","type":"`) || len(rest) < 2 || !bytes.HasSuffix(rest, []byte(`"}`)) {
		return rec, false
	}
	rec.Type = Type(rest[:len(rest)-2])
	if !isTypeName(rec.Type) || !isHash(rec.Prev) || !isHash(rec.Hash) {
		return rec, false
	}
	if _, err := time.Parse(time.RFC3339Nano, rec.Time); err != nil {
		return rec, false
	}
	var prev [sha256.Size]byte
	hex.Decode(prev[:], []byte(rec.Prev))
	h := sha256.New()
	h.Write(prev[:])
	h.Write(line[:hi])
	h.Write(line[hi+len(marker)+64+1:]) // after the closing quote of the hash
	var sum [sha256.Size]byte
	if hex.EncodeToString(h.Sum(sum[:0])) != rec.Hash {
		return rec, false
	}
	return rec, true
}
