package http

import (
	"context"
	"crypto/tls"
	"io"
	"mime/multipart"
	nethttp "net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wireAdminUpstream routes as most servers do, on the decoded path: /admin answers with a secret,
// anything else with "public".
func wireAdminUpstream(t *testing.T) *upstreamFixture {
	mux := nethttp.NewServeMux()
	mux.HandleFunc("/admin", func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "admin-secret")
	})
	mux.HandleFunc("/", func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "public")
	})
	return startUpstream(t, mux.ServeHTTP)
}

// TestWireEncodedUnreservedBytesRefused: a letter, digit, '-' or '_' can be percent-encoded without
// changing the resource for the server (RFC 3986 §2.3: it decodes them before routing), but not
// without changing the text a rule on the path reads. "/%61dmin" is "/admin" to the server and
// something else to a rule that blocks "/admin", so the proxy refuses such paths before any
// rule; encodings that clients do produce ("%20", "%40", "%7E", UTF-8) still pass.
func TestWireEncodedUnreservedBytesRefused(t *testing.T) {
	up := wireAdminUpstream(t)
	hook := newFakeHook()
	hook.decide = func(_ context.Context, r *Request) Verdict {
		if strings.HasPrefix(r.Path, "/admin") {
			return Verdict{Status: 403, Message: "admin is blocked"}
		}
		return Verdict{Allow: true}
	}
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)

	for _, c := range []struct {
		name   string
		target string
		status int
	}{
		{"plain path, blocked by the rule", "/admin", 403},
		{"encoded letter", "/%61dmin", 400},
		{"encoded letter, lower-case hex", "/adm%69n", 400},
		{"encoded upper-case letter", "/%41dmin", 400},
		{"every letter encoded", "/%61%64%6D%69%6E", 400},
		{"encoded digit", "/v%31/admin", 400},
		{"encoded hyphen", "/a%2Db", 400},
		{"encoded underscore", "/a%5fb", 400},
		{"encoded space passes", "/a%20b", 200},
		{"encoded at sign passes", "/users/ada%40example.com", 200},
		{"encoded tilde passes", "/%7Euser", 200},
		{"encoded UTF-8 passes", "/caf%C3%A9", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(hook.judged())
			conn := dialRaw(t, p.addr)
			conn.send(t, "GET "+c.target+" HTTP/1.1\r\nHost: api.test\r\n\r\n")
			resp, body := conn.response(t, "GET")
			if strings.Contains(string(body), "admin-secret") {
				t.Fatalf("%s reached /admin past the rule: %s", c.target, body)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("%s: status %d, want %d (%s)", c.target, resp.StatusCode, c.status, body)
			}
			if judged := len(hook.judged()) - before; c.status == 400 && judged != 0 {
				t.Errorf("%s: the hook judged a request the proxy must refuse first", c.target)
			}
		})
	}

	for _, target := range []string{"/%30", "/%39x", "/%5A", "/%7a", "/a%2d", "/%5F"} {
		if _, _, err := checkTarget(target); err == nil {
			t.Errorf("checkTarget accepted %q", target)
		}
	}
}

// wireMultipartBody is a multipart/form-data body with one field.
func wireMultipartBody(t *testing.T, name, value string) (contentType, body string) {
	t.Helper()
	var b strings.Builder
	w := multipart.NewWriter(&b)
	if err := w.WriteField(name, value); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), b.String()
}

