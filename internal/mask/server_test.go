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
		{`date/time field value out of range: "536-22-8726"`, `date/time field value out of range: "[REDACTED:echoed_value]"`},
		{`invalid value "4111" for "YYYY"`, `invalid value "[REDACTED:echoed_value]" for "YYYY"`},
		{`invalid type name "$2b$12$x"`, `invalid type name "[REDACTED:echoed_value]"`},
		{`JSON data, line 1: ...IPz0gi.URN"`, `JSON data, line 1: [REDACTED:echoed_value]`},
		{"line 1: Start tag expected, '<' not found\n$2b$12$R9h/cIPz0gi\n^", "line 1: Start tag expected, '<' not found\n[REDACTED:echoed_value]\n^"},
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
	if got := p.Stats().Hits["echoed_value"]; got != 16 {
		t.Errorf("echoed_value hits = %d, want 16", got)
	}
	for _, c := range []struct{ in, want string }{
		{`relation "users" does not exist`, `relation "[REDACTED:echoed_value]" does not exist`},
		{`schema "ada@example" does not exist`, `schema "[REDACTED:echoed_value]" does not exist`},
		{`trailing junk after parameter at or near "$2b$12$R9h"`, `trailing junk after parameter at or near [REDACTED:echoed_value]`},
		{`requested character too large for encoding: 415555010`, `requested character too large for encoding: [REDACTED:echoed_value]`},
		{`date field value out of range: 4155-13-01`, `date field value out of range: [REDACTED:echoed_value]-[REDACTED:echoed_value]-[REDACTED:echoed_value]`},
		{`Key (name)=(Ada Lovelace) already exists.`, `Key (name)=([REDACTED:echoed_value]) already exists.`},
	} {
		out, _, err := p.MaskServerMessageStrict([]byte(c.in), nil)
		if err != nil || string(out) != c.want {
			t.Errorf("strict %q: %q %v, want %q", c.in, out, err, c.want)
		}
	}
}
