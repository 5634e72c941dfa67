package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

func testKey(t testing.TB, seed byte) *Key {
	t.Helper()
	k, err := NewKey(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustPlan(t testing.TB, rules []ColumnRule, cfg Config) *Plan {
	t.Helper()
	p, err := NewPlan(rules, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || unsafe.SliceData(a) == unsafe.SliceData(b))
}

func TestStyles(t *testing.T) {
	key := testKey(t, 1)
	for _, c := range []struct {
		name  string
		cfg   Config
		style Style
		in    string
		want  string
	}{
		{"redact", Config{}, StyleRedact, "card 4111-1111-1111-1111.", "card [REDACTED:credit_card]."},
		{"redact format", Config{RedactFormat: "<{kind} removed>"}, StyleRedact, "4111111111111111", "<credit_card removed>"},
		{"partial keeps separators", Config{}, StylePartial, "4111-1111-1111-1111", "****-****-****-1111"},
		{"partial spaces", Config{}, StylePartial, "pan 4111 1111 1111 1111 ok", "pan **** **** **** 1111 ok"},
		{"partial keep 2", Config{KeepLast: 2}, StylePartial, "4111111111111111", "**************11"},
		{"partial iban", Config{}, StylePartial, "DE89 3704 0044 0532 0130 00", "**** **** **** **** **30 00"},
		{"mask", Config{}, StyleMask, "4111-1111-1111-1111", "****-****-****-****"},
		{"mask char", Config{MaskChar: 'X'}, StyleMask, "john.doe@example.com", "XXXX.XXX@XXXXXXX.XXX"},
		{"token", Config{Key: key}, StyleToken, "4111 1111 1111 1111", "tok_"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Detectors = []DetectorRule{{Detectors: []string{"all"}, Style: c.style}}
			p := mustPlan(t, nil, c.cfg)
			out, changed, err := p.MaskText([]byte(c.in), nil)
			if err != nil || !changed {
				t.Fatalf("MaskText(%q) = %q, %v, %v", c.in, out, changed, err)
			}
			if c.style == StyleToken {
				if !bytes.HasPrefix(out, []byte("tok_")) || len(out) != 20 {
					t.Fatalf("token %q", out)
				}
				return
			}
			if string(out) != c.want {
				t.Fatalf("got %q, want %q", out, c.want)
			}
		})
	}
}

func TestPartialShortValues(t *testing.T) {
	s, err := newStyler("", 4, '*', nil)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"Bob":          "***",
		"hunter2":      "******2", // 7 < 2×4: keep a quarter
		"secret-pass1": "******-*ass1",
		"José Müller":  "**** **ller",
		"536-22-8726":  "***-**-8726",
	} {
		if got := string(s.maskRunes(nil, []byte(in), 4)); got != want {
			t.Errorf("partial(%q) = %q, want %q", in, got, want)
		}
	}
	if got := string(s.maskRunes(nil, []byte("a\xffb"), 0)); got != "***" {
		t.Errorf("invalid UTF-8 byte passed through: %q", got)
	}
}

