package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enforcer-dev/enforcer/internal/agentca"
	"github.com/enforcer-dev/enforcer/internal/httpguard"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/proxy"
)

// httpHandler serves http targets: every request is judged, held, masked and recorded by the
// connection's guard, and forwarded with the target's own credential. An agent that calls over
// HTTPS gets TLS from the proxy, with a certificate from the agent CA for the name it asked for.
type httpHandler struct {
	srv   *httpproto.Server
	guard func(c *proxy.Conn, user, host string, params map[string]string) *httpguard.Guard
	ca    *agentca.Authority

	handshakeFailures logEverySecond
}

const (
	// agentFirstByteTimeout bounds how long a client may take to send anything: an HTTP client
	// sends its request, an HTTPS one its ClientHello, at once.
	agentFirstByteTimeout = 30 * time.Second
	// agentHandshakeTimeout bounds the TLS handshake with the agent.
	agentHandshakeTimeout = 10 * time.Second
	// refuseTimeout bounds what a refusal waits for: the first byte and a handshake.
	refuseTimeout = 2 * time.Second
	// agentWriteTimeout bounds a write to the agent before the first response sets its own.
	agentWriteTimeout = 2 * time.Minute
)

// logEverySecond logs a message at most once a second, with how many times it happened since:
// what an agent can make happen as often as it likes must not flood the log.
type logEverySecond struct {
	last  atomic.Int64 // UnixNano of the last line
	count atomic.Int64
}

func (l *logEverySecond) log(log *slog.Logger, msg string, args ...any) {
	n := l.count.Add(1)
	if now, last := time.Now().UnixNano(), l.last.Load(); now-last >= int64(time.Second) && l.last.CompareAndSwap(last, now) {
		l.count.Add(-n)
		log.Warn(msg, append(args, "times", n)...)
	}
}

func (h *httpHandler) Serve(ctx context.Context, c *proxy.Conn) error {
	conn, agentTLS, err := h.accept(ctx, c, agentFirstByteTimeout, agentHandshakeTimeout, true)
	if err != nil {
		c.Close()
		if errors.Is(err, io.EOF) {
			return nil // connected and closed without a word
		}
		return err
	}
	// Ending ctx closes the socket itself, whatever TLS is doing on it.
	defer context.AfterFunc(ctx, c.Close)()
	var params map[string]string
	if agentTLS != nil {
		params = map[string]string{"tls": tls.VersionName(agentTLS.Version)}
		if agentTLS.ServerName != "" {
			params["server_name"] = agentTLS.ServerName
		}
	}
	up, user, err := httpUpstream(c, agentTLS)
	if err != nil {
		c.Log.Error("http upstream unusable", "target", c.Target.Name, "err", err)
		httpproto.Refuse(conn, http.StatusBadGateway,
			fmt.Sprintf("enforcer cannot reach target %q: its upstream settings cannot be used", c.Target.Name),
			"an administrator must fix the target's upstream (password_file, password_env, ca_file); the daemon log says what is wrong")
		conn.Close()
		return nil
	}
	g := h.guard(c, user, up.Host, params)
	err = h.srv.Serve(ctx, conn, httpproto.Session{
		ID:       strconv.FormatUint(c.ID, 10),
		Upstream: up,
		Hook:     g,
		Log:      c.Log,
		Owner:    budgetOwner(c),
	})
	reason := "client closed"
	if err != nil {
		reason = err.Error()
	}
	in, out := c.ClientCounts()
	g.End(reason, in, out)
	return err
}

