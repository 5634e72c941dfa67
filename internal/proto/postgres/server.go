// Package postgres is the enforcer's PostgreSQL wire-protocol proxy. It speaks protocol 3.0 to the
// client as a server, and to the real database as a client authenticated with the target's own
// credentials (SCRAM-SHA-256, MD5 or cleartext, over TLS when configured), which the client never sees.
//
// After startup the proxy relays messages itself: one goroutine per direction reads whole messages
// from a 64 KiB buffer, forwards the ones nobody changes as raw bytes, and writes a batch only when
// its reader runs out of buffered input. A Hook sees every statement (simple Query, extended Parse and
// Execute, FunctionCall) and every result, and can allow, refuse, hold or rewrite.
//
// # Refusals and transaction state
//
// A refused statement must leave the server in the state PostgreSQL itself would be in had the
// statement failed: inside a transaction block the transaction becomes failed (COMMIT rolls back),
// and in the extended protocol everything up to the next Sync is skipped. The proxy does exactly
// that by sending the server, in place of the refused message, an Execute of a portal that cannot
// exist (followed by Sync for a simple Query or FunctionCall). The server answers with an
// ErrorResponse (34000) at the same position in the response stream that the refused statement's
// own error would have had; the proxy replaces that error with the hook's and drops the client's
// messages up to Sync, as the server does. The client and the server therefore see one error, at one
// place, and agree on the transaction status in the following ReadyForQuery.
//
// # Prepared statements
//
// The proxy tracks statement names as the server does: a Parse creates the name (the unnamed
// statement is replaced), a Parse of an existing name fails on the server and leaves the old one, a
// failed or skipped Parse creates nothing, Close removes it. An Execute therefore carries the SQL of
// the statement its portal was bound from, or Known=false when the proxy never saw that statement
// parsed (SQL-level PREPARE), so a policy that judges at Parse can refuse such an Execute.
package postgres

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/budget"
)

// TLSMode is how the proxy secures its connection to the upstream server, as libpq's sslmode.
type TLSMode string

// TLS modes.
const (
	TLSDisable    TLSMode = "disable"
	TLSRequire    TLSMode = "require"
	TLSVerifyCA   TLSMode = "verify-ca"
	TLSVerifyFull TLSMode = "verify-full"
)

// Authentication methods an upstream may ask for, as libpq's require_auth names them.
const (
	AuthSCRAM    = "scram-sha-256"
	AuthMD5      = "md5"
	AuthPassword = "password"
)

// Session configures one client connection.
type Session struct {
	// ID names the connection in hooks and errors.
	ID string
	// Upstream is the real server, host:port.
	Upstream string
	// Database overrides the database the client asked for; empty keeps the client's.
	Database string
	// User and Password authenticate to the upstream server. The password is never logged and never
	// reaches the client.
	User     string
	Password string
	// TLS, CAFile and ServerName configure TLS to the upstream (ServerName defaults to the host
	// of Upstream; CAFile is required for verify-ca and verify-full).
	TLS        TLSMode
	CAFile     string
	ServerName string
	// Auth lists the authentication methods the upstream may ask for (AuthSCRAM, AuthMD5,
	// AuthPassword); empty means SCRAM only.
	Auth []string
	// Hook judges statements and sees results; nil means PassThrough.
	Hook Hook
	// Owner is whom the session's large messages are counted against (the daemon uses the
	// agent's uid): no owner may take more than three quarters of MaxBufferedMessages.
	Owner string
}

// Config configures a Server.
type Config struct {
	// StartupTimeout bounds the time from accept to a complete StartupMessage (default 10 s).
	StartupTimeout time.Duration
	// ConnectTimeout bounds connecting and authenticating to the upstream (default 15 s).
	ConnectTimeout time.Duration
	// MaxMessageSize is the largest message accepted from a client, header included
	// (default 64 MiB). Larger ones end the session with SQLSTATE 08P01.
	MaxMessageSize int
	// MaxBufferedMessages bounds the memory all sessions' large messages take at once, client's
	// and server's (default 2 GiB: one message of PostgreSQL's largest and others beside it),
	// and those of one Session.Owner to three quarters of it. A message that would go over ends
	// its session with SQLSTATE 53200; the others go on.
	MaxBufferedMessages int64
	// TLS, if set, is offered to clients that send SSLRequest; otherwise they get 'N'.
	TLS *tls.Config
}

