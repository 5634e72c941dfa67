// Package http is the enforcer's HTTP/1.1 proxy. It speaks HTTP/1.0 and 1.1 to the agent as a
// server and to the real service as a client (net/http's Transport), and asks a per-connection
// Hook for every decision: whether a request passes, how its response is masked, and what is
// recorded. It decides no policy itself.
//
// # What reaches the service
//
// A request is read whole (head and body, bounded) before the hook sees it, and forwarded only
// as the hook saw it: the request target byte for byte, the client's end-to-end headers, the
// body. Anything a server could read otherwise than the policy did is refused before the hook is
// asked: targets that are not a plain path ("/…"), dot segments, "//", backslashes, encoded
// separators and dots, encoded letters, digits, "-" and "_", path parameters (";"), control
// bytes, broken percent-encoding; CONNECT, TRACE, upgrades (WebSocket, h2c) and HTTP/2 prior
// knowledge, which the proxy could not inspect; ambiguous framing (Content-Length with
// Transfer-Encoding, any coding but chunked), Host and Content-Type headers; fields and
// parameters that make servers run another method or path than the request line's
// (X-HTTP-Method-Override, X-Original-URL, "_method" in the query, a form body or at the top
// of a JSON object); two fields that servers reading '_' as '-' take for one ("X-Tenant" and
// "X_Tenant"). A list field sent several times goes as one field, its values joined. Hop-by-hop
// headers, and headers that claim client addresses (Forwarded, X-Forwarded-*, X-Real-IP…), are
// not forwarded, under any spelling CGI reads as theirs ("X_Forwarded_For"); a Credential
// replaces whatever the client sent as Authorization or as its own header.
//
// # What reaches the agent
//
// Responses are masked by type: JSON (keys and values) and text bodies are buffered (bounded)
// and masked whole; event streams, JSON lines and JSON watches (a body of unknown length whose
// first line is a whole value) line by line as they arrive; header values with their names as
// context. Images, audio, video, fonts and PDF pass unchanged when their bytes are that media.
// A body that cannot be masked does not pass: archives and data files (under any label),
// protobuf and other binary data, text in a character set that hides ASCII (UTF-16, UTF-7,
// EBCDIC), an encoding other than gzip. Before anything of it is sent the client gets a 502,
// afterwards the connection is reset, so a cut body is never taken for a whole one. With a
// Credential, every echo of its secret by the service (a debug endpoint, an error quoting the
// request), in any letter case, percent- (nested), JSON- or HTML-escaped, or without its base64
// padding, is overwritten in every response, masked or not, and in upstream errors.
package http

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"time"

	"github.com/enforcer-dev/enforcer/internal/budget"
)

// Upstream says where and how requests are forwarded. The agent never sees any of it.
type Upstream struct {
	Addr string      // host:port to dial (the proxy computed it)
	TLS  *tls.Config // nil: plain HTTP; otherwise HTTPS with this config (ServerName, RootCAs set by the caller)
	Host string      // if not "", the Host header sent upstream (and the :authority); else the client's Host
	// Credential, if set, is added to every forwarded request; any header of that name the client
	// sent is removed first, and so are Authorization and Proxy-Authorization.
	Credential  *Credential
	DialTimeout time.Duration // 0: 10s
}

// Credential is a header carrying a secret. Its value is never logged, recorded or echoed.
type Credential struct{ Header, Value string }

// String names the header only, so a Credential printed by mistake shows no secret.
func (c Credential) String() string { return c.Header + ": [REDACTED]" }

// GoString is String, for %#v.
func (c Credential) GoString() string { return c.String() }