func TestTokenStability(t *testing.T) {
	k1, k1b, k2 := testKey(t, 1), testKey(t, 1), testKey(t, 2)
	tok := func(k *Key, kind Kind, v string) string { return string(k.appendToken(nil, kind, []byte(v))) }
	a := tok(k1, CreditCard, "4111 1111 1111 1111")
	if a != tok(k1b, CreditCard, "4111-1111-1111-1111") || a != tok(k1, CreditCard, "4111111111111111") {
		t.Error("same card, same key, different tokens")
	}
	if a == tok(k2, CreditCard, "4111111111111111") {
		t.Error("different keys gave the same token")
	}
	if tok(k1, Email, "John@Example.com") != tok(k1, Email, "john@example.com") {
		t.Error("e-mail tokens are not case-insensitive")
	}
	if tok(k1, ColumnKind, "alice") == tok(k1, ColumnKind, "bob") {
		t.Error("different values, same token")
	}
	if first, second := tok(k1, ColumnKind, "alice"), tok(k1, ColumnKind, "alice"); first != second {
		t.Error("token not stable")
	}
	// Joins: the same value through a column rule and through a detector gives the same token
	// (no kind in the MAC), here an e-mail already lower-case.
	if tok(k1, ColumnKind, "a@b.com") != tok(k1, Email, "a@b.com") {
		t.Error("column and detector tokens differ for the same value")
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	secret := bytes.Repeat([]byte("k"), 40)
	write := func(name string, mode os.FileMode, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", 0o600, append(bytes.Clone(secret), '\n'))
	k, err := LoadKey(good)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := NewKey(secret)
	if string(k.appendToken(nil, ColumnKind, []byte("x"))) != string(ref.appendToken(nil, ColumnKind, []byte("x"))) {
		t.Error("trailing newline not ignored")
	}
	if _, err := LoadKey(write("ro", 0o400, secret)); err != nil {
		t.Errorf("0400 key refused: %v", err)
	}
	for name, mode := range map[string]os.FileMode{"group": 0o640, "world": 0o604, "groupw": 0o620, "all": 0o666} {
		_, err := LoadKey(write(name, mode, secret))
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %#o: err = %v, want refusal", mode, err)
		}
	}
	if _, err := LoadKey(write("short", 0o600, []byte("short"))); err == nil {
		t.Error("short key accepted")
	}
	if _, err := LoadKey(dir); err == nil {
		t.Error("directory accepted as key")
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key file accepted")
	}
}

func TestNewPlanErrors(t *testing.T) {
	for name, c := range map[string]struct {
		rules []ColumnRule
		cfg   Config
	}{
		"token without key":    {nil, Config{Detectors: []DetectorRule{{Detectors: []string{"email"}, Style: StyleToken}}}},
		"column token no key":  {[]ColumnRule{{Pattern: "users.email", Style: StyleToken}}, Config{}},
		"unknown detector":     {nil, Config{Detectors: []DetectorRule{{Detectors: []string{"passport"}}}}},
		"empty pattern":        {[]ColumnRule{{Pattern: " ", Style: StyleRedact}}, Config{}},
		"empty pattern part":   {[]ColumnRule{{Pattern: "users.", Style: StyleRedact}}, Config{}},
		"four parts":           {[]ColumnRule{{Pattern: "a.b.c.d", Style: StyleRedact}}, Config{}},
		"missing column style": {[]ColumnRule{{Pattern: "users.email"}}, Config{}},
		"bad mask char":        {nil, Config{MaskChar: '\\'}},
		"bad keep":             {nil, Config{KeepLast: 99}},
	} {
		if _, err := NewPlan(c.rules, c.cfg); err == nil {
			t.Errorf("%s: NewPlan accepted", name)
		}
	}
	for _, s := range []string{"redact", "partial", "keep-last-4", "mask", "token", "hmac"} {
		if _, err := ParseStyle(s); err != nil {
			t.Errorf("ParseStyle(%q): %v", s, err)
		}
	}
	if _, err := ParseStyle("rot13"); err == nil {
		t.Error("ParseStyle accepted rot13")
	}
}

func TestDetectorSelection(t *testing.T) {
	p := mustPlan(t, nil, Config{Detectors: []DetectorRule{
		{Detectors: []string{"credit_card"}, Style: StyleMask},
		{Detectors: []string{"secret"}},
	}})
	in := "john@example.com 4111111111111111 AKIAJX5VZ6QLM3RKT2YB"
	out, _, err := p.MaskText([]byte(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "john@example.com **************** [REDACTED:aws_access_key]"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		want   bool
	}{
		{"email", "email", true}, {"email", "EMAIL", true}, {"email", "emails", false}, {"*", "", true},
		{"*_token", "refresh_token", true}, {"*_token", "token", false}, {"pass*", "password_hash", true},
		{"*pass*", "user_password", true}, {"e?ail", "email", true}, {"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false}, {"*.x", "a.x", true}, {"users", "user", false},
	} {
		if got := glob(c.pat, c.s); got != c.want {
			t.Errorf("glob(%q, %q) = %v", c.pat, c.s, got)
		}
	}
}

func TestColumnRules(t *testing.T) {
	p := mustPlan(t, []ColumnRule{
		{Pattern: "users.email", Style: StyleRedact},
		{Pattern: "*.password_hash", Style: StyleRedact, Label: "hash"},
		{Pattern: "secrets.*", Style: StyleMask},
		{Pattern: "*_token", Style: StyleRedact},
		{Pattern: "billing.cards.pan", Style: StylePartial},
	}, Config{})
	for _, c := range []struct {
		col  Column
		want string // "" = no rule
	}{
		{Column{Table: "users", Name: "email"}, "email"},
		{Column{Table: "USERS", Name: "Email"}, "email"},
		{Column{Table: "users", Name: "email", Field: "e"}, "email"}, // SELECT email AS e FROM users
		{Column{Table: "orders", Name: "email"}, ""},
		{Column{Name: "email"}, ""}, // computed, no table: a table rule cannot apply
		{Column{Table: "accounts", Name: "password_hash"}, "password_hash"},
		{Column{Table: "secrets", Name: "anything"}, "anything"},
		{Column{Name: "refresh_token"}, "refresh_token"},
		{Column{Name: "x", Field: "api_token"}, "api_token"}, // alias matched by a bare rule
		{Column{Schema: "billing", Table: "cards", Name: "pan"}, "pan"},
		{Column{Table: "cards", Name: "pan"}, "pan"}, // schema unknown: masked
		{Column{Schema: "public", Table: "cards", Name: "pan"}, ""},
		// Computed columns whose sources the caller resolved from the parse tree.
		{Column{Name: "upper", Sources: []Source{{Table: "users", Name: "email"}}}, "upper"},
		{Column{Name: "x", Sources: []Source{{Table: "users", Name: "id"}, {Table: "accounts", Name: "password_hash"}}}, "x"},
		{Column{Name: "row_to_json", Sources: []Source{{Table: "secrets", Name: "id"}}}, "row_to_json"},
		{Column{Name: "row_to_json", Sources: []Source{{Table: "orders", Name: "id"}, {Table: "orders", Name: "total"}}}, ""},
		{Column{Name: "lower", Sources: []Source{{Table: "users", Name: "name"}}}, ""},
		// Whole rows: c::text or row_to_json(c).
		{Column{Name: "c", TypeOID: 25, Sources: []Source{{Table: "users"}}}, "c"},
		{Column{Name: "c", TypeOID: oidJSON, Sources: []Source{{Table: "users"}}}, "c"},
		{Column{Name: "c", TypeOID: oidJSON, Sources: []Source{{Schema: "public", Table: "cards"}}}, "c"}, // *.password_hash
		{Column{Name: "c", TypeOID: oidJSONB, Sources: []Source{{Table: "orders"}}}, "c"},                 // *.password_hash may be among its keys
		{Column{Name: "c", TypeOID: 25, Sources: []Source{{Table: "orders"}}}, "c"},
	} {
		r := p.columnStyle(c.col)
		switch {
		case c.want == "" && r != nil:
			t.Errorf("%+v matched rule %s", c.col, r.pattern())
		case c.want != "" && r == nil:
			t.Errorf("%+v matched no rule", c.col)
		}
	}
}

// TestWholeRowRules: a whole row is covered by the rules naming its table, and by column-only
// rules unless it is JSON, whose keys those rules apply to; a column of unknown origin by any.
func TestWholeRowRules(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "users.email", Style: StyleRedact}, {Pattern: "ssn", Style: StyleRedact}}, Config{})
	for _, c := range []struct {
		col  Column
		want bool
	}{
		{Column{Name: "u", TypeOID: 25, Sources: []Source{{Table: "users"}}}, true},
		{Column{Name: "u", TypeOID: oidJSON, Sources: []Source{{Schema: "public", Table: "users"}}}, true},
		{Column{Name: "o", TypeOID: oidJSONB, Sources: []Source{{Table: "orders"}}}, false},
		{Column{Name: "o", TypeOID: 25, Sources: []Source{{Table: "orders"}}}, true}, // it may have an ssn column
		{Column{Name: "x", TypeOID: 23, AnySource: true}, true},
		{Column{Name: "x", TypeOID: 23}, false},
	} {
		if got := p.columnStyle(c.col) != nil; got != c.want {
			t.Errorf("%+v: covered %v, want %v", c.col, got, c.want)
		}
	}
}

