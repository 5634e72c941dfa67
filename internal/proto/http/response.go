package http

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"strconv"
	"strings"
)

// roundTrip forwards r upstream with header (the client's end-to-end fields, the proxy's copy).
func (c *clientConn) roundTrip(ctx context.Context, r *Request, header nethttp.Header, m Masker, forceQuery bool) (*nethttp.Response, error) {
	u := &c.sess.Upstream
	stripCredentialFields(header, u.Credential)
	if m != nil {
		// Bodies must arrive in a form the masker reads, and whole: a masked document fetched
		// in byte ranges could be cut in the middle of every value it hides.
		header.Set("Accept-Encoding", "identity")
		header.Del("Range")
		header.Del("If-Range")
	}
	if cr := u.Credential; cr != nil {
		header.Set(cr.Header, cr.Value)
	}
	if _, ok := header["User-Agent"]; !ok {
		header["User-Agent"] = []string{""} // the Transport would send its own
	}
	host := u.Host
	if host == "" {
		host = r.Host
	}
	req := &nethttp.Request{
		Method:        r.Method,
		URL:           forwardURL(c.up.scheme, c.up.addr, r.Path, r.RawQuery, forceQuery),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Host:          host,
		ContentLength: int64(len(r.Body)),
	}
	if body := r.Body; len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return c.up.transport.RoundTrip(req.WithContext(ctx))
}

// respond passes resp to the client, masked as its type requires.
func (x *exchange) respond(ctx context.Context, resp *nethttp.Response, m Masker) (ending, error) {
	if resp.StatusCode == nethttp.StatusSwitchingProtocols {
		x.ex.Err = errors.New("upstream switched protocols without being asked to")
		return x.badGateway(nethttp.StatusBadGateway, "the service switched protocols, which the enforcer does not allow")
	}
	h := responseHeader(resp.Header)
	if ct := h["Content-Type"]; len(ct) > 1 {
		// The proxy and the client must read the body as the same type.
		h["Content-Type"] = ct[:1]
	}
	x.ex.ContentType = h.Get("Content-Type")
	kind := classify(x.ex.ContentType)
	status := resp.StatusCode

	if !x.bodyAllowed(status) {
		length := int64(-1)
		if x.head && resp.ContentLength >= 0 && (m == nil || kind == bodyBinary) {
			length = resp.ContentLength // masking would change a GET's length
		}
		x.frame(h, status, length)
		writeHead(x.c.bw, x.minor, status, h)
		if err := x.c.bw.Flush(); err != nil {
			x.ex.Err = fmt.Errorf("write response: %w", err)
			return resetConn, x.ex.Err
		}
		x.ex.Status = status
		return x.kept(), nil
	}

	if kind == bodyBinary {
		x.ex.Binary = true
		return x.stream(ctx, resp.Body, h, status, resp.ContentLength, recordNone)
	}
	if m == nil {
		record := recordAll
		if kind == bodySniff {
			record = recordIfText
		}
		return x.stream(ctx, resp.Body, h, status, resp.ContentLength, record)
	}

	src, decoded, err := decodeForMasking(resp.Body, h)
	if err != nil {
		x.ex.Err = err
		return x.badGateway(nethttp.StatusBadGateway, "the service's response is encoded in a way the enforcer cannot mask")
	}
	length := resp.ContentLength
	if decoded {
		length = -1
	}
	if kind == bodySniff {
		sb := bufio.NewReaderSize(src, 512)
		peek, err := sb.Peek(512)
		if err != nil && err != io.EOF {
			return x.upstreamBroke(ctx, err)
		}
		src = sb
		if !looksText(peek) {
			x.ex.Binary = true
			return x.stream(ctx, src, h, status, length, recordNone)
		}
		kind = bodyText
	}
	if kind == bodyEvents || kind == bodyJSONLines {
		return x.streamLines(ctx, src, h, status, kind, m)
	}
	return x.buffered(ctx, src, h, status, length, kind, m)
}

// upstreamBroke ends an exchange whose response body failed before anything of it was sent.
func (x *exchange) upstreamBroke(ctx context.Context, err error) (ending, error) {
	if ctx.Err() != nil {
		x.ex.Err = context.Cause(ctx)
		return resetConn, x.ex.Err
	}
	x.ex.Err = fmt.Errorf("upstream body: %w", err)
	return x.badGateway(nethttp.StatusBadGateway, "the service's response broke off")
}

// cut ends an exchange whose response is partly sent: the connection is reset.
func (x *exchange) cut(err error) (ending, error) {
	x.ex.Err = err
	return resetConn, err
}

