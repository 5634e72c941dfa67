package http

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

const credentialValue = "Bearer prod-credential-8f2c41d9e7"

// TestCredentialAndHeaders checks what reaches the upstream of what the client sent: the
// credential replaces the client's, hop-by-hop and address-claiming fields are gone, the rest
// passes; the hook sees the client's fields without the credential.
func TestCredentialAndHeaders(t *testing.T) {
	clientHead := "GET /v1/me HTTP/1.1\r\n" +
		"Host: api.test\r\n" +
		"Authorization: Bearer agent-token\r\n" +
		"Proxy-Authorization: Basic YWdlbnQ6eA==\r\n" +
		"X-Api-Key: agent-key\r\n" +
		"X-Forwarded-For: 10.9.9.9\r\n" +
		"X-Forwarded-Host: admin.test\r\n" +
		"Forwarded: for=10.9.9.9\r\n" +
		"X-Real-IP: 10.9.9.9\r\n" +
		"True-Client-IP: 10.9.9.9\r\n" +
		"Connection: X-Hop\r\n" +
		"X-Hop: 1\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"TE: trailers\r\n" +
		"Accept-Encoding: gzip\r\n" +
		"X-Keep: yes\r\n" +
		"\r\n"
	gone := []string{"Proxy-Authorization", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Hop", "Keep-Alive", "Te", "Connection"}
	for _, c := range []struct {
		name       string
		credential *Credential
		masker     bool
		want       map[string]string // at the upstream; "" = absent
		hookSees   map[string]string // in Request.Header; "" = absent
	}{
		{"no credential", nil, false,
			map[string]string{"Authorization": "Bearer agent-token", "X-Api-Key": "agent-key", "Accept-Encoding": "gzip", "X-Keep": "yes"},
			map[string]string{"Authorization": "Bearer agent-token", "X-Api-Key": "agent-key", "X-Keep": "yes"}},
		{"credential in Authorization", &Credential{Header: "Authorization", Value: credentialValue}, false,
			map[string]string{"Authorization": credentialValue, "X-Api-Key": "agent-key", "X-Keep": "yes"},
			map[string]string{"Authorization": "", "X-Api-Key": "agent-key", "X-Keep": "yes"}},
		{"credential in X-Api-Key", &Credential{Header: "x-api-key", Value: credentialValue}, false,
			map[string]string{"Authorization": "", "X-Api-Key": credentialValue, "X-Keep": "yes"},
			map[string]string{"Authorization": "", "X-Api-Key": "", "X-Keep": "yes"}},
		{"masked response", nil, true,
			map[string]string{"Accept-Encoding": "identity", "X-Keep": "yes"},
			map[string]string{"Accept-Encoding": "gzip", "X-Keep": "yes"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen := make(chan seenRequest, 1)
			up := startUpstream(t, captureHandler(seen))
			hook := newFakeHook()
			if c.masker {
				hook.masker = testPlan(t)
			}
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Credential: c.credential}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, clientHead)
			if resp, body := conn.response(t, "GET"); resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := <-seen
			for k, v := range c.want {
				if got.Header.Get(k) != v {
					t.Errorf("upstream got %s %q, want %q", k, got.Header.Get(k), v)
				}
			}
			if vv := got.Header.Values("Authorization"); len(vv) > 1 {
				t.Errorf("upstream got %d Authorization fields", len(vv))
			}
			for _, k := range gone {
				if v, ok := got.Header[k]; ok {
					t.Errorf("upstream got %s %q", k, v)
				}
			}
			if ua, ok := got.Header["User-Agent"]; ok {
				t.Errorf("upstream got User-Agent %q, which the client did not send", ua)
			}
			if got.Host != "api.test" {
				t.Errorf("upstream got Host %q, want the client's", got.Host)
			}
			r := hook.judged()[0]
			for _, k := range gone {
				if _, ok := r.Header[k]; ok {
					t.Errorf("the hook was shown %s", k)
				}
			}
			for k, v := range c.hookSees {
				if r.Header.Get(k) != v {
					t.Errorf("the hook was shown %s %q, want %q", k, r.Header.Get(k), v)
				}
			}
			ex := hook.waitExchanges(t, 1)[0]
			checkNoSecret(t, fmt.Sprintf("%+v %+v", ex, ex.Request), p.logs.String())
		})
	}
}

// checkNoSecret fails if the credential's value is in any of texts.
func checkNoSecret(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, "prod-credential") {
			t.Errorf("credential leaked in %q", s)
		}
	}
}

