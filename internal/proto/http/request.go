package http

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	nethttp "net/http"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// tlsHandshakeByte opens a TLS record carrying a ClientHello: a client speaking HTTPS to a
// plain-HTTP target.
const tlsHandshakeByte = 0x16

// refusal is a response the proxy makes itself: a request it will not forward, and why.
type refusal struct {
	status int
	msg    string
	hint   string
}

func (r *refusal) Error() string { return fmt.Sprintf("%d %s", r.status, r.msg) }

func refuse(status int, hint, format string, args ...any) *refusal {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...), hint: hint}
}

const (
	hintTarget   = `send an origin-form target: the path as the service names it, starting with "/", with no "." or ".." segments, "//", ";" or backslashes, no encoded "/", "\", "." or "%", and letters, digits, "-" and "_" unencoded`
	hintSyntax   = "send a well-formed HTTP/1.1 request"
	hintTunnel   = "the enforcer inspects every request, so it forwards plain HTTP/1.1 requests only"
	hintFraming  = "send the body with one Content-Length, or chunked"
	hintOverride = "send the method and the path themselves: the enforcer judges the request line, and some servers run the method or the path that this names instead"
)

// requestHead is a request line and its header fields as the client sent them.
type requestHead struct {
	method string
	target string
	minor  int // HTTP/1.minor
	header nethttp.Header
}

// errHeadTooLarge is a head over the size limit (answered with 431).
var errHeadTooLarge = errors.New("request head too large")

// readHead reads one request head of at most max bytes (leading empty lines included). Syntax
// errors are *refusal; errHeadTooLarge, and read errors of the connection, are returned as such.
func readHead(br *bufio.Reader, max int) (*requestHead, error) {
	budget := max
	var line []byte
	var err error
	// RFC 9112 §2.2: a server should ignore empty lines before a request line.
	for len(line) == 0 {
		if line, err = readLine(br, &budget); err != nil {
			return nil, err
		}
	}
	h, err := parseRequestLine(string(line))
	if err != nil {
		return nil, err
	}
	h.header = nethttp.Header{}
	if err := readFields(br, &budget, h.header); err != nil {
		return nil, err
	}
	return h, nil
}

// readFields reads header (or trailer) fields up to the empty line that ends them.
func readFields(br *bufio.Reader, budget *int, into nethttp.Header) error {
	for {
		line, err := readLine(br, budget)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return refuse(nethttp.StatusBadRequest, hintSyntax, "folded header lines (obs-fold) are not accepted")
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return refuse(nethttp.StatusBadRequest, hintSyntax, "header line without a colon")
		}
		if !validFieldName(string(name)) {
			return refuse(nethttp.StatusBadRequest, hintSyntax, "invalid header name %s", quote(string(name)))
		}
		value = bytes.Trim(value, " \t")
		if !validFieldValue(string(value)) {
			return refuse(nethttp.StatusBadRequest, hintSyntax, "header %s holds a control character", textproto.CanonicalMIMEHeaderKey(string(name)))
		}
		key := textproto.CanonicalMIMEHeaderKey(string(name))
		into[key] = append(into[key], string(value))
	}
}

// readLine reads one line ending in LF or CRLF, without its ending, charging it to budget. A
// bare CR anywhere is refused: servers disagree on whether it ends a line.
func readLine(br *bufio.Reader, budget *int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(frag) > *budget {
			return nil, errHeadTooLarge
		}
		*budget -= len(frag)
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		break
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, refuse(nethttp.StatusBadRequest, hintSyntax, "bare CR in the request head")
	}
	return line, nil
}

// parseRequestLine reads "METHOD SP target SP HTTP/1.x", one space each, nothing else.
func parseRequestLine(line string) (*requestHead, error) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || strings.IndexByte(version, ' ') >= 0 {
		return nil, refuse(nethttp.StatusBadRequest, hintSyntax, "malformed request line")
	}
	if !validToken(method) {
		return nil, refuse(nethttp.StatusBadRequest, hintSyntax, "invalid method %s", quote(method))
	}
	h := &requestHead{method: method, target: target}
	switch version {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	case "HTTP/2.0":
		if method == "PRI" && target == "*" {
			return h, refuse(nethttp.StatusHTTPVersionNotSupported, hintTunnel, "HTTP/2 (prior knowledge) is not supported")
		}
		return h, refuse(nethttp.StatusHTTPVersionNotSupported, hintTunnel, "only HTTP/1.0 and HTTP/1.1 are supported")
	default:
		if strings.HasPrefix(version, "HTTP/") {
			return h, refuse(nethttp.StatusHTTPVersionNotSupported, hintTunnel, "only HTTP/1.0 and HTTP/1.1 are supported")
		}
		return h, refuse(nethttp.StatusBadRequest, hintSyntax, "malformed request line")
	}
	return h, nil
}