// recording says what stream keeps of a body for the record.
type recording uint8

const (
	recordAll    recording = iota
	recordNone             // binary
	recordIfText           // the first read decides (Exchange.Binary)
)

// stream passes a body as it arrives, unmasked.
func (x *exchange) stream(ctx context.Context, src io.Reader, h nethttp.Header, status int, length int64, record recording) (ending, error) {
	c := x.c
	bw := x.startBody(h, status, length, record == recordAll)
	if bw == nil {
		return resetConn, x.ex.Err
	}
	if c.copyBuf == nil {
		c.copyBuf = make([]byte, 32<<10)
	}
	for {
		n, rerr := src.Read(c.copyBuf)
		if n > 0 {
			if record == recordIfText {
				// Only the record depends on it: the first read decides, so that nothing of a
				// stream is held back waiting for 512 bytes.
				x.ex.Binary = !looksText(c.copyBuf[:min(n, 512)])
				if !x.ex.Binary {
					bw.recordLimit = c.lim.recordBody
				}
				record = recordAll
			}
			bw.Write(c.copyBuf[:n])
			if err := bw.flush(); err != nil {
				return x.cut(fmt.Errorf("write response body: %w", err))
			}
		}
		if rerr == io.EOF {
			return x.endBody(bw)
		}
		if rerr != nil {
			return x.cut(x.readFailure(ctx, rerr))
		}
	}
}

// buffered reads a whole body (up to MaxMaskedBody), masks it and sends it with its length.
// Nothing of it is sent when it is too large, breaks off or cannot be masked.
func (x *exchange) buffered(ctx context.Context, src io.Reader, h nethttp.Header, status int, length int64, kind bodyKind, m Masker) (ending, error) {
	c := x.c
	limit := c.lim.maxMaskedBody
	if length > limit {
		x.ex.Err = fmt.Errorf("response body of %d bytes is over the masking limit of %d", length, limit)
		return x.badGateway(nethttp.StatusBadGateway, "the service's response is too large to mask")
	}
	data, err := io.ReadAll(io.LimitReader(src, limit+1))
	if err != nil {
		return x.upstreamBroke(ctx, err)
	}
	if int64(len(data)) > limit {
		x.ex.Err = fmt.Errorf("response body is over the masking limit of %d bytes", limit)
		return x.badGateway(nethttp.StatusBadGateway, "the service's response is too large to mask")
	}
	out, changed, err := maskDocument(m, kind, data, c.maskBuf[:0])
	if err != nil {
		x.ex.Err = fmt.Errorf("mask response body: %w", err)
		c.log.Warn("masking failed, response withheld", "err", err)
		return x.badGateway(nethttp.StatusBadGateway, "the service's response could not be masked, so it is withheld")
	}
	if changed {
		x.ex.Masked = true
		dropDigests(h)
		c.maskBuf = out[:0]
	}
	bw := x.startBody(h, status, int64(len(out)), true)
	if bw == nil {
		return resetConn, x.ex.Err
	}
	bw.Write(out)
	return x.endBody(bw)
}

// streamLines passes an event stream or JSON lines, each line masked as it completes and sent
// as soon as the upstream has nothing more buffered: streaming stays streaming.
func (x *exchange) streamLines(ctx context.Context, src io.Reader, h nethttp.Header, status int, kind bodyKind, m Masker) (ending, error) {
	c := x.c
	dropDigests(h)
	bw := x.startBody(h, status, -1, true)
	if bw == nil {
		return resetConn, x.ex.Err
	}
	lr := bufio.NewReaderSize(src, 32<<10)
	limit := c.lim.maxMaskedBody
	var line []byte
	for {
		frag, rerr := lr.ReadSlice('\n')
		line = append(line, frag...)
		if int64(len(line)) > limit {
			return x.cut(fmt.Errorf("a line of the %s response is longer than the masking limit of %d bytes", x.ex.ContentType, limit))
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if len(line) > 0 {
			content, end := splitLineEnd(line)
			out, changed, err := maskLine(m, kind, content, c.maskBuf[:0])
			if err != nil {
				c.log.Warn("masking failed, stream cut", "err", err)
				return x.cut(fmt.Errorf("mask response line: %w", err))
			}
			if changed {
				x.ex.Masked = true
				c.maskBuf = out[:0]
			}
			c.lineBuf = append(append(c.lineBuf[:0], out...), end...)
			bw.Write(c.lineBuf)
			line = line[:0]
		}
		if rerr == io.EOF {
			return x.endBody(bw)
		}
		if rerr != nil {
			return x.cut(x.readFailure(ctx, rerr))
		}
		if lr.Buffered() == 0 {
			if err := bw.flush(); err != nil {
				return x.cut(fmt.Errorf("write response body: %w", err))
			}
		}
	}
}

// readFailure says why reading the upstream's body failed: the client went away or the session
// ended (ctx), or the upstream.
func (x *exchange) readFailure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return fmt.Errorf("upstream body: %w", err)
}