func TestMaskCell(t *testing.T) {
	p := mustPlan(t, []ColumnRule{
		{Pattern: "users.password_hash", Style: StyleRedact},
		{Pattern: "users.id_number", Style: StylePartial},
		{Pattern: "users.profile", Style: StyleRedact},
		{Pattern: "users.created", Style: StyleRedact},
	}, Config{})
	cols := []Column{
		{Table: "users", Name: "email", TypeOID: oidText},                               // 0 text scan
		{Table: "users", Name: "password_hash", TypeOID: oidText},                       // 1 forced
		{Table: "users", Name: "id_number", TypeOID: oidInt8, Format: 1},                // 2 binary int8 under rule → NULL
		{Table: "users", Name: "bio", TypeOID: oidText, Format: 1},                      // 3 binary text scanned
		{Table: "users", Name: "prefs", TypeOID: oidJSONB, Format: 1},                   // 4 binary jsonb
		{Table: "users", Name: "profile", TypeOID: oidJSON},                             // 5 json under rule
		{Table: "users", Name: "created", TypeOID: oidTimestamptz},                      // 6 text timestamp under rule
		{Table: "users", Name: "score", TypeOID: oidFloat8},                             // 7 no PII type
		{Table: "users", Name: "ssn", TypeOID: oidVarchar},                              // 8 ssn context
		{Table: "logins", Name: "addr", TypeOID: oidInet},                               // 9 inet: IP context
		{Table: "users", Name: "age", TypeOID: oidInt4, Format: 1},                      // 10 binary int, no rule
		{Name: "upper", TypeOID: oidText},                                               // 11 computed
		{Table: "users", Name: "id_number", Field: "n", TypeOID: oidNumeric, Format: 0}, // 12 text numeric under rule
	}
	rp := p.ForColumns(cols)
	for _, c := range []struct {
		col     int
		in      string
		want    string
		changed bool
		null    bool
	}{
		{0, "alice@example.com", "[REDACTED:email]", true, false},
		{0, "no pii here, order 4500012345", "", false, false},
		{1, "$2b$12$abcdefghijklmnopqrstuv", "[REDACTED:column]", true, false},
		{2, "\x00\x00\x00\x00\x00\x00\x30\x39", "", true, true},
		{3, "pay 4111111111111111", "pay ************1111", true, false},
		{4, "\x01{\"email\": \"bob@example.org\", \"n\": 1}", "\x01{\"email\": \"[REDACTED:email]\", \"n\": 1}", true, false},
		{4, "\x01{\"ssn\": \"536-22-8726\"}", "\x01{\"ssn\": \"[REDACTED:us_ssn]\"}", true, false},
		{5, `{"a": 1}`, `"[REDACTED:column]"`, true, false},
		{6, "2024-01-01 00:00:00+00", "[REDACTED:column]", true, false},
		{7, "4111111111111111", "", false, false},
		{8, "536-22-8726", "[REDACTED:us_ssn]", true, false},
		{8, "536228726", "[REDACTED:us_ssn]", true, false},
		{9, "203.0.113.7/32", "[REDACTED:ip_address]", true, false},
		{10, "\x00\x00\x00\x2a", "", false, false},
		{11, "ALICE@EXAMPLE.COM", "[REDACTED:email]", true, false},
		{12, "123456789012", "********9012", true, false},
	} {
		in := []byte(c.in)
		out, changed, null, err := rp.MaskCell(c.col, in, nil)
		if err != nil {
			t.Errorf("col %d %q: %v", c.col, c.in, err)
			continue
		}
		if changed != c.changed || null != c.null {
			t.Errorf("col %d %q: changed=%v null=%v, want %v %v (out %q)", c.col, c.in, changed, null, c.changed, c.null, out)
			continue
		}
		if !changed && !sameSlice(out, in) {
			t.Errorf("col %d %q: unchanged cell not returned as the input slice", c.col, c.in)
		}
		if changed && !null && string(out) != c.want {
			t.Errorf("col %d %q: got %q, want %q", c.col, c.in, out, c.want)
		}
		if changed && (cols[c.col].TypeOID == oidJSON || cols[c.col].TypeOID == oidJSONB) {
			body := out
			if cols[c.col].TypeOID == oidJSONB && cols[c.col].Format == 1 {
				body = out[1:]
			}
			if !json.Valid(body) {
				t.Errorf("col %d: masked JSON invalid: %q", c.col, out)
			}
		}
	}
	// dst is appended to, so callers can reuse a buffer.
	buf := []byte("prefix:")
	out, _, _, _ := rp.MaskCell(0, []byte("x@example.com"), buf)
	if string(out) != "prefix:[REDACTED:email]" {
		t.Errorf("append semantics: %q", out)
	}
	// Unknown jsonb version: fail closed.
	if _, _, _, err := rp.MaskCell(4, []byte("\x02{}"), nil); err == nil {
		t.Error("jsonb version 2 accepted")
	}
	if _, _, _, err := rp.MaskCell(99, []byte("x"), nil); err == nil {
		t.Error("column out of range accepted")
	}
	if v, null := rp.Fallback(2, nil); !null || v != nil {
		t.Error("fallback of binary int8 rule column is not NULL")
	}
	if v, null := rp.Fallback(4, nil); null || !json.Valid(v[1:]) || v[0] != 1 {
		t.Errorf("fallback of binary jsonb: %q %v", v, null)
	}
	if v, _ := rp.Fallback(0, nil); string(v) != "[REDACTED:unmaskable]" {
		t.Errorf("fallback text %q", v)
	}
}

