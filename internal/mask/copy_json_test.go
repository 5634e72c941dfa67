package mask

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// splitCopy decodes a COPY text line into fields (nil for \N), as a client would.
func splitCopy(t testing.TB, line []byte) [][]byte {
	t.Helper()
	line = bytes.TrimSuffix(line, []byte("\n"))
	var out [][]byte
	for _, f := range bytes.Split(line, []byte("\t")) {
		if string(f) == `\N` {
			out = append(out, nil)
			continue
		}
		v, err := unescapeCopy(nil, f)
		if err != nil {
			t.Fatalf("output field %q: %v", f, err)
		}
		out = append(out, append([]byte{}, v...))
	}
	return out
}

func TestMaskCopyLine(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "users.password_hash", Style: StyleRedact}}, Config{})
	cols := p.ForColumns([]Column{
		{Table: "users", Name: "id", TypeOID: oidInt4},
		{Table: "users", Name: "email", TypeOID: oidText},
		{Table: "users", Name: "password_hash", TypeOID: oidText},
		{Table: "users", Name: "ssn", TypeOID: oidText},
		{Table: "users", Name: "notes", TypeOID: oidText},
		{Table: "users", Name: "doc", TypeOID: oidJSONB},
	})
	for _, c := range []struct {
		name string
		line string
		cols *ResultPlan
		want []string // decoded fields; "<nil>" for NULL
	}{
		{
			"columns known",
			"1\talice@example.com\t$2b$12$abc\t536-22-8726\tline1\\nline2 4111111111111111\t{\"phone\": \"+1 415 555 2671\"}\n",
			cols,
			[]string{"1", "[REDACTED:email]", "[REDACTED:column]", "[REDACTED:us_ssn]", "line1\nline2 ************1111", `{"phone": "[REDACTED:phone]"}`},
		},
		{
			"escapes inside a finding",
			"2\tbob\\.smith@example\\.org\t\\N\t\\N\ttab\\there\\\\x\t\\N\n",
			cols,
			[]string{"2", "[REDACTED:email]", "<nil>", "<nil>", "tab\there\\x", "<nil>"},
		},
		{
			"octal and hex escapes",
			"3\t\\141lice@example.com\tx\t\\N\t\\x34111111111111111\t\\N\n",
			cols,
			[]string{"3", "[REDACTED:email]", "[REDACTED:column]", "<nil>", "************1111", "<nil>"},
		},
		{
			"multi-line private key",
			"4\t\\N\t\\N\t\\N\t-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n\t\\N\n",
			cols,
			[]string{"4", "<nil>", "<nil>", "<nil>", "[REDACTED:private_key]\n", "<nil>"},
		},
		{
			"no columns: detectors per field",
			"alice@example.com\t536-22-8726\t4111 1111 1111 1111",
			nil,
			[]string{"[REDACTED:email]", "536-22-8726", "**** **** **** 1111"},
		},
		{
			"several rows at once",
			"1\ta@example.com\tx\n2\tb@example.com\ty\n",
			cols,
			[]string{"1", "[REDACTED:email]", "[REDACTED:column]\n2", "[REDACTED:email]", "[REDACTED:column]"},
		},
		{
			"more fields than columns",
			"1\ta\tb\tc\td\t{}\tcarol@example.net\n",
			cols,
			[]string{"1", "a", "[REDACTED:column]", "c", "d", "{}", "[REDACTED:email]"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, changed, err := p.MaskCopyLine([]byte(c.line), nil, c.cols)
			if err != nil || !changed {
				t.Fatalf("got %q, %v, %v", out, changed, err)
			}
			if strings.HasSuffix(c.line, "\n") != bytes.HasSuffix(out, []byte("\n")) {
				t.Errorf("line terminator changed: %q", out)
			}
			got := splitCopy(t, out)
			if len(got) != len(c.want) {
				t.Fatalf("fields %q, want %q", got, c.want)
			}
			for i, w := range c.want {
				g := string(got[i])
				if got[i] == nil {
					g = "<nil>"
				}
				if g != w {
					t.Errorf("field %d = %q, want %q (line %q)", i, g, w, out)
				}
			}
		})
	}
	clean := []byte("1\tWidget\t\\N\tsome\\ttext\n")
	out, changed, err := p.MaskCopyLine(clean, nil, cols)
	if err != nil || changed || !sameSlice(out, clean) {
		t.Errorf("clean line: %q %v %v", out, changed, err)
	}
	if _, _, err := p.MaskCopyLine([]byte("1\tbad\\"), nil, cols); err == nil {
		t.Error("trailing backslash accepted")
	}
}

