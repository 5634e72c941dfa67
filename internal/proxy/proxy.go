// Package proxy is the transparent proxy every enforced connection lands on: it learns the
// connection's origin from the redirector, picks the policy target, authorises the caller and
// hands the connection to the target protocol's handler. Denied connections are closed at once.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
	"golang.org/x/sys/unix"
)

// Conn is one accepted connection from an enforced process.
type Conn struct {
	ID       uint64
	Client   *net.TCPConn
	Origin   redirect.Origin
	Target   *policy.Target
	Identity any    // what Authorize returned (an identity session), nil before authorisation
	Peeked   []byte // bytes already read from Client (a TLS ClientHello) to send upstream first
	// SNI is the name the ClientHello gave, for a target matched by it ("" for one matched by
	// address alone): a reload matches the connection again by it.
	SNI     string
	Log     *slog.Logger
	Started time.Time

	// named is where a target matched by SNI alone goes: an address of that name, not the
	// agent's destination (see UpstreamAddr).
	named netip.AddrPort

	cancel          context.CancelFunc // ends the context the handler serves the Conn with
	closeOnce       sync.Once
	countsAtClose   atomic.Bool
	bytesFromClient atomic.Int64
	bytesToClient   atomic.Int64
}

// Close closes the client side and ends the context the handler serves it with, so handlers tear
// down their upstream and whatever waits (a held statement) at once. The socket's byte counters
// are read first (see ClientCounts).
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		in, out := socketCounts(c.Client)
		c.bytesFromClient.Store(in)
		c.bytesToClient.Store(out)
		c.countsAtClose.Store(true)
		c.Client.Close()
	})
}

// serveContext returns the context c is served with: ctx, ended by c.Close too.
func (c *Conn) serveContext(ctx context.Context) context.Context {
	ctx, c.cancel = context.WithCancel(ctx)
	return ctx
}

// ClientCounts returns the bytes the client's socket received and sent (retransmissions not
// counted twice), from the kernel's counters (TCP_INFO): everything the session moved,
// handshakes and TLS included. Read when the Conn was closed, or now if it is still open.
func (c *Conn) ClientCounts() (fromClient, toClient int64) {
	if c.countsAtClose.Load() {
		return c.bytesFromClient.Load(), c.bytesToClient.Load()
	}
	return socketCounts(c.Client)
}

// ServeConn is Client for a handler to serve: the same socket, whose Close is the Conn's, so the
// byte counts survive whichever side closes first. Underlying gives the TCP connection itself.
func (c *Conn) ServeConn() net.Conn { return &servedConn{TCPConn: c.Client, c: c} }

type servedConn struct {
	*net.TCPConn
	c *Conn
}

func (s *servedConn) Close() error {
	s.c.Close()
	return nil
}

// Underlying returns the TCP connection, for handlers that make raw socket calls on it.
func (s *servedConn) Underlying() *net.TCPConn { return s.TCPConn }

// socketCounts reads a TCP socket's byte counters; zeros if it is closed.
func socketCounts(tc *net.TCPConn) (in, out int64) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, 0
	}
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			in, out = int64(info.Bytes_received), int64(info.Bytes_sent-info.Bytes_retrans)
		}
	})
	return in, out
}

// Handler serves connections for one protocol.
type Handler interface {
	Serve(ctx context.Context, c *Conn) error
}

// Refuser is implemented by handlers that can tell the client why it was refused in the client's
// own protocol (a Postgres ErrorResponse, an HTTP status). Others are simply closed.
type Refuser interface {
	Refuse(ctx context.Context, c *Conn, reason error)
}

