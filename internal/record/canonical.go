package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"time"
)

// TimeFormat is the layout of a record's time member: UTC with microseconds, fixed width.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

// zeroHash is the prev of the first record of a log.
var zeroHash = hex.EncodeToString(make([]byte, sha256.Size))

// Record is one line of the log as stored.
type Record struct {
	Data    json.RawMessage `json:"data"`
	Hash    string          `json:"hash"`
	Prev    string          `json:"prev"`
	Seq     uint64          `json:"seq"`
	Session string          `json:"session,omitempty"`
	Time    string          `json:"time"`
	Type    Type            `json:"type"`
}

// Event decodes the record's payload into an Event.
func (r *Record) Event() (Event, error) {
	ev := Event{Type: r.Type, Session: r.Session}
	t, err := time.Parse(time.RFC3339Nano, r.Time)
	if err != nil {
		return ev, fmt.Errorf("record %d: bad time %q: %w", r.Seq, r.Time, err)
	}
	ev.Time = t
	if err := ev.decodePayload(r.Data); err != nil {
		return ev, fmt.Errorf("record %d: %w", r.Seq, err)
	}
	return ev, nil
}

// Timestamp is the record's time, or the zero time if it does not parse.
func (r *Record) Timestamp() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, r.Time)
	return t
}

// encodePayload returns the canonical JSON of ev's payload.
func encodePayload(ev *Event) ([]byte, error) {
	return appendPayload(nil, ev)
}

// fixInvalidUTF8 makes Marshal output canonical where it replaced invalid UTF-8: Marshal writes
// the escape \ufffd for those bytes, while canonical form has a raw U+FFFD (what re-encoding a
// decoded \ufffd gives). Valid input never contains the escape, so this costs one scan.
func fixInvalidUTF8(b []byte) []byte {
	if !bytes.Contains(b, []byte(`\ufffd`)) {
		return b
	}
	c, err := canonicalize(b)
	if err != nil {
		return b
	}
	return c
}

// sealer builds stored lines; it keeps a hasher and scratch space between records (one per writer).
type sealer struct {
	h       hash.Hash
	suffix  []byte
	prevRaw [sha256.Size]byte
	sum     [sha256.Size]byte
}

// seal appends to buf the stored line (with trailing newline) of a record whose payload is data
// (canonical JSON) and whose session is sessionJSON (a canonical JSON string, or empty for none),
// and returns it with the record's hash in hex, which aliases the returned buffer. prev is the
// previous record's hash in hex. Members are written in key order, so the line is canonical when
// data is; the hash covers the same bytes without the hash member.
func (s *sealer) seal(buf, data, sessionJSON, prev []byte, seq uint64, t []byte, typ Type) ([]byte, []byte) {
	if s.h == nil {
		s.h = sha256.New()
	}
	start := len(buf)
	buf = append(buf, `{"data":`...)
	buf = append(buf, data...)
	mid := len(buf)

	sfx := append(s.suffix[:0], `,"prev":"`...)
	sfx = append(sfx, prev...)
	sfx = append(sfx, `","seq":`...)
	sfx = strconv.AppendUint(sfx, seq, 10)
	if len(sessionJSON) > 0 {
		sfx = append(sfx, `,"session":`...)
		sfx = append(sfx, sessionJSON...)
	}
	sfx = append(sfx, `,"time":"`...)
	sfx = append(sfx, t...)
	sfx = append(sfx, `","type":"`...)
	sfx = append(sfx, typ...) // types are fixed ASCII identifiers
	sfx = append(sfx, `"}`...)
	s.suffix = sfx

	hex.Decode(s.prevRaw[:], prev)
	s.h.Reset()
	s.h.Write(s.prevRaw[:])
	s.h.Write(buf[start:mid])
	s.h.Write(sfx)
	s.h.Sum(s.sum[:0])

	buf = append(buf, `,"hash":"`...)
	hpos := len(buf)
	buf = hex.AppendEncode(buf, s.sum[:])
	hend := len(buf)
	buf = append(buf, '"')
	buf = append(buf, sfx...)
	buf = append(buf, '\n')
	return buf, buf[hpos:hend:hend]
}