func TestFailClosed(t *testing.T) {
	p := mustPlan(t, nil, Config{MaxValueBytes: 64})
	big := bytes.Repeat([]byte("a"), 65)
	if _, _, err := p.MaskText(big, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaskText oversized: %v", err)
	}
	rp := p.ForColumns([]Column{{Name: "x", TypeOID: oidText}})
	if _, _, _, err := rp.MaskCell(0, big, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaskCell oversized: %v", err)
	}
	if _, _, err := p.MaskJSON(big, nil); err == nil {
		t.Error("MaskJSON oversized accepted")
	}
	if _, _, err := p.MaskCopyLine(big, nil, nil); err == nil {
		t.Error("MaskCopyLine oversized accepted")
	}
	if got := p.Stats().Failures; got != 4 {
		t.Errorf("failures = %d, want 4", got)
	}
}

func TestStats(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "t.secret", Style: StyleRedact}}, Config{})
	p.MaskText([]byte("a@b.com c@d.org 4111111111111111"), nil)
	rp := p.ForColumns([]Column{{Table: "t", Name: "secret", TypeOID: oidInt4, Format: 1}, {Table: "t", Name: "secret", TypeOID: oidText}})
	rp.MaskCell(0, []byte{0, 0, 0, 1}, nil)
	rp.MaskCell(1, []byte("x"), nil)
	shared := &Stats{}
	p2 := mustPlan(t, nil, Config{Stats: shared})
	p3 := mustPlan(t, nil, Config{Stats: shared})
	p2.MaskText([]byte("a@b.com"), nil)
	p3.MaskText([]byte("a@b.com"), nil)
	if got := shared.Snapshot().Hits["email"]; got != 2 {
		t.Errorf("shared stats: %d e-mail hits, want 2", got)
	}
	s := p.Stats()
	if s.Hits["email"] != 2 || s.Hits["credit_card"] != 1 || s.Hits["column"] != 2 || s.Nulled != 1 || s.Failures != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestCleanZeroAlloc(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "*.password_hash", Style: StyleRedact}}, Config{})
	rp := p.ForColumns([]Column{{Table: "users", Name: "bio", TypeOID: oidText}, {Table: "u", Name: "doc", TypeOID: oidJSONB}})
	text := []byte(cleanText(4096))
	doc := []byte(`{"id": 12345, "name": "Widget", "tags": ["a", "b"], "created": "2024-01-15T10:30:00Z", "price": 19.99, "nested": {"ok": true, "n": null}}`)
	line := []byte("12345\tWidget\t2024-01-15 10:30:00+00\t\\N\tsome text with\\ttab\n")
	for name, f := range map[string]func(){
		"MaskCell":     func() { rp.MaskCell(0, text, nil) },
		"MaskCellJSON": func() { rp.MaskCell(1, doc, nil) },
		"MaskText":     func() { p.MaskText(text, nil) },
		"MaskJSON":     func() { p.MaskJSON(doc, nil) },
		"MaskCopyLine": func() { p.MaskCopyLine(line, nil, nil) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs on clean input", name, n)
		}
	}
	// With a finding and a reused dst, masking a cell does not allocate either.
	dst := make([]byte, 0, 8192)
	dirty := []byte("contact alice@example.com, card 4111 1111 1111 1111")
	if n := testing.AllocsPerRun(100, func() { rp.MaskCell(0, dirty, dst[:0]) }); n != 0 {
		t.Errorf("MaskCell with findings and a reused buffer: %v allocs", n)
	}
}

