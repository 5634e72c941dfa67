package policy

import (
	"strings"
	"testing"
)

// TestUpstreamAddressIsAHostAndPort: upstream.address is where the proxy dials, as root and
// unenforced, with the target's credential. An address with no host (":8080") dials this machine
// itself, which the host-only rules keep from every target that does not name it; a URL or an
// empty port is no address at all. Each must be refused when the policy loads, not found out by
// the first request.
func TestUpstreamAddressIsAHostAndPort(t *testing.T) {
	for _, c := range []struct {
		address string
		ok      bool
	}{
		{"api.internal:443", true},
		{"198.18.1.4:80", true},
		{"[2001:db8::1]:443", true},
		{":8080", false},
		{"http://api.internal:443", false},
		{"api.internal:", false},
		{"api internal:80", false},
		{"api.internal:99999", false},
	} {
		for _, proto := range []string{ProtoHTTP, ProtoPostgres} {
			text := httpTarget(oneHost, `{address: "`+c.address+`", password_file: /s, tls: disable}`)
			if proto == ProtoPostgres {
				text = strings.Replace(text, "protocol: http", "protocol: postgres", 1)
				text = strings.Replace(text, "password_file: /s", "user: u, password_file: /s", 1)
			}
			_, err := Parse("p.yaml", []byte(text))
			switch {
			case c.ok && err != nil:
				t.Errorf("%s address %q refused: %v", proto, c.address, err)
			case !c.ok && err == nil:
				t.Errorf("%s address %q loaded; want a refusal of targets[0].upstream.address", proto, c.address)
			case !c.ok && !strings.Contains(err.Error(), "targets[0].upstream.address"):
				t.Errorf("%s address %q: %v; want it to name targets[0].upstream.address", proto, c.address, err)
			}
		}
	}
}

// TestCredentialGoesOnlyWhereThePolicySays: where a target matches a network, IPv6 included, and
// names no upstream.address, the agent picks the host that would get the credential: only a
// certificate for server_name may then prove who answers. One address (v4-mapped or IPv6 alone)
// is no choice.
func TestCredentialGoesOnlyWhereThePolicySays(t *testing.T) {
	for _, c := range []struct {
		name, match, upstream string
		refused               string
	}{
		{"IPv6 network, secret, verified by address", `{addresses: ["2001:db8::/64"], ports: [443]}`, "{password_file: /s}", "the agent picks the host the proxy sends the credential to"},
		{"IPv6 network, secret, in clear", `{addresses: ["2001:db8::/64"], ports: [80]}`, "{password_file: /s, tls: disable}", "the agent picks the host"},
		{"IPv6 network, secret, verify-ca with a name", `{addresses: ["2001:db8::/64"], ports: [443]}`, "{password_env: K, tls: verify-ca, ca_file: /ca.pem, server_name: api.internal}", "proves nothing"},
		{"v4-mapped network, secret", `{addresses: ["::ffff:198.18.0.0/111"], ports: [443]}`, "{password_file: /s}", "the agent picks the host"},
		{"IPv6 network, secret, verify-full with a name", `{addresses: ["2001:db8::/64"], ports: [443]}`, "{password_file: /s, server_name: api.internal}", ""},
		{"IPv6 network, secret, fixed address", `{addresses: ["2001:db8::/64"], ports: [80]}`, `{password_file: /s, address: "[2001:db8::7]:80", tls: disable}`, ""},
		{"one IPv6 address, secret", `{addresses: ["2001:db8::7"], ports: [443]}`, "{password_file: /s}", ""},
		{"one v4-mapped address, secret", `{addresses: ["::ffff:198.18.1.3"], ports: [443]}`, "{password_file: /s}", ""},
		{"one v4-mapped /128, secret", `{addresses: ["::ffff:198.18.1.3/128"], ports: [443]}`, "{password_file: /s}", ""},
		{"IPv6 network, no secret", `{addresses: ["2001:db8::/64"], ports: [80]}`, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(httpTarget(c.match, c.upstream)))
			switch {
			case c.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.refused != "" && err == nil:
				t.Fatalf("loaded; want a refusal saying %q", c.refused)
			case c.refused != "" && (!strings.Contains(err.Error(), c.refused) || !strings.Contains(err.Error(), "targets[0].upstream.tls")):
				t.Fatalf("error %q; want targets[0].upstream.tls and %q", err, c.refused)
			}
		})
	}
}