// Server accepts redirected connections and dispatches them.
type Server struct {
	Redirector redirect.Redirector
	Policy     func() *policy.Policy
	Handlers   map[string]Handler // by target protocol
	// Authorize ties the connection to a verified identity and checks grants. It returns the
	// identity to attach to the connection, or an error saying what the caller must do.
	Authorize func(ctx context.Context, c *Conn) (any, error)
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	// SNITimeout bounds how long a client may take to send its TLS ClientHello.
	SNITimeout time.Duration
	// LookupName resolves a name a ClientHello gave, for targets matched by SNI alone; nil
	// refuses such connections.
	LookupName func(ctx context.Context, name string) ([]netip.Addr, error)
	// MaxConnsPerUID bounds the connections the processes of one uid have through the proxy at
	// once (default 1024). Each costs the daemon descriptors, goroutines and buffers, so without
	// it one agent could exhaust them for every other user of the host. Those over it are
	// refused with ErrTooManyConnections.
	MaxConnsPerUID int

	// perUID counts the connections of each uid, under mu.
	perUID map[uint32]int
	// overLimit counts refusals over the limit since overLimitLogged (Unix ns) logged them.
	overLimit       atomic.Int64
	overLimitLogged atomic.Int64

	// own are this host's addresses (see checkOwnAddress).
	own ownAddrs

	nextID atomic.Uint64
	mu     sync.Mutex
	active map[uint64]*Conn
	// sweeps counts CloseWhere calls, and swept holds the matches of the latest: a connection
	// authorised while one ran (a logout, an expiry, a reload) was not yet active for it to
	// close, so track asks the matches it missed.
	sweeps uint64
	swept  [8]func(*Conn) bool
}

// Listen opens the proxy's listeners on 127.0.0.1 and [::1] at port: plain TCP, no MPTCP (Go's
// default for listeners), so the kernel-side tuple records match what accept() returns.
func Listen(ctx context.Context, port uint16) ([]*net.TCPListener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	var out []*net.TCPListener
	for _, host := range []string{"127.0.0.1", "::1"} {
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, fmt.Errorf("proxy listen on %s port %d: %w", host, port, err)
		}
		out = append(out, ln.(*net.TCPListener))
	}
	return out, nil
}

// Serve accepts on ln until ctx ends or ln is closed.
func (s *Server) Serve(ctx context.Context, ln *net.TCPListener) error {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.Log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.handle(ctx, c)
	}
}

func (s *Server) handle(ctx context.Context, client *net.TCPConn) {
	origin, err := s.Redirector.Origin(client)
	if err != nil {
		s.Metrics.OriginMisses.Inc()
		s.Log.Warn("refused connection without origin", "peer", client.RemoteAddr().String(), "err", err)
		client.SetLinger(0)
		client.Close()
		return
	}
	c := &Conn{
		ID:      s.nextID.Add(1),
		Client:  client,
		Origin:  origin,
		Started: time.Now(),
	}
	c.Log = s.Log.With("conn", c.ID, "dst", origin.Dst.String(), "pid", origin.PID, "comm", origin.Comm, "cgroup", origin.CgroupID)
	ctx = c.serveContext(ctx)
	defer c.Close()
	if !s.countConn(origin.UID) {
		s.refuseOverLimit(ctx, c)
		return
	}
	defer s.uncountConn(origin.UID)

	s.mu.Lock()
	sweeps := s.sweeps
	s.mu.Unlock()
	pol := s.Policy()
	target, err := s.pickTarget(pol, c)
	if err != nil {
		s.deny(c, "", err)
		return
	}
	if err := s.checkOwnAddress(c, target); err != nil {
		s.deny(c, target.Name, err)
		return
	}
	c.Target = target
	h := s.Handlers[target.Protocol]
	if h == nil {
		s.deny(c, target.Name, fmt.Errorf("no handler for protocol %s", target.Protocol))
		return
	}
	if s.Authorize != nil {
		id, err := s.Authorize(ctx, c)
		if err != nil {
			s.Metrics.Connections.WithLabelValues(target.Name, "unauthenticated").Inc()
			c.Log.Warn("connection refused", "target", target.Name, "reason", err.Error())
			if r, ok := h.(Refuser); ok {
				r.Refuse(ctx, c, err)
			}
			return
		}
		c.Identity = id
	}
	s.Metrics.Connections.WithLabelValues(target.Name, "allowed").Inc()
	s.Metrics.Active.WithLabelValues(target.Name).Inc()
	defer s.Metrics.Active.WithLabelValues(target.Name).Dec()
	if !s.track(c, sweeps, pol) {
		// A logout, an expiry or a reload came between the policy read and now; what it
		// revoked may include this connection, which it could not see. Connect again.
		c.Log.Info("connection closed: a session or the policy changed while it was authorised")
		return
	}
	defer s.untrack(c)
	c.Log.Info("connection", "target", target.Name, "protocol", target.Protocol)
	if err := h.Serve(ctx, c); err != nil && !isClosed(err) {
		c.Log.Warn("connection ended with error", "target", target.Name, "err", err)
	}
}

