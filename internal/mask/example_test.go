package mask_test

import (
	"fmt"

	"github.com/enforcer-dev/enforcer/internal/mask"
)

func Example() {
	plan, err := mask.NewPlan([]mask.ColumnRule{
		{Pattern: "*.password_hash", Style: mask.StyleRedact},
	}, mask.Config{}) // all detectors, default styles
	if err != nil {
		panic(err)
	}
	// Once per RowDescription: SELECT email AS e, password_hash, note FROM users.
	rp := plan.ForColumns([]mask.Column{
		{Table: "users", Name: "email", Field: "e", TypeOID: 25},
		{Table: "users", Name: "password_hash", TypeOID: 25},
		{Table: "users", Name: "note", TypeOID: 25},
	})
	var buf []byte
	for i, cell := range []string{"ada@example.com", "$2b$12$R9h/cIPz0gi", "card 4111 1111 1111 1111"} {
		out, changed, null, err := rp.MaskCell(i, []byte(cell), buf[:0])
		if err != nil {
			out, null = rp.Fallback(i, buf[:0]) // fail closed
		}
		fmt.Printf("%q changed=%v null=%v\n", out, changed, null)
	}
	msg, _, _ := plan.MaskServerMessage([]byte(`invalid input syntax for type integer: "$2b$12$R9h/cIPz0gi"`), nil)
	fmt.Printf("%s\n", msg)
	// Output:
	// "[REDACTED:email]" changed=true null=false
	// "[REDACTED:column]" changed=true null=false
	// "card **** **** **** 1111" changed=true null=false
	// invalid input syntax for type integer: "[REDACTED:echoed_value]"
}
