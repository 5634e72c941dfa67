package http

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	nethttp "net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/enforcer-dev/enforcer/internal/budget"
)

// clientConn is the client side of one Session: the connection, its buffers, and the loop that
// serves its requests one after the other (pipelined ones too: each is answered before the next
// is read, so responses go out in order).
type clientConn struct {
	conn     net.Conn
	cr       *clientReader
	br       *bufio.Reader
	bw       *bufio.Writer
	lim      limits
	sess     Session
	log      *slog.Logger
	up       *upstreamClient
	bodies   *budget.Shared // the Server's, shared by its sessions
	requests int

	// Buffers reused from one response to the next.
	copyBuf []byte
	maskBuf []byte
	lineBuf []byte
}

// reusedBufferCap bounds the buffers a connection keeps between responses: a huge masked body
// should not stay allocated for the life of an idle connection.
const reusedBufferCap = 1 << 20

func newClientConn(conn net.Conn, lim limits, sess Session, up *upstreamClient, bodies *budget.Shared) *clientConn {
	cr := &clientReader{conn: conn}
	return &clientConn{
		conn:   conn,
		cr:     cr,
		br:     bufio.NewReaderSize(cr, 16<<10),
		bw:     bufio.NewWriterSize(&deadlineWriter{conn: conn, timeout: lim.idleTimeout}, 32<<10),
		lim:    lim,
		sess:   sess,
		log:    sess.Log.With("session", sess.ID),
		up:     up,
		bodies: bodies,
	}
}

func (c *clientConn) serve(ctx context.Context) error {
	for {
		more, err := c.serveRequest(ctx)
		if err != nil || !more {
			return err
		}
	}
}

// ending is how an exchange leaves the connection.
type ending uint8

const (
	keepOpen  ending = iota // ready for the next request
	closeConn               // the response is complete; the connection ends gracefully
	resetConn               // the connection is cut: the client must not take what it got as complete
)

// serveRequest serves the next request and records it. It reports whether the connection may
// carry another; when it may not, the connection is closed.
func (c *clientConn) serveRequest(ctx context.Context) (bool, error) {
	wait := c.lim.idleTimeout
	if c.requests == 0 {
		wait = c.lim.readHeaderTimeout
	}
	c.cr.perRead = 0
	c.conn.SetReadDeadline(time.Now().Add(wait))
	first, err := c.br.Peek(1)
	if err != nil {
		// Closed by the client, idle too long, or ctx ended: there is no request to record.
		return false, nil
	}
	c.requests++
	x := &exchange{
		c:     c,
		ex:    &Exchange{Request: &Request{Started: time.Now(), Header: nethttp.Header{}}},
		minor: 1,
	}
	end, err := x.run(ctx, first[0])
	c.stopWatch(x.watch)
	if end == resetConn {
		abortConn(c.conn)
	}
	x.ex.Duration = time.Since(x.ex.Request.Started)
	c.sess.Hook.Exchanged(x.ex)
	c.bodies.Give(c.sess.Owner, x.heldBody)
	c.trimBuffers()
	if end == closeConn {
		c.cr.perRead = 0
		c.conn.SetReadDeadline(time.Now().Add(lingerTime))
		lingerClose(c.conn, c.br)
		c.conn.Close()
	}
	return end == keepOpen, err
}

func (c *clientConn) trimBuffers() {
	if cap(c.maskBuf) > reusedBufferCap {
		c.maskBuf = nil
	}
	if cap(c.lineBuf) > reusedBufferCap {
		c.lineBuf = nil
	}
}

// exchange is one request and its response.
type exchange struct {
	c     *clientConn
	ex    *Exchange
	minor int  // the client's HTTP/1.minor: 0 gets no chunked bodies
	head  bool // a HEAD request: responses carry no body
	close bool // the connection ends after this response
	watch *clientWatch
	// heldBody is what the request body took of the Server's budget, given back when the
	// exchange is recorded.
	heldBody int64
}

// takeBody reserves n bytes of the Server's budget for this exchange's request body.
func (x *exchange) takeBody(n int64) bool {
	if !x.c.bodies.Take(x.c.sess.Owner, n, x.c.lim.maxBufferedBodies) {
		return false
	}
	x.heldBody += n
	return true
}