// TestWireOverridesOfMethodOrPathRefused: Rails (Rack::MethodOverride), Laravel and Symfony,
// Express's method-override, ASP.NET and Google's APIs run a POST as the method a header or a
// "_method" parameter names; IIS, Zend and Laminas route on X-Original-URL or X-Rewrite-URL.
// The rules and the reviewer judge the request line, so a request that names another method or
// path for the server is refused before any rule. Fields and parameters that only look alike
// pass.
func TestWireOverridesOfMethodOrPathRefused(t *testing.T) {
	seen := make(chan seenRequest, 100)
	up := startUpstream(t, captureHandler(seen))
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)

	post := func(target, fields, contentType, body string) string {
		raw := "POST " + target + " HTTP/1.1\r\nHost: api.test\r\n" + fields
		if contentType != "" {
			raw += "Content-Type: " + contentType + "\r\n"
		}
		return raw + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	formType, formBody := wireMultipartBody(t, "_method", "DELETE")
	otherFormType, otherFormBody := wireMultipartBody(t, "method", "DELETE")
	for _, c := range []struct {
		name   string
		raw    string
		status int
	}{
		{"X-HTTP-Method-Override", post("/v1/items/7", "X-HTTP-Method-Override: DELETE\r\n", "", ""), 400},
		{"x-http-method-override lower case", post("/v1/items/7", "x-http-method-override: DELETE\r\n", "", ""), 400},
		{"X-HTTP-Method", post("/v1/items/7", "X-HTTP-Method: DELETE\r\n", "", ""), 400},
		{"X-Method-Override", post("/v1/items/7", "X-Method-Override: DELETE\r\n", "", ""), 400},
		{"X_HTTP_Method_Override (CGI reads it as the same field)", post("/v1/items/7", "X_HTTP_Method_Override: DELETE\r\n", "", ""), 400},
		{"X-Original-URL", "GET /public HTTP/1.1\r\nHost: api.test\r\nX-Original-URL: /admin\r\n\r\n", 400},
		{"X-Rewrite-URL", "GET /public HTTP/1.1\r\nHost: api.test\r\nX-Rewrite-URL: /admin\r\n\r\n", 400},
		{"_method in the query", post("/v1/items/7?_method=DELETE", "", "", ""), 400},
		{"_method in the query after a semicolon", post("/v1/items/7?a=1;_method=DELETE", "", "", ""), 400},
		{"encoded _method in the query", post("/v1/items/7?%5Fmethod=DELETE", "", "", ""), 400},
		{"_method with PHP's mangled name", post("/v1/items/7?.method=DELETE", "", "", ""), 400},
		{"_method in a form body", post("/v1/items/7", "", "application/x-www-form-urlencoded", "name=x&_method=delete"), 400},
		{"_method in a form body with a charset", post("/v1/items/7", "", "application/x-www-form-urlencoded; charset=utf-8", "_method=delete"), 400},
		{"_method in a multipart body", post("/v1/items/7", "", formType, formBody), 400},
		{"_method in a truncated multipart body", post("/v1/items/7", "", "multipart/form-data; boundary=xyz", "--xyz\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE"), 400},
		{"multipart body without a boundary", post("/v1/items/7", "", "multipart/form-data", "--xyz\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--xyz--\r\n"), 400},
		{"X-Method-Overrides is another field", post("/v1/items/7", "X-Method-Overrides: DELETE\r\n", "", ""), 200},
		{"method in the query", post("/v1/items/7?method=DELETE&x_method=1", "", "", ""), 200},
		// Laravel reads a JSON body as input and takes its _method (review, 2026-12-07).
		{"_method in a JSON body", post("/v1/items/7", "", "application/json", `{"_method":"DELETE"}`), 400},
		{"_method as a form value", post("/v1/items/7", "", "application/x-www-form-urlencoded", "note=_method%3DDELETE"), 200},
		{"another multipart field", post("/v1/items/7", "", otherFormType, otherFormBody), 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := up.hits.Load()
			conn := dialRaw(t, p.addr)
			conn.send(t, c.raw)
			resp, body := conn.response(t, "POST")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			hits := up.hits.Load() - before
			if c.status == 400 {
				if hits != 0 {
					t.Fatalf("the upstream got the request (%+v)", <-seen)
				}
				if msg, hint := errorBody(t, resp, body); msg == "" || hint == "" {
					t.Errorf("refusal without a reason or a hint: %q %q", msg, hint)
				}
				return
			}
			if hits != 1 {
				t.Fatalf("the upstream got %d requests", hits)
			}
			if got := <-seen; got.Method != "POST" {
				t.Errorf("the upstream got %s", got.Method)
			}
		})
	}
}

