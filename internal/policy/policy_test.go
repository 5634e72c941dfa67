package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
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
  - name: cdn
    match: {addresses: [203.0.113.7], sni: [api.cdn.test], ports: [9443]}
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
		{"203.0.113.7:9443", ""}, // must hold: a target naming SNI too is matched only with a ClientHello
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
		name, dst string
		want      string
	}{
		{"api.openai.com", "192.0.2.1:443", "llm"},
		{"API.OpenAI.com.", "192.0.2.1:443", "llm"},
		{"a.b.openai.com", "192.0.2.1:443", ""},
		{"openai.com", "192.0.2.1:443", ""},
		{"api.anthropic.com", "192.0.2.1:443", "llm"},
		{"api.openai.com", "192.0.2.1:8443", ""},
		{"evil.com", "192.0.2.1:443", ""},
		// Must hold: a target that names addresses and SNI needs both.
		{"api.cdn.test", "203.0.113.7:9443", "cdn"},
		{"evil.example", "203.0.113.7:9443", ""},
		{"api.cdn.test", "203.0.113.8:9443", ""},
	}
	for _, c := range sni {
		got := p.TargetForSNI(c.name, netip.MustParseAddrPort(c.dst))
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != c.want {
			t.Errorf("TargetForSNI(%s, %s) = %q, want %q", c.name, c.dst, name, c.want)
		}
	}
	needs := map[string]bool{"192.0.2.1:443": true, "198.18.1.2:5432": false, "203.0.113.7:9443": true, "203.0.113.8:9443": false}
	for dst, want := range needs {
		if got := p.NeedsSNI(netip.MustParseAddrPort(dst)); got != want {
			t.Errorf("NeedsSNI(%s) = %v, want %v", dst, got, want)
		}
	}
	for _, tgt := range p.Targets {
		if want := tgt.Name == "llm"; tgt.ByNameOnly() != want {
			t.Errorf("%s: ByNameOnly = %v", tgt.Name, !want)
		}
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
		{"verify-ca without CA", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [1.1.1.1]}\n    upstream: {user: u, password_file: /p, tls: verify-ca}\n", []string{"targets[0].upstream.ca_file", "verify-ca"}},
		{"two secrets", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [1.1.1.1]}\n    upstream: {user: u, password_file: /p, password_env: P}\n", []string{"targets[0].upstream", "both set"}},
		// A relayed target reads nothing, so a secret or TLS mode written there would do nothing.
		{"tcp with a secret", "version: 1\ntargets:\n  - name: x\n    protocol: tcp\n    match: {addresses: [1.1.1.1]}\n    upstream: {address: \"10.0.0.1:22\", password_file: /p, tls: verify-full}\n", []string{"targets[0].upstream.password_file", "targets[0].upstream.tls", "only upstream.address"}},
		{"passthrough with a user", "version: 1\ntargets:\n  - name: x\n    protocol: tls-passthrough\n    match: {sni: [a.com], ports: [443]}\n    upstream: {user: u, auth: [md5]}\n", []string{"targets[0].upstream.user", "targets[0].upstream.auth", "tls-passthrough target"}},
		// Must hold: where the agent picks the host the proxy logs in to (a network, no upstream
		// address), no login that a host of its own could relay or read.
		{"network without tls", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [10.0.0.0/8]}\n    upstream: {user: u, password_file: /p, tls: disable}\n", []string{"bad.yaml:6: targets[0].upstream.tls", "upstream.address"}},
		{"network with verify-ca", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [10.0.0.0/8]}\n    upstream: {user: u, password_file: /p, tls: verify-ca, ca_file: /ca}\n", []string{"targets[0].upstream.tls", "server_name"}},
		{"network with verify-full and no name", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [10.0.0.0/8]}\n    upstream: {user: u, password_file: /p, tls: verify-full, ca_file: /ca}\n", []string{"targets[0].upstream.tls", "server_name"}},
		{"network with tls left out", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [10.0.0.0/8]}\n    upstream: {user: u, password_file: /p, ca_file: /ca}\n", []string{"targets[0].upstream.tls", "server_name"}}, // must hold: the default is verify-full
		{"network with md5", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [10.0.0.0/8]}\n    upstream: {user: u, password_file: /p, tls: require, auth: [scram-sha-256, md5]}\n", []string{"targets[0].upstream.auth", "only scram-sha-256"}},
		{"unknown auth", "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [10.0.0.1]}\n    upstream: {user: u, password_file: /p, auth: [kerberos]}\n", []string{"auth[0]", "kerberos"}},
		{"sni without ports", "version: 1\ntargets:\n  - {name: x, protocol: tls-passthrough, match: {sni: [a.com]}}\n", []string{"match.ports", "every port"}},
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

// TestShippedPolicySQL: how examples/policy.yaml judges statements on the database target. Each
// row must hold: the shipped policy is what most installations start from.
func TestShippedPolicySQL(t *testing.T) {
	p, err := Load("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conn := rules.NewConn(rules.Identity{Subject: "agent", Groups: []string{"engineering"}},
		rules.Process{Comm: "agent"}, rules.Target{Name: "prod-db", Protocol: ProtoPostgres, User: "agent_rw"})
	for _, c := range []struct {
		sql     string
		verdict rules.Action
		rule    string // a rule that must match ("": not checked)
	}{
		// Reads and harmless settings pass.
		{"SELECT * FROM customers WHERE id = 1", rules.Allow, ""},
		{"SELECT name, setting FROM pg_settings", rules.Allow, ""},
		{"SHOW search_path", rules.Allow, "harmless-session-settings"},
		{"SET application_name = 'search_path'", rules.Allow, "harmless-session-settings"}, // the name decides, not the text
		{"SET TIME ZONE 'UTC'", rules.Allow, "harmless-session-settings"},
		{"SET extra_float_digits = 3", rules.Allow, "harmless-session-settings"},
		// Escape format sends a bytea's printable bytes as themselves.
		{"SET bytea_output = escape", rules.Block, ""},
		// Rails sets standard_conforming_strings on at every connection; off would make the
		// proxy's parser read later statements unlike the server, and RESET may return to off.
		{"SET standard_conforming_strings = on", rules.Allow, "harmless-session-settings"},
		{"SET standard_conforming_strings = off", rules.Block, ""},
		{"RESET standard_conforming_strings", rules.Block, ""},
		{"SET statement_timeout = '5s'", rules.Block, ""}, // may lift the role's: see the comment
		// Must hold: the limits a DBA sets on the agent's role stay (an agent that lifted them
		// held transactions open past the role's idle timeout, or sorted with terabytes of
		// work_mem on production).
		{"SET statement_timeout = 0", rules.Block, ""},
		{"SET idle_in_transaction_session_timeout = 0", rules.Block, ""},
		{"SET lock_timeout = 0", rules.Block, ""},
		{"SET work_mem = '2000GB'", rules.Block, ""},
		{"SET default_transaction_read_only = off", rules.Block, ""},
		{"RESET statement_timeout", rules.Block, ""},
		// Isolation levels pass (pgjdbc's setTransactionIsolation); READ WRITE lifts a read-only
		// default, so it is privilege and refused, in every spelling.
		{"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", rules.Allow, "harmless-session-settings"},
		{"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", rules.Allow, "harmless-session-settings"},
		{"BEGIN ISOLATION LEVEL SERIALIZABLE", rules.Allow, ""},
		{"BEGIN READ WRITE", rules.Block, ""},
		{"START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE", rules.Block, ""},
		{"SET TRANSACTION READ WRITE", rules.Block, ""},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", rules.Block, ""},
		{"BEGIN", rules.Allow, ""},
		// search_path stays as the DBA set it, in every spelling.
		{"SET search_path = evil, pg_catalog", rules.Block, "no-search-path-changes"},
		{"SET SCHEMA 'evil'", rules.Block, "no-search-path-changes"},
		{`SET U&"\0073earch_path" = evil, pg_catalog`, rules.Block, "no-search-path-changes"},
		{"SET LOCAL search_path = evil", rules.Block, "no-search-path-changes"},
		{"RESET search_path", rules.Block, "no-search-path-changes"},
		{"SELECT set_config('search_path', 'evil', false)", rules.Block, "no-search-path-changes"},
		// Row locks are not reads.
		{"SELECT id FROM customers FOR UPDATE", rules.Block, "no-row-locks"},
		{"SELECT id FROM customers WHERE id = 1 FOR KEY SHARE", rules.Block, "no-row-locks"},
		{"WITH l AS (SELECT id FROM customers FOR NO KEY UPDATE) SELECT * FROM l", rules.Block, "no-row-locks"},
		{"DECLARE c CURSOR FOR SELECT id FROM customers FOR SHARE", rules.Block, "no-row-locks"},
		{"LOCK TABLE customers", rules.Block, "no-row-locks"},
		// A write to pg_settings is set_config: privilege (and unknown), never a reviewed write.
		{"UPDATE pg_settings SET setting = 'app_owner' WHERE name = 'role'", rules.Block, "no-privilege-changes"},
		{"UPDATE pg_catalog.pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", rules.Block, "no-privilege-changes"},
		// Privilege.
		{"ALTER ROLE agent_rw RENAME TO x", rules.Block, "no-privilege-changes"},
		{"ALTER DATABASE prod SET role = 'app_owner'", rules.Block, "no-privilege-changes"},
		{"CREATE SCHEMA s AUTHORIZATION app_owner", rules.Block, "no-privilege-changes"},
		{"ALTER VIEW v SET (security_invoker = false)", rules.Block, "no-privilege-changes"},
		{"SET ROLE app_owner", rules.Block, "no-privilege-changes"},
		// Writes are reviewed.
		{"UPDATE customers SET name = 'x' WHERE id = 1", rules.Approve, "writes-need-review"},
		{"UPDATE customers SET name = 'x'", rules.Block, "no-unbounded-writes"},
	} {
		d := p.Rules.Decide(conn, sqlclass.Classify(c.sql), nil)
		matched := c.rule == ""
		for _, m := range d.Matches() {
			matched = matched || m.Rule == c.rule
		}
		if d.Verdict != c.verdict || !matched {
			t.Errorf("%s: %s, want %s with rule %q matching\n%s", c.sql, d.Verdict, c.verdict, c.rule, rules.Explain(&d))
		}
	}
}

// TestVerifyFullWithSystemRoots: a postgres target may ask for verify-full without a CA file;
// the proxy then checks the server against the system's roots, as with tls left out.
func TestVerifyFullWithSystemRoots(t *testing.T) {
	text := "version: 1\ntargets:\n  - name: db\n    protocol: postgres\n    match: {addresses: [198.18.0.2], ports: [5432]}\n    upstream: {user: u, password_file: /p, tls: verify-full}\n"
	if _, err := Parse("ok.yaml", []byte(text)); err != nil {
		t.Fatal(err)
	}
}
