package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// review20Base is a valid policy the review's cases add to.
const review20Base = `version: 1
targets:
  - name: db
    match: {addresses: [198.18.1.2], ports: [5432]}
    protocol: postgres
    upstream: {user: u, password_file: /p, tls: disable}
grants:
  - groups: [eng]
    targets: [db]
`

// TestPolicyOfSeveralDocumentsRefused: everything after a stray "---" would be dropped without a
// word (here a block rule), so a file of several YAML documents must not load.
func TestPolicyOfSeveralDocumentsRefused(t *testing.T) {
	text := review20Base + "---\nrules:\n  - {name: no-drop, when: 'sql.kind == \"DROP\"', action: block}\n"
	_, err := Parse("two.yaml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "two.yaml:11") || !strings.Contains(err.Error(), "second YAML document") {
		t.Fatalf("policy of two documents: err %v, want one naming the second document's line", err)
	}
	// One document, with or without its markers, still loads.
	for _, ok := range []string{"---\n" + review20Base, review20Base + "...\n", "---\n" + review20Base + "---\n"} {
		if _, err := Parse("one.yaml", []byte(ok)); err != nil {
			t.Errorf("one document refused: %v\n%s", err, ok)
		}
	}
}

// TestNegativeMaxRowsRefused: a negative max_rows would make the guard keep every row of a result
// in memory and the recorder keep none, so it must not load.
func TestNegativeMaxRowsRefused(t *testing.T) {
	_, err := Parse("p.yaml", []byte(review20Base+"recording: {max_rows: -1}\n"))
	if err == nil || !strings.Contains(err.Error(), "recording.max_rows") {
		t.Fatalf("max_rows -1: err %v", err)
	}
}

// TestEmptyGrantNamesRefused: a null or empty group, subject, approver or exempt group would match
// a token without a subject or with an empty groups claim, so it must not load.
func TestEmptyGrantNamesRefused(t *testing.T) {
	for _, c := range []struct{ text, field string }{
		{review20Base + "  - subjects: [~]\n    targets: [db]\n", "grants[1].subjects[0]"},
		{review20Base + "  - subjects: [\"\"]\n    targets: [db]\n", "grants[1].subjects[0]"},
		{review20Base + "  - groups: [eng, ~]\n    targets: [db]\n", "grants[1].groups[1]"},
		{review20Base + "rules:\n  - {name: a, when: 'sql.writes', action: approve, approvers: [~]}\n", "rules[0].approvers[0]"},
		{review20Base + "masking: {exempt_groups: [\"\"]}\n", "masking.exempt_groups[0]"},
	} {
		p, err := Parse("p.yaml", []byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.field) {
			if p != nil {
				ok, _ := p.Granted("db", "", []string{""})
				t.Errorf("%s: loaded (an identity with no subject and an empty group granted: %v)", c.field, ok)
				continue
			}
			t.Errorf("%s: err %v", c.field, err)
		}
	}
}