// TestCredentialNeverPrinted: a Credential printed by mistake (fmt, slog) shows no secret.
func TestCredentialNeverPrinted(t *testing.T) {
	cr := &Credential{Header: "Authorization", Value: credentialValue}
	var logs lockedBuffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("upstream", "credential", cr, "value", *cr)
	checkNoSecret(t, fmt.Sprintf("%v %+v %#v %s", cr, *cr, *cr, cr), logs.String())
	if !strings.Contains(logs.String(), "Authorization") {
		t.Errorf("the header name is not shown: %q", logs.String())
	}
}

func TestHostForwarded(t *testing.T) {
	for _, c := range []struct{ name, upstreamHost, clientHost, want string }{
		{"client's Host", "", "api.test:8080", "api.test:8080"},
		{"pinned Host", "internal.api.test", "api.test", "internal.api.test"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := startUpstream(t, echoHandler)
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Host: c.upstreamHost}, newFakeHook())
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET / HTTP/1.1\r\nHost: "+c.clientHost+"\r\n\r\n")
			_, body := conn.response(t, "GET")
			if got := decodeSeen(t, body).Host; got != c.want {
				t.Errorf("upstream got Host %q, want %q", got, c.want)
			}
		})
	}
}

// TestTargetForwardedByteForByte: the upstream receives the request target exactly as the
// client sent it and the hook judged it.
func TestTargetForwardedByteForByte(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	conn := dialRaw(t, p.addr)
	for i, target := range []string{
		"/a/b%20c/%7Euser",
		"/search?q=%2F..%2F&x=1+2&&y=%zz",
		"/q?",
		"/caf%C3%A9/x:y@z!$&'()*+,=",
		"/v1/items/?sort=-name&filter[a]=b",
	} {
		conn.send(t, "GET "+target+" HTTP/1.1\r\nHost: api.test\r\n\r\n")
		resp, body := conn.response(t, "GET")
		if resp.StatusCode != 200 {
			t.Fatalf("%q: status %d: %s", target, resp.StatusCode, body)
		}
		if got := decodeSeen(t, body).RequestURI; got != target {
			t.Errorf("sent %q, upstream got %q", target, got)
		}
		r := hook.judged()[i]
		if judged := r.Path + "?" + r.RawQuery; strings.TrimSuffix(judged, "?") != strings.TrimSuffix(target, "?") {
			t.Errorf("sent %q, hook judged path %q query %q", target, r.Path, r.RawQuery)
		}
	}
}

// TestRequestBodies: bodies reach the hook whole and the upstream unchanged, whatever their
// framing on the client side (a chunked body is forwarded with its length, trailers dropped).
func TestRequestBodies(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	for i, c := range []struct{ name, raw, want string }{
		{"Content-Length", "POST /p HTTP/1.1\r\nHost: api.test\r\nContent-Length: 11\r\n\r\nhello world", "hello world"},
		{"chunked with trailer", "POST /p HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n", "hello world"},
		{"empty", "POST /p HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\n\r\n", ""},
		{"none", "DELETE /p HTTP/1.1\r\nHost: api.test\r\n\r\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dialRaw(t, p.addr)
			conn.send(t, c.raw)
			resp, body := conn.response(t, "POST")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			seen := decodeSeen(t, body)
			if seen.Body != c.want {
				t.Errorf("upstream got body %q, want %q", seen.Body, c.want)
			}
			if _, ok := seen.Header["X-Trailer"]; ok || seen.Header.Get("Transfer-Encoding") != "" {
				t.Errorf("upstream got framing or trailer fields: %v", seen.Header)
			}
			if got := string(hook.judged()[i].Body); got != c.want {
				t.Errorf("hook got body %q, want %q", got, c.want)
			}
		})
	}
}

