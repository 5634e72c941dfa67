package mask

import (
	"bytes"
	"encoding/csv"
	"testing"
)

func TestMaskCSV(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "users.password_hash", Style: StyleRedact}}, Config{})
	cols := p.ForColumns([]Column{
		{Table: "users", Name: "id", TypeOID: oidInt4},
		{Table: "users", Name: "email", TypeOID: oidText},
		{Table: "users", Name: "password_hash", TypeOID: oidText},
		{Table: "users", Name: "note", TypeOID: oidText},
	})
	for _, c := range []struct {
		name string
		in   string
		cols *ResultPlan
		f    CSVFormat
		want [][]string
	}{
		{"plain", "1,ada@example.com,$2b$12$x,hello\n", cols, CSVFormat{},
			[][]string{{"1", "[REDACTED:email]", "[REDACTED:column]", "hello"}}},
		{"quoted with newline and quotes", "2,\"bob@example.org\",\"a,b\",\"line1\nsaid \"\"4111 1111 1111 1111\"\"\"\n", cols, CSVFormat{},
			[][]string{{"2", "[REDACTED:email]", "[REDACTED:column]", "line1\nsaid \"**** **** **** 1111\""}}},
		{"empty string is not NULL", "3,,\"\",\"\"\n", cols, CSVFormat{},
			[][]string{{"3", "", "[REDACTED:column]", ""}}},
		{"two rows, CRLF", "4,a@example.com,x,y\r\n5,b@example.com,x,y\r\n", cols, CSVFormat{},
			[][]string{{"4", "[REDACTED:email]", "[REDACTED:column]", "y"}, {"5", "[REDACTED:email]", "[REDACTED:column]", "y"}}},
		{"no columns", "ada@example.com,536-22-8726", nil, CSVFormat{},
			[][]string{{"[REDACTED:email]", "536-22-8726"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, changed, err := p.MaskCSV([]byte(c.in), nil, c.cols, c.f)
			if err != nil || !changed {
				t.Fatalf("%q %v %v", out, changed, err)
			}
			r := csv.NewReader(bytes.NewReader(out))
			r.FieldsPerRecord = -1
			got, err := r.ReadAll()
			if err != nil {
				t.Fatalf("output %q is not CSV: %v", out, err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("rows %q, want %q", got, c.want)
			}
			for i := range got {
				if len(got[i]) != len(c.want[i]) {
					t.Fatalf("row %d: %q, want %q", i, got[i], c.want[i])
				}
				for j := range got[i] {
					if got[i][j] != c.want[i][j] {
						t.Errorf("row %d field %d: %q, want %q (out %q)", i, j, got[i][j], c.want[i][j], out)
					}
				}
			}
		})
	}
	// An unquoted empty field (NULL) is not replaced even under a column rule.
	if out, _, _ := p.MaskCSV([]byte("1,,,x\n"), nil, cols, CSVFormat{}); !bytes.Equal(out, []byte("1,,,x\n")) {
		t.Errorf("NULL replaced: %q", out)
	}
	// Other delimiter, quote and escape.
	out, _, err := p.MaskCSV([]byte("1|'it\\'s ada@example.com'|x|y\n"), nil, cols, CSVFormat{Delimiter: '|', Quote: '\'', Escape: '\\'})
	if err != nil || string(out) != "1|'it\\'s [REDACTED:email]'|'[REDACTED:column]'|y\n" {
		t.Errorf("custom format: %q %v", out, err)
	}
	clean := []byte("1,\"a,b\",,x\n")
	if out, changed, err := p.MaskCSV(clean, nil, nil, CSVFormat{}); err != nil || changed || !sameSlice(out, clean) {
		t.Errorf("clean: %q %v %v", out, changed, err)
	}
	if n := testing.AllocsPerRun(50, func() { p.MaskCSV(clean, nil, nil, CSVFormat{}) }); n != 0 {
		t.Errorf("clean CSV: %v allocs", n)
	}
	for _, bad := range []string{"\"unterminated", "\"a\"b,c"} {
		if _, _, err := p.MaskCSV([]byte(bad), nil, nil, CSVFormat{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, _, err := p.MaskCSV([]byte("x"), nil, nil, CSVFormat{Delimiter: '"'}); err == nil {
		t.Error("delimiter equal to quote accepted")
	}
}

func FuzzMaskCSV(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte("1,\"a\"\"b\nc\",,x\r\n2,d@example.com\n"))
	redact, _ := fuzzPlans(f)
	rp := redact.ForColumns([]Column{{Table: "t", Name: "id", TypeOID: oidInt4}, {Table: "t", Name: "password_hash", TypeOID: oidText}})
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, cols := range []*ResultPlan{nil, rp} {
			out, changed, err := redact.MaskCSV(in, nil, cols, CSVFormat{})
			if err != nil || !changed {
				continue
			}
			// Same rows and fields as the input, per encoding/csv (when it can read the input).
			r := csv.NewReader(bytes.NewReader(in))
			r.FieldsPerRecord, r.LazyQuotes = -1, false
			want, errIn := r.ReadAll()
			if errIn != nil {
				continue
			}
			r = csv.NewReader(bytes.NewReader(out))
			r.FieldsPerRecord = -1
			got, err := r.ReadAll()
			if err != nil {
				t.Fatalf("masked %q → invalid CSV %q: %v", in, out, err)
			}
			if len(got) != len(want) {
				t.Fatalf("rows changed: %q → %q", in, out)
			}
			for i := range got {
				if len(got[i]) != len(want[i]) {
					t.Fatalf("fields changed in row %d: %q → %q", i, in, out)
				}
			}
		}
	})
}