func TestExplain(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "users.password_hash", Style: StyleRedact}}, Config{})
	for _, c := range []struct {
		sample string
		col    Column
		want   []string
	}{
		{"4111 1111 1111 1111", Column{Table: "orders", Name: "note", TypeOID: oidText}, []string{"credit_card at bytes 0-19", "style partial", `result: "**** **** **** 1111"`}},
		{"$2b$12$x", Column{Table: "users", Name: "password_hash", TypeOID: oidText}, []string{"column rule users.password_hash", "[REDACTED:column]"}},
		{"\x00\x00", Column{Table: "users", Name: "password_hash", TypeOID: oidBytea, Format: 1}, []string{"NULL"}},
		{"536-22-8726", Column{Table: "people", Name: "ssn", TypeOID: oidText}, []string{"column context us_ssn", "[REDACTED:us_ssn]"}},
		{"536-22-8726", Column{}, []string{"(free text)", "unchanged"}},
		{"1.5", Column{Name: "x", TypeOID: oidFloat8}, []string{"passed unchanged"}},
	} {
		got := p.Explain(c.sample, c.col)
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("Explain(%q, %+v) lacks %q:\n%s", c.sample, c.col, w, got)
			}
		}
	}
}

// cleanText is realistic text without findings: log lines, prose, ids, dates, versions, amounts.
func cleanText(n int) string {
	const chunk = "2024-01-15 10:30:00.123 UTC [4242] LOG:  duration: 0.532 ms  statement: SELECT id, name, status " +
		"FROM orders WHERE created_at > '2024-01-01' AND total > 100.50 ORDER BY id LIMIT 50; order ORD-2024-000123 " +
		"shipped to warehouse 7 via carrier UPS, tracking pending. Version 15.4.2 build 8812734, uuid " +
		"550e8400-e29b-41d4-a716-446655440000 checksum d41d8cd98f00b204e9800998ecf8427e ok. "
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(chunk)
	}
	return b.String()[:n]
}