// bodyFraming says how a request body is delimited.
type bodyFraming struct {
	length  int64 // with chunked false: the Content-Length (0: no body)
	chunked bool
}

// checkHead refuses what cannot be forwarded as judged, and fills r from h. Order matters for
// the status: what the proxy will never do (tunnels, upgrades) before how it was asked.
func checkHead(h *requestHead, r *Request) (bodyFraming, *refusal) {
	r.Method = h.method
	r.Header = endToEndHeader(h.header)
	path, query, _ := strings.Cut(h.target, "?")
	r.Path, r.RawQuery = path, query
	hosts := h.header["Host"]
	if len(hosts) > 0 {
		r.Host = hosts[0]
	}

	switch {
	case strings.EqualFold(h.method, nethttp.MethodConnect):
		return bodyFraming{}, refuse(nethttp.StatusMethodNotAllowed, hintTunnel, "CONNECT is not allowed: a tunnel cannot be inspected")
	case strings.EqualFold(h.method, nethttp.MethodTrace), strings.EqualFold(h.method, "TRACK"):
		return bodyFraming{}, refuse(nethttp.StatusMethodNotAllowed, "use another method", "%s is not allowed: it echoes the request, credentials included", strings.ToUpper(h.method))
	}
	if strings.ToUpper(h.method) != h.method {
		// Methods are case-sensitive, but some servers upper-case them: "delete" would run as
		// DELETE past a rule on "DELETE". The rules refuse it too; the proxy says so first.
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, "send the method in upper case", "method %s has lower-case letters", quote(h.method))
	}
	if _, ok := h.header["Upgrade"]; ok {
		return bodyFraming{}, refuse(nethttp.StatusNotImplemented, hintTunnel, "protocol upgrades (WebSocket, h2c) are not supported: the enforcer cannot inspect them")
	}
	p, q, err := checkTarget(h.target)
	if err != nil {
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintTarget, "request target refused: %v", err)
	}
	r.Path, r.RawQuery = p, q
	if ref := checkOverrides(r); ref != nil {
		return bodyFraming{}, ref
	}

	switch {
	case len(hosts) > 1:
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintSyntax, "more than one Host header")
	case len(hosts) == 0 && h.minor >= 1:
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintSyntax, "missing Host header")
	case len(hosts) == 1 && !validHost(hosts[0]):
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintSyntax, "invalid Host header %s", quote(hosts[0]))
	case len(r.Header["Content-Type"]) > 1:
		// Servers take the first or the last, rules read both joined, approvals the first.
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintSyntax, "more than one Content-Type header")
	}
	for k, vs := range r.Header {
		if len(vs) > 1 && !listHeaders[k] {
			// Rules read the values joined ("1, 1"), servers read the first or the last ("1"):
			// a block rule on the value would miss what the server acts on.
			return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintSyntax, "the header %s is sent %d times; send it once", quote(k), len(vs))
		}
	}

	return checkFraming(h)
}

// listHeaders are request fields defined as comma-separated lists (RFC 9110 5.3): sent several
// times they mean their values joined, as rules read them. Any other field sent twice is
// refused. (Hop-by-hop and address fields are dropped before forwarding whatever their count.)
var listHeaders = map[string]bool{
	"Accept": true, "Accept-Charset": true, "Accept-Encoding": true, "Accept-Language": true,
	"Cache-Control": true, "Pragma": true, "Prefer": true, "Via": true, "Warning": true,
	"If-Match": true, "If-None-Match": true, "Connection": true, "Te": true, "Trailer": true,
	"Upgrade": true, "Keep-Alive": true, "Forwarded": true, "X-Forwarded-For": true,
	"X-Forwarded-Proto": true, "X-Forwarded-Host": true,
	// W3C Trace Context and Baggage: tracing libraries and gateways append their own fields.
	"Tracestate": true, "Baggage": true,
	// One cookie list (RFC 6265 allows one field, some clients send a field per cookie), joined
	// with "; " as HTTP/2 (RFC 9113 §8.2.3) and Node join them.
	"Cookie": true,
}

