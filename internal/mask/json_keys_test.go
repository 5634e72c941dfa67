package mask

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestMaskJSONKeys: object keys are values too (Postgres's jsonb_object_agg(email, id), an API
// indexing by email): found by the detectors, escaped or not, and the document stays valid
// JSON; keys that hold nothing keep their meaning for column rules.
func TestMaskJSONKeys(t *testing.T) {
	p, err := NewPlan([]ColumnRule{{Pattern: "*password_hash", Style: StyleRedact}}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in          string
		never, want []string
	}{
		{`{"ada@example.com": 1, "4111 1111 1111 1111": 2}`, []string{"ada@example.com", "4111 1111 1111 1111"}, []string{"[REDACTED:email]", "1111"}},
		{`{"by_email": {"ada\u0040example.com": {"id": 7}}}`, []string{"ada@example.com", `ada\u0040example`}, []string{`"by_email"`, `"id": 7`}},
		{`[{"password_hash": "x"}, {"note": "ok"}]`, []string{`"x"`}, []string{`"password_hash"`, `"note": "ok"`}},
	}
	for _, c := range cases {
		out, _, err := p.MaskJSON([]byte(c.in), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		got := string(out)
		if !json.Valid(out) {
			t.Errorf("%s: not JSON: %s", c.in, got)
		}
		for _, n := range c.never {
			if strings.Contains(got, n) {
				t.Errorf("%s: %s still holds %q", c.in, got, n)
			}
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %s lacks %q", c.in, got, w)
			}
		}
	}
}