func TestConfigOptions(t *testing.T) {
	p := mustPlan(t, nil, Config{ExtraTLDs: []string{".corp"}})
	for in, want := range map[string]bool{"ops@intranet.corp": true, "ops@intranet.lan": false} {
		_, changed, err := p.MaskText([]byte(in), nil)
		if err != nil || changed != want {
			t.Errorf("%s: changed=%v err=%v, want %v", in, changed, err, want)
		}
	}
	// An empty (non-nil) detector list: column rules only.
	p = mustPlan(t, []ColumnRule{{Pattern: "t.c", Style: StyleMask}}, Config{Detectors: []DetectorRule{}})
	if _, changed, _ := p.MaskText([]byte("4111111111111111 a@example.com"), nil); changed {
		t.Error("detectors ran with an empty detector list")
	}
	rp := p.ForColumns([]Column{{Table: "t", Name: "c", TypeOID: oidText}, {Table: "t", Name: "j", TypeOID: oidJSONB, Format: 1}})
	if out, _, _, _ := rp.MaskCell(0, []byte("ab-12"), nil); string(out) != "**-**" {
		t.Errorf("mask style column: %q", out)
	}
	// A pass rule exempts a column (and a JSON key) from detection.
	p = mustPlan(t, []ColumnRule{{Pattern: "events.hash_id", Style: StylePass}, {Pattern: "hash_id", Style: StylePass}}, Config{})
	rp = p.ForColumns([]Column{{Table: "events", Name: "hash_id", TypeOID: oidInt8}})
	if _, changed, _, _ := rp.MaskCell(0, []byte("4111111111111111"), nil); changed {
		t.Error("pass column was masked")
	}
	if out, _, err := p.MaskJSON([]byte(`{"hash_id": 4111111111111111, "pan": 4111111111111111}`), nil); err != nil || string(out) != `{"hash_id": 4111111111111111, "pan": "************1111"}` {
		t.Errorf("pass key: %s %v", out, err)
	}
	if e := p.Explain("1", Column{Table: "events", Name: "hash_id", TypeOID: oidInt8}); !strings.Contains(e, "exempts") {
		t.Errorf("explain pass: %s", e)
	}
	// Token style on a column: stable, joinable, no key material in the output.
	key := testKey(t, 7)
	p = mustPlan(t, []ColumnRule{{Pattern: "*.email", Style: StyleToken}}, Config{Key: key})
	rp = p.ForColumns([]Column{{Table: "users", Name: "email", TypeOID: oidText}, {Table: "orders", Name: "email", TypeOID: oidText},
		{Table: "users", Name: "email", TypeOID: oidJSONB, Format: 1}})
	a, _, _, _ := rp.MaskCell(0, []byte("ada@example.com"), nil)
	b, _, _, _ := rp.MaskCell(1, []byte("ada@example.com"), nil)
	if string(a) != string(b) || !bytes.HasPrefix(a, []byte("tok_")) {
		t.Errorf("tokens differ across tables: %q %q", a, b)
	}
	j, _, _, err := rp.MaskCell(2, []byte("\x01\"ada@example.com\""), nil)
	if err != nil || j[0] != 1 || !json.Valid(j[1:]) {
		t.Errorf("forced jsonb binary: %q %v", j, err)
	}
}

