package http

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/mask"
)

// *mask.Plan is the Masker the daemon uses.
var _ Masker = (*mask.Plan)(nil)

// waitLimit bounds every wait in these tests: long enough for a loaded 2-core host, short
// enough that a hang fails instead of stalling the run.
const waitLimit = 10 * time.Second

// fakeHook records every call. decide and masker, when set, answer Request and Masker.
type fakeHook struct {
	decide func(ctx context.Context, r *Request) Verdict
	masker Masker

	mu        sync.Mutex
	requests  []*Request
	exchanges []*Exchange
	changed   chan struct{} // gets a value at every Exchanged
}

func newFakeHook() *fakeHook { return &fakeHook{changed: make(chan struct{}, 1000)} }

func (h *fakeHook) Request(ctx context.Context, r *Request) Verdict {
	h.mu.Lock()
	h.requests = append(h.requests, r)
	h.mu.Unlock()
	if h.decide != nil {
		return h.decide(ctx, r)
	}
	return Verdict{Allow: true}
}

func (h *fakeHook) Masker(*Request) Masker { return h.masker }

func (h *fakeHook) Exchanged(e *Exchange) {
	h.mu.Lock()
	h.exchanges = append(h.exchanges, e)
	h.mu.Unlock()
	h.changed <- struct{}{}
}

func (h *fakeHook) judged() []*Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Request(nil), h.requests...)
}

func (h *fakeHook) recorded() []*Exchange {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Exchange(nil), h.exchanges...)
}

// waitExchanges waits until n exchanges were recorded and returns them.
func (h *fakeHook) waitExchanges(t *testing.T, n int) []*Exchange {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		if ex := h.recorded(); len(ex) >= n {
			return ex
		}
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatalf("waited for %d exchanges, got %d", n, len(h.recorded()))
		}
	}
}

// proxyFixture serves every connection to addr with Server.Serve, as the daemon's proxy does.
type proxyFixture struct {
	addr   string
	hook   *fakeHook
	logs   *lockedBuffer
	served chan error // what each Serve returned
	cancel context.CancelFunc
}

func startProxy(t *testing.T, srv *Server, up Upstream, hook *fakeHook) *proxyFixture {
	t.Helper()
	// Each connection its own owner: the budget's shares are TestWireBodyShares's.
	return startOwnedProxy(t, srv, up, hook, func(n int) string { return "s" + strconv.Itoa(n) })
}

// startOwnedProxy is startProxy with the Session.Owner of the nth connection owner(n).
func startOwnedProxy(t *testing.T, srv *Server, up Upstream, hook *fakeHook, owner func(n int) string) *proxyFixture {
	t.Helper()
	return startWrappedProxy(t, srv, up, hook, owner, nil)
}

// startWrappedProxy is startOwnedProxy serving each connection as wrap returns it (TLS, say);
// nil serves them as they are.
func startWrappedProxy(t *testing.T, srv *Server, up Upstream, hook *fakeHook, owner func(n int) string, wrap func(net.Conn) net.Conn) *proxyFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proxyFixture{addr: ln.Addr().String(), hook: hook, logs: &lockedBuffer{}, served: make(chan error, 100), cancel: cancel}
	log := slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if wrap != nil {
				conn = wrap(conn)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.served <- srv.Serve(ctx, conn, Session{ID: "s" + strconv.Itoa(n), Upstream: up, Hook: hook, Log: log, Owner: owner(n)})
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return p
}

// waitServed returns what the next Serve to end returned.
func (p *proxyFixture) waitServed(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.served:
		return err
	case <-time.After(waitLimit):
		t.Fatal("Serve did not return")
		return nil
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// upstreamFixture is a real HTTP server on loopback that counts the requests reaching it.
type upstreamFixture struct {
	srv  *httptest.Server
	hits atomic.Int64
	// release is closed when the test ends, so handlers that block give up.
	release chan struct{}
}

func startUpstream(t *testing.T, h nethttp.HandlerFunc) *upstreamFixture {
	t.Helper()
	u := &upstreamFixture{release: make(chan struct{})}
	u.srv = httptest.NewServer(u.count(h))
	t.Cleanup(u.srv.Close)
	t.Cleanup(func() { close(u.release) }) // runs before Close, which waits for handlers
	return u
}

func (u *upstreamFixture) count(h nethttp.HandlerFunc) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		u.hits.Add(1)
		h(w, r)
	})
}

func (u *upstreamFixture) addr() string { return u.srv.Listener.Addr().String() }

// seenRequest is what an echoing upstream received.
type seenRequest struct {
	Method     string
	RequestURI string
	Host       string
	Header     nethttp.Header
	Body       string
	Proto      string
}

