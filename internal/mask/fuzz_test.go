package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

var fuzzSeeds = []string{
	"card 4111 1111 1111 1111 exp", "john.doe@example.com", "DE89 3704 0044 0532 0130 00",
	"postgres://u:p@ss@host/db", `{"password": "hunter2!", "ssn": "536-22-8726"}`, "SSN: 536-22-8726",
	"phone: +1 (415) 555-2671", "client ip ::ffff:198.51.100.23/96", "eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.",
	"-----BEGIN RSA PRIVATE KEY-----\nabc", "api_key=Zx8Qm3Lp9Rt2Vw7Y", "1\t\\N\tx\\ty\\\\z\n", "",
	"AKIAJX5VZ6QLM3RKT2YB", `[1, -2.5e3, "a@b.co", {"k": [null, true]}]`, "\xff\xfe@\x00",
}

func fuzzPlans(t testing.TB) (redact, masked *Plan) {
	rules := []ColumnRule{{Pattern: "*.password_hash", Style: StyleRedact}, {Pattern: "email", Style: StylePartial}}
	redact = mustPlan(t, rules, Config{})
	masked = mustPlan(t, nil, Config{Detectors: []DetectorRule{{Detectors: []string{"all"}, Style: StyleMask}}})
	return redact, masked
}

// outputBound: the longest label is 32 bytes and no finding is shorter than 3 bytes.
func outputBound(n int) int { return 11*n + 64 }

func FuzzMaskText(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	redact, masked := fuzzPlans(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		out, changed, err := redact.MaskText(in, nil)
		if err != nil {
			t.Fatalf("MaskText error: %v", err)
		}
		if !bytes.Equal(in, orig) {
			t.Fatal("input modified")
		}
		if !changed && !sameSlice(out, in) {
			t.Fatal("unchanged output is not the input")
		}
		if len(out) > outputBound(len(in)) {
			t.Fatalf("output %d bytes for %d input bytes", len(out), len(in))
		}
		// The length-preserving style keeps the character count.
		out, _, err = masked.MaskText(in, nil)
		if err != nil {
			t.Fatal(err)
		}
		if utf8.RuneCount(out) != utf8.RuneCount(in) {
			t.Fatalf("mask style changed length: %q → %q", in, out)
		}
	})
}

func FuzzMaskJSON(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	redact, _ := fuzzPlans(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		out, changed, err := redact.MaskJSON(in, nil)
		valid := json.Valid(in)
		if err != nil {
			if valid && !errors.Is(err, errJSONDepth) {
				t.Fatalf("valid JSON %q refused: %v", in, err)
			}
			return
		}
		if !valid {
			t.Fatalf("invalid JSON %q accepted", in)
		}
		if !json.Valid(out) {
			t.Fatalf("masking %q produced invalid JSON %q", in, out)
		}
		if !changed && !sameSlice(out, in) {
			t.Fatal("unchanged output is not the input")
		}
		if len(out) > outputBound(len(in)) {
			t.Fatalf("output %d bytes for %d input bytes", len(out), len(in))
		}
	})
}

