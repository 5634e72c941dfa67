package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
)

// TestHostsOwnAddressNeedsATargetNamingIt: a broad target (0.0.0.0/0 or ::/0 on a port) does not
// hand the agent the host's own non-loopback addresses, where the host's services listen on the
// wildcard address and the proxy would dial them as root; a target naming the address does.
func TestHostsOwnAddressNeedsATargetNamingIt(t *testing.T) {
	var own netip.Addr
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifa := range ifas {
		if pfx, err := netip.ParsePrefix(ifa.String()); err == nil && pfx.Addr().IsGlobalUnicast() {
			own = pfx.Addr()
			break
		}
	}
	if !own.IsValid() {
		t.Fatal("this host has no global unicast address to test with")
	}
	dst := netip.AddrPortFrom(own, 443)
	for _, c := range []struct {
		name, policy string
		served       bool
	}{
		{"any address", `version: 1
targets:
  - name: any-https
    match: {addresses: ["0.0.0.0/0", "::/0"], ports: [443]}
    protocol: tcp
`, false},
		{"the address itself", `version: 1
targets:
  - name: this-host
    match: {addresses: ["` + own.String() + `"], ports: [443]}
    protocol: tcp
  - name: any-https
    match: {addresses: ["0.0.0.0/0", "::/0"], ports: [443]}
    protocol: tcp
`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			pol, err := policy.Parse("p.yaml", []byte(c.policy))
			if err != nil {
				t.Fatal(err)
			}
			h := &countingHandler{}
			s := &Server{
				Redirector: fixedOrigin{dst},
				Policy:     func() *policy.Policy { return pol },
				Handlers:   map[string]Handler{"tcp": h},
				Metrics:    metrics.New(),
				Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			addr := serveTest(t, s)
			var got []byte
			// A refused connection is reset (no linger): it may fail already here.
			if conn, err := net.Dial("tcp", addr); err == nil {
				defer conn.Close()
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				got, _ = io.ReadAll(conn)
			}
			if served := h.served.Load() > 0; served != c.served {
				t.Errorf("connection to %s served %v (%q), want %v", dst, served, got, c.served)
			}
		})
	}
}

type sniHandler struct{ sni chan string }

func (h *sniHandler) Serve(ctx context.Context, c *Conn) error {
	h.sni <- c.SNI
	return nil
}

// TestConnectionKeepsTheNameItWasMatchedBy: a connection matched by its ClientHello carries the
// name (Conn.SNI), which a policy reload needs to tell whether the new policy still gives it the
// same target.
func TestConnectionKeepsTheNameItWasMatchedBy(t *testing.T) {
	pol, err := policy.Parse("p.yaml", []byte(`version: 1
targets:
  - name: api
    match: {addresses: ["198.18.0.0/15"], sni: ["*.example.com"], ports: [443]}
    protocol: tls-passthrough
`))
	if err != nil {
		t.Fatal(err)
	}
	h := &sniHandler{sni: make(chan string, 1)}
	s := &Server{
		Redirector: fixedOrigin{netip.MustParseAddrPort("198.18.9.9:443")},
		Policy:     func() *policy.Policy { return pol },
		Handlers:   map[string]Handler{policy.ProtoTLSPassthrough: h},
		Metrics:    metrics.New(),
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	addr := serveTest(t, s)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(clientHello(t, "API.example.com"))
	select {
	case got := <-h.sni:
		if got != "API.example.com" {
			t.Errorf("Conn.SNI %q, want the ClientHello's name", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not served")
	}
}