// TestConcurrentUse: one Plan and ResultPlan shared by many goroutines (run with -race in CI).
func TestConcurrentUse(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "*.email", Style: StyleToken}}, Config{Key: testKey(t, 3)})
	rp := p.ForColumns([]Column{{Table: "u", Name: "email", TypeOID: oidText}, {Table: "u", Name: "note", TypeOID: oidText}})
	want, _, _, _ := rp.MaskCell(0, []byte("ada@example.com"), nil)
	done := make(chan string, 8)
	for g := 0; g < 8; g++ {
		go func() {
			var buf []byte
			for i := 0; i < 200; i++ {
				out, _, _, err := rp.MaskCell(0, []byte("ada@example.com"), buf[:0])
				if err != nil || string(out) != string(want) {
					done <- fmt.Sprintf("token %q err %v", out, err)
					return
				}
				buf = out
				if out, _, _, _ := rp.MaskCell(1, []byte("card 4111 1111 1111 1111"), nil); string(out) != "card **** **** **** 1111" {
					done <- fmt.Sprintf("note %q", out)
					return
				}
				if _, _, err := p.MaskCopyLine([]byte("a\\tb\tc@d.com\n"), nil, nil); err != nil {
					done <- err.Error()
					return
				}
			}
			done <- ""
		}()
	}
	for g := 0; g < 8; g++ {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}
	if got := p.Stats().Hits["credit_card"]; got != 8*200 {
		t.Errorf("credit_card hits %d, want %d", got, 8*200)
	}
}