// run reads, judges, forwards and answers one request; first is its first byte, already read.
func (x *exchange) run(ctx context.Context, first byte) (ending, error) {
	c := x.c
	r := x.ex.Request
	if first == tlsHandshakeByte {
		return x.refuseAndClose(refuse(nethttp.StatusBadRequest, "use http:// for this service: the enforcer takes plain HTTP from the agent",
			"the client spoke TLS to a plain-HTTP service"))
	}
	c.conn.SetReadDeadline(r.Started.Add(c.lim.readHeaderTimeout))
	head, err := readHead(c.br, c.lim.maxHeaderBytes)
	if head != nil {
		x.minor, x.head = head.minor, head.method == nethttp.MethodHead
		r.Method = head.method
		r.Path, r.RawQuery, _ = strings.Cut(head.target, "?")
	}
	if err != nil {
		var ref *refusal
		switch {
		case errors.As(err, &ref):
			return x.refuseAndClose(ref)
		case err == errHeadTooLarge:
			return x.refuseAndClose(refuse(nethttp.StatusRequestHeaderFieldsTooLarge, "send smaller headers",
				"request head larger than %d bytes", c.lim.maxHeaderBytes))
		case isTimeout(err):
			return x.refuseAndClose(refuse(nethttp.StatusRequestTimeout, "send the whole request head at once",
				"request head not received within %s", c.lim.readHeaderTimeout))
		}
		x.ex.Err = fmt.Errorf("read request head: %w", err)
		return resetConn, x.ex.Err
	}

	framing, cont, ref := admit(head, r, c.sess.Upstream.Credential)
	if ref != nil {
		return x.refuseAndClose(ref)
	}
	x.close = wantsClose(head)
	if !framing.chunked && framing.length > c.lim.maxRequestBody {
		return x.refuseAndClose(x.tooLarge())
	}
	if cont && (framing.chunked || framing.length > 0) {
		c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := c.bw.Flush(); err != nil {
			x.ex.Err = fmt.Errorf("write 100 Continue: %w", err)
			return resetConn, x.ex.Err
		}
	}
	c.cr.perRead = c.lim.idleTimeout
	body, err := readBody(c.br, framing, c.lim.maxRequestBody, c.lim.maxHeaderBytes, x.takeBody)
	c.cr.perRead = 0
	if err != nil {
		var ref *refusal
		switch {
		case err == errBodyTooLarge:
			return x.refuseAndClose(x.tooLarge())
		case err == errBodyBudget:
			c.log.Warn("request refused: the request bodies held by the proxy are at their limit", "limit", c.lim.maxBufferedBodies)
			return x.refuseAndClose(refuse(nethttp.StatusServiceUnavailable, "try again in a moment",
				"the enforcer holds as many request bodies as it can (%d bytes in all)", c.lim.maxBufferedBodies))
		case errors.As(err, &ref):
			return x.refuseAndClose(ref)
		case isTimeout(err):
			return x.refuseAndClose(refuse(nethttp.StatusRequestTimeout, "send the body without pausing",
				"request body stalled for %s", c.lim.idleTimeout))
		}
		x.ex.Err = fmt.Errorf("read request body: %w", err)
		return resetConn, x.ex.Err
	}
	r.Body = body
	if ref := checkBodyOverrides(r.Header, body, c.lim.maxRequestBody, x.takeBody); ref != nil {
		return x.refuseAndClose(ref)
	}
	// The forwarded fields come from the proxy's own copy, not from the one the hook is shown.
	forward := r.Header.Clone()
	forceQuery := r.RawQuery == "" && strings.HasSuffix(head.target, "?")

	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	x.watch = c.watchClient(ctx, cancel)

	v := c.sess.Hook.Request(reqCtx, r)
	x.ex.Judged, x.ex.Verdict = true, v
	if reqCtx.Err() != nil {
		x.ex.Err = context.Cause(reqCtx)
		return resetConn, x.ex.Err
	}
	if !v.Allow {
		x.ex.Verdict.Status = refusalStatus(v.Status)
		if err := x.writeJSONError(c.bw, x.ex, x.ex.Verdict.Status, v.Message, v.Hint, v.Header); err != nil {
			x.ex.Err = fmt.Errorf("write refusal: %w", err)
			return resetConn, x.ex.Err
		}
		return x.kept(), nil
	}
	m := c.sess.Hook.Masker(r)
	resp, err := c.roundTrip(reqCtx, r, forward, m, forceQuery)
	if err != nil {
		if reqCtx.Err() != nil {
			x.ex.Err = context.Cause(reqCtx)
			return resetConn, x.ex.Err
		}
		x.ex.Err = maskedError("upstream", err, m, c.sess.Upstream.Credential)
		c.log.Warn("upstream request failed", "err", x.ex.Err)
		if isTimeout(err) {
			return x.badGateway(nethttp.StatusGatewayTimeout, "the service did not answer in time")
		}
		return x.badGateway(nethttp.StatusBadGateway, "the service could not be reached")
	}
	defer resp.Body.Close()
	return x.respond(reqCtx, resp, m)
}