// admit checks a request head as the proxy passes it on, filling r from h: checkHead's
// refusals, the agent's copies of what cr replaces removed, fields servers fold into one name,
// the Expect field; what is left of a list field sent several times is joined into one field,
// as rules read it. Serve and Inspect both go through it, so that `enforcer policy explain`
// refuses what the proxy refuses and judges what it forwards.
func admit(h *requestHead, r *Request, cr *Credential) (f bodyFraming, cont bool, ref *refusal) {
	f, ref = checkHead(h, r)
	stripCredentialFields(r.Header, cr)
	if ref != nil {
		return f, false, ref
	}
	if ref = checkFoldedNames(r.Header); ref != nil {
		return f, false, ref
	}
	if cont, ref = expectation(h); ref != nil {
		return f, false, ref
	}
	joinListFields(r.Header)
	return f, cont, nil
}

// checkFoldedNames refuses two fields that servers which read '_' in a name as '-' (CGI, PHP,
// Puma) take for one field and others (Go, Node) for two: "X-Tenant: eu" with "X_Tenant: prod"
// is one tenant or the other depending on the server, and rules would read either.
func checkFoldedNames(h nethttp.Header) *refusal {
	var seen map[string]string
	for k := range h {
		if !strings.Contains(k, "_") {
			continue
		}
		if seen == nil {
			seen = map[string]string{}
			for k2 := range h {
				if !strings.Contains(k2, "_") {
					seen[fieldKey(k2)] = k2
				}
			}
		}
		key := fieldKey(k)
		if other, ok := seen[key]; ok {
			first, second := min(k, other), max(k, other)
			return refuse(nethttp.StatusBadRequest, "spell each header name with \"-\" and send it once",
				"the headers %s and %s are one header to servers that read \"_\" as \"-\" and two to others; send one", quote(first), quote(second))
		}
		seen[key] = k
	}
	return nil
}

// joinListFields makes each list field sent several times one field of its values joined with
// ", " (RFC 9110 §5.3: the same list; "; " for Cookie): rules read it joined, and servers that
// read only a field's first line (Go's Header.Get) must get the list the rules judged.
func joinListFields(h nethttp.Header) {
	for k, vs := range h {
		if len(vs) > 1 {
			sep := ", "
			if k == "Cookie" {
				sep = "; "
			}
			h[k] = []string{strings.Join(vs, sep)}
		}
	}
}

// checkFraming reads the body's length from the head, refusing any framing two parsers could
// read differently (request smuggling).
func checkFraming(h *requestHead) (bodyFraming, *refusal) {
	te, hasTE := h.header["Transfer-Encoding"]
	cl, hasCL := h.header["Content-Length"]
	if hasTE {
		switch {
		case hasCL:
			return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintFraming, "both Content-Length and Transfer-Encoding")
		case h.minor == 0:
			return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintFraming, "Transfer-Encoding in an HTTP/1.0 request")
		case len(te) != 1 || !strings.EqualFold(te[0], "chunked"):
			return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintFraming, "Transfer-Encoding %s is not supported, only chunked", quote(strings.Join(te, ", ")))
		}
		return bodyFraming{chunked: true}, nil
	}
	if !hasCL {
		return bodyFraming{}, nil
	}
	if len(cl) != 1 {
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintFraming, "more than one Content-Length")
	}
	n, err := parseContentLength(cl[0])
	if err != nil {
		return bodyFraming{}, refuse(nethttp.StatusBadRequest, hintFraming, "invalid Content-Length %s", quote(cl[0]))
	}
	return bodyFraming{length: n}, nil
}

