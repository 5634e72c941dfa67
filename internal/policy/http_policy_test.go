package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy/rules"
)

// httpTarget is a policy with one http target matching match, with the upstream given ("" for
// none).
func httpTarget(match, upstream string) string {
	text := "version: 1\ntargets:\n  - name: api\n    protocol: http\n    match: " + match + "\n"
	if upstream != "" {
		text += "    upstream: " + upstream + "\n"
	}
	return text
}

const oneHost = "{addresses: [198.18.1.3], ports: [8080]}"

// TestHTTPUpstreamValidation: what an http target's upstream may say. Its secret is optional; with
// one, the credential goes only over verified TLS unless tls: disable is written, in one header
// the proxy does not own, and never to a host the agent picks. Fields of other protocols are
// refused, and the http fields on other protocols.
func TestHTTPUpstreamValidation(t *testing.T) {
	for _, c := range []struct {
		name, text string
		refused    []string // substrings of the error; none when the policy must load
	}{
		{"no upstream", httpTarget(oneHost, ""), nil},
		{"address only", httpTarget(oneHost, `{address: "198.18.1.4:80"}`), nil},
		{"bearer secret", httpTarget(oneHost, "{password_file: /etc/enforcer/secrets/api}"), nil},
		{"secret in a header", httpTarget(oneHost, "{password_env: API_KEY, header: X-Api-Key}"), nil},
		{"basic with a CA", httpTarget(oneHost, "{user: svc, password_file: /s, tls: verify-ca, ca_file: /ca.pem}"), nil},
		{"secret in clear, written", httpTarget(oneHost, "{password_file: /s, tls: disable}"), nil},
		{"virtual host over verified TLS", httpTarget(oneHost, `{address: "198.18.1.4:443", host: "api.example.com:8443", tls: verify-full, ca_file: /ca.pem, server_name: api.example.com}`), nil},
		{"IPv6 host", httpTarget(oneHost, `{host: "[2001:db8::1]:8080"}`), nil},
		{"IPv4 host", httpTarget(oneHost, `{host: "198.18.1.3"}`), nil},
		{"network without a secret", httpTarget("{addresses: [198.18.0.0/15], ports: [80]}", ""), nil},
		{"network, secret, verify-full with a name", httpTarget("{addresses: [198.18.0.0/15], ports: [443]}", "{password_file: /s, server_name: api.internal}"), nil},
		{"network, secret, fixed address", httpTarget("{addresses: [198.18.0.0/15], ports: [443]}", `{password_file: /s, address: "198.18.1.3:443", tls: disable}`), nil},

		{"tls require", httpTarget(oneHost, "{password_file: /s, tls: require}"), []string{"p.yaml:6: targets[0].upstream.tls", "require is not offered for http targets", "go to whoever does"}},
		{"unknown tls mode", httpTarget(oneHost, "{tls: strict}"), []string{"targets[0].upstream.tls", `unknown mode "strict" (disable, verify-ca, verify-full)`}},
		{"verify-ca without a CA", httpTarget(oneHost, "{tls: verify-ca}"), []string{"targets[0].upstream.ca_file", "required with tls: verify-ca"}},
		{"CA file with TLS off by default", httpTarget(oneHost, "{ca_file: /ca.pem}"), []string{"targets[0].upstream.ca_file", "TLS to the server is off (no tls written and no secret to protect)", "tls: verify-full"}},
		{"server name with TLS off", httpTarget(oneHost, "{password_file: /s, tls: disable, server_name: api}"), []string{"targets[0].upstream.server_name", "off (tls: disable)"}},
		{"database", httpTarget(oneHost, "{database: app}"), []string{"targets[0].upstream.database", "only postgres targets have a database"}},
		{"auth", httpTarget(oneHost, "{password_file: /s, auth: [md5]}"), []string{"targets[0].upstream.auth", "only postgres targets choose login methods"}},
		{"two secrets", httpTarget(oneHost, "{password_file: /s, password_env: K}"), []string{"targets[0].upstream", "name one secret"}},
		{"relative secret file", httpTarget(oneHost, "{password_file: secrets/api}"), []string{"targets[0].upstream.password_file", "absolute"}},
		{"header without a secret", httpTarget(oneHost, "{header: X-Api-Key}"), []string{"targets[0].upstream.header", "a header without a secret"}},
		{"header and user", httpTarget(oneHost, "{user: svc, header: X-Api-Key, password_file: /s}"), []string{"targets[0].upstream.header", "header and user together"}},
		{"header not a token", httpTarget(oneHost, `{header: "X Api Key", password_file: /s}`), []string{"targets[0].upstream.header", `"X Api Key" is not a header name`}},
		{"header with a colon", httpTarget(oneHost, `{header: "X-Key:", password_file: /s}`), []string{"is not a header name"}},
		{"header Host", httpTarget(oneHost, "{header: Host, password_file: /s}"), []string{"targets[0].upstream.header", "the proxy sets or removes Host itself"}},
		{"header Content-Length", httpTarget(oneHost, "{header: content-length, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"header Transfer-Encoding", httpTarget(oneHost, "{header: Transfer-Encoding, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"header Connection", httpTarget(oneHost, "{header: CONNECTION, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"header Proxy-Authorization", httpTarget(oneHost, "{header: Proxy-Authorization, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"header X-Forwarded-For", httpTarget(oneHost, "{header: X-Forwarded-For, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"header Accept-Encoding", httpTarget(oneHost, "{header: accept-encoding, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"header Range", httpTarget(oneHost, "{header: Range, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"header Forwarded", httpTarget(oneHost, "{header: Forwarded, password_file: /s}"), []string{"the proxy sets or removes"}},
		{"user without a secret", httpTarget(oneHost, "{user: svc}"), []string{"targets[0].upstream.user", "HTTP Basic needs password_file or password_env"}},
		{"user with a colon", httpTarget(oneHost, `{user: "svc:x", password_file: /s}`), []string{"targets[0].upstream.user", "cannot hold ':'"}},
		{"host with a path", httpTarget(oneHost, "{host: api.example.com/admin}"), []string{"targets[0].upstream.host", `"api.example.com/admin" is not a Host header`}},
		{"host with a user", httpTarget(oneHost, "{host: evil@api.example.com}"), []string{"is not a Host header"}},
		{"host with a space", httpTarget(oneHost, `{host: "api .example.com"}`), []string{"is not a Host header"}},
		{"host with a line break", httpTarget(oneHost, `{host: "api\r\nX-Injected: 1"}`), []string{"is not a Host header"}},
		{"host with a bad port", httpTarget(oneHost, "{host: \"api:99999\"}"), []string{"is not a Host header"}},
		{"host with an empty port", httpTarget(oneHost, "{host: \"api:\"}"), []string{"is not a Host header"}},
		{"host with a bad IPv6", httpTarget(oneHost, "{host: \"[fe80::1%eth0]\"}"), []string{"is not a Host header"}},
		{"address not host:port", httpTarget(oneHost, "{address: api.internal}"), []string{"targets[0].upstream.address", "want host:port"}},
		// Must hold: where the agent picks the host, no credential goes to a host of its own.
		{"network, secret, TLS by default", httpTarget("{addresses: [198.18.0.0/15], ports: [443]}", "{password_file: /s}"), []string{"targets[0].upstream.tls", "the agent picks the host the proxy sends the credential to", "server_name"}},
		{"network, secret, in clear", httpTarget("{addresses: [198.18.0.0/15], ports: [80]}", "{password_file: /s, tls: disable}"), []string{"targets[0].upstream.tls", "agent picks the host", "upstream.address"}},
		{"network, secret, verify-ca", httpTarget("{addresses: [198.18.0.0/15], ports: [443]}", "{password_file: /s, tls: verify-ca, ca_file: /ca.pem, server_name: api}"), []string{"targets[0].upstream.tls", "proves nothing"}},
		// Matched on SNI, the agent speaks TLS: it is kept upstream, checked against the name.
		{"sni on http", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [api.example.com], ports: [443]}}\n", nil},
		{"sni on http, a credential", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [api.example.com], ports: [443]}, upstream: {password_file: /s}}\n", nil},
		// Must hold: under a wildcard the agent picks the name, so the credential needs its own.
		{"a wildcard, a credential", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [\"*.example.com\"], ports: [443]}, upstream: {password_file: /s}}\n", []string{"targets[0].upstream", "wildcard name", "server_name"}},
		{"a wildcard, a credential, server_name", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [\"*.example.com\"], ports: [443]}, upstream: {password_file: /s, server_name: api.example.com}}\n", nil},
		{"a wildcard, a credential, a pinned host", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [\"*.example.com\"], ports: [443]}, upstream: {password_file: /s, host: api.example.com}}\n", nil},
		{"a wildcard, no credential", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [\"*.example.com\"], ports: [443]}}\n", nil},
		{"sni, a credential, verify-ca", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [api.example.com], ports: [443]}, upstream: {password_file: /s, tls: verify-ca, ca_file: /ca.pem}}\n", []string{"targets[0].upstream.tls", "verify-ca checks no name"}},
		{"sni behind a catch-all on its port", "version: 1\ntargets:\n  - {name: any, protocol: tcp, match: {addresses: [0.0.0.0/0], ports: [443]}}\n  - {name: api, protocol: http, match: {sni: [api.example.com], ports: [443]}}\n", []string{"targets[1].match", "takes every connection"}},
		{"sni on http, ca_file and no tls written", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [api.example.com], ports: [443]}, upstream: {ca_file: /ca.pem}}\n", nil},
		{"sni and a network, a credential", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {addresses: [198.18.0.0/15], sni: [api.example.com], ports: [443]}, upstream: {password_file: /s}}\n", nil},
		{"sni on http, in clear", "version: 1\ntargets:\n  - {name: api, protocol: http, match: {sni: [api.example.com], ports: [443]}, upstream: {tls: disable}}\n", []string{"targets[0].upstream.tls", "speak TLS"}},
		{"sni on postgres", "version: 1\ntargets:\n  - {name: db, protocol: postgres, match: {sni: [db.example.com], ports: [5432]}, upstream: {user: u, password_file: /p}}\n", []string{"targets[0].match.sni", "only tls-passthrough and http targets match on SNI"}},
		{"unknown protocol names http", "version: 1\ntargets:\n  - {name: x, protocol: https, match: {addresses: [198.18.1.3]}}\n", []string{"one of tcp, tls-passthrough, postgres, http"}},
		// The http fields belong to http targets.
		{"header on postgres", "version: 1\ntargets:\n  - {name: db, protocol: postgres, match: {addresses: [198.18.1.2]}, upstream: {user: u, password_file: /p, tls: disable, header: X-Api-Key}}\n", []string{"targets[0].upstream.header", "only http targets"}},
		{"host on postgres", "version: 1\ntargets:\n  - {name: db, protocol: postgres, match: {addresses: [198.18.1.2]}, upstream: {user: u, password_file: /p, tls: disable, host: db}}\n", []string{"targets[0].upstream.host", "only http targets send a Host header"}},
		{"host on tcp", "version: 1\ntargets:\n  - {name: x, protocol: tcp, match: {addresses: [198.18.1.2]}, upstream: {host: api}}\n", []string{"targets[0].upstream.host", "only http targets"}},
		{"header on tls-passthrough", "version: 1\ntargets:\n  - {name: x, protocol: tls-passthrough, match: {addresses: [198.18.1.2]}, upstream: {header: X-Api-Key}}\n", []string{"targets[0].upstream.header", "only http targets"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(c.text))
			switch {
			case c.refused == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case c.refused == nil:
				if p.Targets[0].Protocol != ProtoHTTP {
					t.Fatalf("protocol %q", p.Targets[0].Protocol)
				}
			case err == nil:
				t.Fatal("loaded")
			default:
				for _, w := range c.refused {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
			}
		})
	}
}

// TestHTTPTLSAndCredentialKind: the TLS mode and credential an http upstream gets, which the
// daemon follows. A secret never travels in clear unless tls: disable is written.
func TestHTTPTLSAndCredentialKind(t *testing.T) {
	for _, c := range []struct {
		name      string
		upstream  Upstream
		tls, kind string
	}{
		{"nothing", Upstream{}, "disable", ""},
		{"address only", Upstream{Address: "198.18.1.4:80"}, "disable", ""},
		{"verify-full without a secret", Upstream{TLS: "verify-full"}, "verify-full", ""},
		{"bearer from a file", Upstream{PasswordFile: "/s"}, "verify-full", HTTPCredentialBearer},
		{"bearer from the environment", Upstream{PasswordEnv: "K"}, "verify-full", HTTPCredentialBearer},
		{"bearer in clear, written", Upstream{PasswordFile: "/s", TLS: "disable"}, "disable", HTTPCredentialBearer},
		{"basic", Upstream{User: "svc", PasswordFile: "/s", TLS: "verify-ca", CAFile: "/ca"}, "verify-ca", HTTPCredentialBasic},
		{"header", Upstream{Header: "X-Api-Key", PasswordEnv: "K"}, "verify-full", HTTPCredentialHeader},
		{"user alone is no credential", Upstream{User: "svc"}, "disable", ""},
	} {
		if got := c.upstream.HTTPTLS(); got != c.tls {
			t.Errorf("%s: HTTPTLS %q, want %q", c.name, got, c.tls)
		}
		if got := c.upstream.HTTPCredentialKind(); got != c.kind {
			t.Errorf("%s: HTTPCredentialKind %q, want %q", c.name, got, c.kind)
		}
	}
	if HTTPCredentialBearer != "bearer" || HTTPCredentialBasic != "basic" || HTTPCredentialHeader != "header" {
		t.Error("credential kinds are not the names the daemon reads")
	}
}

// TestHTTPTargetMatchedLikePostgres: an http target is matched by address and port, and is held
// to the same order and host-only checks: behind a broader target it is refused, a broad http
// target does not hand out the host's loopback, and it names its own address only on purpose.
func TestHTTPTargetMatchedLikePostgres(t *testing.T) {
	const api = "  - {name: api, protocol: http, match: {addresses: [198.18.1.3], ports: [8080]}}\n"
	for _, c := range []struct {
		name, targets, refused string
	}{
		{"http behind a tcp network", "  - {name: net, protocol: tcp, match: {addresses: [198.18.0.0/15]}}\n" + api, "targets[1].match"},
		{"http behind a broader http target", "  - {name: any, protocol: http, match: {addresses: [198.18.0.0/15], ports: [8080]}}\n" + api, "targets[1].match"},
		{"http before its network", api + "  - {name: net, protocol: tcp, match: {addresses: [198.18.0.0/15]}}\n", ""},
	} {
		_, err := Parse("p.yaml", []byte("version: 1\ntargets:\n"+c.targets))
		switch {
		case c.refused == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.refused != "" && (err == nil || !strings.Contains(err.Error(), c.refused) || !strings.Contains(err.Error(), "first")):
			t.Errorf("%s: got %v, want a refusal of %s", c.name, err, c.refused)
		}
	}
	p, err := Parse("p.yaml", []byte("version: 1\ntargets:\n"+api+
		"  - {name: local, protocol: http, match: {addresses: [127.0.0.1], ports: [9000]}}\n"+
		"  - {name: web, protocol: http, match: {addresses: [0.0.0.0/0], ports: [80, 9000]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]string{
		"198.18.1.3:8080": "api", "198.18.1.3:9999": "", "127.0.0.1:9000": "local",
		"203.0.113.9:80": "web", "127.0.0.1:80": "", "169.254.169.254:80": "",
	} {
		got := ""
		if tg := p.TargetFor(netip.MustParseAddrPort(dst)); tg != nil {
			got = tg.Name
		}
		if got != want {
			t.Errorf("%s: target %q, want %q", dst, got, want)
		}
	}
	own := netip.MustParseAddr("198.18.1.3")
	if !p.Targets[0].NamesOwnAddress(own) || p.Targets[2].NamesOwnAddress(own) {
		t.Error("NamesOwnAddress: an http target names its own single address, not one inside 0.0.0.0/0")
	}
}

// maskingTargets are one target of each protocol.
const maskingTargets = `version: 1
targets:
  - {name: db, protocol: postgres, match: {addresses: [198.18.1.2], ports: [5432]}, upstream: {user: u, password_file: /p, tls: disable}}
  - {name: db2, protocol: postgres, match: {addresses: [198.18.1.2], ports: [5433]}, upstream: {user: u, password_file: /p, tls: disable}}
  - {name: api, protocol: http, match: {addresses: [198.18.1.3], ports: [8080]}}
  - {name: relay, protocol: tcp, match: {addresses: [198.18.1.4], ports: [7000]}}
  - {name: llm, protocol: tls-passthrough, match: {sni: [api.llm.test], ports: [443]}}
`

// TestMaskingScope: masking covers every postgres and http target by default, the ones
// masking.targets names otherwise; a tcp or tls-passthrough target carries nothing that can be
// masked and may not be named there. The command line kept in the session log is masked on
// every target masking does not leave out.
func TestMaskingScope(t *testing.T) {
	type plans struct{ db, db2, api, relay, llm bool }
	for _, c := range []struct {
		name, masking string
		groups        []string
		traffic       plans // MaskFor != nil
		process       plans // MaskForProcess != nil
	}{
		{"default", "", nil, plans{true, true, true, false, false}, plans{true, true, true, true, true}},
		{"listed targets", "masking: {targets: [db, api]}\n", nil, plans{true, false, true, false, false}, plans{true, false, true, true, true}},
		{"exempt group", "masking: {exempt_groups: [dpo]}\n", []string{"eng", "dpo"}, plans{}, plans{}},
		{"not exempt", "masking: {exempt_groups: [dpo]}\n", []string{"eng"}, plans{true, true, true, false, false}, plans{true, true, true, true, true}},
		{"disabled", "masking: {disabled: true}\n", nil, plans{}, plans{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(maskingTargets+c.masking))
			if err != nil {
				t.Fatal(err)
			}
			for _, tg := range []struct {
				name             string
				traffic, process bool
			}{
				{"db", c.traffic.db, c.process.db}, {"db2", c.traffic.db2, c.process.db2}, {"api", c.traffic.api, c.process.api},
				{"relay", c.traffic.relay, c.process.relay}, {"llm", c.traffic.llm, c.process.llm},
			} {
				if got := p.MaskFor(tg.name, c.groups) != nil; got != tg.traffic {
					t.Errorf("MaskFor(%s) masks: %v, want %v", tg.name, got, tg.traffic)
				}
				if got := p.MaskForProcess(tg.name, c.groups) != nil; got != tg.process {
					t.Errorf("MaskForProcess(%s) masks: %v, want %v", tg.name, got, tg.process)
				}
			}
		})
	}
	for _, c := range []struct{ masking, want string }{
		{"masking: {targets: [db, relay]}\n", `p.yaml:8: masking.targets[1]: target "relay" is tcp: the enforcer relays its bytes and can mask nothing there`},
		{"masking: {targets: [llm]}\n", `target "llm" is tls-passthrough`},
		{"masking: {targets: [nope]}\n", `unknown target "nope"`},
	} {
		_, err := Parse("p.yaml", []byte(maskingTargets+c.masking))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.masking, err, c.want)
		}
	}
}

// TestHTTPRulesInPolicy: a policy's rules judge what they read; a rule reading both sql and
// http, or comparing a method spelt otherwise than requests reach it, does not load, and the
// error names its file, line and field.
func TestHTTPRulesInPolicy(t *testing.T) {
	base := httpTarget(oneHost, "") + "default: allow_reads\nrules:\n"
	p, err := Parse("p.yaml", []byte(base+
		"  - {name: no-deletes, when: 'http.method == \"DELETE\"', action: block, message: no deletes}\n"+
		"  - {name: refunds, when: 'http.path.startsWith(\"/v1/refunds\")', action: approve, approvers: [finance]}\n"+
		"  - {name: no-ddl, when: 'sql.ddl', action: block}\n"))
	if err != nil {
		t.Fatal(err)
	}
	conn := rules.NewConn(rules.Identity{Subject: "alice"}, rules.Process{Comm: "curl"}, rules.Target{Name: "api", Protocol: ProtoHTTP})
	for _, c := range []struct {
		method, path string
		action       rules.Action
		rule         string
	}{
		{"GET", "/v1/orders", rules.Allow, ""},
		{"DELETE", "/v1/orders/1", rules.Block, "no-deletes"},
		{"POST", "/v1/refunds", rules.Approve, "refunds"},
		{"POST", "/v1/orders", rules.Block, ""},
	} {
		d := p.Rules.DecideHTTP(conn, rules.HTTP{Method: c.method, Path: c.path})
		got := ""
		if d.Rule != nil {
			got = d.Rule.Rule
		}
		if d.Action != c.action || got != c.rule {
			t.Errorf("%s %s: %s by %q, want %s by %q", c.method, c.path, d.Action, got, c.action, c.rule)
		}
	}
	if s, ok := p.Rules.Scope("no-ddl"); !ok || s != rules.ScopeSQL {
		t.Errorf("no-ddl judges %v", s)
	}
	for _, c := range []struct{ rule, want string }{
		{"  - {name: mixed, when: 'sql.writes || http.method == \"POST\"', action: block}\n", `p.yaml:8: rules[0].when: rule "mixed": a rule reads sql or http, not both: split it`},
		{"  - {name: lower, when: 'http.method == \"delete\"', action: block}\n", `p.yaml:8: rules[0].when: rule "lower": http.method is never "delete"`},
	} {
		_, err := Parse("p.yaml", []byte(base+c.rule))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error containing %q", err, c.want)
		}
	}
}

// TestHTTPHost: the Host sent upstream. With a credential it is never the agent's: the pinned
// host, else the TLS server name, else the upstream's address, without the scheme's default port.
func TestHTTPHost(t *testing.T) {
	cases := []struct {
		up   Upstream
		addr string
		want string
	}{
		{Upstream{}, "10.0.0.7:8080", ""},
		{Upstream{Host: "api.internal"}, "10.0.0.7:8080", "api.internal"},
		{Upstream{PasswordFile: "/s", TLS: "disable"}, "10.0.0.7:8080", "10.0.0.7:8080"},
		{Upstream{PasswordFile: "/s", TLS: "disable"}, "10.0.0.7:80", "10.0.0.7"},
		{Upstream{PasswordFile: "/s"}, "api.internal:443", "api.internal"},
		{Upstream{PasswordFile: "/s", ServerName: "api.example"}, "10.0.0.7:443", "api.example"},
		{Upstream{PasswordFile: "/s", ServerName: "api.example"}, "10.0.0.7:8443", "api.example:8443"},
		{Upstream{PasswordFile: "/s"}, "[2001:db8::7]:443", "[2001:db8::7]"},
		{Upstream{PasswordFile: "/s", TLS: "disable"}, "[2001:db8::7]:8080", "[2001:db8::7]:8080"},
		{Upstream{PasswordFile: "/s", Host: "pinned.internal"}, "10.0.0.7:443", "pinned.internal"},
	}
	for _, c := range cases {
		if got := c.up.HTTPHost(c.addr); got != c.want {
			t.Errorf("%+v at %s: %q, want %q", c.up, c.addr, got, c.want)
		}
	}
}