func (x *exchange) tooLarge() *refusal {
	return refuse(nethttp.StatusRequestEntityTooLarge, "send a smaller body",
		"request body larger than %d bytes", x.c.lim.maxRequestBody)
}

// kept is how a complete response leaves the connection: open unless the client asked to close.
func (x *exchange) kept() ending {
	if x.close {
		return closeConn
	}
	return keepOpen
}

// refuseAndClose answers a request the proxy refuses itself, before or while reading it. Its
// body may be unread, so the connection cannot carry another request.
func (x *exchange) refuseAndClose(ref *refusal) (ending, error) {
	x.close = true
	x.ex.Verdict = Verdict{Status: ref.status, Message: ref.msg, Hint: ref.hint}
	if err := x.writeJSONError(x.c.bw, x.ex, ref.status, ref.msg, ref.hint, nil); err != nil {
		x.ex.Err = fmt.Errorf("write refusal: %w", err)
		return resetConn, x.ex.Err
	}
	return closeConn, fmt.Errorf("request refused: %w", ref)
}

// badGateway answers a request that was read whole and allowed, but whose response cannot be
// passed: nothing of that response has reached the client, so the connection stays usable.
func (x *exchange) badGateway(status int, msg string) (ending, error) {
	hint := "try again later; if it persists, tell the service's owners"
	if err := x.writeJSONError(x.c.bw, x.ex, status, msg, hint, nil); err != nil {
		x.ex.Err = errors.Join(x.ex.Err, fmt.Errorf("write error response: %w", err))
		return resetConn, x.ex.Err
	}
	return x.kept(), nil
}

// refusalStatus is the status a refusal is sent with: an error status, 403 by default.
func refusalStatus(status int) int {
	if status < 400 || status > 599 {
		return nethttp.StatusForbidden
	}
	return status
}

// proxyHeaders are the fields of a proxy-made response that a hook's Verdict.Header cannot set.
var proxyHeaders = map[string]bool{
	"Content-Type":           true,
	"Content-Encoding":       true,
	"Date":                   true,
	"Cache-Control":          true,
	"X-Content-Type-Options": true,
}