// parseContentLength accepts digits only: no sign, no spaces, no list.
func parseContentLength(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a number")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// overrideHeaders make some servers run another method or path than the request line's:
// Rack::MethodOverride (Rails), Symfony and Laravel, Express's method-override, ASP.NET and
// Google's APIs read a method from the first three; IIS, Zend and Laminas route on the last two.
var overrideHeaders = map[string]bool{
	"X-Http-Method-Override": true,
	"X-Http-Method":          true,
	"X-Method-Override":      true,
	"X-Original-Url":         true,
	"X-Rewrite-Url":          true,
}

// checkOverrides refuses a request whose fields or query name another method or path for the
// server than the one the rules and reviewers judge.
func checkOverrides(r *Request) *refusal {
	for k := range r.Header {
		if overrideHeaders[fieldKey(k)] {
			return refuse(nethttp.StatusBadRequest, hintOverride, "the %s header is not accepted", k)
		}
	}
	if hasMethodParam(r.RawQuery) {
		return refuse(nethttp.StatusBadRequest, hintOverride, `a "_method" parameter in the query is not accepted`)
	}
	return nil
}

// checkBodyOverrides refuses a body that names another method: "_method" in a form (Rails,
// Symfony and Laravel read it there) or at the top of a JSON object (Laravel reads it there too).
// A body without Content-Type counts as a form, as Rack parses one; a multipart body the proxy
// cannot read is refused, since it cannot tell.
//
// The body is read as servers' body parsers read it (Express's body-parser, ASP.NET's request
// decompression): decompressed (gzip or deflate, at most limit bytes, each byte of it first
// taken with take), and without a UTF-8 BOM. What the proxy cannot read that way is refused: a
// coding it does not decode, a charset in which "_method" need not be its ASCII bytes, a JSON
// object it cannot read to its end.
func checkBodyOverrides(h nethttp.Header, body []byte, limit int64, take func(int64) bool) *refusal {
	if len(body) == 0 {
		return nil
	}
	types := h["Content-Type"]
	if len(types) == 0 {
		types = []string{"application/x-www-form-urlencoded"}
	}
	for _, ct := range types {
		// body-parser decodes UTF-16 and UTF-7 bodies before it parses them, and the proxy
		// reads ASCII.
		if cs, ok := maskableCharset(ct); !ok {
			return refuse(nethttp.StatusUnsupportedMediaType, hintBodyForm,
				"a request body in charset %s is not accepted: the enforcer cannot check that it names no other method", quote(cs))
		}
	}
	decoded, ref := decodeRequestBody(contentCodings(h), body, limit, take)
	if ref != nil {
		return ref
	}
	for _, body := range decoded {
		if ref := checkDecodedBodyOverrides(types, body); ref != nil {
			return ref
		}
	}
	return nil
}

// hintBodyForm says how to send a body the override check can read.
const hintBodyForm = "send the body in UTF-8, uncompressed or with Content-Encoding gzip or deflate: the enforcer reads it as the service will, to check that it names no other method than the request line's"

// utf8BOM opens some UTF-8 bodies; body parsers drop it before they parse.
const utf8BOM = "\xef\xbb\xbf"

func checkDecodedBodyOverrides(types []string, body []byte) *refusal {
	for bytes.HasPrefix(body, []byte(utf8BOM)) {
		body = body[len(utf8BOM):]
	}
	switch found, err := jsonHasMethodKey(body); {
	case found:
		// Whatever its Content-Type says: Laravel reads a body sent as JSON, and Express's
		// method-override reads req.body, which a body parser may fill from any type.
		return refuse(nethttp.StatusBadRequest, hintOverride, `a "_method" key in the JSON body is not accepted`)
	case err != nil:
		return refuse(nethttp.StatusBadRequest, "send a JSON body that is valid JSON, or a body that does not start with \"{\"",
			`the body starts as a JSON object but cannot be read to its end (%v), so the enforcer cannot check that it has no "_method" key`, err)
	}
	for _, ct := range types {
		mt, _, _ := strings.Cut(ct, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		switch {
		case mt == "application/x-www-form-urlencoded":
			if hasMethodParam(string(body)) {
				return refuse(nethttp.StatusBadRequest, hintOverride, `a "_method" field in the form body is not accepted`)
			}
		case strings.HasPrefix(mt, "multipart/"):
			found, err := multipartHasMethodField(ct, body)
			switch {
			case err != nil:
				return refuse(nethttp.StatusBadRequest, hintSyntax, "multipart body cannot be read: %v", err)
			case found:
				return refuse(nethttp.StatusBadRequest, hintOverride, `a "_method" field in the form body is not accepted`)
			}
		}
	}
	return nil
}

// decodeRequestBody returns the body as servers that decode request bodies read it: as it is
// without a coding; gunzipped; for deflate, each of zlib's and raw deflate's reading that
// succeeds (Node reads zlib, .NET raw deflate), so that a body one reads differently from the
// other is checked both ways. Any other coding, or more than one, is refused.
func decodeRequestBody(codings []string, body []byte, limit int64, take func(int64) bool) ([][]byte, *refusal) {
	if len(codings) == 0 {
		return [][]byte{body}, nil
	}
	if len(codings) > 1 {
		return nil, refuse(nethttp.StatusUnsupportedMediaType, hintBodyForm,
			"request content codings %s are not accepted, only one of gzip and deflate", quote(strings.Join(codings, ", ")))
	}
	var readers []func() (io.Reader, error)
	switch codings[0] {
	case "gzip", "x-gzip":
		readers = append(readers, func() (io.Reader, error) { return gzip.NewReader(bytes.NewReader(body)) })
	case "deflate":
		readers = append(readers,
			func() (io.Reader, error) { return zlib.NewReader(bytes.NewReader(body)) },
			func() (io.Reader, error) { return flate.NewReader(bytes.NewReader(body)), nil })
	default:
		return nil, refuse(nethttp.StatusUnsupportedMediaType, hintBodyForm,
			"request content coding %s is not accepted: the enforcer cannot decode it to check the body", quote(codings[0]))
	}
	var decoded [][]byte
	var failure error
	for _, open := range readers {
		out, err := inflateBody(open, limit, take)
		switch {
		case err == errBodyBudget:
			return nil, refuse(nethttp.StatusServiceUnavailable, "try again in a moment",
				"the enforcer holds as many request bodies as it can")
		case err == errBodyTooLarge:
			return nil, refuse(nethttp.StatusRequestEntityTooLarge, "send a smaller body",
				"request body larger than %d bytes once decompressed", limit)
		case err != nil:
			failure = err
		default:
			decoded = append(decoded, out)
		}
	}
	if len(decoded) == 0 {
		return nil, refuse(nethttp.StatusBadRequest, hintBodyForm, "the %s request body cannot be decompressed: %v", codings[0], failure)
	}
	return decoded, nil
}

// inflateBody reads a decompressed body whole, at most limit bytes, taking its buffer with take.
func inflateBody(open func() (io.Reader, error), limit int64, take func(int64) bool) ([]byte, error) {
	r, err := open()
	if err != nil {
		return nil, err
	}
	buf := &bodyBuffer{most: limit + 1, take: take}
	n, err := io.Copy(buf, io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, errBodyTooLarge
	}
	return buf.buf, nil
}

// jsonHasMethodKey says whether body is a JSON object with a "_method" key at its top level
// (see isMethodParam), as Laravel's request reads a JSON body: it then runs a POST as the method
// that key names. A key found before a syntax error counts (a server's parser would take none
// of it, and refusing it costs nothing); an object it cannot read to its end is an error, since
// a parser that reads further (V8's has no nesting limit, encoding/json stops at 10000 levels)
// could find the key after it. What follows the object is not read: no server's JSON parser
// takes a key from there (and NDJSON bodies carry more values).
func jsonHasMethodKey(body []byte) (bool, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil {
		return false, err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false, err
		}
		key, ok := tok.(string)
		if !ok {
			return false, fmt.Errorf("object key %v is not a string", tok)
		}
		if isMethodParam(key) {
			return true, nil
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return false, err
		}
	}
	// More stops at the end of the input as at the object's '}': only the token says which.
	if _, err := dec.Token(); err != nil {
		return false, err
	}
	return false, nil
}

func multipartHasMethodField(contentType string, body []byte) (bool, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, err
	}
	boundary := params["boundary"]
	if boundary == "" {
		return false, errors.New("no boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		// Rack takes a part's name whatever its disposition type; FormName only for form-data.
		if _, cd, err := mime.ParseMediaType(part.Header.Get("Content-Disposition")); err == nil && isMethodParam(cd["name"]) {
			return true, nil
		}
		if isMethodParam(part.FormName()) {
			return true, nil
		}
	}
}

// hasMethodParam says whether a query string or form body has a "_method" key, split as any
// server might (on '&' and ';') and read as any might (decoded or not).
func hasMethodParam(query string) bool {
	for pair := range strings.FieldsFuncSeq(query, func(c rune) bool { return c == '&' || c == ';' }) {
		key, _, _ := strings.Cut(pair, "=")
		if isMethodParam(key) {
			return true
		}
		if dec, err := url.QueryUnescape(key); err == nil && isMethodParam(dec) {
			return true
		}
	}
	return false
}

// isMethodParam says whether a parameter name is "_method", in any case and as PHP reads it
// too: it drops leading spaces and turns '.', ' ' and '[' into '_' (".method" is "_method"). A
// name with brackets counts by the name it nests under: qs (Express's extended forms), PHP and
// Rack read "_method[]" and "_method[0]" as a list named "_method", of which method-override
// runs the first, and qs reads "[_method]" as "_method".
func isMethodParam(name string) bool {
	name = strings.TrimLeft(name, " ")
	if namesMethod(name) {
		return true
	}
	switch open := strings.IndexByte(name, '['); {
	case open > 0:
		return namesMethod(name[:open])
	case open == 0:
		if end := strings.IndexByte(name, ']'); end > 0 {
			return namesMethod(name[1:end])
		}
	}
	return false
}

// namesMethod says whether name is "_method" in any case, with PHP's '.', ' ' or '[' for '_'.
func namesMethod(name string) bool {
	if len(name) != len("_method") {
		return false
	}
	switch name[0] {
	case '_', '.', '[':
		return strings.EqualFold(name[1:], "method")
	}
	return false
}

// fieldKey is a field name as CGI, WSGI and PHP read it, '_' for '-' ("X_Forwarded_For" reaches
// them as HTTP_X_FORWARDED_FOR, as "X-Forwarded-For" does), in canonical form: a field the proxy
// removes or refuses is removed or refused under every such spelling.
func fieldKey(name string) string {
	return textproto.CanonicalMIMEHeaderKey(strings.ReplaceAll(name, "_", "-"))
}

// addressHeaders claim who the client is; the upstream must not believe the agent about that.
var addressHeaders = map[string]bool{
	"Forwarded":           true,
	"X-Real-Ip":           true,
	"X-Client-Ip":         true,
	"X-Cluster-Client-Ip": true,
	"X-Originating-Ip":    true,
	"X-Remote-Ip":         true,
	"X-Remote-Addr":       true,
	"True-Client-Ip":      true,
	"Cf-Connecting-Ip":    true,
	"Fastly-Client-Ip":    true,
	"Client-Ip":           true,
}

// hopByHop are the fields that concern one connection only (RFC 9110 §7.6.1), plus those the
// proxy handles itself (Host, Content-Length, Expect).
var hopByHop = map[string]bool{
	"Connection":        true,
	"Keep-Alive":        true,
	"Te":                true,
	"Trailer":           true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
	"Host":              true,
	"Content-Length":    true,
	"Expect":            true,
}

// isHopByHop says whether a field is never passed from one side to the other: hop-by-hop, the
// proxy's own (Proxy-*), or named by the message's Connection field (keys by fieldKey).
func isHopByHop(key string, connection map[string]bool) bool {
	key = fieldKey(key)
	return hopByHop[key] || strings.HasPrefix(key, "Proxy-") || connection[key]
}

// connectionTokens returns the field names a Connection header lists (by fieldKey).
func connectionTokens(h nethttp.Header) map[string]bool {
	var names map[string]bool
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				if names == nil {
					names = map[string]bool{}
				}
				names[fieldKey(tok)] = true
			}
		}
	}
	return names
}