// TestExpectContinue: a client that waits for 100 Continue gets it and sends its body; one
// whose body is over the limit is refused without it.
func TestExpectContinue(t *testing.T) {
	up := startUpstream(t, echoHandler)
	p := startProxy(t, &Server{MaxRequestBody: 1 << 10}, Upstream{Addr: up.addr()}, newFakeHook())

	conn := dialRaw(t, p.addr)
	conn.send(t, "PUT /p HTTP/1.1\r\nHost: api.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	interim, _ := conn.response(t, "PUT")
	if interim.StatusCode != nethttp.StatusContinue {
		t.Fatalf("got %d before the body, want 100", interim.StatusCode)
	}
	conn.send(t, "hello")
	resp, body := conn.response(t, "PUT")
	if resp.StatusCode != 200 || decodeSeen(t, body).Body != "hello" {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}

	conn = dialRaw(t, p.addr)
	conn.send(t, "PUT /p HTTP/1.1\r\nHost: api.test\r\nExpect: 100-continue\r\nContent-Length: 4096\r\n\r\n")
	resp, _ = conn.response(t, "PUT")
	if resp.StatusCode != nethttp.StatusRequestEntityTooLarge {
		t.Fatalf("got %d, want 413 without 100 Continue", resp.StatusCode)
	}

	// net/http's client, which waits for 100 Continue like curl does for bodies over 1 KiB.
	client := &nethttp.Client{Transport: &nethttp.Transport{Proxy: nil, ExpectContinueTimeout: waitLimit}}
	defer client.CloseIdleConnections()
	req, _ := nethttp.NewRequest("POST", "http://"+p.addr+"/p", strings.NewReader(strings.Repeat("x", 1000)))
	req.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(decodeSeen(t, body).Body) != 1000 {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	if time.Since(start) >= waitLimit {
		t.Error("the client sent its body only after giving up on 100 Continue")
	}
}

// TestPipelining: requests sent back to back are answered in order, a refused one included,
// and the connection carries on.
func TestPipelining(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	hook.decide = func(_ context.Context, r *Request) Verdict {
		if r.Path == "/refused" {
			return Verdict{Status: 403, Message: "not this one"}
		}
		return Verdict{Allow: true}
	}
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /one HTTP/1.1\r\nHost: api.test\r\n\r\n"+
		"POST /two HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\n\r\nabc"+
		"GET /refused HTTP/1.1\r\nHost: api.test\r\n\r\n"+
		"HEAD /four HTTP/1.1\r\nHost: api.test\r\n\r\n"+
		"GET /five HTTP/1.1\r\nHost: api.test\r\n\r\n")
	for _, want := range []struct {
		method, uri string
		status      int
	}{{"GET", "/one", 200}, {"POST", "/two", 200}, {"GET", "/refused", 403}, {"HEAD", "/four", 200}, {"GET", "/five", 200}} {
		resp, body := conn.response(t, want.method)
		if resp.StatusCode != want.status {
			t.Fatalf("%s %s: status %d, want %d", want.method, want.uri, resp.StatusCode, want.status)
		}
		if want.status == 200 && want.method != "HEAD" {
			if got := decodeSeen(t, body).RequestURI; got != want.uri {
				t.Fatalf("response for %s answered %s", want.uri, got)
			}
		}
	}
	var order []string
	for _, e := range hook.waitExchanges(t, 5) {
		order = append(order, e.Request.Path)
	}
	if want := []string{"/one", "/two", "/refused", "/four", "/five"}; !slices.Equal(order, want) {
		t.Errorf("recorded %v, want %v", order, want)
	}
	if up.hits.Load() != 4 {
		t.Errorf("upstream saw %d requests, want 4", up.hits.Load())
	}
}

// TestHTTP10: an HTTP/1.0 client gets HTTP/1.0 answers, keep-alive only when it asks, and a
// body of unknown length ended by the connection (never chunked).
func TestHTTP10(t *testing.T) {
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "part one ")
			w.(nethttp.Flusher).Flush()
			io.WriteString(w, "part two")
			return
		}
		echoHandler(w, r)
	})
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, newFakeHook())

	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp, _ := conn.response(t, "GET")
	if resp.Proto != "HTTP/1.0" || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("got %s %d close=%v, want HTTP/1.0 200 kept alive", resp.Proto, resp.StatusCode, resp.Close)
	}
	conn.send(t, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp, body := conn.response(t, "GET")
	if string(body) != "part one part two" || len(resp.TransferEncoding) != 0 || !resp.Close {
		t.Fatalf("got %q, transfer encoding %v, close=%v", body, resp.TransferEncoding, resp.Close)
	}
	if !conn.closed() {
		t.Error("connection open after a body delimited by its end")
	}

	conn = dialRaw(t, p.addr)
	conn.send(t, "GET /b HTTP/1.0\r\n\r\n")
	if resp, _ := conn.response(t, "GET"); !resp.Close {
		t.Error("HTTP/1.0 without keep-alive: response does not close")
	}
	if !conn.closed() {
		t.Error("HTTP/1.0 without keep-alive: connection still open")
	}
}