const (
	defaultStartupTimeout = 10 * time.Second
	defaultConnectTimeout = 15 * time.Second
	defaultMaxMessage     = 64 << 20
	defaultMaxBuffered    = 2 << 30
	// Server messages are limited only by PostgreSQL's own 1 GB field limit.
	maxServerMessage = 1<<30 + 1<<20
)

// Server serves client connections and owns the cancel keys it hands out, so a CancelRequest arriving
// on a new connection reaches the session it names. One Server lives as long as the daemon.
type Server struct {
	cfg      Config
	messages budget.Shared // taken by readers' buffers, up to cfg.MaxBufferedMessages

	mu       sync.Mutex
	sessions map[uint32]*conn // by proxy-assigned process id
	watching bool             // the watchdog runs
}

// NewServer returns a Server with cfg's defaults filled in.
func NewServer(cfg Config) *Server {
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = defaultStartupTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = defaultMaxMessage
	}
	if cfg.MaxBufferedMessages <= 0 {
		cfg.MaxBufferedMessages = defaultMaxBuffered
	}
	return &Server{cfg: cfg, sessions: map[uint32]*conn{}}
}

// Serve handles one accepted client connection until it ends, and closes it. A connection that opens
// with a CancelRequest cancels the session it names (the running statement upstream, and a held
// hook call) and is closed. Serve returns nil when the client ends with Terminate; an error that
// wraps io.EOF when it just closed its socket; other errors say what went wrong. Cancelling ctx ends
// the session.
func (s *Server) Serve(ctx context.Context, client net.Conn, sess Session) error {
	defer client.Close()
	startup, clientConn, err := s.readStartup(client)
	if err != nil {
		return err
	}
	switch m := startup.(type) {
	case *pgproto3.CancelRequest:
		return s.cancel(m)
	case *pgproto3.StartupMessage:
		return s.serveSession(ctx, clientConn, m, sess)
	}
	return fmt.Errorf("unexpected startup message %T", startup)
}

// readStartup answers SSLRequest and GSSENCRequest and returns the StartupMessage or CancelRequest,
// and the connection to continue on (TLS-wrapped if the client asked for TLS and it is configured).
func (s *Server) readStartup(client net.Conn) (pgproto3.FrontendMessage, net.Conn, error) {
	client.SetDeadline(time.Now().Add(s.cfg.StartupTimeout))
	defer client.SetDeadline(time.Time{})
	c := client
	for range 3 {
		msg, err := readStartupMessage(c)
		if err != nil {
			return nil, nil, err
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest:
			if s.cfg.TLS == nil || c != client {
				if _, err := c.Write([]byte{'N'}); err != nil {
					return nil, nil, fmt.Errorf("answer SSLRequest: %w", err)
				}
				continue
			}
			if _, err := c.Write([]byte{'S'}); err != nil {
				return nil, nil, fmt.Errorf("answer SSLRequest: %w", err)
			}
			tc := tls.Server(client, s.cfg.TLS)
			if err := tc.Handshake(); err != nil {
				return nil, nil, fmt.Errorf("client TLS handshake: %w", err)
			}
			c = tc
		case *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, nil, fmt.Errorf("answer GSSENCRequest: %w", err)
			}
		case *pgproto3.StartupMessage, *pgproto3.CancelRequest:
			return msg, c, nil
		}
	}
	writeFatal(c, "08P01", "too many SSL/GSS negotiation requests", "")
	return nil, nil, errors.New("client startup: too many negotiation requests")
}

const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
	maxStartupLength  = 10000
)

