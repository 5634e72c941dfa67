package policy

import (
	"strings"
	"testing"
)

// TestNarrowerAddressTargetBeforeAnSNITargetIsAccepted: an address target listed before a
// broader target that reads SNI is the order the policy asks for (it takes its own address, the
// SNI target the rest) and is accepted; the same address target listed after the SNI target, or
// a broader one before it, still takes connections the file's order seems to give the SNI target
// and is refused.
func TestNarrowerAddressTargetBeforeAnSNITargetIsAccepted(t *testing.T) {
	const narrow = `  - name: one-host
    match: {addresses: ["198.18.0.5"], ports: [443]}
    protocol: tcp
`
	const wide = `  - name: whole-net
    match: {addresses: ["198.18.0.0/15"], ports: [443]}
    protocol: tcp
`
	const sni = `  - name: apis
    match: {addresses: ["198.18.0.0/16"], sni: ["*.example.com"], ports: [443]}
    protocol: tls-passthrough
`
	for _, c := range []struct {
		name, targets string
		refused       string
	}{
		{"narrower address target first", narrow + sni, ""},
		{"narrower address target after", sni + narrow, `target "one-host" (targets[1])`},
		{"broader address target first", wide + sni, `target "whole-net" (targets[0])`},
		{"broader address target after", sni + wide, `target "whole-net" (targets[1])`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte("version: 1\ntargets:\n"+c.targets))
			switch {
			case c.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.refused != "" && (err == nil || !strings.Contains(err.Error(), c.refused)):
				t.Errorf("got %v, want a refusal naming %s", err, c.refused)
			}
		})
	}
}