// accept returns the connection to serve c's requests on: the client's own, or, when its first
// byte opens a TLS handshake, TLS with a certificate of the agent CA, once the handshake is done
// (its state is returned then). The first byte is peeked at, not read. Without withTLS, a client
// that speaks TLS is an error.
func (h *httpHandler) accept(ctx context.Context, c *proxy.Conn, firstByte, handshake time.Duration, withTLS bool) (net.Conn, *tls.ConnectionState, error) {
	// Ending ctx (the daemon stops, a reload revokes the connection) unblocks the wait.
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	var conn net.Conn = c.ServeConn()
	if len(c.Peeked) > 0 {
		// The proxy read the ClientHello to match the target by its name: it is read again.
		conn = &replayConn{Conn: conn, pending: c.Peeked}
	} else {
		first, err := peekByte(c.Client, time.Now().Add(firstByte))
		if err != nil {
			return nil, nil, fmt.Errorf("http client sent nothing: %w", err)
		}
		if first != tlsHandshakeByte {
			return conn, nil, nil
		}
	}
	if !withTLS || h.ca == nil {
		return nil, nil, errors.New("the client speaks TLS and is not answered in it here")
	}
	tc := tls.Server(conn, h.ca.ServerConfig(c.Origin.Dst.Addr(), budgetOwner(c)))
	tc.SetDeadline(time.Now().Add(handshake))
	if err := tc.HandshakeContext(ctx); err != nil {
		// Most often the agent does not trust the agent CA: it closes the handshake with an
		// alert (unknown CA, bad certificate) and says so itself.
		h.handshakeFailures.log(c.Log, "agents' TLS handshakes failed; an agent must trust the agent CA (`enforcer agent-ca`)",
			"target", c.Target.Name, "err", err)
		return nil, nil, fmt.Errorf("TLS handshake with the client: %w", err)
	}
	tc.SetReadDeadline(time.Time{})
	// Writes keep a deadline: crypto/tls answers a client's key update from within a read, and
	// a client that sends them and never reads would otherwise hold that read, and the session,
	// past every timeout. The HTTP server moves it on with each response it writes.
	tc.SetWriteDeadline(time.Now().Add(agentWriteTimeout))
	st := tc.ConnectionState()
	return tc, &st, nil
}

// replayConn is a connection whose first reads return bytes already read from it.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// SetLinger is the socket's: a cut response resets it (see internal/proto/http's abortConn).
func (r *replayConn) SetLinger(sec int) error {
	if l, ok := r.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

// tlsHandshakeByte opens a TLS record of the handshake protocol: a ClientHello.
const tlsHandshakeByte = 0x16

// peekByte waits until tc's first byte arrives (or deadline), and returns it without reading it.
func peekByte(tc *net.TCPConn, deadline time.Time) (byte, error) {
	tc.SetReadDeadline(deadline)
	defer tc.SetReadDeadline(time.Time{})
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var b [1]byte
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
		return rerr != unix.EAGAIN
	})
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return b[0], nil
}

// Refuse answers an HTTP client whose connection is refused (no session, no grant) with a status
// and the command to run, over TLS if the client speaks it, so that an agent calling over HTTPS
// sees the reason too.
func (h *httpHandler) Refuse(ctx context.Context, c *proxy.Conn, reason error) {
	msg, hint, status := reason.Error(), "", http.StatusForbidden
	var r *refusal
	switch {
	case errors.As(reason, &r):
		msg, hint = r.Message, r.Hint
	case errors.Is(reason, proxy.ErrTooManyConnections):
		status, hint = http.StatusTooManyRequests, tooManyHint
	}
	// A connection over its uid's limit costs the daemon no handshake: an agent could open
	// them as fast as it likes. Its TLS client sees a reset; the daemon's log says why.
	tooMany := errors.Is(reason, proxy.ErrTooManyConnections)
	conn, _, err := h.accept(ctx, c, refuseTimeout, refuseTimeout, !tooMany)
	if err != nil {
		c.Client.SetLinger(0)
		return
	}
	httpproto.Refuse(conn, status, msg, hint)
}