func FuzzMaskCell(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Add(uint8(9), binArray(oidText, [][]byte{[]byte("a@b.com"), nil}))
	f.Add(uint8(10), binArray(oidJSONB, [][]byte{[]byte("\x01{\"a\": \"4111111111111111\"}")}))
	f.Add(uint8(11), []byte(`\x34313131313131313131313131313131`))
	f.Add(uint8(11), []byte(`\000\377\\ a@b.com`))
	f.Add(uint8(12), []byte{0, 4, 0, 3, 0, 0, 0, 0, 0x10, 0x0f, 0x04, 0x57, 0x04, 0x57, 0x04, 0x57})
	f.Add(uint8(13), binRecord(oidText, []byte("a@b.com")))
	f.Add(uint8(14), binArray(oidInt8, [][]byte{{0, 0x0e, 0x9b, 0x08, 0xa5, 0x68, 0xf1, 0xc7}, nil}))
	f.Add(uint8(15), []byte("\x00\x00\x00\x01ada@example.com\x00\x00\x01\x00\x01"))
	f.Add(uint8(16), []byte("\x00\x00\x00\x03\x01\x00\x00a\x00\x02\x04\x00\x01\x01\x00\x004111111111111111\x00"))
	f.Add(uint8(17), []byte{0, 0, 0, 1, 0, 0, 0, 13, 0x12, 0, 0, 0, 8, 0, 0x0e, 0x9b, 0x08, 0xa5, 0x68, 0xf1, 0xc7})
	f.Add(uint8(18), binRecord(oidText, []byte("a@b.com")))
	redact, _ := fuzzPlans(f)
	cols := []Column{
		{Table: "t", Name: "bio", TypeOID: oidText},
		{Table: "t", Name: "doc", TypeOID: oidJSON},
		{Table: "t", Name: "doc", TypeOID: oidJSONB, Format: 1},
		{Table: "t", Name: "password_hash", TypeOID: oidBytea, Format: 1},
		{Table: "t", Name: "password_hash", TypeOID: oidJSONB},
		{Table: "t", Name: "email", TypeOID: oidVarchar, Format: 1},
		{Table: "t", Name: "ssn", TypeOID: oidText},
		{Table: "t", Name: "addr", TypeOID: oidInet},
		{Table: "t", Name: "api_key", TypeOID: oidText},
		{Table: "t", Name: "emails", TypeOID: 1009, Format: 1},
		{Table: "t", Name: "docs", TypeOID: 3807, Format: 1},
		{Table: "t", Name: "data", TypeOID: oidBytea},
		{Table: "t", Name: "total", TypeOID: oidNumeric, Format: 1},
		{Table: "t", Name: "pair", TypeOID: oidRecord, Format: 1},
		{Table: "t", Name: "ids", TypeOID: 1016, Format: 1},
		{Table: "t", Name: "doc", TypeOID: oidTSVector, Format: 1},
		{Table: "t", Name: "q", TypeOID: oidTSQuery, Format: 1},
		{Table: "t", Name: "spans", TypeOID: 4536, Format: 1},
		{Table: "t", Name: "custom", TypeOID: 16500, Format: 1},
	}
	rp := redact.ForColumns(cols)
	f.Fuzz(func(t *testing.T, col uint8, in []byte) {
		c := int(col) % len(cols)
		out, changed, null, err := rp.MaskCell(c, in, nil)
		if err != nil {
			fb, fnull := rp.Fallback(c, nil)
			if !fnull && len(fb) == 0 {
				t.Fatal("empty fallback")
			}
			return
		}
		if null {
			if cols[c].Format != 1 {
				t.Fatal("NULL for a text cell")
			}
			return
		}
		if !changed && !sameSlice(out, in) {
			t.Fatal("unchanged output is not the input")
		}
		if changed && rp.cols[c].act == actInspect {
			t.Fatalf("binary %d cell changed, not withheld: %q", cols[c].TypeOID, out)
		}
		if changed && cols[c].TypeOID == oidBytea && cols[c].Format == 0 {
			if _, _, err := decodeBytea(nil, out); err != nil {
				t.Fatalf("masked bytea %q does not decode: %v", out, err)
			}
		}
		if changed && (cols[c].TypeOID == 1009 || cols[c].TypeOID == 3807) {
			// The rebuilt array must parse: masking it again walks every element.
			if _, _, _, err := rp.MaskCell(c, out, nil); err != nil {
				t.Fatalf("masked array %q does not parse: %v", out, err)
			}
		}
		if changed && (cols[c].TypeOID == oidJSON || cols[c].TypeOID == oidJSONB) {
			body := out
			if cols[c].Format == 1 {
				body = out[1:]
			}
			inBody := in
			if cols[c].Format == 1 && len(in) > 0 {
				inBody = in[1:]
			}
			if json.Valid(inBody) && !json.Valid(body) {
				t.Fatalf("valid JSON %q masked into invalid %q", in, out)
			}
		}
	})
}

func FuzzMaskCopyLine(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	redact, _ := fuzzPlans(f)
	rp := redact.ForColumns([]Column{{Table: "t", Name: "id", TypeOID: oidInt4}, {Table: "t", Name: "email", TypeOID: oidText}, {Table: "t", Name: "doc", TypeOID: oidJSONB}})
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, cols := range []*ResultPlan{nil, rp} {
			out, changed, err := redact.MaskCopyLine(in, nil, cols)
			if err != nil {
				return
			}
			if !changed {
				if !sameSlice(out, in) {
					t.Fatal("unchanged output is not the input")
				}
				continue
			}
			if bytes.Count(out, []byte("\t")) != bytes.Count(in, []byte("\t")) {
				t.Fatalf("field count changed: %q → %q", in, out)
			}
			if bytes.HasSuffix(in, []byte("\n")) != bytes.HasSuffix(out, []byte("\n")) || bytes.Count(out, []byte("\n")) != bytes.Count(in, []byte("\n")) {
				t.Fatalf("line structure changed: %q → %q", in, out)
			}
			for _, field := range bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\t")) {
				if _, err := unescapeCopy(nil, field); err != nil {
					t.Fatalf("output field %q not decodable: %v", field, err)
				}
			}
		}
	})
}
