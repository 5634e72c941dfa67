package http

import (
	"context"
	"errors"
	"net"
	nethttp "net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestJSONBodyMethodOverrideRefused: Laravel builds its request from the JSON body when the
// Content-Type says JSON (Request::createFromBase: `request = json()`), and Symfony's getMethod,
// which Laravel enables parameter overrides for, then runs a POST as the method the body's
// top-level "_method" names; Express's method-override with a getter on req.body does the same.
// A policy that allows POST and blocks DELETE is passed by POST {"_method":"DELETE"}, so such a
// body is refused before any rule, whatever JSON type it is sent as or how the key is escaped. A
// "_method" that is not a top-level key, or a body that is not an object, passes.
func TestJSONBodyMethodOverrideRefused(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	for _, c := range []struct {
		name, contentType, body string
		status                  int
	}{
		{"application/json", "application/json", `{"title":"x","_method":"DELETE"}`, 400},
		{"with a charset", "application/json; charset=utf-8", `{"_method":"DELETE"}`, 400},
		{"a +json type", "application/vnd.api+json", `{"_method":"PUT"}`, 400},
		{"text/json", "text/json", `{"_method":"PATCH"}`, 400},
		{"escaped key", "application/json", `{"\u005fmethod":"DELETE"}`, 400},
		{"upper-case key", "application/json", `{"_METHOD":"DELETE"}`, 400},
		{"after a nested object", "application/json", `{"a":{"b":[1,{"c":2}]},"_method":"DELETE"}`, 400},
		{"key repeated", "application/json", `{"_method":"POST","_method":"DELETE"}`, 400},
		{"trailing garbage after the object", "application/json", `{"_method":"DELETE"} x`, 400},
		{"JSON object sent as plain text", "text/plain", ` {"_method":"DELETE"}`, 400},
		{"nested key passes", "application/json", `{"meta":{"_method":"DELETE"}}`, 200},
		{"value passes", "application/json", `{"note":"_method"}`, 200},
		{"array passes", "application/json", `[{"_method":"DELETE"}]`, 200},
		{"other keys pass", "application/json", `{"method":"DELETE","x_method":1}`, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, hits := len(hook.judged()), up.hits.Load()
			conn := dialRaw(t, p.addr)
			conn.send(t, "POST /v1/items/7 HTTP/1.1\r\nHost: api.test\r\nContent-Type: "+c.contentType+
				"\r\nContent-Length: "+strconv.Itoa(len(c.body))+"\r\n\r\n"+c.body)
			resp, body := conn.response(t, "POST")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			judged, forwarded := len(hook.judged())-before, up.hits.Load()-hits
			if c.status == 400 {
				if judged != 0 || forwarded != 0 {
					t.Fatalf("judged %d, forwarded %d: a request naming another method must reach neither", judged, forwarded)
				}
				if msg, _ := errorBody(t, resp, body); !strings.Contains(msg, "_method") {
					t.Errorf("refusal %q does not name the field", msg)
				}
				return
			}
			if judged != 1 || forwarded != 1 {
				t.Fatalf("judged %d, forwarded %d, want 1 and 1", judged, forwarded)
			}
		})
	}
}

