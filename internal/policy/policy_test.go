package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const good = `version: 1
dns:
  resolvers: [198.18.1.2]
targets:
  - name: prod-db
    match: {addresses: [198.18.1.2], ports: [5432]}
    protocol: postgres
    upstream: {user: agent_ro, password_file: /etc/enforcer/secrets/prod-db, tls: disable}
  - name: internal
    match: {addresses: ["198.18.0.0/15", "2001:2::/48"], ports: [7000]}
    protocol: tcp
  - name: llm
    match: {sni: ["*.openai.com", "api.anthropic.com"], ports: [443]}
    protocol: tls-passthrough
grants:
  - groups: [engineering]
    targets: [prod-db, internal]
  - subjects: [alice]
    targets: [llm]
rules:
  - name: no-ddl
    when: 'sql.ddl'
    action: block
    message: no DDL on production
  - name: writes-need-review
    when: 'sql.writes && sql.has_where'
    action: approve
    approvers: [dba]
approvals: {timeout: 30s}
`

func TestParseAndMatch(t *testing.T) {
	p, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dst  string
		want string
	}{
		{"198.18.1.2:5432", "prod-db"},
		{"[::ffff:198.18.1.2]:5432", "prod-db"},
		{"198.18.1.2:7000", "internal"},
		{"198.19.255.1:7000", "internal"},
		{"[2001:2:0:1::2]:7000", "internal"},
		{"198.18.1.2:22", ""},
		{"10.0.0.1:5432", ""},
	}
	for _, c := range cases {
		got := p.TargetFor(netip.MustParseAddrPort(c.dst))
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != c.want {
			t.Errorf("TargetFor(%s) = %q, want %q", c.dst, name, c.want)
		}
	}
	sni := []struct {
		name string
		port uint16
		want string
	}{
		{"api.openai.com", 443, "llm"},
		{"API.OpenAI.com.", 443, "llm"},
		{"a.b.openai.com", 443, ""},
		{"openai.com", 443, ""},
		{"api.anthropic.com", 443, "llm"},
		{"api.openai.com", 8443, ""},
		{"evil.com", 443, ""},
	}
	for _, c := range sni {
		got := p.TargetForSNI(c.name, c.port)
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != c.want {
			t.Errorf("TargetForSNI(%s, %d) = %q, want %q", c.name, c.port, name, c.want)
		}
	}
	if !p.NeedsSNI(443) || p.NeedsSNI(5432) {
		t.Error("NeedsSNI wrong")
	}
	if ok, _ := p.Granted("prod-db", "bob", []string{"engineering"}); !ok {
		t.Error("engineering should reach prod-db")
	}
	if ok, msg := p.Granted("prod-db", "eve", []string{"sales"}); ok || !strings.Contains(msg, "prod-db") || !strings.Contains(msg, "engineering") {
		t.Errorf("sales refused with a message naming target and group, got %v %q", ok, msg)
	}
	if p.Rules == nil || p.Rules.Rules() != 2 || time.Duration(p.Approvals.Timeout) != 30*time.Second || p.RuleDefs["writes-need-review"].Approvers[0] != "dba" {
		t.Errorf("rules not compiled: %+v", p.Approvals)
	}
	if p.MaskFor("prod-db", []string{"engineering"}) == nil {
		t.Error("masking must be on by default")
	}
	q, err := Parse("m.yaml", []byte(good+"masking:\n  columns: [{match: users.email, style: redact}]\n  exempt_groups: [dpo]\n  targets: [prod-db]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if q.MaskFor("prod-db", []string{"dpo"}) != nil || q.MaskFor("internal", nil) != nil || q.MaskFor("prod-db", []string{"engineering"}) == nil {
		t.Error("MaskFor exemptions/targets wrong")
	}
	if ok, _ := p.Granted("llm", "alice", nil); !ok {
		t.Error("subject grant")
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string // substrings of the error
	}{
		{"unknown field", "version: 1\ntargetz: []\n", []string{"targetz"}},
		{"wrong type", "version: one\n", []string{"version"}},
		{"bad version", "version: 2\n", []string{"bad.yaml:1: version: unsupported version 2"}},
		{"unknown protocol", "version: 1\ntargets:\n  - name: x\n    match: {addresses: [1.2.3.4]}\n    protocol: ftp\n", []string{"bad.yaml:5: targets[0].protocol", "ftp"}},
		{"bad cidr", "version: 1\ntargets:\n  - name: x\n    protocol: tcp\n    match:\n      addresses: [1.2.3.400]\n", []string{"targets[0].match.addresses[0]", "1.2.3.400"}},
		{"duplicate name", "version: 1\ntargets:\n  - {name: x, protocol: tcp, match: {addresses: [1.1.1.1]}}\n  - {name: x, protocol: tcp, match: {addresses: [1.1.1.2]}}\n", []string{"bad.yaml:4", "duplicate"}},
		{"unknown grant target", "version: 1\ngrants:\n  - groups: [a]\n    targets: [nope]\n", []string{"bad.yaml:4", `unknown target "nope"`}},
		{"postgres without creds", "version: 1\ntargets:\n  - {name: db, protocol: postgres, match: {addresses: [1.1.1.1]}}\n", []string{"upstream"}},
		{"verify-full without CA", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [1.1.1.1]}\n    upstream: {user: u, password_file: /p, tls: verify-full}\n", []string{"ca_file"}},
		{"sni on tcp", "version: 1\ntargets:\n  - {name: x, protocol: tcp, match: {sni: [a.com]}}\n", []string{"only tls-passthrough"}},
		{"bad CEL", "version: 1\nrules:\n  - name: a\n    when: 'sql.kind == '\n    action: block\n  - name: b\n    when: 'sql.nope'\n    action: block\n", []string{"bad.yaml:3: rules[0].when", `rule "a"`, "bad.yaml:6: rules[1].when", `rule "b"`}},
		{"unknown action", "version: 1\nrules:\n  - {name: a, when: 'true', action: destroy}\n", []string{"destroy"}},
		{"approve without approvers", "version: 1\nrules:\n  - {name: a, when: 'sql.writes', action: approve}\n", []string{"bad.yaml:3", "approver groups"}},
		{"bad default", "version: 1\ndefault: yolo\n", []string{"bad.yaml:2", "yolo"}},
		{"bad duration", "version: 1\napprovals: {timeout: soon}\n", []string{"duration"}},
		{"unknown detector", "version: 1\nmasking:\n  detectors:\n    - {detectors: [credit_kard]}\n", []string{"masking", "credit_kard"}},
		{"bad masking style", "version: 1\nmasking:\n  columns:\n    - {match: users.email, style: blur}\n", []string{"bad.yaml:4", "blur"}},
		{"masking unknown target", "version: 1\nmasking: {targets: [nope]}\n", []string{"unknown target"}},
		{"bad resolver", "version: 1\ndns: {resolvers: [dns.google]}\n", []string{"bad.yaml:2", "dns.resolvers[0]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(c.text))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