// TestHookRefusals: a refusal carries the hook's status (403 by default, never a success), its
// message and hint as JSON and its extra fields, and the connection stays usable.
func TestHookRefusals(t *testing.T) {
	up := startUpstream(t, echoHandler)
	verdicts := map[string]Verdict{
		"/default":  {Message: "blocked by rule no-admin", Hint: "ask for access"},
		"/approval": {Status: 429, Message: "waiting for approval", Hint: "retry later", Header: nethttp.Header{"X-Enforcer-Approval": {"ap-123"}, "Content-Length": {"999"}, "Connection": {"keep-alive"}, "X-Bad": {"a\r\nInjected: 1"}}},
		"/success":  {Status: 200, Message: "a refusal must not read as a success"},
	}
	hook := newFakeHook()
	hook.decide = func(_ context.Context, r *Request) Verdict {
		if v, ok := verdicts[r.Path]; ok {
			return v
		}
		return Verdict{Allow: true}
	}
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	conn := dialRaw(t, p.addr)
	for _, c := range []struct {
		method, path string
		status       int
		msg, hint    string
	}{
		{"GET", "/default", 403, "blocked by rule no-admin", "ask for access"},
		{"GET", "/approval", 429, "waiting for approval", "retry later"},
		{"POST", "/success", 403, "a refusal must not read as a success", ""},
		{"HEAD", "/default", 403, "", ""},
	} {
		conn.send(t, c.method+" "+c.path+" HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\n\r\n")
		resp, body := conn.response(t, c.method)
		if resp.StatusCode != c.status || resp.Close {
			t.Fatalf("%s %s: status %d close=%v, want %d kept open", c.method, c.path, resp.StatusCode, resp.Close, c.status)
		}
		if c.method == "HEAD" {
			if len(body) != 0 || resp.ContentLength <= 0 {
				t.Errorf("HEAD refusal: body %q, Content-Length %d", body, resp.ContentLength)
			}
			continue
		}
		if msg, hint := errorBody(t, resp, body); msg != c.msg || hint != c.hint {
			t.Errorf("%s: error %q hint %q", c.path, msg, hint)
		}
		if resp.ContentLength != int64(len(body)) {
			t.Errorf("%s: Content-Length %d for %d bytes", c.path, resp.ContentLength, len(body))
		}
		if c.path == "/approval" {
			if resp.Header.Get("X-Enforcer-Approval") != "ap-123" {
				t.Errorf("approval header missing: %v", resp.Header)
			}
			if resp.Header.Get("Injected") != "" || resp.Header.Get("X-Bad") != "" {
				t.Errorf("an invalid field was sent: %v", resp.Header)
			}
		}
	}
	conn.send(t, "GET /allowed HTTP/1.1\r\nHost: api.test\r\n\r\n")
	if resp, _ := conn.response(t, "GET"); resp.StatusCode != 200 {
		t.Errorf("request after refusals: status %d", resp.StatusCode)
	}
	if n := up.hits.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want only the allowed one", n)
	}
	for i, e := range hook.waitExchanges(t, 5)[:4] {
		if !e.Judged || e.Verdict.Allow || e.Status != e.Verdict.Status || e.Status < 400 {
			t.Errorf("refusal %d recorded as %+v", i, e)
		}
	}
}

// TestUpstreamFailures: unreachable → 502, too slow → 504, both JSON naming neither the
// address nor the credential, and the connection stays usable.
func TestUpstreamFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	release := make(chan struct{})
	slow := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	cred := &Credential{Header: "Authorization", Value: credentialValue}
	for _, c := range []struct {
		name   string
		addr   string
		status int
	}{
		{"unreachable", closedAddr, 502},
		{"no answer in time", slow.addr(), 504},
	} {
		t.Run(c.name, func(t *testing.T) {
			hook := newFakeHook()
			p := startProxy(t, &Server{ResponseTimeout: 300 * time.Millisecond}, Upstream{Addr: c.addr, Credential: cred, DialTimeout: time.Second}, hook)
			conn := dialRaw(t, p.addr)
			for i := range 2 {
				conn.send(t, "GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n")
				resp, body := conn.response(t, "GET")
				if resp.StatusCode != c.status || resp.Close {
					t.Fatalf("request %d: status %d close=%v, want %d kept open", i, resp.StatusCode, resp.Close, c.status)
				}
				errorBody(t, resp, body)
				host, _, _ := net.SplitHostPort(c.addr)
				if strings.Contains(string(body), host) {
					t.Errorf("error names the upstream: %s", body)
				}
				checkNoSecret(t, string(body))
			}
			for _, e := range hook.waitExchanges(t, 2) {
				if e.Status != c.status || e.Err == nil || !e.Judged || !e.Verdict.Allow {
					t.Errorf("recorded %+v", e)
				}
				checkNoSecret(t, e.Err.Error())
			}
			checkNoSecret(t, p.logs.String())
		})
	}
}