// endToEndHeader is a copy of the client's fields without the hop-by-hop ones and those that
// claim client addresses.
func endToEndHeader(h nethttp.Header) nethttp.Header {
	conn := connectionTokens(h)
	out := make(nethttp.Header, len(h))
	for k, vv := range h {
		if isHopByHop(k, conn) || isAddressHeader(k) {
			continue
		}
		out[k] = append([]string(nil), vv...)
	}
	return out
}

// isAddressHeader says whether a field claims a client address (under any spelling, see fieldKey).
func isAddressHeader(name string) bool {
	key := fieldKey(name)
	return addressHeaders[key] || strings.HasPrefix(key, "X-Forwarded-")
}

// stripCredentialFields removes what a credential replaces: the client's own field of that
// name and its Authorization, under any spelling (see fieldKey); Proxy-Authorization, hop-by-hop,
// is gone already.
func stripCredentialFields(h nethttp.Header, cr *Credential) {
	if cr == nil {
		return
	}
	replaced := fieldKey(cr.Header)
	for k := range h {
		if key := fieldKey(k); key == "Authorization" || key == replaced {
			delete(h, k)
		}
	}
}

// quote is %q of a value the client sent, cut short: messages name it, but do not carry
// whatever the client sent into logs and records whole.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}

// wantsClose says whether the client asked for the connection to end after this response.
func wantsClose(h *requestHead) bool {
	conn := connectionTokens(h.header)
	if h.minor == 0 {
		return !conn["Keep-Alive"]
	}
	return conn["Close"]
}