// TestFieldsServersFoldIntoOneRefused: CGI, PHP and Puma (Rails) read '_' in a field name as
// '-', Go and Node do not. "X-Tenant: a" with "X_Tenant: b" is one field with two values to the
// first, two fields to the others, and rules would read one of them: refused, as a repeated field
// is. A name with '_' alone passes (the rules judge it under both spellings), and so do fields the
// proxy removes anyway under whatever spelling (the credential's, client addresses).
func TestFieldsServersFoldIntoOneRefused(t *testing.T) {
	seen := make(chan seenRequest, 10)
	up := startUpstream(t, captureHandler(seen))
	hook := newFakeHook()
	cred := &Credential{Header: "X-Api-Key", Value: "prod-credential-7d1e"}
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Credential: cred}, hook)
	for _, c := range []struct {
		name, fields string
		status       int
	}{
		{"X-Tenant and X_Tenant", "X-Tenant: eu\r\nX_Tenant: prod\r\n", 400},
		{"x_tenant and X-TENANT", "x_tenant: prod\r\nX-TENANT: eu\r\n", 400},
		{"X-Dry_Run and X_Dry-Run", "X-Dry_Run: true\r\nX_Dry-Run: false\r\n", 400},
		{"X_Tenant alone", "X_Tenant: prod\r\n", 200},
		{"the credential's field under two spellings", "X-Api-Key: a\r\nX_Api_Key: b\r\n", 200},
		{"client addresses under two spellings", "X-Forwarded-For: 10.0.0.1\r\nX_Forwarded_For: 10.0.0.2\r\n", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(hook.judged())
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET /v1/me HTTP/1.1\r\nHost: api.test\r\n"+c.fields+"\r\n")
			resp, body := conn.response(t, "GET")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			judged := len(hook.judged()) - before
			if c.status == 400 {
				if judged != 0 {
					t.Fatal("the hook judged a request whose fields servers read differently")
				}
				return
			}
			got := <-seen
			if v := got.Header.Values("X-Api-Key"); len(v) != 1 || v[0] != cred.Value {
				t.Errorf("the upstream got X-Api-Key %q, want the credential alone", v)
			}
			if judged != 1 {
				t.Fatalf("judged %d requests", judged)
			}
		})
	}
}

// TestRepeatedListFieldsForwardedAsJudged: a list field sent twice ("Accept: a" and "Accept: b")
// is one list to the rules ("a, b"), but Go's Header.Get and many frameworks read only its first
// line: a block rule on the joined value would judge a list the service never reads. The proxy
// forwards what the rules read, one field with the values joined (RFC 9110 §5.3 makes the two
// the same), and shows the hook that same field.
func TestRepeatedListFieldsForwardedAsJudged(t *testing.T) {
	seen := make(chan seenRequest, 1)
	up := startUpstream(t, captureHandler(seen))
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /v1/export HTTP/1.1\r\nHost: api.test\r\nAccept: text/csv\r\nAccept: application/json;q=0.1\r\n"+
		"Cache-Control: no-cache\r\ncache-control: max-age=0\r\n\r\n")
	if resp, body := conn.response(t, "GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	got := <-seen
	judged := hook.judged()[0].Header
	for field, want := range map[string]string{"Accept": "text/csv, application/json;q=0.1", "Cache-Control": "no-cache, max-age=0"} {
		if v := got.Header[field]; len(v) != 1 || v[0] != want {
			t.Errorf("the upstream got %s %q, want one field %q", field, v, want)
		}
		if v := judged[field]; len(v) != 1 || v[0] != want {
			t.Errorf("the hook was shown %s %q, want one field %q", field, v, want)
		}
	}
}

// TestTraceContextFieldsMayRepeat: W3C Trace Context's tracestate and W3C Baggage are lists that
// may be sent as several fields (tracing libraries and gateways append their own), and some
// clients send a Cookie field per cookie; refusing them as repeated single-valued fields would
// break those clients. Each reaches the service as one field, as rules read it.
func TestTraceContextFieldsMayRepeat(t *testing.T) {
	up := startUpstream(t, echoHandler)
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, newFakeHook())
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /v1/orders HTTP/1.1\r\nHost: api.test\r\n"+
		"Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"+
		"Tracestate: congo=t61rcWkgMzE\r\nTracestate: rojo=00f067aa0ba902b7\r\n"+
		"Baggage: userId=alice\r\nBaggage: isProduction=false\r\n"+
		"Cookie: session=s1\r\nCookie: theme=dark\r\n\r\n")
	resp, body := conn.response(t, "GET")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	got := decodeSeen(t, body)
	if v := got.Header.Get("Tracestate"); v != "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7" {
		t.Errorf("the upstream got Tracestate %q", v)
	}
	if v := got.Header.Get("Baggage"); v != "userId=alice, isProduction=false" {
		t.Errorf("the upstream got Baggage %q", v)
	}
	if v := got.Header["Cookie"]; len(v) != 1 || v[0] != "session=s1; theme=dark" {
		t.Errorf("the upstream got Cookie %q, want one field of both cookies", v)
	}
}