// startBody writes the response head and returns the body's writer; nil (with Err set) when the
// client cannot be written to.
func (x *exchange) startBody(h nethttp.Header, status int, length int64, capture bool) *bodyWriter {
	chunked := x.frame(h, status, length)
	writeHead(x.c.bw, x.minor, status, h)
	if err := x.c.bw.Flush(); err != nil {
		x.ex.Err = fmt.Errorf("write response head: %w", err)
		return nil
	}
	x.ex.Status = status
	bw := &bodyWriter{bw: x.c.bw, chunked: chunked}
	if capture {
		bw.recordLimit = x.c.lim.recordBody
	}
	return bw
}

// endBody finishes a body and records what was sent of it.
func (x *exchange) endBody(bw *bodyWriter) (ending, error) {
	err := bw.finish()
	x.ex.Body, x.ex.BodyBytes = bw.record, bw.written
	x.ex.Truncated = bw.written > int64(len(bw.record))
	if err != nil {
		return x.cut(fmt.Errorf("write response body: %w", err))
	}
	return x.kept(), nil
}

// bodyWriter frames one response body (chunked or not) and keeps its start for the record.
// Writes are batched: a chunk goes out when flush is called or 32 KiB are pending.
type bodyWriter struct {
	bw          *bufio.Writer
	chunked     bool
	pending     []byte
	record      []byte
	recordLimit int
	written     int64
}

const maxChunk = 32 << 10

func (b *bodyWriter) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	b.written += int64(len(p))
	if room := b.recordLimit - len(b.record); room > 0 {
		b.record = append(b.record, p[:min(room, len(p))]...)
	}
	if !b.chunked {
		b.bw.Write(p)
		return
	}
	if len(b.pending)+len(p) > maxChunk {
		b.writeChunk(b.pending)
		b.pending = b.pending[:0]
	}
	if len(p) >= maxChunk {
		b.writeChunk(p)
		return
	}
	b.pending = append(b.pending, p...)
}

func (b *bodyWriter) writeChunk(p []byte) {
	if len(p) == 0 {
		return
	}
	b.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
	b.bw.WriteString("\r\n")
	b.bw.Write(p)
	b.bw.WriteString("\r\n")
}

// flush sends everything written so far to the client.
func (b *bodyWriter) flush() error {
	b.writeChunk(b.pending)
	b.pending = b.pending[:0]
	return b.bw.Flush()
}

// finish ends the body (the last chunk, when chunked) and sends it.
func (b *bodyWriter) finish() error {
	b.writeChunk(b.pending)
	b.pending = b.pending[:0]
	if b.chunked {
		b.bw.WriteString("0\r\n\r\n")
	}
	return b.bw.Flush()
}

// responseHeader is a copy of the upstream's fields without the hop-by-hop ones and the
// framing, which the proxy sets itself.
func responseHeader(h nethttp.Header) nethttp.Header {
	conn := connectionTokens(h)
	out := make(nethttp.Header, len(h))
	for k, vv := range h {
		if isHopByHop(k, conn) {
			continue
		}
		out[k] = vv
	}
	return out
}

// dropDigests removes the fields that checksum a body the proxy rewrote.
func dropDigests(h nethttp.Header) {
	for _, k := range []string{"Content-Md5", "Digest", "Content-Digest", "Repr-Digest"} {
		h.Del(k)
	}
}

// decodeForMasking returns the body to mask: as it came, or gunzipped (the header then loses its
// Content-Encoding); any other coding cannot be masked.
func decodeForMasking(body io.Reader, h nethttp.Header) (io.Reader, bool, error) {
	var codings []string
	for _, v := range h["Content-Encoding"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.ToLower(strings.TrimSpace(tok)); tok != "" && tok != "identity" {
				codings = append(codings, tok)
			}
		}
	}
	switch {
	case len(codings) == 0:
		h.Del("Content-Encoding")
		return body, false, nil
	case len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip"):
		zr, err := gzip.NewReader(body)
		if err == io.EOF {
			zr, body = nil, bytes.NewReader(nil) // an empty body labelled gzip
		} else if err != nil {
			return nil, false, fmt.Errorf("gzip response body: %w", err)
		}
		h.Del("Content-Encoding")
		dropDigests(h)
		if zr == nil {
			return body, true, nil
		}
		return zr, true, nil
	}
	return nil, false, fmt.Errorf("response content encoding %q cannot be masked", strings.Join(codings, ", "))
}

