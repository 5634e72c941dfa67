package mask

import (
	"strings"
	"testing"
)

// TestMaskFields: a finding within one field is masked with its context (the key before it) from
// outside the field; one that crosses fields is not, and the fields it touches are masked alone,
// so a private key's BEGIN in one field and END in another hide nothing between them.
func TestMaskFields(t *testing.T) {
	p := mustPlan(t, nil, Config{})
	fieldsOf := func(in string, sep byte) []Field { // each part between separators
		var fs []Field
		start := 0
		for i := 0; i <= len(in); i++ {
			if i == len(in) || in[i] == sep {
				fs = append(fs, Field{start, i})
				start = i + 1
			}
		}
		return fs
	}
	for _, c := range []struct {
		name, in, want string
		crossed        bool
	}{
		{"clean", "a=1&b=2", "a=1&b=2", false},
		{"within one field, context from outside", "password=hunter22&b=2", "password=[REDACTED:generic_secret]&b=2", false},
		{"across fields", "k=-----BEGIN PRIVATE KEY-----&amount=1000000&n=-----END PRIVATE KEY-----",
			"k=[REDACTED:private_key]&amount=1000000&n=-----END PRIVATE KEY-----", true},
		{"a key within one field", "k=-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----&amount=5",
			"k=[REDACTED:private_key]&amount=5", false},
		{"several in one field", "to=x a@example.com b@example.com&c=1", "to=x [REDACTED:email] [REDACTED:email]&c=1", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fields := fieldsOf(c.in, '&')
			masked, crossed, err := p.MaskFields([]byte(c.in), fields)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for i, f := range fields {
				if i > 0 {
					b.WriteByte('&')
				}
				if masked != nil && masked[i] != nil {
					b.Write(masked[i])
				} else {
					b.WriteString(c.in[f.Start:f.End])
				}
			}
			if b.String() != c.want || crossed != c.crossed {
				t.Errorf("got %q crossed %v, want %q crossed %v", b.String(), crossed, c.want, c.crossed)
			}
			if p.Finds(c.in) != (c.in != c.want) {
				t.Errorf("Finds(%q) = %v", c.in, p.Finds(c.in))
			}
		})
	}
	small := mustPlan(t, nil, Config{MaxValueBytes: 8})
	if _, _, err := small.MaskFields([]byte("0123456789"), nil); err != ErrTooLarge {
		t.Errorf("a text over the limit: %v", err)
	}
	if !small.Finds("0123456789") {
		t.Error("Finds passes a text it could not mask")
	}
}

func BenchmarkFindsClean(b *testing.B) {
	p := mustPlan(b, nil, Config{})
	const sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 336510;"
	b.ReportAllocs()
	for b.Loop() {
		if p.Finds(sql) {
			b.Fatal("found")
		}
	}
}