// inspectCase is one request given to Serve on the wire and to Inspect as its parts.
type inspectCase struct {
	name          string
	method        string
	target        string
	minor         int
	fields        [][2]string // in the order sent
	body          string
	refusedStatus int // 0: both pass it to the hook
}

func (c inspectCase) raw() string {
	var b strings.Builder
	b.WriteString(c.method + " " + c.target + " HTTP/1." + strconv.Itoa(c.minor) + "\r\n")
	for _, f := range c.fields {
		b.WriteString(f[0] + ":" + f[1] + "\r\n")
	}
	if c.body != "" {
		b.WriteString("Content-Length: " + strconv.Itoa(len(c.body)) + "\r\n")
	}
	b.WriteString("\r\n" + c.body)
	return b.String()
}

func (c inspectCase) header() nethttp.Header {
	h := nethttp.Header{}
	for _, f := range c.fields {
		h[f[0]] = append(h[f[0]], f[1])
	}
	return h
}

// TestInspectAgreesWithServe: `enforcer policy explain` asks Inspect what the proxy makes of a
// request, so that it judges what the daemon's rules would see; for every input it must refuse
// what Serve refuses, with the same status, and otherwise give the hook the same Request. Each
// case goes on the wire to a real Server and, as its parts, to Inspect.
func TestInspectAgreesWithServe(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	cred := &Credential{Header: "Authorization", Value: "Bearer prod-credential-5e77"}
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Credential: cred, Host: "api.internal"}, hook)
	host := [2]string{"Host", "api.test"}
	cases := []inspectCase{
		{name: "plain GET", method: "GET", target: "/v1/orders?limit=5", minor: 1, fields: [][2]string{host, {"Accept", "application/json"}}},
		{name: "decoded-looking path", method: "GET", target: "/v1/files/a%3Fb%23c%20d", minor: 1, fields: [][2]string{host}},
		{name: "HTTP/1.0 without Host", method: "GET", target: "/v1/orders", minor: 0},
		{name: "Accept twice", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"Accept", "text/csv"}, {"Accept", "*/*"}}},
		{name: "padded value", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"X-Tenant", "  eu \t"}}},
		{name: "agent's Authorization dropped", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"Authorization", "Bearer agent"}}},
		{name: "JSON POST", method: "POST", target: "/v1/search", minor: 1, fields: [][2]string{host, {"Content-Type", "application/json"}}, body: `{"q":"x"}`},

		{name: "unknown expectation", method: "POST", target: "/v1/items", minor: 1, fields: [][2]string{host, {"Expect", "200-ok"}}, body: "x", refusedStatus: 417},
		{name: "control byte in a value", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"X-A", "1\x012"}}, refusedStatus: 400},
		{name: "invalid field name", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"X(Bad)", "1"}}, refusedStatus: 400},
		{name: "method that is not a token", method: "G<T", target: "/", minor: 1, fields: [][2]string{host}, refusedStatus: 400},
		{name: "space in the query", method: "GET", target: "/a?b c", minor: 1, fields: [][2]string{host}, refusedStatus: 400},
		{name: "HTTP/1.2", method: "GET", target: "/", minor: 2, fields: [][2]string{host}, refusedStatus: 505},
		{name: "CONNECT", method: "CONNECT", target: "api.test:443", minor: 1, fields: [][2]string{host}, refusedStatus: 405},
		{name: "upgrade", method: "GET", target: "/ws", minor: 1, fields: [][2]string{host, {"Connection", "Upgrade"}, {"Upgrade", "websocket"}}, refusedStatus: 501},
		{name: "two Host fields", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"Host", "admin.test"}}, refusedStatus: 400},
		{name: "no Host in HTTP/1.1", method: "GET", target: "/", minor: 1, refusedStatus: 400},
		{name: "encoded letter", method: "GET", target: "/%61dmin", minor: 1, fields: [][2]string{host}, refusedStatus: 400},
		{name: "method override field", method: "POST", target: "/v1/items/7", minor: 1, fields: [][2]string{host, {"X-HTTP-Method-Override", "DELETE"}}, refusedStatus: 400},
		{name: "_method in a form body", method: "POST", target: "/v1/items/7", minor: 1, fields: [][2]string{host, {"Content-Type", "application/x-www-form-urlencoded"}}, body: "_method=DELETE", refusedStatus: 400},
		{name: "_method in a JSON body", method: "POST", target: "/v1/items/7", minor: 1, fields: [][2]string{host, {"Content-Type", "application/json"}}, body: `{"_method":"DELETE"}`, refusedStatus: 400},
		{name: "one field under two spellings", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"X-Tenant", "eu"}, {"X_Tenant", "prod"}}, refusedStatus: 400},
		{name: "repeated single field", method: "GET", target: "/", minor: 1, fields: [][2]string{host, {"X-Tenant", "eu"}, {"X-Tenant", "prod"}}, refusedStatus: 400},
		{name: "Transfer-Encoding gzip", method: "POST", target: "/", minor: 1, fields: [][2]string{host, {"Transfer-Encoding", "gzip"}}, refusedStatus: 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(hook.judged())
			conn := dialRaw(t, p.addr)
			conn.send(t, c.raw())
			resp, body := conn.response(t, c.method)
			var served *Request
			if judged := hook.judged(); len(judged) > before {
				served = judged[len(judged)-1]
			}

			inspected, err := Inspect(c.method, c.target, c.minor, c.header(), []byte(c.body), cred)
			var ref *refusal
			switch {
			case err != nil && !errors.As(err, &ref):
				t.Fatalf("Inspect: %v is not a refusal", err)
			case c.refusedStatus != 0 && (served != nil || resp.StatusCode != c.refusedStatus):
				t.Fatalf("Serve: status %d, judged %v; want %d before the hook (%s)", resp.StatusCode, served != nil, c.refusedStatus, body)
			case c.refusedStatus != 0 && (ref == nil || ref.status != c.refusedStatus):
				t.Fatalf("Inspect: %v; Serve refuses with %d", err, c.refusedStatus)
			case c.refusedStatus != 0:
				return
			case served == nil:
				t.Fatalf("Serve refused it: %d %s", resp.StatusCode, body)
			case err != nil:
				t.Fatalf("Inspect refused it: %v; Serve passed it", err)
			}
			if served.Method != inspected.Method || served.Path != inspected.Path || served.RawQuery != inspected.RawQuery ||
				served.Host != inspected.Host || string(served.Body) != string(inspected.Body) || !reflect.DeepEqual(served.Header, inspected.Header) {
				t.Errorf("Serve showed the hook %+v\nInspect gives           %+v", *served, *inspected)
			}
		})
	}
}