// expectation reads the Expect field: continue says the client waits for 100 Continue; a
// refusal is an expectation the proxy cannot meet (417).
func expectation(h *requestHead) (cont bool, ref *refusal) {
	vv, ok := h.header["Expect"]
	if !ok {
		return false, nil
	}
	if len(vv) != 1 || !strings.EqualFold(vv[0], "100-continue") {
		return false, refuse(nethttp.StatusExpectationFailed, "send no Expect header, or Expect: 100-continue", "unsupported expectation %s", quote(strings.Join(vv, ", ")))
	}
	return h.minor >= 1, nil
}

// errBodyTooLarge is a request body over MaxRequestBody.
var errBodyTooLarge = errors.New("request body too large")

// errBodyBudget is a request body the Server cannot hold now: the bodies its sessions hold
// together are at MaxBufferedBodies.
var errBodyBudget = errors.New("the request bodies held by the proxy are at their limit")

// readBody reads a request body of the given framing, at most max bytes, and a chunked body's
// trailer section (discarded: trailers are not forwarded), bounded by maxTrailer. Every byte of
// buffer it allocates is first taken with take; when take refuses, it returns errBodyBudget.
func readBody(br *bufio.Reader, f bodyFraming, max int64, maxTrailer int, take func(int64) bool) ([]byte, error) {
	if !f.chunked {
		if f.length == 0 {
			return nil, nil
		}
		if f.length > max {
			return nil, errBodyTooLarge
		}
		buf := &bodyBuffer{most: f.length, take: take}
		if _, err := io.CopyN(buf, br, f.length); err != nil {
			return nil, eofIsUnexpected(err)
		}
		return buf.buf, nil
	}
	buf := &bodyBuffer{most: max + 1, take: take}
	n, err := io.Copy(buf, io.LimitReader(httputil.NewChunkedReader(br), max+1))
	if err != nil {
		if err == errBodyBudget || isConnError(err) {
			return nil, eofIsUnexpected(err)
		}
		return nil, refuse(nethttp.StatusBadRequest, hintFraming, "malformed chunked body: %v", err)
	}
	if n > max {
		return nil, errBodyTooLarge
	}
	budget := maxTrailer
	if err := readFields(br, &budget, nethttp.Header{}); err != nil {
		if err == errHeadTooLarge {
			return nil, refuse(nethttp.StatusRequestHeaderFieldsTooLarge, hintSyntax, "request trailer larger than %d bytes", maxTrailer)
		}
		return nil, err
	}
	if len(buf.buf) == 0 {
		return nil, nil
	}
	return buf.buf, nil
}