func (s *Server) pickTarget(pol *policy.Policy, c *Conn) (*policy.Target, error) {
	if pol == nil {
		return nil, errors.New("no policy loaded")
	}
	if t := pol.TargetFor(c.Origin.Dst); t != nil {
		return t, nil
	}
	if !pol.NeedsSNI(c.Origin.Dst) {
		return nil, fmt.Errorf("no target matches %s", c.Origin.Dst)
	}
	timeout := s.SNITimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	c.Client.SetReadDeadline(time.Now().Add(timeout))
	sni, peeked, err := readClientHello(c.Client)
	c.Client.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("read TLS ClientHello: %w", err)
	}
	c.Peeked, c.SNI = peeked, sni
	t := pol.TargetForSNI(sni, c.Origin.Dst)
	if t == nil {
		return nil, fmt.Errorf("no target matches SNI %q on %s", sni, c.Origin.Dst)
	}
	if t.ByNameOnly() && t.Upstream.Address == "" {
		if c.named, err = s.addressOf(sni, c.Origin.Dst); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// addressOf is where a connection that named host in its ClientHello goes: the agent's
// destination if it is one of host's addresses, else host's first one of the same family (the
// agent may have resolved it a while ago). A name (any ClientHello can carry one) must not let
// the agent pick the host, least of all one on this machine, which the daemon reaches unenforced:
// loopback, link-local, unspecified and multicast addresses are never used.
func (s *Server) addressOf(host string, dst netip.AddrPort) (netip.AddrPort, error) {
	if s.LookupName == nil {
		return netip.AddrPort{}, fmt.Errorf("SNI %q: no resolver to look it up", host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := s.LookupName(ctx, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("SNI %q: %w", host, err)
	}
	want := dst.Addr().Unmap()
	var first netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
			continue
		}
		if a == want {
			return netip.AddrPortFrom(a, dst.Port()), nil
		}
		if !first.IsValid() && a.Is4() == want.Is4() {
			first = a
		}
	}
	if !first.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("SNI %q: no usable address of its own among %v", host, addrs)
	}
	return netip.AddrPortFrom(first, dst.Port()), nil
}

// checkOwnAddress refuses a destination that is one of this host's own addresses (its LAN or
// bridge address, not only loopback) unless target t names it (policy.Target.NamesOwnAddress):
// the proxy dials it as root outside the cgroup, so a broad target (0.0.0.0/0 on 443, the LAN's
// network) would hand the agent whatever listens on the host's wildcard address (the daemon's
// metrics, the developer's databases and dev servers). The policy cannot tell such addresses
// from others; the proxy reads them.
func (s *Server) checkOwnAddress(c *Conn, t *policy.Target) error {
	if t.Upstream.Address != "" {
		return nil // the policy chose where it goes
	}
	a := c.Origin.Dst.Addr().Unmap()
	if c.named.IsValid() {
		a = c.named.Addr() // a name's answer may be this host too (a name the agent's DNS serves)
	}
	own, err := s.own.has(a)
	if err != nil {
		return fmt.Errorf("cannot tell whether %s is this host's own address: %w", a, err)
	}
	if own && !t.NamesOwnAddress(a) {
		return fmt.Errorf("%s is an address of this host, which target %q does not name", a, t.Name)
	}
	return nil
}

// ownAddrs caches this host's addresses, read again at most once a second (an address added
// since is refused at most that much later; only root adds addresses).
type ownAddrs struct {
	mu    sync.Mutex
	read  time.Time
	addrs map[netip.Addr]bool
}

func (o *ownAddrs) has(a netip.Addr) (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.addrs == nil || time.Since(o.read) > time.Second {
		ifas, err := net.InterfaceAddrs()
		if err != nil {
			return false, fmt.Errorf("list interface addresses: %w", err)
		}
		addrs := map[netip.Addr]bool{}
		for _, ifa := range ifas {
			if pfx, err := netip.ParsePrefix(ifa.String()); err == nil {
				addrs[pfx.Addr().Unmap().WithZone("")] = true
			}
		}
		o.addrs, o.read = addrs, time.Now()
	}
	return o.addrs[a.WithZone("")], nil
}

// ErrTooManyConnections refuses a connection over Server.MaxConnsPerUID.
var ErrTooManyConnections = errors.New("too many connections through the enforcer for this user")