// httpUpstream is where and how the requests of c are forwarded: the address, TLS as the target
// says (a credential never travels in clear unless `tls: disable` is written), the Host header
// and the credential. It also returns the account a Basic credential names.
//
// An agent that called over HTTPS (agentTLS), or one matched by SNI, is not downgraded: unless
// the target writes its `tls`, the upstream is verify-full. The name checked is server_name;
// else, for a target matched by SNI or without a credential, the pinned host's name, else the
// SNI the target matched, else the name the agent asked for; else the address. A credential is
// never sent to a server checked against a name the agent chose freely: the proxy would accept
// any server holding a certificate for it.
func httpUpstream(c *proxy.Conn, agentTLS *tls.ConnectionState) (httpproto.Upstream, string, error) {
	t := c.Target.Upstream
	addr := proxy.UpstreamAddr(c)
	up := httpproto.Upstream{Addr: addr, Host: t.Host}
	mode := t.HTTPTLS()
	if (agentTLS != nil || c.SNI != "") && t.TLS == "" {
		mode = "verify-full"
	}
	// For a target matched by SNI, the upstream is known by the name the ClientHello gave, on
	// the port the agent dialled: the Host its requests go with (unless pinned; the agent's own
	// could front another site behind a CDN), and the name checked upstream. Its address is
	// only where that name resolved.
	sni := strings.TrimSuffix(strings.ToLower(c.SNI), ".")
	hostAddr := addr
	if sni != "" {
		hostAddr = net.JoinHostPort(sni, strconv.Itoa(int(c.Origin.Dst.Port())))
		if up.Host == "" {
			up.Host = httpHostHeader(sni, c.Origin.Dst.Port())
		}
	}
	if mode != "disable" {
		name := t.ServerName
		if name == "" && (sni != "" || agentTLS != nil && t.HTTPCredentialKind() == "") {
			switch {
			case t.Host != "":
				// The pinned Host's name: another would pick the backend of an ingress that
				// routes by SNI, which pinning the Host is there to prevent.
				name = hostOnly(t.Host)
			case sni != "":
				// A name the policy lists: only a server holding a certificate for it
				// passes (the policy refuses a wildcard with a credential and no name).
				name = sni
			default:
				name = agentTLS.ServerName
			}
		}
		cfg, err := httpTLSConfig(t, mode, addr, name)
		if err != nil {
			return up, "", err
		}
		up.TLS = cfg
	}
	kind := t.HTTPCredentialKind()
	if kind == "" {
		return up, "", nil
	}
	up.Host = t.HTTPHost(hostAddr)
	secret, err := readSecret(t)
	if err != nil {
		return up, "", err
	}
	if secret == "" {
		return up, "", errors.New("the credential is empty")
	}
	if strings.ContainsAny(secret, "\r\n\x00") {
		return up, "", errors.New("the credential holds a line break or NUL, which no header can carry")
	}
	user := ""
	switch kind {
	case "bearer":
		up.Credential = &httpproto.Credential{Header: "Authorization", Value: "Bearer " + secret}
	case "basic":
		user = t.User
		up.Credential = &httpproto.Credential{Header: "Authorization", Value: "Basic " + base64.StdEncoding.EncodeToString([]byte(t.User+":"+secret))}
	case "header":
		up.Credential = &httpproto.Credential{Header: t.Header, Value: secret}
	default:
		return up, "", fmt.Errorf("unknown credential kind %q", kind)
	}
	return up, user, nil
}

// httpHostHeader is the Host header of host on port: the port left out when it is HTTPS's.
func httpHostHeader(host string, port uint16) string {
	if port == 443 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// hostOnly is the host of a Host header value, without its port or brackets.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// httpTLSConfig is the TLS configuration of an upstream in mode verify-full or verify-ca: the
// system's roots or the target's ca_file, and the server name checked (verify-full) against
// name, else the upstream's host.
func httpTLSConfig(t policy.Upstream, mode, addr, name string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if name == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("upstream address %q: %w", addr, err)
		}
		name = host
	}
	cfg.ServerName = name
	switch mode {
	case "verify-full":
	case "verify-ca":
		// The chain must lead to the roots; the name is not checked (as libpq's verify-ca).
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: the server sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	default:
		return nil, fmt.Errorf("tls mode %q is not one of disable, verify-ca, verify-full", mode)
	}
	return cfg, nil
}

// httpGuard builds the guard of one HTTP connection.
func (d *Daemon) httpGuard(c *proxy.Conn, user, host string, params map[string]string) *httpguard.Guard {
	s, _ := c.Identity.(identity.Session)
	p := readProc(int(c.Origin.PID))
	return d.httpGuards.NewGuard(httpguard.ConnInfo{
		ID:           strconv.FormatUint(c.ID, 10),
		Target:       c.Target,
		Identity:     s,
		Origin:       c.Origin,
		Argv:         p.argv,
		Exe:          p.exe,
		Cgroup:       p.cgroup,
		Upstream:     proxy.UpstreamAddr(c),
		User:         user,
		Host:         host,
		ClientParams: params,
	})
}
