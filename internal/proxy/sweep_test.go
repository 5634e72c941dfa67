package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// fixedOrigin stands in for the kernel's origin lookup (tested with real programs in
// internal/redirect): every connection came from a process that connected to dst.
type fixedOrigin struct{ dst netip.AddrPort }

func (f fixedOrigin) Mode() string { return "test" }
func (f fixedOrigin) Origin(*net.TCPConn) (redirect.Origin, error) {
	return redirect.Origin{Dst: f.dst}, nil
}
func (f fixedOrigin) Status() (redirect.Status, error) { return redirect.Status{}, nil }
func (f fixedOrigin) Close() error                     { return nil }

type countingHandler struct{ served atomic.Int32 }

func (h *countingHandler) Serve(ctx context.Context, c *Conn) error {
	h.served.Add(1)
	c.Client.Write([]byte("served"))
	return nil
}

// serveTest serves s on a loopback port until the test ends, and returns its address.
func serveTest(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		ln.Close()
	})
	go s.Serve(ctx, ln)
	return ln.Addr().String()
}

// localTCPPolicy is a policy with one target, "local": tcp to 127.0.0.1:5999.
func localTCPPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	pol, err := policy.Parse("p.yaml", []byte(`version: 1
targets:
  - name: local
    match: {addresses: ["127.0.0.1"], ports: [5999]}
    protocol: tcp
`))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// TestConnectionAuthorisedDuringASweepIsClosed: a logout, an expiry or a reload that closes
// connections (CloseWhere) while another is between its policy read and becoming active cannot
// see it; that connection is closed instead of served with what was revoked, if the sweep would
// have closed it. Must hold: a connection is served only if no sweep it missed matches it.
func TestConnectionAuthorisedDuringASweepIsClosed(t *testing.T) {
	pol := localTCPPolicy(t)
	var current atomic.Pointer[policy.Policy]
	current.Store(pol)
	h := &countingHandler{}
	var during atomic.Pointer[func(s *Server)]
	s := &Server{
		Redirector: fixedOrigin{netip.MustParseAddrPort("127.0.0.1:5999")},
		Policy:     current.Load,
		Handlers:   map[string]Handler{"tcp": h},
		Metrics:    metrics.New(),
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	s.Authorize = func(ctx context.Context, c *Conn) (any, error) {
		(*during.Load())(s)
		return "alice", nil
	}
	addr := serveTest(t, s)

	for _, c := range []struct {
		name   string
		during func(s *Server)
		served bool
	}{
		{"nothing changes", func(*Server) {}, true},
		{"its session's connections are closed meanwhile", func(s *Server) { s.CloseWhere(func(c *Conn) bool { return c.Identity == "alice" }) }, false},
		{"another session's connections are closed meanwhile", func(s *Server) { s.CloseWhere(func(c *Conn) bool { return c.Identity == "bob" }) }, true},
		{"more sweeps than are remembered", func(s *Server) {
			for range 9 {
				s.CloseWhere(func(c *Conn) bool { return false })
			}
		}, false},
		{"the policy is reloaded meanwhile", func(*Server) {
			p2, _ := policy.Parse("p.yaml", []byte("version: 1\ntargets:\n  - name: local\n    match: {addresses: [\"127.0.0.1\"], ports: [5999]}\n    protocol: tcp\n"))
			current.Store(p2)
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			during.Store(&c.during)
			before := h.served.Load()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, _ := io.ReadAll(conn)
			if served := h.served.Load() > before; served != c.served || (string(got) == "served") != c.served {
				t.Errorf("served %v (%q), want %v", served, got, c.served)
			}
		})
	}
}