// sessionJSON is the canonical JSON string of a session id, or nil for none.
func sessionJSON(session string) []byte {
	if session == "" {
		return nil
	}
	return appendJSONString(nil, session)
}

// chainHash is hex(SHA-256(bytes(prev) ‖ canonical)). prev must be 64 hex digits.
func chainHash(prev string, canonical []byte) string {
	var p [sha256.Size]byte
	hex.Decode(p[:], []byte(prev)) // callers validated prev
	h := sha256.New()
	h.Write(p[:])
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil))
}

// canonicalize returns canonical(v) for a JSON text, keeping numbers as written.
func canonicalize(b []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after JSON value")
	}
	if err := checkIntegers(v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// checkIntegers rejects numbers that are not plain decimal integers, which canonical JSON excludes.
func checkIntegers(v any) error {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if s != "0" && (s[0] == '0' || (s[0] == '-' && (len(s) < 2 || s[1] == '0'))) {
			return fmt.Errorf("number %s is not canonical", s)
		}
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			if _, err := strconv.ParseUint(s, 10, 64); err != nil {
				return fmt.Errorf("number %s is not an integer", s)
			}
		}
	case map[string]any:
		for _, e := range x {
			if err := checkIntegers(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := checkIntegers(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// lineProblem kinds.
const (
	KindMalformed     = "malformed"
	KindNotCanonical  = "not_canonical"
	KindHashMismatch  = "hash_mismatch"
	KindPrevMismatch  = "prev_mismatch"
	KindSeqGap        = "seq_gap"
	KindReordered     = "reordered"
	KindTruncated     = "truncated"
	KindBadSignature  = "bad_signature"
	KindBadSegment    = "bad_segment"
	KindMissingAnchor = "missing_anchor"
	KindTornLine      = "torn_line"
)

// parseLine parses one stored line (without its newline) and checks that it is canonical and that
// its hash matches its content. It does not check the link to the previous record.
func parseLine(line []byte) (Record, string, error) {
	if rec, ok := parseFast(line); ok {
		return rec, "", nil
	}
	return parseSlow(line)
}

// isTypeName reports whether t is a record type name: lower-case ASCII letters and '_', which the
// sealer writes without escaping.
func isTypeName(t Type) bool {
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; !('a' <= c && c <= 'z' || c == '_') {
			return false
		}
	}
	return true
}

// parseSlow checks a line step by step against the definition and says what is wrong with it.
func parseSlow(line []byte) (Record, string, error) {
	var rec Record
	canon, err := canonicalize(line)
	if err != nil {
		return rec, KindMalformed, fmt.Errorf("not a JSON record: %w", err)
	}
	if !bytes.Equal(canon, line) {
		return rec, KindNotCanonical, errors.New("line is not in canonical form")
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		return rec, KindMalformed, fmt.Errorf("not a record: %w", err)
	}
	if len(rec.Data) == 0 || rec.Data[0] != '{' || rec.Type == "" || rec.Seq == 0 {
		return rec, KindMalformed, errors.New("record lacks data, type or seq")
	}
	if !isHash(rec.Prev) || !isHash(rec.Hash) {
		return rec, KindMalformed, errors.New("prev or hash is not 64 lowercase hex digits")
	}
	if _, err := time.Parse(time.RFC3339Nano, rec.Time); err != nil {
		return rec, KindMalformed, fmt.Errorf("bad time: %w", err)
	}
	// The line without its hash member, which is canonical(record without hash) because
	// removing a member keeps the rest sorted.
	marker := []byte(`,"hash":"` + rec.Hash + `"`)
	i := bytes.LastIndex(line, marker)
	if i < 0 {
		return rec, KindMalformed, errors.New("hash member not where canonical order puts it")
	}
	unsealed := make([]byte, 0, len(line)-len(marker))
	unsealed = append(unsealed, line[:i]...)
	unsealed = append(unsealed, line[i+len(marker):]...)
	if got := chainHash(rec.Prev, unsealed); got != rec.Hash {
		return rec, KindHashMismatch, fmt.Errorf("hash %s does not match content (computed %s)", short(rec.Hash), short(got))
	}
	return rec, "", nil
}

func isHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