// LogValue is String, for slog.
func (c Credential) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Request is one client request as it will be forwarded (after the checks below).
type Request struct {
	Method   string
	Path     string // the request target's path, exactly as the client sent it and as forwarded (already checked, see below)
	RawQuery string // without '?'
	Host     string // the client's Host header
	// Header holds the client's end-to-end headers (hop-by-hop and the stripped ones removed), a
	// list field sent several times as one field of its values joined, as forwarded; the hook
	// must not modify it. Content-Length and Expect are the proxy's own business and are not in
	// it: the body is forwarded with its own length.
	Header  nethttp.Header
	Body    []byte // the whole request body (at most Server.MaxRequestBody)
	Started time.Time
}

// Verdict is the hook's answer for a request.
type Verdict struct {
	Allow bool
	// Status is the refusal's status; 0, and anything outside 400–599 (a refusal must not read as
	// a success or a redirect), mean 403.
	Status int
	// Message says why; it is sent to the client as JSON {"error": Message, "hint": Hint}.
	Message string
	Hint    string // what to do next
	// Header is added to the refusal response (e.g. X-Enforcer-Approval: <id>). Framing headers
	// (Content-Length, Content-Type, Connection, Transfer-Encoding…) and invalid fields are left out.
	Header nethttp.Header
}

// Exchange is one request's outcome, for the record.
type Exchange struct {
	// Request is the request as far as it was read. For one the proxy refused before the hook
	// saw it, Path and RawQuery are the target as the client sent it (unchecked).
	Request *Request
	// Verdict is the hook's, or for a request the hook never judged (see Judged) the proxy's
	// own refusal.
	Verdict Verdict
	// Judged says Hook.Request decided this request. When false, the proxy refused it itself
	// (malformed, unsupported, too large: Verdict says why) or it broke off before it was read
	// whole (Err says how).
	Judged      bool
	Status      int    // status the client received (0: none, connection broke)
	ContentType string // of the response
	// Body is the start of the response body as the client received it (masked), at most
	// Server.RecordBody bytes; BodyBytes is the total sent; Truncated says Body is cut.
	Body      []byte
	BodyBytes int64
	Truncated bool
	Masked    bool // masking rewrote something
	Binary    bool // the body was not masked because it is a binary type; Body is then empty
	Duration  time.Duration
	Err       error // upstream, masking or client failure (nil when the response was complete)
}

// Masker masks response bodies. *mask.Plan (internal/mask) implements it; MaskJSON masks
// object keys as well as values (an API may index records by e-mail). Both methods return
// in itself, unchanged, when nothing is found, and otherwise dst with the masked text appended;
// an error means the input must not be passed on.
type Masker interface {
	MaskJSON(in, dst []byte) (out []byte, changed bool, err error)
	MaskText(in, dst []byte) (out []byte, changed bool, err error)
}

// Hook judges and records the requests of one connection. Calls for one connection are made one at a time.
type Hook interface {
	// Request decides r. It may block (a reviewer's approval) until ctx ends; ctx ends when the
	// client goes away.
	Request(ctx context.Context, r *Request) Verdict
	// Masker returns how to mask the response to r, or nil to pass it unmasked.
	Masker(r *Request) Masker
	// Exchanged is told how every request ended, refused ones included (Status = the refusal's).
	Exchanged(e *Exchange)
}

// Session is one connection to serve.
type Session struct {
	ID       string
	Upstream Upstream
	Hook     Hook
	Log      *slog.Logger
	// Owner is whom the session's bodies are counted against (the daemon uses the agent's
	// uid): no owner may hold more than three quarters of MaxBufferedBodies.
	Owner string
}