const defaultMaxConnsPerUID = 1024

func (s *Server) maxConnsPerUID() int {
	if s.MaxConnsPerUID > 0 {
		return s.MaxConnsPerUID
	}
	return defaultMaxConnsPerUID
}

// countConn counts a connection of uid, unless uid has its limit already.
func (s *Server) countConn(uid uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUID[uid] >= s.maxConnsPerUID() {
		return false
	}
	if s.perUID == nil {
		s.perUID = map[uint32]int{}
	}
	s.perUID[uid]++
	return true
}

// refuseOverLimit refuses a connection over its uid's limit. Such connections are not counted,
// so nothing that can wait is done for them (no ClientHello is read, no name looked up), the
// refusal in the client's protocol gets a second, and the log hears of them once a second.
func (s *Server) refuseOverLimit(ctx context.Context, c *Conn) {
	name := ""
	var t *policy.Target
	if pol := s.Policy(); pol != nil {
		t = pol.TargetFor(c.Origin.Dst)
	}
	if t != nil {
		name = t.Name
	}
	s.Metrics.Connections.WithLabelValues(name, "too_many").Inc()
	n := s.overLimit.Add(1)
	if now, last := time.Now().UnixNano(), s.overLimitLogged.Load(); now-last >= int64(time.Second) && s.overLimitLogged.CompareAndSwap(last, now) {
		s.overLimit.Add(-n)
		c.Log.Warn("connections refused: their uid has too many through the enforcer", "uid", c.Origin.UID, "limit", s.maxConnsPerUID(), "refused", n)
	}
	var r Refuser
	if t != nil {
		r, _ = s.Handlers[t.Protocol].(Refuser)
	}
	if r == nil {
		c.Client.SetLinger(0)
		return
	}
	cut := time.AfterFunc(time.Second, func() { c.Client.Close() })
	defer cut.Stop()
	r.Refuse(ctx, c, ErrTooManyConnections)
}

func (s *Server) uncountConn(uid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUID[uid]--; s.perUID[uid] <= 0 {
		delete(s.perUID, uid)
	}
}

func (s *Server) deny(c *Conn, target string, reason error) {
	s.Metrics.Connections.WithLabelValues(target, "denied").Inc()
	c.Log.Info("connection denied", "reason", reason.Error())
	c.Client.SetLinger(0)
}

// track makes c active, unless a CloseWhere that ran since sweeps was read would have closed it
// (or so many ran that their matches are gone), or the policy is no longer pol: c was authorised
// against a state that changed, and the change could not close it.
func (s *Server) track(c *Conn, sweeps uint64, pol *policy.Policy) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Policy() != pol || s.sweeps-sweeps > uint64(len(s.swept)) {
		return false
	}
	for i := sweeps; i < s.sweeps; i++ {
		if s.swept[i%uint64(len(s.swept))](c) {
			return false
		}
	}
	if s.active == nil {
		s.active = map[uint64]*Conn{}
	}
	s.active[c.ID] = c
	return true
}

func (s *Server) untrack(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, c.ID)
}

// CloseWhere closes every active connection for which match returns true (for example all the
// connections of a session that expired) and returns how many it closed. A connection being
// authorised meanwhile is closed too, when it would become active (see track).
func (s *Server) CloseWhere(match func(*Conn) bool) int {
	s.mu.Lock()
	s.swept[s.sweeps%uint64(len(s.swept))] = match
	s.sweeps++
	var victims []*Conn
	for _, c := range s.active {
		if match(c) {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range victims {
		c.Close()
	}
	return len(victims)
}

// Active returns a snapshot of the connections being served.
func (s *Server) Active() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Conn, 0, len(s.active))
	for _, c := range s.active {
		out = append(out, c)
	}
	return out
}

// UpstreamAddr is where a target's traffic goes: the configured upstream, an address of the
// name the ClientHello gave for a target matched by SNI alone, or the original destination.
func UpstreamAddr(c *Conn) string {
	if c.Target != nil && c.Target.Upstream.Address != "" {
		return c.Target.Upstream.Address
	}
	if c.named.IsValid() {
		return c.named.String()
	}
	return netip.AddrPortFrom(c.Origin.Dst.Addr(), c.Origin.Dst.Port()).String()
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled)
}