// echoHandler answers with the request it received, as JSON.
func echoHandler(w nethttp.ResponseWriter, r *nethttp.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header, Body: string(body), Proto: r.Proto})
}

// captureHandler sends each request it receives to seen and answers "ok".
func captureHandler(seen chan<- seenRequest) nethttp.HandlerFunc {
	return func(w nethttp.ResponseWriter, r *nethttp.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: string(body), Proto: r.Proto}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	}
}

func decodeSeen(t *testing.T, body []byte) seenRequest {
	t.Helper()
	var s seenRequest
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("upstream echo %q: %v", body, err)
	}
	return s
}

// testClient is a plain net/http client to the proxy (Proxy: nil: the test must not go
// through whatever the environment names).
func testClient(t *testing.T) *nethttp.Client {
	tr := &nethttp.Transport{Proxy: nil, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &nethttp.Client{Transport: tr, Timeout: waitLimit}
}

func get(t *testing.T, client *nethttp.Client, url string) (*nethttp.Response, []byte) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, body
}

// rawConn is a TCP connection to the proxy for requests net/http would not send.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(waitLimit))
	return &rawConn{Conn: conn, br: bufio.NewReader(conn)}
}

func (c *rawConn) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		t.Fatalf("write request: %v", err)
	}
}

// response reads one response (to a request of method) with its whole body.
func (c *rawConn) response(t *testing.T, method string) (*nethttp.Response, []byte) {
	t.Helper()
	resp, err := nethttp.ReadResponse(c.br, &nethttp.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, body
}

// closed reports whether the proxy closed the connection (reads end without data).
func (c *rawConn) closed() bool {
	n, err := c.br.Read(make([]byte, 1))
	return n == 0 && err != nil
}

// errorBody decodes a proxy-made JSON error.
func errorBody(t *testing.T, resp *nethttp.Response, body []byte) (msg, hint string) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json (body %q)", ct, body)
	}
	var e struct {
		Error *string `json:"error"`
		Hint  *string `json:"hint"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || (e.Hint != nil && *e.Hint == "") {
		t.Fatalf("error body %q is not {\"error\"[,\"hint\"]} (an empty hint is left out): %v", body, err)
	}
	if e.Hint == nil {
		return *e.Error, ""
	}
	return *e.Error, *e.Hint
}

// testPlan is a masking plan with every detector on and default styles.
func testPlan(t *testing.T) *mask.Plan {
	t.Helper()
	p, err := mask.NewPlan(nil, mask.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Values the detectors find, and what must never pass unmasked.
const (
	testCard  = "4111 1111 1111 1111"
	testEmail = "ada@example.com"
)

// testCA is a certificate authority made for one test, and a server certificate it issued.
type testCA struct {
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestCA(t *testing.T, serverName string) *testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "enforcer test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: serverName},
		DNSNames:     []string{serverName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &testCA{pool: pool, server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// checkNoGoroutines fails if goroutines of this package's types, or client connections of a
// Transport, are still running once everything was closed (polling briefly: a goroutine whose
// connection was just closed needs a moment to return).
func checkNoGoroutines(t *testing.T) {
	t.Helper()
	markers := []string{
		"internal/proto/http.(*Server)", "internal/proto/http.(*clientConn)", "internal/proto/http.(*exchange)",
		"internal/proto/http.(*upstreamClient)", "internal/proto/http.(*upstreamConn)",
		"net/http.(*persistConn)", "net/http.(*Transport).dialConnFor",
	}
	deadline := time.Now().Add(waitLimit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			for _, m := range markers {
				if strings.Contains(g, m) {
					left = append(left, g)
					break
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines outlived Serve:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawUpstream is a service on loopback that answers every connection's first request with
// reply, as raw bytes (a malformed answer the Transport refuses, say); it returns its address.
func rawUpstream(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(waitLimit))
				// The whole request head first: closing with it unread would reset the connection.
				br := bufio.NewReader(conn)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				io.WriteString(conn, reply)
			}()
		}
	}()
	return ln.Addr().String()
}

// credentialProxy starts a proxy to upstream that injects cred, masking with the test plan if
// masked, and returns its hook and a raw connection to it.
func credentialProxy(t *testing.T, upstream string, cred Credential, masked bool) (*fakeHook, *rawConn) {
	t.Helper()
	hook := newFakeHook()
	if masked {
		hook.masker = testPlan(t)
	}
	p := startProxy(t, &Server{}, Upstream{Addr: upstream, Credential: &cred}, hook)
	return hook, dialRaw(t, p.addr)
}

// bodiesInUse is what the Server's sessions hold of its body budget.
func (s *Server) bodiesInUse() int64 {
	all, _ := s.bodies.InUse("")
	return all
}
