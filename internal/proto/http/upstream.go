package http

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	nethttp "net/http"
	"sync"
)

// upstreamClient is one Session's way to the service: a Transport of its own whose every
// connection goes to Upstream.Addr, and which the session closes completely when it ends.
type upstreamClient struct {
	transport *nethttp.Transport
	scheme    string
	addr      string
	dialer    net.Dialer

	// ctx ends every dial in progress when the session ends; the Transport dials in goroutines
	// of its own, which a cancelled request does not stop.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	dialing int // dials in progress
	idle    *sync.Cond
	closed  bool
	conns   map[*upstreamConn]struct{}
}

var errSessionClosed = errors.New("session closed")

func newUpstreamClient(u Upstream, lim limits) *upstreamClient {
	uc := &upstreamClient{
		scheme: "http",
		addr:   u.Addr,
		conns:  map[*upstreamConn]struct{}{},
	}
	uc.dialer.Timeout = u.DialTimeout
	if uc.dialer.Timeout <= 0 {
		uc.dialer.Timeout = defaultDialTimeout
	}
	uc.idle = sync.NewCond(&uc.mu)
	uc.ctx, uc.cancel = context.WithCancel(context.Background())
	var protocols nethttp.Protocols
	protocols.SetHTTP1(true)
	t := &nethttp.Transport{
		Proxy:                  nil, // never from the environment
		DialContext:            uc.dial,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
		Protocols:              &protocols,
		TLSNextProto:           map[string]func(string, *tls.Conn) nethttp.RoundTripper{},
		ResponseHeaderTimeout:  lim.responseTimeout,
		TLSHandshakeTimeout:    uc.dialer.Timeout,
		MaxIdleConnsPerHost:    1, // a client connection's requests come one at a time
		IdleConnTimeout:        lim.idleTimeout,
		MaxResponseHeaderBytes: 1 << 20,
	}
	if u.TLS != nil {
		uc.scheme = "https"
		cfg := u.TLS.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		t.TLSClientConfig = cfg
	}
	uc.transport = t
	return uc
}

// dial connects to the upstream address, whatever address the Transport asks for.
func (uc *upstreamClient) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	uc.mu.Lock()
	if uc.closed {
		uc.mu.Unlock()
		return nil, errSessionClosed
	}
	uc.dialing++
	uc.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(uc.ctx, cancel)
	conn, err := uc.dialer.DialContext(ctx, "tcp", uc.addr)
	stop()
	cancel()

	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.dialing--
	uc.idle.Broadcast()
	if err != nil {
		return nil, err
	}
	if uc.closed {
		conn.Close()
		return nil, errSessionClosed
	}
	tc := &upstreamConn{Conn: conn, owner: uc}
	uc.conns[tc] = struct{}{}
	return tc, nil
}

// close ends the Transport: dials in progress are cancelled and waited for, and every
// connection it made is closed, so nothing of the session's stays behind it.
func (uc *upstreamClient) close() {
	uc.cancel()
	uc.mu.Lock()
	uc.closed = true
	for uc.dialing > 0 {
		uc.idle.Wait()
	}
	conns := make([]*upstreamConn, 0, len(uc.conns))
	for c := range uc.conns {
		conns = append(conns, c)
	}
	uc.mu.Unlock()
	uc.transport.CloseIdleConnections()
	for _, c := range conns {
		c.Close()
	}
}

// upstreamConn is a connection the session's Transport made, tracked until it is closed.
type upstreamConn struct {
	net.Conn
	owner *upstreamClient
	once  sync.Once
}

func (c *upstreamConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		err = c.Conn.Close()
		c.owner.mu.Lock()
		delete(c.owner.conns, c)
		c.owner.mu.Unlock()
	})
	return err
}