// TestRequestBodyBudgetGivenBackOnEveryEnding: whatever ends an exchange whose body was read (a
// refusal by the hook, a refusal of the body itself, an upstream that cannot be reached, a client
// that leaves while its request waits for a reviewer), the body's share of the Server's budget
// comes back: a share kept would shrink it for every session until requests all get 503.
func TestRequestBodyBudgetGivenBackOnEveryEnding(t *testing.T) {
	const bodyLen = 100 << 10
	up := startUpstream(t, echoHandler)
	closedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := closedLn.Addr().String()
	closedLn.Close()

	held := make(chan struct{}, 1)
	hook := newFakeHook()
	hook.decide = func(ctx context.Context, r *Request) Verdict {
		switch r.Path {
		case "/refused":
			return Verdict{Status: 403, Message: "no"}
		case "/held":
			held <- struct{}{}
			<-ctx.Done()
			return Verdict{Status: 403, Message: "the client left"}
		}
		return Verdict{Allow: true}
	}
	body := strings.Repeat("a", bodyLen)
	post := func(path, contentType, b string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: api.test\r\nContent-Type: " + contentType + "\r\nContent-Length: " + strconv.Itoa(len(b)) + "\r\n\r\n" + b
	}
	for _, c := range []struct {
		name     string
		upstream string
		raw      string
		status   int // 0: the client leaves without an answer
	}{
		{"allowed and forwarded", up.addr(), post("/ok", "text/plain", body), 200},
		{"refused by the hook", up.addr(), post("/refused", "text/plain", body), 403},
		{"refused for its body", up.addr(), post("/form", "application/x-www-form-urlencoded", body+"&_method=DELETE"), 400},
		{"malformed chunked body", up.addr(), "POST /ok HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strconv.FormatInt(bodyLen, 16) + "\r\n" + body + "\r\nzz\r\n", 400},
		{"upstream unreachable", unreachable, post("/ok", "text/plain", body), 502},
		{"client leaves while held", up.addr(), post("/held", "text/plain", body), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := &Server{MaxRequestBody: 1 << 20, MaxBufferedBodies: 4 << 20}
			p := startProxy(t, srv, Upstream{Addr: c.upstream, DialTimeout: waitLimit / 2}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, c.raw)
			if c.status == 0 {
				<-held
				if srv.bodiesInUse() < bodyLen {
					t.Fatalf("a held body takes %d bytes of the budget, want at least %d", srv.bodiesInUse(), bodyLen)
				}
				conn.Close()
			} else if resp, b := conn.response(t, "POST"); resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, b)
			}
			waitBodies(t, srv, 0)
		})
	}
}