// bodyKind is how a response body is masked.
type bodyKind uint8

const (
	bodyText      bodyKind = iota // buffered, MaskText
	bodyJSON                      // buffered, MaskJSON (MaskText when it is not JSON)
	bodyEvents                    // text/event-stream, line by line
	bodyJSONLines                 // newline-delimited JSON, line by line
	bodySniff                     // text or binary by its first 512 bytes
	bodyBinary                    // passed unmasked
)

var jsonLinesTypes = map[string]bool{
	"application/x-ndjson":     true,
	"application/ndjson":       true,
	"application/jsonl":        true,
	"application/x-jsonlines":  true,
	"application/jsonlines":    true,
	"application/json-seq":     true,
	"application/x-json-lines": true,
}

var jsonTypes = map[string]bool{
	"application/json":   true,
	"application/x-json": true,
	"text/json":          true,
	"text/x-json":        true,
}

var textTypes = map[string]bool{
	"application/xml":                   true,
	"application/javascript":            true,
	"application/x-javascript":          true,
	"application/ecmascript":            true,
	"application/x-www-form-urlencoded": true,
	"application/yaml":                  true,
	"application/x-yaml":                true,
	"application/toml":                  true,
	"application/graphql":               true,
	"application/sql":                   true,
	"application/csv":                   true,
	"application/x-sh":                  true,
}

var binaryTypes = map[string]bool{
	"application/pdf":                 true,
	"application/zip":                 true,
	"application/gzip":                true,
	"application/x-gzip":              true,
	"application/x-tar":               true,
	"application/wasm":                true,
	"application/protobuf":            true,
	"application/x-protobuf":          true,
	"application/vnd.google.protobuf": true,
	"application/x-bzip2":             true,
	"application/x-xz":                true,
	"application/zstd":                true,
	"application/x-7z-compressed":     true,
}

// classify says how a body of this Content-Type is masked. Suffixes come before the binary
// families: image/svg+xml is text.
func classify(contentType string) bodyKind {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	switch {
	case mt == "":
		return bodyText
	case strings.HasPrefix(mt, "application/grpc"):
		return bodyBinary
	case mt == "text/event-stream":
		return bodyEvents
	case jsonLinesTypes[mt]:
		return bodyJSONLines
	case jsonTypes[mt] || strings.HasSuffix(mt, "+json"):
		return bodyJSON
	case strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "+xml") || textTypes[mt]:
		return bodyText
	case binaryTypes[mt]:
		return bodyBinary
	}
	family, _, _ := strings.Cut(mt, "/")
	switch family {
	case "image", "audio", "video", "font":
		return bodyBinary
	}
	return bodySniff
}

// looksText says whether a body whose type does not say looks like text (and is masked as such).
func looksText(peek []byte) bool {
	return strings.HasPrefix(nethttp.DetectContentType(peek), "text/")
}

// maskDocument masks a whole body of the given kind. A body labelled JSON that is not JSON is
// masked as text, never passed as it is.
func maskDocument(m Masker, kind bodyKind, in, dst []byte) ([]byte, bool, error) {
	if kind == bodyJSON && json.Valid(in) {
		return m.MaskJSON(in, dst)
	}
	return m.MaskText(in, dst)
}

// maskLine masks one line (without its end) of an event stream or of JSON lines. An event's
// data that is JSON is masked as JSON, so that key names give the detectors their context.
func maskLine(m Masker, kind bodyKind, line, dst []byte) ([]byte, bool, error) {
	switch kind {
	case bodyJSONLines:
		return maskDocument(m, bodyJSON, line, dst)
	case bodyEvents:
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = bytes.TrimPrefix(data, []byte(" "))
			if json.Valid(data) {
				prefix := line[:len(line)-len(data)]
				out, changed, err := m.MaskJSON(data, nil)
				if err != nil || !changed {
					return line, false, err
				}
				return append(append(dst, prefix...), out...), true, nil
			}
		}
	}
	return m.MaskText(line, dst)
}

// splitLineEnd splits a line into its content and its ending ("\n", "\r\n" or none at EOF).
func splitLineEnd(line []byte) (content, end []byte) {
	n := len(line)
	switch {
	case n >= 2 && line[n-2] == '\r' && line[n-1] == '\n':
		return line[:n-2], line[n-2:]
	case n >= 1 && line[n-1] == '\n':
		return line[:n-1], line[n-1:]
	}
	return line, nil
}
