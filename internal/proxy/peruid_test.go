package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// uidOrigin stands in for the kernel's origin lookup: the next connection came from uid.
type uidOrigin struct {
	fixedOrigin
	uid *atomic.Uint32
}

func (u uidOrigin) Origin(c *net.TCPConn) (redirect.Origin, error) {
	o, err := u.fixedOrigin.Origin(c)
	o.UID = u.uid.Load()
	return o, err
}

// holdingHandler serves a connection until its client closes it, and tells a refused one why.
type holdingHandler struct{}

func (holdingHandler) Serve(ctx context.Context, c *Conn) error {
	c.Client.Write([]byte("served\n"))
	io.Copy(io.Discard, c.Client)
	return nil
}

func (holdingHandler) Refuse(ctx context.Context, c *Conn, reason error) {
	if errors.Is(reason, ErrTooManyConnections) {
		c.Client.Write([]byte("too many\n"))
		return
	}
	c.Client.Write([]byte("refused\n"))
}

// silentHandler serves a connection until its client closes it; it has no words for a refusal
// (a byte relay).
type silentHandler struct{}

func (silentHandler) Serve(ctx context.Context, c *Conn) error {
	c.Client.Write([]byte("served\n"))
	io.Copy(io.Discard, c.Client)
	return nil
}

// TestConnsPerUID: a uid's connections over MaxConnsPerUID are refused with
// ErrTooManyConnections in the protocol's own words, or closed when it has none; other uids are
// served meanwhile, and a closed connection makes room for the next.
func TestConnsPerUID(t *testing.T) {
	pol := localTCPPolicy(t)
	for _, tc := range []struct {
		name    string
		handler Handler
		refused string // what a refused client reads ("" for nothing)
	}{
		{"with a refusal", holdingHandler{}, "too many"},
		{"without one", silentHandler{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var uid atomic.Uint32
			s := &Server{
				Redirector:     uidOrigin{fixedOrigin{netip.MustParseAddrPort("127.0.0.1:5999")}, &uid},
				Policy:         func() *policy.Policy { return pol },
				Handlers:       map[string]Handler{"tcp": tc.handler},
				MaxConnsPerUID: 2,
				Metrics:        metrics.New(),
				Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
			}
			addr := serveTest(t, s)
			connect := func(from uint32, want string) net.Conn {
				t.Helper()
				uid.Store(from)
				c, err := net.Dial("tcp", addr)
				if err != nil {
					if want == "" && isEOFOrReset(err) {
						return nil // reset before the dial returned
					}
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if got := strings.TrimSpace(line); got != want || want == "" && !isEOFOrReset(err) {
					t.Fatalf("uid %d: %q (%v), want %q", from, got, err, want)
				}
				return c
			}
			first := connect(1000, "served")
			connect(1000, "served")
			connect(1000, tc.refused)
			connect(1001, "served")
			first.Close()
			deadline := time.Now().Add(5 * time.Second)
			for s.connsOf(1000) != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("uid 1000 still counted with %d connections after one closed", s.connsOf(1000))
				}
				time.Sleep(5 * time.Millisecond)
			}
			connect(1000, "served")
			connect(1000, tc.refused)
		})
	}
}

// isEOFOrReset says whether err is a connection the other side closed.
func isEOFOrReset(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func (s *Server) connsOf(uid uint32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perUID[uid]
}