func TestMaskJSON(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "password_hash", Style: StyleRedact}, {Pattern: "*.email", Style: StyleRedact}}, Config{})
	for _, c := range []struct {
		in, want string
	}{
		{`{"email":"alice@example.com"}`, `{"email":"[REDACTED:email]"}`},
		{`{"user": {"ssn": "536-22-8726", "note": "ssn unknown"}}`, `{"user": {"ssn": "[REDACTED:us_ssn]", "note": "ssn unknown"}}`},
		{`{"phone": "+1 415 555 2671", "fax": 4155552671}`, `{"phone": "[REDACTED:phone]", "fax": "[REDACTED:phone]"}`},
		{`{"pan": 4111111111111111, "n": 42}`, `{"pan": "************1111", "n": 42}`},
		{`[{"password_hash": "$2b$12$x"}, {"password_hash": {"algo": "bcrypt", "v": 12, "ok": true, "z": null}}]`,
			`[{"password_hash": "[REDACTED:column]"}, {"password_hash": {"algo": "[REDACTED:column]", "v": "[REDACTED:column]", "ok": "[REDACTED:column]", "z": null}}]`},
		{`{"api_key": "Zx8Qm3Lp9Rt2Vw7Y", "client_ip": "203.0.113.7"}`, `{"api_key": "[REDACTED:generic_secret]", "client_ip": "[REDACTED:ip_address]"}`},
		{`"john\u0040example.com"`, `"[REDACTED:email]"`},
		{`{"msg": "line1\nmail bob@example.org \"quoted\""}`, `{"msg": "line1\nmail [REDACTED:email] \"quoted\""}`},
		{`{"k\u0065y": "x@example.com"}`, `{"k\u0065y": "[REDACTED:email]"}`},
		{` [ 1 , "a" , { } , [ ] , "c@d.io" ] `, ` [ 1 , "a" , { } , [ ] , "[REDACTED:email]" ] `},
	} {
		out, changed, err := p.MaskJSON([]byte(c.in), nil)
		if err != nil || !changed {
			t.Errorf("MaskJSON(%s) = %s, %v, %v", c.in, out, changed, err)
			continue
		}
		if string(out) != c.want {
			t.Errorf("MaskJSON(%s)\n got %s\nwant %s", c.in, out, c.want)
		}
		if !json.Valid(out) {
			t.Errorf("MaskJSON(%s) produced invalid JSON %s", c.in, out)
		}
	}
	for _, clean := range []string{`{}`, `[]`, `null`, `{"a": [1, 2.5e3, -0.1, true, false, null, "x"]}`, `"plain"`} {
		out, changed, err := p.MaskJSON([]byte(clean), nil)
		if err != nil || changed || !sameSlice(out, []byte(clean)) && len(clean) > 0 && string(out) != clean {
			t.Errorf("clean %s: %s %v %v", clean, out, changed, err)
		}
	}
	for _, bad := range []string{``, `{`, `{"a"}`, `{"a":}`, `[1,]`, `"abc`, `"\x"`, "\"a\x01\"", `01`, `1.`, `tru`, `{} {}`, `{"a":1,}`, `-`, `"\u12"`} {
		if _, _, err := p.MaskJSON([]byte(bad), nil); err == nil {
			t.Errorf("invalid JSON %q accepted", bad)
		}
	}
	deep := strings.Repeat("[", 600) + strings.Repeat("]", 600)
	if _, _, err := p.MaskJSON([]byte(deep), nil); err == nil {
		t.Error("600 levels of nesting accepted")
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"plain", "q\"uote\\", "ctl\x00\x1f\x7f", "tab\tnl\n", "bad\xff\xfeutf8", "ünïcode ✓"} {
		enc := appendJSONString(nil, []byte(s))
		if !json.Valid(enc) {
			t.Errorf("%q → invalid %s", s, enc)
		}
		var back string
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatal(err)
		}
		if want := strings.ReplaceAll(strings.ReplaceAll(s, "\xff", "\ufffd"), "\xfe", "\ufffd"); back != want {
			t.Errorf("%q round-tripped to %q", s, back)
		}
	}
}