// writeJSONError writes a complete response of the proxy's own making, with body
// {"error": msg, "hint": hint}, and records it in rec (if not nil).
func (x *exchange) writeJSONError(bw *bufio.Writer, rec *Exchange, status int, msg, hint string, extra nethttp.Header) error {
	body, err := json.Marshal(struct {
		Error string `json:"error"`
		Hint  string `json:"hint,omitempty"`
	}{msg, hint})
	if err != nil {
		return err
	}
	body = append(body, '\n')
	h := nethttp.Header{}
	for k, vv := range extra {
		k = canonicalKey(k)
		if isHopByHop(k, nil) || proxyHeaders[k] {
			continue
		}
		for _, v := range vv {
			h.Add(k, v)
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Date", time.Now().UTC().Format(nethttp.TimeFormat))
	x.frame(h, status, int64(len(body)))
	writeHead(bw, x.minor, status, h)
	sent := x.bodyAllowed(status)
	if sent {
		bw.Write(body)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if rec != nil {
		rec.Status, rec.ContentType = status, "application/json"
		if sent {
			rec.Body, rec.BodyBytes = body, int64(len(body))
		}
	}
	return nil
}

// bodyAllowed says whether a response of this status to this request carries a body.
func (x *exchange) bodyAllowed(status int) bool {
	return !x.head && status != nethttp.StatusNoContent && status != nethttp.StatusNotModified && status/100 != 1
}

// frame sets h's framing fields for a response whose body has length bytes (-1: not known
// before it ends) and says whether the body goes chunked. A body of unknown length to an
// HTTP/1.0 client is delimited by the end of the connection.
func (x *exchange) frame(h nethttp.Header, status int, length int64) (chunked bool) {
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	h.Del("Connection")
	switch {
	case status == nethttp.StatusNoContent || status == nethttp.StatusNotModified || status/100 == 1:
	case x.head:
		if length >= 0 {
			h.Set("Content-Length", strconv.FormatInt(length, 10))
		}
	case length >= 0:
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	case x.minor >= 1:
		h.Set("Transfer-Encoding", "chunked")
		chunked = true
	default:
		x.close = true
	}
	if x.close {
		h.Set("Connection", "close")
	} else if x.minor == 0 {
		h.Set("Connection", "keep-alive")
	}
	return chunked
}

// writeHead writes a status line and the fields of h (sorted; invalid ones left out).
func writeHead(bw *bufio.Writer, minor, status int, h nethttp.Header) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	bw.WriteString(strconv.Itoa(status))
	bw.WriteByte(' ')
	if text := nethttp.StatusText(status); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code " + strconv.Itoa(status))
	}
	bw.WriteString("\r\n")
	for _, k := range slices.Sorted(maps.Keys(h)) {
		if !validFieldName(k) {
			continue
		}
		for _, v := range h[k] {
			if !validFieldValue(v) {
				continue
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
}

func canonicalKey(k string) string { return nethttp.CanonicalHeaderKey(k) }

// clientReader is what the connection's bufio.Reader reads from: the connection, after the byte
// a watch read ahead (if any), with an inactivity deadline per read while perRead is set.
type clientReader struct {
	conn    net.Conn
	perRead time.Duration
	pending bool
	b       [1]byte
}

func (cr *clientReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if cr.pending {
		cr.pending = false
		p[0] = cr.b[0]
		return 1, nil
	}
	if cr.perRead > 0 {
		cr.conn.SetReadDeadline(time.Now().Add(cr.perRead))
	}
	return cr.conn.Read(p)
}

// errClientGone ends an exchange whose client closed or reset the connection.
var errClientGone = errors.New("the client went away")

// clientWatch reads ahead one byte while an exchange runs, so that a client that goes away ends
// the exchange's context (a held approval, a request upstream) instead of going unnoticed.
type clientWatch struct {
	done     chan struct{}
	stopping atomic.Bool
}

// watchClient starts a watch, unless the client already sent more (a pipelined request): then
// nothing is read ahead, and a client that goes away is noticed when its answer is written.
// A read that fails because Serve's ctx ended (Serve closes the connection then) passes on ctx's
// cause: the parent's cancellation reaches the request's ctx a moment after it closes ctx.Done,
// and the watch must not win that race with errClientGone.
func (c *clientConn) watchClient(ctx context.Context, cancel context.CancelCauseFunc) *clientWatch {
	if c.br.Buffered() > 0 || c.cr.pending {
		return nil
	}
	w := &clientWatch{done: make(chan struct{})}
	c.conn.SetReadDeadline(time.Time{})
	go func() {
		defer close(w.done)
		n, err := c.conn.Read(c.cr.b[:])
		if n == 1 {
			c.cr.pending = true
		}
		switch {
		case err == nil || w.stopping.Load():
		case ctx.Err() != nil:
			cancel(context.Cause(ctx))
		default:
			cancel(errClientGone)
		}
	}()
	return w
}

// stopWatch ends w's read and waits for it; the next read of the connection sets its own deadline.
func (c *clientConn) stopWatch(w *clientWatch) {
	if w == nil {
		return
	}
	w.stopping.Store(true)
	c.conn.SetReadDeadline(time.Unix(1, 0))
	<-w.done
}

// deadlineWriter gives every write to the client timeout to complete: a client that stops
// reading does not hold the session forever.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.conn.Write(p)
}

// maskedError is err for the record and the log: some upstream errors quote what the service
// sent ("malformed HTTP response …"), which is masked like a response would be, and any echo
// of the credential in it overwritten. It unwraps to err for errors.Is and errors.As.
func maskedError(context string, err error, m Masker, cr *Credential) error {
	text := err.Error()
	if forms := credentialForms(cr); forms != nil {
		b := []byte(text)
		if found, _ := forms.redact(b); found {
			text = string(b)
		}
	}
	if m != nil {
		out, changed, merr := m.MaskText([]byte(text), nil)
		switch {
		case merr != nil:
			text = "(error text withheld: it could not be masked)"
		case changed:
			text = string(out)
		}
	}
	return &upstreamError{text: context + ": " + text, err: err}
}

type upstreamError struct {
	text string
	err  error
}

func (e *upstreamError) Error() string { return e.text }
func (e *upstreamError) Unwrap() error { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// isConnError says whether err is the connection failing rather than what was read on it.
func isConnError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}
