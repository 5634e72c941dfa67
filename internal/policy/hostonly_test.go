package policy

import (
	"net/netip"
	"testing"
)

// TestHostOnlyDestinationsNeedTheirOwnTarget: a broad target (0.0.0.0/0, ::/0, a port on any
// address) does not hand the agent the host's loopback, "this network", link-local (cloud
// metadata) or multicast addresses, which the proxy would dial as root outside the cgroup; a
// target naming such a range on purpose still matches.
func TestHostOnlyDestinationsNeedTheirOwnTarget(t *testing.T) {
	p, err := Parse("p.yaml", []byte(`version: 1
targets:
  - name: local-db
    match: {addresses: ["127.0.0.1", "::1"], ports: [5432]}
    protocol: tcp
  - name: metadata
    match: {addresses: ["169.254.169.254"], ports: [8080]}
    protocol: tcp
  - name: any-https
    match: {addresses: ["0.0.0.0/0", "::/0"], ports: [443, 5432, 8080, 9464]}
    protocol: tcp
`))
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]string{
		"127.0.0.1:5432":          "local-db",
		"[::1]:5432":              "local-db",
		"[::ffff:127.0.0.1]:5432": "local-db",
		"169.254.169.254:8080":    "metadata",
		"198.18.0.7:443":          "any-https",
		"[2001:db8::1]:443":       "any-https",
		"127.0.0.1:9464":          "", // the daemon's metrics and profiler
		"127.0.0.53:443":          "",
		"[::ffff:127.0.0.1]:443":  "",
		"0.0.0.0:443":             "",
		"[::]:443":                "",
		"[::1]:443":               "",
		"169.254.169.254:443":     "",
		"[fe80::1]:443":           "",
		"224.0.0.1:443":           "",
	} {
		got := ""
		if tg := p.TargetFor(netip.MustParseAddrPort(dst)); tg != nil {
			got = tg.Name
		}
		if got != want {
			t.Errorf("%s: target %q, want %q", dst, got, want)
		}
	}
}