// Server holds the limits; its zero value works (defaults below). One Server serves any number
// of sessions at once, and must not be copied once it has served one.
type Server struct {
	MaxRequestBody int64 // default 8 MiB; more → 413
	// MaxBufferedBodies bounds the bodies the sessions of this Server hold at once, counted as
	// the buffers they take: request bodies (read, judged or held for a reviewer, forwarded) and
	// response bodies buffered for masking (twice their size: the body and its masked copy);
	// default 256 MiB, and those of one Session.Owner to three quarters of it. A request or
	// response that would go over gets 503: agents that open many connections and send, or ask
	// for, large bodies (or hold them for a reviewer) cannot exhaust the daemon's memory, nor
	// take all of the budget from other users.
	MaxBufferedBodies int64
	MaxMaskedBody     int64         // default 32 MiB: a maskable response body larger than this → 502, nothing of it sent
	RecordBody        int           // default 64 KiB
	ReadHeaderTimeout time.Duration // default 30s
	IdleTimeout       time.Duration // default 2m between requests
	ResponseTimeout   time.Duration // default 5m for the upstream's response head
	MaxHeaderBytes    int           // default 64 KiB

	bodies budget.Shared // taken by request bodies and masking's buffers, up to MaxBufferedBodies
}

const (
	defaultMaxRequestBody    = 8 << 20
	defaultMaxBufferedBodies = 256 << 20
	defaultMaxMaskedBody     = 32 << 20
	defaultRecordBody        = 64 << 10
	defaultReadHeaderTimeout = 30 * time.Second
	defaultIdleTimeout       = 2 * time.Minute
	defaultResponseTimeout   = 5 * time.Minute
	defaultMaxHeaderBytes    = 64 << 10
	defaultDialTimeout       = 10 * time.Second

	// refuseHeadTimeout and refuseHeadBytes bound what Refuse reads of a request it answers.
	refuseHeadTimeout = 2 * time.Second
	refuseHeadBytes   = 64 << 10
	// lingerTime bounds how long a connection that ends after a complete response is drained:
	// closing a socket with unread input resets it, and a reset can destroy the response before
	// the client read it.
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// limits is a Server with its defaults filled in.
type limits struct {
	maxRequestBody    int64
	maxBufferedBodies int64
	maxMaskedBody     int64
	recordBody        int
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	responseTimeout   time.Duration
	maxHeaderBytes    int
}

// positive sets *v to def unless it is above zero (a zero Server, or a negative limit, gets the
// default).
func positive[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

func (s *Server) limits() limits {
	l := limits{
		maxRequestBody:    s.MaxRequestBody,
		maxBufferedBodies: s.MaxBufferedBodies,
		maxMaskedBody:     s.MaxMaskedBody,
		recordBody:        s.RecordBody,
		readHeaderTimeout: s.ReadHeaderTimeout,
		idleTimeout:       s.IdleTimeout,
		responseTimeout:   s.ResponseTimeout,
		maxHeaderBytes:    s.MaxHeaderBytes,
	}
	positive(&l.maxRequestBody, defaultMaxRequestBody)
	positive(&l.maxBufferedBodies, defaultMaxBufferedBodies)
	positive(&l.maxMaskedBody, defaultMaxMaskedBody)
	positive(&l.recordBody, defaultRecordBody)
	positive(&l.readHeaderTimeout, defaultReadHeaderTimeout)
	positive(&l.idleTimeout, defaultIdleTimeout)
	positive(&l.responseTimeout, defaultResponseTimeout)
	positive(&l.maxHeaderBytes, defaultMaxHeaderBytes)
	return l
}

// Serve serves the requests of one client connection, in order, until the client closes it,
// it stays idle for IdleTimeout, a response has to end it, or ctx ends; then it closes conn and
// returns once every goroutine it started (and the Transport's connections upstream) is done.
// Ending ctx ends everything at once, a Hook.Request that is blocked included (its ctx ends).
//
// It returns nil when the client ended the connection between requests or left it idle,
// ctx's error when ctx ended, and otherwise what ended it (a malformed request, a failure
// upstream or in masking, a client that went away mid-exchange). A Session without a Hook or
// with an unusable Upstream is refused: the client gets a 502 and nothing is forwarded.
func (s *Server) Serve(ctx context.Context, conn net.Conn, sess Session) error {
	defer conn.Close()
	if err := sess.check(); err != nil {
		Refuse(conn, nethttp.StatusBadGateway, "the enforcer cannot forward to this service", "tell the enforcer's administrator: the target is misconfigured")
		return fmt.Errorf("http session %s: %w", sess.ID, err)
	}
	if sess.Log == nil {
		sess.Log = slog.New(slog.DiscardHandler)
	}
	lim := s.limits()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	up := newUpstreamClient(sess.Upstream, lim)
	defer up.close()

	// Closing the connection is what unblocks every read and write on it at once.
	finished := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-ctx.Done():
			closeBeneath(conn)
		case <-finished:
		}
	}()
	defer func() {
		close(finished)
		<-watcherDone
	}()

	c := newClientConn(conn, lim, sess, up, &s.bodies)
	err := c.serve(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// check refuses a Session that cannot be served safely.
func (s *Session) check() error {
	if s.Hook == nil {
		return errors.New("no hook")
	}
	u := &s.Upstream
	if u.Addr == "" {
		return errors.New("no upstream address")
	}
	if _, _, err := net.SplitHostPort(u.Addr); err != nil {
		return fmt.Errorf("upstream address: %w", err)
	}
	if u.Host != "" && !validHost(u.Host) {
		return fmt.Errorf("upstream Host %q is not a valid host", u.Host)
	}
	if cr := u.Credential; cr != nil {
		if !validFieldName(cr.Header) {
			return fmt.Errorf("credential header name %q is not a valid field name", cr.Header)
		}
		if ReservedCredentialHeader(cr.Header) {
			return fmt.Errorf("credential header %q is a header the proxy sets or removes itself", cr.Header)
		}
		if !validFieldValue(cr.Value) {
			// The value is the secret: say what is wrong, never what it is.
			return fmt.Errorf("credential %s has a value with a control character", cr.Header)
		}
	}
	return nil
}

// Refuse writes one complete HTTP/1.1 response (status, JSON body {"error","hint"}, Connection: close)
// to a client whose connection is refused before any request is read (no session, no grant), then
// returns. It reads the request head first (bounded: 2 s, 64 KiB) so the client sees the answer.
// A status outside 400–599 is sent as 403. The caller closes conn.
func Refuse(conn net.Conn, status int, msg, hint string) {
	conn.SetReadDeadline(time.Now().Add(refuseHeadTimeout))
	defer conn.SetDeadline(time.Time{})
	br := bufio.NewReaderSize(conn, 4096)
	minor := 1
	head := false
	if first, err := br.Peek(1); err == nil && first[0] != tlsHandshakeByte {
		if h, err := readHead(br, refuseHeadBytes); err == nil {
			minor, head = h.minor, h.method == nethttp.MethodHead
		}
	}
	conn.SetWriteDeadline(time.Now().Add(refuseHeadTimeout))
	bw := bufio.NewWriterSize(conn, 1024)
	x := &exchange{minor: minor, head: head, close: true}
	x.writeJSONError(bw, nil, refusalStatus(status), msg, hint, nil)
	if bw.Flush() == nil {
		conn.SetReadDeadline(time.Now().Add(lingerTime))
		lingerClose(conn, br)
	}
}

// lingerClose half-closes conn and reads what the client still sends (bounded by lingerTime,
// set by the caller, and lingerBytes) until it closes too, so unread input does not turn the
// close into a reset that could destroy the response in flight.
func lingerClose(conn net.Conn, r io.Reader) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.CopyN(io.Discard, r, lingerBytes)
}

// closeBeneath closes conn, under TLS the socket beneath it: a close_notify would tell a client
// reading a body that ends with the connection that it had it whole, and sending one waits on
// any write in progress.
func closeBeneath(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	conn.Close()
}

// abortConn resets conn (RST rather than FIN), so a client reading a body the proxy had to cut
// sees an error and not an end. Under TLS the socket beneath is reset: a close_notify would tell
// the client the body had ended where it was cut.
func abortConn(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if l, ok := conn.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	conn.Close()
}