// TestWireUnderscoreVariantsOfRemovedFields: CGI, WSGI and PHP read a field name with '_' for '-'
// ("X_Forwarded_For" is HTTP_X_FORWARDED_FOR, as "X-Forwarded-For" is), so every field the
// proxy removes is removed under that spelling too: address claims, hop-by-hop fields and the
// credential's own header. Other names with '_' pass.
func TestWireUnderscoreVariantsOfRemovedFields(t *testing.T) {
	seen := make(chan seenRequest, 1)
	up := startUpstream(t, captureHandler(seen))
	hook := newFakeHook()
	cred := &Credential{Header: "X-Api-Key", Value: "prod-credential-1c0ffee"}
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr(), Credential: cred}, hook)
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /v1/me HTTP/1.1\r\nHost: api.test\r\n"+
		"X_Api_Key: agent-key\r\n"+
		"X-Api_Key: agent-key\r\n"+
		"X_Forwarded_For: 10.9.9.9\r\n"+
		"X-Forwarded_Host: admin.test\r\n"+
		"X_Real_IP: 10.9.9.9\r\n"+
		"True_Client_IP: 10.9.9.9\r\n"+
		"Proxy_Authorization: Basic YWdlbnQ6eA==\r\n"+
		"Keep_Alive: 1\r\n"+
		"X_Keep: yes\r\n"+
		"\r\n")
	if resp, body := conn.response(t, "GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	got := <-seen
	// Read as CGI does: '_' for '-', case ignored.
	asCGI := func(k string) string { return strings.ToUpper(strings.ReplaceAll(k, "_", "-")) }
	removed := map[string]bool{}
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip", "True-Client-Ip", "Proxy-Authorization", "Keep-Alive"} {
		removed[asCGI(k)] = true
	}
	for k, v := range got.Header {
		if removed[asCGI(k)] {
			t.Errorf("the upstream got %s %q", k, v)
		}
		if asCGI(k) == "X-API-KEY" && (len(v) != 1 || v[0] != cred.Value) {
			t.Errorf("the upstream got %s %q besides the credential", k, v)
		}
	}
	if v := got.Header.Values("X-Api-Key"); len(v) != 1 || v[0] != cred.Value {
		t.Errorf("the upstream got X-Api-Key %q, want the credential alone", v)
	}
	if got.Header.Get("X_keep") != "yes" {
		t.Errorf("the upstream did not get X_Keep: %v", got.Header)
	}
	for k := range hook.judged()[0].Header {
		if removed[asCGI(k)] || asCGI(k) == "X-API-KEY" {
			t.Errorf("the hook was shown %s", k)
		}
	}
}

// TestWireAgentHostDoesNotSteerTheUpstream: with no Host pinned the agent's Host is forwarded as
// the Host field, and only there: the connection still goes to Upstream.Addr and the TLS
// server name is the configured one, whatever the agent names.
func TestWireAgentHostDoesNotSteerTheUpstream(t *testing.T) {
	ca := newTestCA(t, "api.test")
	sni := make(chan string, 10)
	srv := httptest.NewUnstartedServer(nethttp.HandlerFunc(echoHandler))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.server},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni <- h.ServerName
			return nil, nil
		},
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	up := Upstream{Addr: srv.Listener.Addr().String(), TLS: &tls.Config{ServerName: "api.test", RootCAs: ca.pool}}
	p := startProxy(t, &Server{}, up, newFakeHook())

	for _, host := range []string{"evil.test", "127.0.0.2:9", "[::1]:443", "api.test"} {
		conn := dialRaw(t, p.addr)
		conn.send(t, "GET /x HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		resp, body := conn.response(t, "GET")
		if resp.StatusCode != 200 {
			t.Fatalf("Host %s: status %d (%s)", host, resp.StatusCode, body)
		}
		if got := decodeSeen(t, body).Host; got != host {
			t.Errorf("Host %s: the upstream got Host %q", host, got)
		}
		if name := <-sni; name != "api.test" {
			t.Errorf("Host %s: TLS server name %q, want api.test", host, name)
		}
	}
}