// readStartupMessage reads one length-prefixed startup-phase message with no read-ahead, so nothing
// the client sends after it is lost.
func readStartupMessage(r io.Reader) (pgproto3.FrontendMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read startup length: %w", err)
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > maxStartupLength {
		if w, ok := r.(io.Writer); ok {
			writeFatal(w, "08P01", fmt.Sprintf("invalid length of startup packet: %d", n), "")
		}
		return nil, fmt.Errorf("client startup: invalid length %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read startup body: %w", err)
	}
	code := binary.BigEndian.Uint32(body)
	var msg interface {
		pgproto3.FrontendMessage
		Decode([]byte) error
	}
	switch {
	case code>>16 == 3:
		// Any 3.x: the session speaks 3.0, after a NegotiateProtocolVersion (see
		// serveSession), as a server that knows no newer minor version does. Parsed as 3.0,
		// then given back the version asked for.
		binary.BigEndian.PutUint32(body, pgproto3.ProtocolVersion30)
		sm := &pgproto3.StartupMessage{}
		if err := sm.Decode(body); err != nil {
			if w, ok := r.(io.Writer); ok {
				writeFatal(w, "08P01", "invalid startup packet: "+err.Error(), "")
			}
			return nil, fmt.Errorf("client startup: %w", err)
		}
		sm.ProtocolVersion = code
		return sm, nil
	case code == sslRequestCode:
		msg = &pgproto3.SSLRequest{}
	case code == gssEncRequestCode:
		msg = &pgproto3.GSSEncRequest{}
	case code == cancelRequestCode:
		msg = &pgproto3.CancelRequest{}
	default:
		if w, ok := r.(io.Writer); ok {
			writeFatal(w, "0A000", fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0", code>>16, code&0xffff), "")
		}
		return nil, fmt.Errorf("client startup: unsupported protocol code %d", code)
	}
	if err := msg.Decode(body); err != nil {
		if w, ok := r.(io.Writer); ok {
			writeFatal(w, "08P01", "invalid startup packet: "+err.Error(), "")
		}
		return nil, fmt.Errorf("client startup: %w", err)
	}
	return msg, nil
}

// RefuseStartup politely refuses a connection before any upstream work: it answers SSLRequest and
// GSSENCRequest with 'N', reads the StartupMessage and sends a FATAL ErrorResponse with the given
// SQLSTATE, message and hint (for example 28000, "not logged in", "run `enforcer login`"). A
// CancelRequest gets no answer, as the protocol requires. The caller closes conn.
func RefuseStartup(client net.Conn, code, message, hint string) error {
	client.SetDeadline(time.Now().Add(defaultStartupTimeout))
	defer client.SetDeadline(time.Time{})
	for range 3 {
		msg, err := readStartupMessage(client)
		if err != nil {
			return err
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := client.Write([]byte{'N'}); err != nil {
				return err
			}
		case *pgproto3.CancelRequest:
			return nil
		case *pgproto3.StartupMessage:
			return writeFatal(client, code, message, hint)
		}
	}
	return errors.New("client startup: too many negotiation requests")
}

func writeFatal(w io.Writer, code, message, hint string) error {
	b, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: message, Hint: hint}).Encode(nil)
	_, err := w.Write(b)
	return err
}

// register assigns c a fresh cancel key.
func (s *Server) register(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var b [8]byte
		rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
		if pid == 0 || s.sessions[pid] != nil {
			continue
		}
		c.pid = pid
		copy(c.secret[:], b[4:])
		s.sessions[pid] = c
		if !s.watching {
			s.watching = true
			go s.watchdog()
		}
		return
	}
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[c.pid] == c {
		delete(s.sessions, c.pid)
	}
}

// Sessions returns the number of live sessions (for metrics and leak tests).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func (s *Server) cancel(m *pgproto3.CancelRequest) error {
	s.mu.Lock()
	c := s.sessions[m.ProcessID]
	s.mu.Unlock()
	if c == nil || subtle.ConstantTimeCompare(c.secret[:], m.SecretKey) != 1 {
		return errors.New("cancel request for an unknown session")
	}
	return c.cancelRequested()
}
