package mask

import "testing"

func TestMaskServerMessage(t *testing.T) {
	p := mustPlan(t, nil, Config{})
	for _, c := range []struct{ in, want string }{
		{`invalid input syntax for type integer: "$2b$12$R9h/cIPz0gi.URNNX3kh2O"`, `invalid input syntax for type integer: "[REDACTED:echoed_value]"`},
		{`invalid input syntax for type integer: "alice@example.com"`, `invalid input syntax for type integer: "[REDACTED:echoed_value]"`},
		{`invalid input syntax for type uuid: "say "hi""`, `invalid input syntax for type uuid: "[REDACTED:echoed_value]"`},
		{`invalid input value for enum mood: "secret"`, `invalid input value for enum mood: "[REDACTED:echoed_value]"`},
		{`malformed array literal: "{1,2"`, `malformed array literal: "[REDACTED:echoed_value]"`},
		{`value "99999999999" is out of range for type integer`, `value "[REDACTED:echoed_value]" is out of range for type integer`},
		{`Token "hunter2" is invalid.`, `Token "[REDACTED:echoed_value]" is invalid.`},
		{`Key (email)=(bob@example.org) already exists.`, `Key (email)=([REDACTED:echoed_value]) already exists.`},
		{`Key (a, b)=(1, x (y)) is not present in table "t".`, `Key (a, b)=([REDACTED:echoed_value]) is not present in table "t".`},
		{`Failing row contains (1, Ada, 4111111111111111, null).`, `Failing row contains ([REDACTED:echoed_value]).`},
		{"line one\nKey (ssn)=(536-22-8726) already exists.", "line one\nKey (ssn)=([REDACTED:echoed_value]) already exists."},
		{`duplicate key from 4111 1111 1111 1111`, `duplicate key from **** **** **** 1111`},
	} {
		out, changed, err := p.MaskServerMessage([]byte(c.in), nil)
		if err != nil || !changed || string(out) != c.want {
			t.Errorf("MaskServerMessage(%q)\n got %q %v %v\nwant %q", c.in, out, changed, err, c.want)
		}
	}
	for _, clean := range []string{
		`relation "users" does not exist`, `column "email" does not exist`, `syntax error at or near "SELEC"`,
		`permission denied for table payments`, `duplicate key value violates unique constraint "users_email_key"`, ``,
	} {
		in := []byte(clean)
		out, changed, err := p.MaskServerMessage(in, nil)
		if err != nil || changed || !sameSlice(out, in) {
			t.Errorf("clean %q: %q %v %v", clean, out, changed, err)
		}
		if n := testing.AllocsPerRun(50, func() { p.MaskServerMessage(in, nil) }); n != 0 {
			t.Errorf("clean %q: %v allocs", clean, n)
		}
	}
	if got := p.Stats().Hits["echoed_value"]; got != 11 {
		t.Errorf("echoed_value hits = %d, want 11", got)
	}
}