// TestHostlessRequestReachesUpstreamWithItsAddress: an HTTP/1.0 request may come without Host,
// and with no Host pinned net/http's Transport then sends Upstream.Addr as the Host; the hook's
// Request says Host "", and the guard judges it by that address (httpguard's sentHost), which
// this pins down.
func TestHostlessRequestReachesUpstreamWithItsAddress(t *testing.T) {
	seen := make(chan seenRequest, 1)
	up := startUpstream(t, captureHandler(seen))
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /v1/orders HTTP/1.0\r\n\r\n")
	if resp, body := conn.response(t, "GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := (<-seen).Host; got != up.addr() {
		t.Errorf("the upstream got Host %q, want its address %q", got, up.addr())
	}
	if h := hook.judged()[0].Host; h != "" {
		t.Errorf("the hook was shown Host %q, want none", h)
	}
}

// TestEncodedSeparatorsRefusedEverywhere: rules read the path decoded, so nothing encoded may
// decode into a separator, a dot or a '%' (a "." or ".." segment, "//", a backslash, a path
// parameter, or one more decoding) wherever it stands in the path and however it is spelt:
// either hex case, overlong UTF-8, double encoding, the Unicode forms servers normalise into
// them. Encoded characters that decode into plain data pass, and rules read them decoded.
func TestEncodedSeparatorsRefusedEverywhere(t *testing.T) {
	for _, enc := range []string{
		"%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%3b", "%3B", "%25", "%252e", "%252F",
		"%c0%ae", "%C0%AE", "%c0%af", "%e0%80%ae", "%f0%80%80%ae", "%c1%9c",
		"%ef%bc%8e", "%EF%BC%8F", "%ef%bc%bc", "%e2%80%a4", "%e2%80%a5", "%e2%88%95", "%e2%81%84", "%ef%b9%92",
		"%00", "%0a", "%0D", "%7f", "%c2%85", "%e2%80%a8",
	} {
		for _, target := range []string{"/" + enc, "/" + enc + enc + "/admin", "/a/" + enc + "/b", "/a/b" + enc, "/a" + enc + "b", "/" + enc + "?q=1"} {
			if _, _, err := checkTarget(target); err == nil {
				t.Errorf("%s: passed", target)
			}
		}
	}
	for target, decoded := range map[string]string{
		"/files/a%3Fb":        "/files/a?b",
		"/files/a%23b":        "/files/a#b",
		"/files/a%20b":        "/files/a b",
		"/files/caf%C3%A9":    "/files/café",
		"/users/a%40b":        "/users/a@b",
		"/~alice/%7Ebob":      "/~alice/~bob",
		"/a/..b/.c/d.":        "/a/..b/.c/d.",
		"/v1/items/a%2Bb?x=1": "/v1/items/a+b",
	} {
		path, _, err := checkTarget(target)
		if err != nil {
			t.Errorf("%s: %v", target, err)
			continue
		}
		if got, err := url.PathUnescape(path); err != nil || got != decoded {
			t.Errorf("%s decodes to %q (%v), want %q", target, got, err, decoded)
		}
	}
}