// TestUpstreamTLS: HTTPS upstream verified against a CA made for the test; a ServerName the
// certificate does not carry is refused before any request reaches the service.
func TestUpstreamTLS(t *testing.T) {
	ca := newTestCA(t, "api.internal.test")
	up := &upstreamFixture{release: make(chan struct{})}
	up.srv = httptest.NewUnstartedServer(up.count(echoHandler))
	up.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.server}}
	up.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	up.srv.StartTLS()
	t.Cleanup(up.srv.Close)

	for _, c := range []struct {
		name       string
		serverName string
		status     int
		hits       int64
	}{
		{"verified", "api.internal.test", 200, 1},
		{"wrong name", "other.internal.test", 502, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			hook := newFakeHook()
			p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), TLS: &tls.Config{ServerName: c.serverName, RootCAs: ca.pool}}, hook)
			resp, body := get(t, testClient(t), "http://"+p.addr+"/secure")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if c.status == 200 && decodeSeen(t, body).Proto != "HTTP/1.1" {
				t.Errorf("upstream spoke %s", decodeSeen(t, body).Proto)
			}
			if n := up.hits.Load(); n != c.hits {
				t.Errorf("upstream saw %d requests in all, want %d", n, c.hits)
			}
			if e := hook.waitExchanges(t, 1)[0]; c.status != 200 && (e.Err == nil || !strings.Contains(e.Err.Error(), "certificate")) {
				t.Errorf("recorded error %v, want a certificate error", e.Err)
			}
		})
	}
}

// TestMisconfiguredSession: a session that cannot be served safely forwards nothing, and its
// error does not show the credential.
func TestMisconfiguredSession(t *testing.T) {
	up := startUpstream(t, echoHandler)
	for _, c := range []struct {
		name string
		sess Session
	}{
		{"no hook", Session{Upstream: Upstream{Addr: up.addr()}}},
		{"no address", Session{Hook: newFakeHook()}},
		{"credential with CRLF", Session{Hook: newFakeHook(), Upstream: Upstream{Addr: up.addr(), Credential: &Credential{Header: "Authorization", Value: "prod-credential\r\nX-Injected: 1"}}}},
		{"credential in a framing header", Session{Hook: newFakeHook(), Upstream: Upstream{Addr: up.addr(), Credential: &Credential{Header: "Content-Length", Value: "prod-credential"}}}},
		{"invalid pinned Host", Session{Hook: newFakeHook(), Upstream: Upstream{Addr: up.addr(), Host: "a b"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			server, client := net.Pipe()
			done := make(chan error, 1)
			go func() { done <- (&Server{}).Serve(context.Background(), server, c.sess) }()
			client.SetDeadline(time.Now().Add(waitLimit))
			go io.WriteString(client, "GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
			resp, err := nethttp.ReadResponse(bufio.NewReader(client), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			client.Close()
			if resp.StatusCode != 502 {
				t.Errorf("status %d, want 502", resp.StatusCode)
			}
			err = <-done
			if err == nil {
				t.Fatal("Serve returned nil")
			}
			checkNoSecret(t, err.Error(), string(body))
		})
	}
	if n := up.hits.Load(); n != 0 {
		t.Errorf("upstream saw %d requests", n)
	}
}

// TestUpstreamErrorMasked: an upstream error that quotes what the service sent is masked in the
// record and the log like a response would be.
func TestUpstreamErrorMasked(t *testing.T) {
	addr := rawUpstream(t, "HELLO "+testEmail+" "+testCard+"\r\n\r\n")
	hook := newFakeHook()
	hook.masker = testPlan(t)
	p := startProxy(t, &Server{}, Upstream{Addr: addr}, hook)
	resp, body := get(t, testClient(t), "http://"+p.addr+"/")
	if resp.StatusCode != 502 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	e := hook.waitExchanges(t, 1)[0]
	if e.Err == nil || !strings.Contains(e.Err.Error(), "malformed") {
		t.Fatalf("recorded error %v, want the malformed response", e.Err)
	}
	for _, text := range []string{e.Err.Error(), p.logs.String(), string(body)} {
		if strings.Contains(text, testEmail) || strings.Contains(text, testCard) {
			t.Errorf("unmasked upstream bytes in %q", text)
		}
	}
}
