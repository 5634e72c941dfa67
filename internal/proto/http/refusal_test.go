package http

import (
	"net"
	nethttp "net/http"
	"strings"
	"testing"
	"time"
)

// TestMalformedRequestsRefused sends, over raw TCP, every kind of request the proxy must refuse
// itself. Each gets its status with a JSON error, the connection ends, the hook never judges it,
// it is recorded once, and the upstream never sees anything.
func TestMalformedRequestsRefused(t *testing.T) {
	up := startUpstream(t, echoHandler)
	srv := &Server{MaxHeaderBytes: 4 << 10, MaxRequestBody: 1 << 10}
	hook := newFakeHook()
	p := startProxy(t, srv, Upstream{Addr: up.addr()}, hook)

	get := func(target string) string { return "GET " + target + " HTTP/1.1\r\nHost: api.test\r\n\r\n" }
	cases := []struct {
		name   string
		raw    string
		status int
	}{
		{"absolute form", get("http://api.test/"), 400},
		{"asterisk form", "OPTIONS * HTTP/1.1\r\nHost: api.test\r\n\r\n", 400},
		{"dot dot segment", get("/a/../admin"), 400},
		{"dot segment", get("/a/./b"), 400},
		{"double slash", get("/a//b"), 400},
		{"backslash", get("/a\\b"), 400},
		{"encoded slash", get("/a%2Fb"), 400},
		{"encoded backslash", get("/a%5cb"), 400},
		{"encoded dot", get("/%2e%2e/admin"), 400},
		{"encoded NUL", get("/a%00b"), 400},
		{"raw control byte", get("/a\x01b"), 400},
		{"invalid percent-encoding", get("/a%zzb"), 400},
		{"path parameter dot dot", get("/public/..;/admin"), 400},
		{"overlong dot", get("/%c0%ae%c0%ae/admin"), 400},
		{"CONNECT", "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n", 405},
		{"TRACE", "TRACE / HTTP/1.1\r\nHost: api.test\r\n\r\n", 405},
		{"trace in lower case", "trace / HTTP/1.1\r\nHost: api.test\r\n\r\n", 405},
		{"WebSocket upgrade", "GET /ws HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 501},
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 501},
		{"HTTP/2 prior knowledge", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: api.test\r\n\r\n", 505},
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding gzip", "POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"two Transfer-Encoding fields", "POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two Content-Length fields", "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
		{"Content-Length with a sign", "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: +1\r\n\r\nx", 400},
		{"Content-Length list", "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 1, 1\r\n\r\nx", 400},
		{"two Host fields", "GET / HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: user@evil.test\r\n\r\n", 400},
		{"Host with a space", "GET / HTTP/1.1\r\nHost: api.test evil.test\r\n\r\n", 400},
		{"Host with a slash", "GET / HTTP/1.1\r\nHost: api.test/x\r\n\r\n", 400},
		{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : api.test\r\n\r\n", 400},
		{"folded header", "GET / HTTP/1.1\r\nHost: api.test\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"bare CR", "GET / HTTP/1.1\r\nHost: api.test\r\nX-A: 1\r2\r\n\r\n", 400},
		{"NUL in a header value", "GET / HTTP/1.1\r\nHost: api.test\r\nX-A: 1\x002\r\n\r\n", 400},
		{"garbage request line", "HELLO\r\n\r\n", 400},
		{"two spaces in the request line", "GET  / HTTP/1.1\r\nHost: api.test\r\n\r\n", 400},
		{"TLS ClientHello", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400},
		{"malformed chunk", "POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400},
		{"head over MaxHeaderBytes", "GET / HTTP/1.1\r\nHost: api.test\r\nX-Big: " + strings.Repeat("a", 5<<10) + "\r\n\r\n", 431},
		{"Content-Length over MaxRequestBody", "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 2048\r\n\r\n" + strings.Repeat("a", 2048), 413},
		{"chunked body over MaxRequestBody", "POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + strings.Repeat("a", 2048) + "\r\n0\r\n\r\n", 413},
		{"unknown expectation", "POST / HTTP/1.1\r\nHost: api.test\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := dialRaw(t, p.addr)
			conn.send(t, c.raw)
			resp, body := conn.response(t, "GET")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, c.status, body)
			}
			if msg, _ := errorBody(t, resp, body); msg == "" {
				t.Error("empty error message")
			}
			if !resp.Close {
				t.Error("response does not say Connection: close")
			}
			if !conn.closed() {
				t.Error("connection still open after the refusal")
			}
			conn.Close() // the proxy drains until the client closes too
			ex := hook.waitExchanges(t, i+1)
			if len(ex) != i+1 {
				t.Fatalf("%d exchanges recorded, want %d", len(ex), i+1)
			}
			e := ex[i]
			if e.Judged || e.Verdict.Allow || e.Status != c.status || e.Verdict.Status != c.status || e.Err != nil {
				t.Errorf("recorded Judged=%v Allow=%v Status=%d Verdict.Status=%d Err=%v", e.Judged, e.Verdict.Allow, e.Status, e.Verdict.Status, e.Err)
			}
			if e.Request == nil || e.Request.Header == nil {
				t.Fatal("recorded without a Request and its Header")
			}
			if n := len(hook.judged()); n != 0 {
				t.Errorf("the hook judged %d requests", n)
			}
			if n := up.hits.Load(); n != 0 {
				t.Fatalf("the upstream saw %d requests", n)
			}
			if err := p.waitServed(t); err == nil {
				t.Error("Serve returned nil for a refused request")
			}
		})
	}
}

// TestTimeoutsOnTheClientSide: a head that does not arrive in time gets 408; an idle
// connection is closed without a response and without a record.
func TestTimeoutsOnTheClientSide(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	p := startProxy(t, &Server{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}, Upstream{Addr: up.addr()}, hook)

	t.Run("partial head", func(t *testing.T) {
		conn := dialRaw(t, p.addr)
		conn.send(t, "GET / HTTP/1.1\r\nHost: api.test\r\n")
		resp, body := conn.response(t, "GET")
		if resp.StatusCode != nethttp.StatusRequestTimeout {
			t.Fatalf("status %d, want 408 (%s)", resp.StatusCode, body)
		}
		conn.Close()
		if e := hook.waitExchanges(t, 1)[0]; e.Status != 408 || e.Judged {
			t.Errorf("recorded %+v", e)
		}
		p.waitServed(t)
	})
	t.Run("idle", func(t *testing.T) {
		conn := dialRaw(t, p.addr)
		if !conn.closed() {
			t.Fatal("idle connection not closed")
		}
		if err := p.waitServed(t); err != nil {
			t.Errorf("Serve returned %v for an idle connection", err)
		}
		if n := len(hook.recorded()); n != 1 {
			t.Errorf("%d exchanges recorded, want only the earlier one", n)
		}
	})
	if n := up.hits.Load(); n != 0 {
		t.Errorf("the upstream saw %d requests", n)
	}
}

// TestRefuse: a connection refused before any request still gets a complete JSON answer,
// whatever the client sent (or nothing at all, within the 2 s bound).
func TestRefuse(t *testing.T) {
	for _, c := range []struct {
		name   string
		send   string
		status int
		want   int
		proto  string
	}{
		{"HTTP/1.1 request", "GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n", 401, 401, "HTTP/1.1"},
		{"HTTP/1.0 request", "GET /x HTTP/1.0\r\n\r\n", 403, 403, "HTTP/1.0"},
		{"request with a body", "POST /x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n\r\nhello", 403, 403, "HTTP/1.1"},
		{"status that is not an error", "GET / HTTP/1.1\r\nHost: api.test\r\n\r\n", 200, 403, "HTTP/1.1"},
		{"nothing sent", "", 401, 401, "HTTP/1.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan struct{})
			go func() {
				defer close(done)
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				Refuse(conn, c.status, "not logged in", "run `enforcer login`")
				conn.Close()
			}()
			conn := dialRaw(t, ln.Addr().String())
			conn.send(t, c.send)
			resp, body := conn.response(t, "GET")
			if resp.StatusCode != c.want || resp.Proto != c.proto || !resp.Close {
				t.Errorf("got %s %d close=%v, want %s %d close", resp.Proto, resp.StatusCode, resp.Close, c.proto, c.want)
			}
			if msg, hint := errorBody(t, resp, body); msg != "not logged in" || hint != "run `enforcer login`" {
				t.Errorf("error %q hint %q", msg, hint)
			}
			conn.Close()
			select {
			case <-done:
			case <-time.After(waitLimit):
				t.Fatal("Refuse did not return")
			}
		})
	}
}

// TestRefusedRequestRecordedFiltered: a request refused before the hook is recorded with what
// was read of it, its fields filtered as for a forwarded one (the client's Authorization gone
// where a credential replaces it, address claims gone).
func TestRefusedRequestRecordedFiltered(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Credential: &Credential{Header: "Authorization", Value: credentialValue}}, hook)
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /a/../admin?x=1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer agent\r\nX-Forwarded-For: 10.0.0.1\r\nUser-Agent: agent/1.0\r\n\r\n")
	if resp, _ := conn.response(t, "GET"); resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := hook.waitExchanges(t, 1)[0].Request
	if r.Method != "GET" || r.Path != "/a/../admin" || r.RawQuery != "x=1" || r.Host != "api.test" {
		t.Errorf("recorded %s %q ? %q host %q", r.Method, r.Path, r.RawQuery, r.Host)
	}
	if r.Header.Get("User-Agent") != "agent/1.0" || r.Header.Get("Authorization") != "" || r.Header.Get("X-Forwarded-For") != "" {
		t.Errorf("recorded fields %v", r.Header)
	}
}
