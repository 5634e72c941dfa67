package mask

import (
	"encoding/binary"
	"testing"
)

// binArray builds array_send output for a one-dimensional array; nil elements are NULL.
func binArray(elemOID uint32, elems [][]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1) // ndim
	hasNull := uint32(0)
	for _, e := range elems {
		if e == nil {
			hasNull = 1
		}
	}
	b = binary.BigEndian.AppendUint32(b, hasNull)
	b = binary.BigEndian.AppendUint32(b, elemOID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(elems)))
	b = binary.BigEndian.AppendUint32(b, 1) // lower bound
	for _, e := range elems {
		if e == nil {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

func TestBinaryArrays(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "t.secret_list", Style: StyleRedact}}, Config{})
	rp := p.ForColumns([]Column{
		{Table: "t", Name: "emails", TypeOID: 1009, Format: 1},
		{Table: "t", Name: "docs", TypeOID: 3807, Format: 1},
		{Table: "t", Name: "secret_list", TypeOID: 1009, Format: 1},
		{Table: "t", Name: "nick", TypeOID: 16500, Format: 1}, // e.g. citext
		{Table: "t", Name: "emails", TypeOID: 1009, Format: 0},
	})
	in := binArray(oidText, [][]byte{[]byte("plain"), nil, []byte("ada@example.com"), []byte("x 4111111111111111")})
	out, changed, null, err := rp.MaskCell(0, in, nil)
	if err != nil || !changed || null {
		t.Fatalf("text[]: %q %v %v %v", out, changed, null, err)
	}
	want := binArray(oidText, [][]byte{[]byte("plain"), nil, []byte("[REDACTED:email]"), []byte("x ************1111")})
	if string(out) != string(want) {
		t.Errorf("text[]:\n got %q\nwant %q", out, want)
	}
	clean := binArray(oidText, [][]byte{[]byte("a"), nil, []byte("b")})
	if out, changed, _, err := rp.MaskCell(0, clean, nil); err != nil || changed || !sameSlice(out, clean) {
		t.Errorf("clean text[]: %q %v %v", out, changed, err)
	}
	docs := binArray(oidJSONB, [][]byte{[]byte("\x01{\"ssn\": \"536-22-8726\"}"), []byte("\x01[1]")})
	out, changed, _, err = rp.MaskCell(1, docs, nil)
	if want := binArray(oidJSONB, [][]byte{[]byte("\x01{\"ssn\": \"[REDACTED:us_ssn]\"}"), []byte("\x01[1]")}); err != nil || !changed || string(out) != string(want) {
		t.Errorf("jsonb[]: %q %v %v", out, changed, err)
	}
	if _, _, null, err := rp.MaskCell(2, in, nil); err != nil || !null {
		t.Errorf("binary array under a column rule: null=%v err=%v, want NULL", null, err)
	}
	if out, changed, _, err := rp.MaskCell(3, []byte("ada@example.com"), nil); err != nil || !changed || string(out) != "[REDACTED:email]" {
		t.Errorf("user-defined type: %q %v %v", out, changed, err)
	}
	if out, changed, _, err := rp.MaskCell(4, []byte(`{plain,NULL,ada@example.com}`), nil); err != nil || !changed || string(out) != `{plain,NULL,[REDACTED:email]}` {
		t.Errorf("text-format text[]: %q %v %v", out, changed, err)
	}
	for name, bad := range map[string][]byte{
		"short":     {0, 0, 0, 1},
		"ndim":      binArray(oidText, nil)[:8],
		"truncated": in[:len(in)-3],
		"trailing":  append(append([]byte{}, in...), 0),
		"negative":  {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1},
	} {
		if _, _, _, err := rp.MaskCell(0, bad, nil); err == nil {
			t.Errorf("%s array accepted", name)
		}
		if v, null := rp.Fallback(0, nil); !null || v != nil {
			t.Errorf("array fallback is not NULL")
		}
	}
}