// waitBodies waits until srv's sessions hold want bytes of request bodies.
func waitBodies(t *testing.T, srv *Server, want int64) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for srv.bodiesInUse() != want {
		if time.Now().After(deadline) {
			t.Fatalf("request bodies hold %d bytes, want %d", srv.bodiesInUse(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWireRequestBodiesBounded: the request bodies a Server holds are bounded across all its
// sessions, not only one by one: without that, an agent that opens connections and sends
// large bodies slowly holds 2×MaxRequestBody per connection (bytes.Buffer doubled past the
// length) for as long as it sends a byte now and then, and the daemon runs out of memory. A
// body takes from the budget as its bytes arrive (a Content-Length alone takes nothing), exactly
// its length, and gives it back when its exchange ends however it ends.
func TestWireRequestBodiesBounded(t *testing.T) {
	const body = 1 << 20
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	srv := &Server{MaxRequestBody: body, MaxBufferedBodies: 2 * body}
	hook := newFakeHook()
	p := startProxy(t, srv, Upstream{Addr: up.addr()}, hook)
	head := func(n int) string {
		return "POST /upload HTTP/1.1\r\nHost: api.test\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n"
	}

	// Two bodies one byte short of whole: each holds exactly its length.
	first, second := dialRaw(t, p.addr), dialRaw(t, p.addr)
	first.send(t, head(body)+strings.Repeat("a", body-1))
	second.send(t, head(body)+strings.Repeat("b", body-1))
	waitBodies(t, srv, 2*body)

	// A head alone takes nothing; no connection with a body can get more.
	idle := dialRaw(t, p.addr)
	idle.send(t, head(body))
	for _, c := range []struct {
		name string
		raw  string
	}{
		{"Content-Length", head(100) + strings.Repeat("c", 100)},
		{"chunked", "POST /upload HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + strings.Repeat("c", 100) + "\r\n0\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dialRaw(t, p.addr)
			conn.send(t, c.raw)
			resp, msg := conn.response(t, "POST")
			if resp.StatusCode != nethttp.StatusServiceUnavailable || !resp.Close {
				t.Fatalf("status %d close=%v, want 503 and close (%s)", resp.StatusCode, resp.Close, msg)
			}
			if e, _ := errorBody(t, resp, msg); !strings.Contains(e, "request bodies") {
				t.Errorf("error %q does not say why", e)
			}
		})
	}
	waitBodies(t, srv, 2*body)

	// A client that goes away gives its share back; a whole body is forwarded whole.
	first.Close()
	waitBodies(t, srv, body)
	conn := dialRaw(t, p.addr)
	conn.send(t, head(100)+strings.Repeat("d", 100))
	if resp, got := conn.response(t, "POST"); resp.StatusCode != 200 || string(got) != "100" {
		t.Fatalf("after the first client left: status %d, upstream read %s bytes", resp.StatusCode, got)
	}
	second.send(t, "b")
	if resp, got := second.response(t, "POST"); resp.StatusCode != 200 || string(got) != strconv.Itoa(body) {
		t.Fatalf("second body: status %d, upstream read %s bytes", resp.StatusCode, got)
	}
	idle.Close()
	waitBodies(t, srv, 0)
	if n := len(hook.judged()); n != 2 {
		t.Errorf("the hook judged %d requests, want the two whole ones", n)
	}
}

// TestWireBodyShares: one owner (the daemon's uid) holds at most three quarters of the body
// budget, so another's bodies still pass while it holds its share.
func TestWireBodyShares(t *testing.T) {
	const body = 1 << 20
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	srv := &Server{MaxRequestBody: body, MaxBufferedBodies: 3 * body} // a share of 2.25 bodies
	owners := []string{"", "uid 1000", "uid 1000", "uid 1000", "uid 1001"}
	p := startOwnedProxy(t, srv, Upstream{Addr: up.addr()}, newFakeHook(), func(n int) string { return owners[n] })
	head := "POST /upload HTTP/1.1\r\nHost: api.test\r\nContent-Length: " + strconv.Itoa(body) + "\r\n\r\n"

	first, second := dialRaw(t, p.addr), dialRaw(t, p.addr)
	first.send(t, head+strings.Repeat("a", body-1))
	second.send(t, head+strings.Repeat("b", body-1))
	waitBodies(t, srv, 2*body) // each its whole length once its bytes come

	third := dialRaw(t, p.addr) // the same uid: over its share, though the budget has room
	third.send(t, head+strings.Repeat("c", body))
	if resp, msg := third.response(t, "POST"); resp.StatusCode != nethttp.StatusServiceUnavailable {
		t.Fatalf("the third body of one uid: status %d (%s), want 503", resp.StatusCode, msg)
	}
	other := dialRaw(t, p.addr) // another uid: within the budget
	other.send(t, head+strings.Repeat("d", body))
	if resp, got := other.response(t, "POST"); resp.StatusCode != 200 || string(got) != strconv.Itoa(body) {
		t.Fatalf("another uid's body: status %d, upstream read %s bytes", resp.StatusCode, got)
	}
	first.Close()
	second.Close()
	waitBodies(t, srv, 0)
}

// TestWireRepeatedContentTypeRefused: with two Content-Type fields a server reads the first or
// the last, a rule reads both joined and an approval is bound to the first, so the body could be
// judged as one type and parsed as another; one field, or none, passes.
func TestWireRepeatedContentTypeRefused(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook := newFakeHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	for _, c := range []struct {
		name   string
		fields string
		status int
	}{
		{"two fields", "Content-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n", 400},
		{"two fields, names in other cases", "content-type: application/json\r\nCONTENT-TYPE: application/json\r\n", 400},
		{"one field", "Content-Type: application/json\r\n", 200},
		{"none", "", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(hook.judged())
			conn := dialRaw(t, p.addr)
			conn.send(t, "POST /v1/notes HTTP/1.1\r\nHost: api.test\r\n"+c.fields+"Content-Length: 2\r\n\r\n{}")
			resp, body := conn.response(t, "POST")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			if judged := len(hook.judged()) - before; (c.status == 400) == (judged != 0) {
				t.Errorf("the hook judged %d requests", judged)
			}
		})
	}
}