// TestV4MappedNetworkMatchesItsIPv4Network: destinations are matched unmapped, so a v4-mapped
// network in the policy must match the IPv4 addresses it maps (it loaded and matched nothing).
func TestV4MappedNetworkMatchesItsIPv4Network(t *testing.T) {
	p, err := Parse("p.yaml", []byte("version: 1\ntargets:\n  - {name: x, protocol: tcp, match: {addresses: [\"::ffff:198.18.0.0/111\"], ports: [7000]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]bool{"198.18.0.2:7000": true, "198.19.255.1:7000": true, "[::ffff:198.18.0.2]:7000": true, "198.20.0.1:7000": false} {
		if got := p.TargetFor(netip.MustParseAddrPort(dst)) != nil; got != want {
			t.Errorf("%s: matched %v, want %v", dst, got, want)
		}
	}
	if _, err := Parse("p.yaml", []byte("version: 1\ntargets:\n  - {name: x, protocol: tcp, match: {addresses: [\"::ffff:0:0/95\"], ports: [7000]}}\n")); err == nil {
		t.Error("a v4-mapped network shorter than /96 loaded")
	}
}

// TestSNIPatternWithRootDotMatches: names are compared without their root dot, so a pattern
// written with one must match (it loaded and matched nothing).
func TestSNIPatternWithRootDotMatches(t *testing.T) {
	p, err := Parse("p.yaml", []byte("version: 1\ntargets:\n  - {name: x, protocol: tls-passthrough, match: {sni: [API.Example.com., \"*.example.org.\"], ports: [443]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("192.0.2.1:443")
	for _, name := range []string{"api.example.com", "api.example.com.", "a.example.org"} {
		if p.TargetForSNI(name, dst) == nil {
			t.Errorf("%s: no target", name)
		}
	}
	if _, err := Parse("p.yaml", []byte("version: 1\ntargets:\n  - {name: x, protocol: tls-passthrough, match: {sni: [\".\"], ports: [443]}}\n")); err == nil {
		t.Error(`pattern "." loaded`)
	}
}

// TestTargetShadowedByEarlierTargetRefused: the first address target that matches takes a
// connection, so a narrower target after a broader one (here a postgres target inside a network a
// tcp target relays, which would reach the database with no statement rules, masking or recording)
// must not load; a catch-all after narrower targets, and disjoint targets, still load.
func TestTargetShadowedByEarlierTargetRefused(t *testing.T) {
	const pg = "    protocol: postgres\n    upstream: {user: u, password_file: /p, tls: require}\n"
	target := func(name, match, rest string) string {
		return "  - name: " + name + "\n    match: " + match + "\n" + rest
	}
	tcp := "    protocol: tcp\n"
	tls := "    protocol: tls-passthrough\n"
	for _, c := range []struct {
		name    string
		targets string
		refused string // the shadowed target's field, "" when it must load
	}{
		{"postgres behind a tcp network", target("net", "{addresses: [198.18.0.0/15]}", tcp) + target("db", "{addresses: [198.18.1.2], ports: [5432]}", pg), "targets[1].match"},
		{"host behind its network on the same port", target("net", "{addresses: [198.18.0.0/15], ports: [5432]}", pg) + target("db", "{addresses: [198.18.1.2], ports: [5432]}", pg), "targets[1].match"},
		{"one port behind every port of a host", target("host", "{addresses: [198.18.1.2]}", tcp) + target("db", "{addresses: [198.18.1.2], ports: [5432]}", pg), "targets[1].match"},
		{"the same match twice", target("a", "{addresses: [198.18.1.2], ports: [5432]}", pg) + target("b", "{addresses: [198.18.1.2], ports: [5432]}", pg), "targets[1].match"},
		{"v6 host behind its network", target("net", "{addresses: [\"2001:2::/48\"], ports: [5432]}", tcp) + target("db", "{addresses: [\"2001:2::5\"], ports: [5432]}", pg), "targets[1].match"},
		{"sni target behind an address target", target("cdn", "{addresses: [198.18.1.7], ports: [443], sni: [api.cdn.test]}", tls) + target("net", "{addresses: [198.18.0.0/15]}", tcp), "targets[0].match"},
		{"catch-all last", target("db", "{addresses: [198.18.1.2], ports: [5432]}", pg) + target("net", "{addresses: [198.18.0.0/15]}", tcp) + target("all", "{addresses: [0.0.0.0/0]}", tcp), ""},
		{"same host, more ports last", target("db", "{addresses: [198.18.1.2], ports: [5432]}", pg) + target("host", "{addresses: [198.18.1.2]}", tcp), ""},
		{"other ports", target("net", "{addresses: [198.18.0.0/15], ports: [7000]}", tcp) + target("db", "{addresses: [198.18.1.2], ports: [5432]}", pg), ""},
		{"other families", target("net", "{addresses: [\"::/0\"], ports: [5432]}", tcp) + target("db", "{addresses: [198.18.1.2], ports: [5432]}", pg), ""},
		{"sni alone beside a network", target("net", "{addresses: [198.18.0.0/15]}", tcp) + target("llm", "{sni: [\"*.openai.com\"], ports: [443]}", tls), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte("version: 1\ntargets:\n"+c.targets))
			switch {
			case c.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.refused != "" && err == nil:
				t.Fatalf("loaded; 198.18.1.2:5432 goes to %q", p.TargetFor(netip.MustParseAddrPort("198.18.1.2:5432")).Name)
			case c.refused != "" && (!strings.Contains(err.Error(), c.refused) || !strings.Contains(err.Error(), "first")):
				t.Fatalf("error %q does not name %s and what takes its connections", err, c.refused)
			}
		})
	}
}