// bodyBuffer collects a request body. Its capacity doubles as the body arrives, but never past
// the most the body can be (bytes.Buffer would hold 16 MiB for a body of 8 MiB), and every byte
// of it is first taken from the Server's budget, so the agent's bytes are paid for as they come.
type bodyBuffer struct {
	buf  []byte
	most int64
	take func(int64) bool
}

const minBodyBuffer = 4 << 10

func (b *bodyBuffer) Write(p []byte) (int, error) {
	if need := len(b.buf) + len(p); need > cap(b.buf) {
		grown := max(int64(need), min(max(2*int64(cap(b.buf)), minBodyBuffer), b.most))
		if !b.take(grown - int64(cap(b.buf))) {
			return 0, errBodyBudget
		}
		next := make([]byte, len(b.buf), grown)
		copy(next, b.buf)
		b.buf = next
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// validToken reports whether s is an RFC 9110 token (methods, field names).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func validFieldName(s string) bool { return validToken(s) }

// validFieldValue refuses control characters other than HTAB (NUL, CR, LF, DEL…).
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts a Host field of a name (letters, digits, '-', '.', '_', '~'), an IPv4
// address or a bracketed IPv6 literal, with an optional numeric port: nothing a server could
// split differently (userinfo, paths, percent-encoding, spaces, commas).
func validHost(h string) bool {
	if h == "" || len(h) > 262 {
		return false
	}
	host, port := h, ""
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		host, port = h[1:end], h[end+1:]
		if host == "" {
			return false
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !(c == ':' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
		if port != "" && port[0] != ':' {
			return false
		}
	} else {
		if i := strings.IndexByte(h, ':'); i >= 0 {
			host, port = h[:i], h[i:]
		}
		if host == "" {
			return false
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
				return false
			}
		}
	}
	if port == "" {
		return true
	}
	digits := port[1:]
	if digits == "" || len(digits) > 5 {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	n, _ := strconv.Atoi(digits)
	return n <= 65535
}

// ReservedCredentialHeader says whether a credential may not use the header name: the proxy
// sets or removes that header itself, so the credential would be lost or would break the
// request's framing. The policy refuses such names when it loads.
func ReservedCredentialHeader(name string) bool {
	key := fieldKey(name)
	return isHopByHop(key, nil) || key == "Accept-Encoding" || key == "Accept-Charset" || key == "Range" || key == "If-Range" ||
		isAddressHeader(key)
}

// Inspect is what the proxy makes of a request before its hook judges it, for tools that show
// how a request would be judged (`enforcer policy explain`): the Request the hook would get
// (headers as the hook sees them, with cr the target's credential, nil for none), or the error
// the proxy would refuse it with, as Serve refuses the same request sent on the wire: request
// line, field names and values (trimmed as read), framing, overrides, expectations. minor is the
// HTTP/1.minor version; the body is read as sent (its size is not checked against any Server's
// limit; decompressed to be checked, it may be as large as a Server's default MaxRequestBody).
func Inspect(method, target string, minor int, header nethttp.Header, body []byte, cr *Credential) (*Request, error) {
	if minor != 0 && minor != 1 {
		return nil, refuse(nethttp.StatusHTTPVersionNotSupported, hintTunnel, "only HTTP/1.0 and HTTP/1.1 are supported")
	}
	h, err := parseRequestLine(method + " " + target + " HTTP/1." + strconv.Itoa(minor))
	if err != nil {
		return nil, err
	}
	h.header = nethttp.Header{}
	for _, k := range slices.Sorted(maps.Keys(header)) {
		if !validFieldName(k) {
			return nil, refuse(nethttp.StatusBadRequest, hintSyntax, "invalid header name %s", quote(k))
		}
		key := textproto.CanonicalMIMEHeaderKey(k)
		for _, v := range header[k] {
			v = strings.Trim(v, " \t")
			if !validFieldValue(v) {
				return nil, refuse(nethttp.StatusBadRequest, hintSyntax, "header %s holds a control character", key)
			}
			h.header[key] = append(h.header[key], v)
		}
	}
	if len(body) > 0 && h.header.Get("Content-Length") == "" && h.header.Get("Transfer-Encoding") == "" {
		h.header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	r := &Request{}
	if _, _, ref := admit(h, r, cr); ref != nil {
		return nil, ref
	}
	if ref := checkBodyOverrides(r.Header, body, defaultMaxRequestBody, func(int64) bool { return true }); ref != nil {
		return nil, ref
	}
	r.Body = body
	return r, nil
}