func TestMaskString(t *testing.T) {
	p := mustPlan(t, nil, Config{MaxValueBytes: 64})
	for _, c := range []struct {
		name, in, want string
		same           bool // the input itself comes back, not a copy
	}{
		{"clean", "SELECT abalance FROM pgbench_accounts WHERE aid = 336510", "SELECT abalance FROM pgbench_accounts WHERE aid = 336510", true},
		{"literal", "INSERT INTO t VALUES ('4111 1111 1111 1111')", "INSERT INTO t VALUES ('**** **** **** 1111')", false},
		{"comment", "SELECT 1 /* a@example.com */", "SELECT 1 /* [REDACTED:email] */", false},
		{"uri password", "psql postgres://app:S3cretPass@db/prod", "psql postgres://app:[REDACTED:uri_password]@db/prod", false},
		{"too large", strings.Repeat("x", 65), "[REDACTED:unmaskable]", false},
		{"empty", "", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := p.MaskString(c.in)
			if got != c.want {
				t.Fatalf("MaskString(%q) = %q, want %q", c.in, got, c.want)
			}
			if c.same && c.in != "" && unsafe.StringData(got) != unsafe.StringData(c.in) {
				t.Error("a clean string was copied")
			}
		})
	}
	var none *Plan
	if got := none.MaskString("4111 1111 1111 1111"); got != "4111 1111 1111 1111" {
		t.Errorf("a nil plan masked: %q", got)
	}
}

func TestMaskStringMap(t *testing.T) {
	p := mustPlan(t, nil, Config{})
	for _, c := range []struct {
		name     string
		in, want map[string]string
		same     bool // the input map itself comes back
	}{
		{"clean", map[string]string{"application_name": "psql", "user": "agent"}, map[string]string{"application_name": "psql", "user": "agent"}, true},
		{"value", map[string]string{"application_name": "etl postgres://app:S3cretPass@db/prod", "user": "agent"},
			map[string]string{"application_name": "etl postgres://app:[REDACTED:uri_password]@db/prod", "user": "agent"}, false},
		{"key", map[string]string{"a@example.com": "1"}, map[string]string{"[REDACTED:email]": "1"}, false},
		{"nil", nil, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := p.MaskStringMap(c.in)
			if !maps.Equal(got, c.want) {
				t.Fatalf("MaskStringMap(%q) = %q, want %q", c.in, got, c.want)
			}
			if c.in != nil && c.same != (reflect.ValueOf(got).Pointer() == reflect.ValueOf(c.in).Pointer()) {
				t.Errorf("same map returned: %v, want %v", !c.same, c.same)
			}
		})
	}
	var none *Plan
	in := map[string]string{"k": "4111 1111 1111 1111"}
	if got := none.MaskStringMap(in); got["k"] != in["k"] {
		t.Errorf("a nil plan masked: %q", got)
	}
}

func BenchmarkMaskStringClean(b *testing.B) {
	p := mustPlan(b, nil, Config{})
	const sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 336510;"
	b.ReportAllocs()
	for b.Loop() {
		if p.MaskString(sql) != sql {
			b.Fatal("masked")
		}
	}
}

func TestMaskValueOf(t *testing.T) {
	p := mustPlan(t, []ColumnRule{{Pattern: "customers.tel", Style: StyleRedact}, {Pattern: "notes", Style: StylePass}}, Config{})
	for _, c := range []struct {
		v    string
		srcs []Source
		want string
	}{
		{"4155550100", []Source{{Table: "customers", Name: "tel"}}, "[REDACTED:column]"},
		{"4155550100", []Source{{Table: "customers", Name: "name"}}, "4155550100"},
		{"4155550100", []Source{{Table: "customers"}}, "[REDACTED:column]"}, // a whole row
		{"a@example.com", []Source{{Table: "customers", Name: "name"}}, "[REDACTED:email]"},
		{"a@example.com", []Source{{Table: "t", Name: "notes"}}, "a@example.com"},
		{"a@example.com", nil, "[REDACTED:email]"},
	} {
		out, _, err := p.MaskValueOf([]byte(c.v), nil, c.srcs)
		if err != nil || string(out) != c.want {
			t.Errorf("%q %+v: %q %v, want %q", c.v, c.srcs, out, err, c.want)
		}
	}
}
