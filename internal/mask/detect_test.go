package mask

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func allDetectors() *detectors { return &detectors{on: allKinds} }

func corpusRNG() *rand.Rand { return rand.New(rand.NewPCG(6, 2026)) }

func positives() []positive {
	rng := corpusRNG()
	var ps []positive
	ps = append(ps, cardPositives(rng)...)
	ps = append(ps, ibanPositives()...)
	ps = append(ps, emailPositives()...)
	ps = append(ps, secretPositives(rng)...)
	ps = append(ps, contextPositives()...)
	return ps
}

// TestDetectorCorpus measures precision and recall per detector over the positive and near-miss
// corpora, prints the table, and requires recall 100% and no finding in the negatives.
func TestDetectorCorpus(t *testing.T) {
	d := allDetectors()
	type score struct{ tp, fn, fp int }
	scores := map[Kind]*score{}
	get := func(k Kind) *score {
		if scores[k] == nil {
			scores[k] = &score{}
		}
		return scores[k]
	}
	for _, p := range positives() {
		spans := d.find([]byte(p.text), 0, nil)
		at := strings.Index(p.text, p.want)
		if at < 0 {
			t.Fatalf("corpus bug: %q not in %q", p.want, p.text)
		}
		hit := false
		for _, s := range spans {
			covers := s.Start <= at && s.End >= at+len(p.want)
			overlaps := s.Start < at+len(p.want) && s.End > at
			switch {
			case s.Kind == p.kind && covers:
				hit = true
			case !overlaps:
				// A finding elsewhere in a positive sample: a false positive of its kind.
				get(s.Kind).fp++
				t.Errorf("%v: unexpected %v finding %q in %q", p.kind, s.Kind, p.text[s.Start:s.End], p.text)
			}
		}
		if hit {
			get(p.kind).tp++
		} else {
			get(p.kind).fn++
			t.Errorf("%v: missed %q in %q (findings %v)", p.kind, p.want, p.text, spans)
		}
	}
	negs := negatives(corpusRNG())
	for _, n := range negs {
		for _, s := range d.find([]byte(n), 0, nil) {
			get(s.Kind).fp++
			t.Errorf("near miss masked as %v: %q in %q", s.Kind, n[s.Start:s.End], n)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-16s %6s %6s %6s %9s %7s\n", "detector", "tp", "fn", "fp", "precision", "recall")
	for _, k := range Kinds() {
		s := get(k)
		prec, rec := 1.0, 1.0
		if s.tp+s.fp > 0 {
			prec = float64(s.tp) / float64(s.tp+s.fp)
		}
		if s.tp+s.fn > 0 {
			rec = float64(s.tp) / float64(s.tp+s.fn)
		}
		fmt.Fprintf(&b, "%-16s %6d %6d %6d %9.3f %7.3f\n", k, s.tp, s.fn, s.fp, prec, rec)
	}
	fmt.Fprintf(&b, "(%d near-miss negatives)", len(negs))
	t.Log(b.String())
	if testing.Verbose() {
		fmt.Println(b.String())
	}
}

// Without context, context-needing detectors stay silent on their own positives.
func TestContextRequired(t *testing.T) {
	d := allDetectors()
	for _, v := range []string{"536-22-8726", "+1 415 555 2671", "203.0.113.7", "2001:db8::1", "(415) 555-2671"} {
		if s := d.find([]byte("value "+v), 0, nil); len(s) != 0 {
			t.Errorf("%q found %v without context", v, s)
		}
	}
	for _, c := range []struct {
		cx   ctxFlags
		v    string
		kind Kind
	}{
		{ctxSSN, "536-22-8726", USSSN}, {ctxSSN, "536228726", USSSN}, {ctxPhone, "+1 415 555 2671", Phone},
		{ctxPhone, "4155552671", Phone}, {ctxIP, "203.0.113.7", IPAddress}, {ctxIP, "2001:db8::1", IPAddress},
		{ctxIP, "10.1.0.0/16", IPAddress}, {ctxPassword, "hunter2", GenericSecret},
		{ctxSecret, "Zx8Qm3Lp9Rt2Vw7Y", GenericSecret},
	} {
		s := d.find([]byte(c.v), c.cx, nil)
		if len(s) != 1 || s[0].Kind != c.kind || s[0].Start != 0 || s[0].End != len(c.v) {
			t.Errorf("context %v: %q → %v, want one %v", c.cx, c.v, s, c.kind)
		}
	}
	// An authorization column holding "Bearer <token>": the token is masked, the scheme kept.
	in := []byte("Bearer abc123def456ghi789")
	if s := d.find(in, ctxSecret, nil); len(s) != 1 || string(in[s[0].Start:s[0].End]) != "abc123def456ghi789" {
		t.Errorf("bearer in a secret column: %v", s)
	}
	// Column context does not make an invalid SSN valid, nor low-entropy values secrets.
	for _, c := range []struct {
		cx ctxFlags
		v  string
	}{{ctxSSN, "000-12-3456"}, {ctxSSN, "123-45-6789"}, {ctxSecret, "aaaaaaaaaaaa"}, {ctxSecret, "short"}, {ctxPassword, "***"}} {
		if s := d.find([]byte(c.v), c.cx, nil); len(s) != 0 {
			t.Errorf("context %v: %q → %v, want nothing", c.cx, c.v, s)
		}
	}
}

func TestNameContext(t *testing.T) {
	for _, c := range []struct {
		name string
		want ctxFlags
	}{
		{"ssn", ctxSSN}, {"customer_ssn", ctxSSN}, {"phone", ctxPhone}, {"mobilePhone", ctxPhone},
		{"client_ip", ctxIP}, {"ip_address", ctxIP}, {"password", ctxPassword}, {"db_password", ctxPassword},
		{"api_key", ctxSecret}, {"refresh_token", ctxSecret}, {"token_type", 0}, {"key_id", 0},
		{"email", 0}, {"description", 0}, {"address", 0}, {"shipping", 0}, {"password_changed", 0},
	} {
		if got := nameContext([]byte(c.name)); got != c.want {
			t.Errorf("nameContext(%q) = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestIssuer(t *testing.T) {
	for _, c := range []struct {
		num, want string
	}{
		{"4111111111111111", "visa"}, {"5555555555554444", "mastercard"}, {"2223003122003222", "mastercard"},
		{"378282246310005", "amex"}, {"6011111111111117", "discover"}, {"3530111333300000", "jcb"},
		{"30569309025904", "diners"}, {"6200000000000005", "unionpay"}, {"6759649826438453", "maestro"},
		{"411111111111111", ""}, {"1234567812345670", ""},
	} {
		d := make([]byte, len(c.num))
		for i := range c.num {
			d[i] = c.num[i] - '0'
		}
		if got := issuer(d); got != c.want {
			t.Errorf("issuer(%s) = %q, want %q", c.num, got, c.want)
		}
	}
}

func TestSpansSortedDisjoint(t *testing.T) {
	d := allDetectors()
	in := []byte("a postgres://u:p@ss@host/db b john@example.com 4111111111111111 SSN: 536-22-8726 -----BEGIN PRIVATE KEY-----\nabc")
	spans := d.find(in, 0, nil)
	if len(spans) < 5 {
		t.Fatalf("found %v", spans)
	}
	for i := 1; i < len(spans); i++ {
		if spans[i].Start < spans[i-1].End {
			t.Fatalf("overlap: %v", spans)
		}
	}
}
