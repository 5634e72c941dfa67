package mask

import (
	"bytes"
	"testing"
)

func TestByteaTextRoundTrip(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, hexFormat := range []bool{true, false} {
		for _, v := range [][]byte{nil, []byte("plain"), []byte(`back\slash`), all} {
			text := encodeBytea(nil, v, hexFormat)
			got, gotHex, err := decodeBytea(nil, text)
			if err != nil || gotHex != hexFormat || !bytes.Equal(got, v) {
				t.Errorf("hex=%v %q: encoded %q, decoded %q hex=%v err=%v", hexFormat, v, text, got, gotHex, err)
			}
		}
	}
	for _, bad := range []string{`\x4`, `\x4g`, `trailing\`, `\9`, `\400`, `\12`} {
		if _, _, err := decodeBytea(nil, []byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// TestByteaCells: a bytea cell is masked as the bytes it holds, in the format the server used,
// wherever the cell comes from (a DataRow in either format, a COPY field).
func TestByteaCells(t *testing.T) {
	p := mustPlan(t, nil, Config{})
	rp := p.ForColumns([]Column{
		{Name: "data", TypeOID: oidBytea},
		{Name: "data", TypeOID: oidBytea, Format: 1},
	})
	for _, c := range []struct {
		name string
		col  int
		in   string
		want string // "" for unchanged
	}{
		{"hex", 0, `\x34313131313131313131313131313131`, `\x2a2a2a2a2a2a2a2a2a2a2a2a31313131`},
		{"hex upper case", 0, `\x6164612E6C6F76656C616365406578616D706C652E636F6D`, `\x5b52454441435445443a656d61696c5d`},
		{"escape", 0, `4111111111111111`, `************1111`},
		{"escape with bytes around", 0, `\000\377\\ ada.lovelace@example.com\012`, `\000\377\\ [REDACTED:email]\012`},
		{"hex clean", 0, `\x00ff5c`, ""},
		{"escape clean", 0, `\000\377\\`, ""},
		{"empty", 0, `\x`, ""},
		{"binary", 1, "\x00ada.lovelace@example.com", "\x00[REDACTED:email]"},
		{"binary clean", 1, "\x00\xff plain", ""},
	} {
		in := []byte(c.in)
		out, changed, null, err := rp.MaskCell(c.col, in, nil)
		switch {
		case err != nil || null:
			t.Errorf("%s: null=%v err=%v", c.name, null, err)
		case c.want == "" && (changed || !sameSlice(out, in)):
			t.Errorf("%s: changed to %q", c.name, out)
		case c.want != "" && string(out) != c.want:
			t.Errorf("%s: %q, want %q", c.name, out, c.want)
		}
	}
	if _, _, _, err := rp.MaskCell(0, []byte(`\x4`), nil); err == nil {
		t.Error("odd hex accepted")
	}
	if v, null := rp.Fallback(0, nil); null || string(v) != `\x5b52454441435445443a756e6d61736b61626c655d` {
		t.Errorf("text bytea fallback %q null=%v, want the label in hex", v, null)
	}
	// COPY text doubles the backslash of the hex prefix.
	out, changed, err := p.MaskCopyLine([]byte("1\t\\\\x34313131313131313131313131313131\n"), nil,
		p.ForColumns([]Column{{Name: "id", TypeOID: oidInt4}, {Name: "data", TypeOID: oidBytea}}))
	if err != nil || !changed || string(out) != "1\t\\\\x2a2a2a2a2a2a2a2a2a2a2a2a31313131\n" {
		t.Errorf("COPY bytea field: %q %v %v", out, changed, err)
	}
}
