package http

import (
	"context"
	"errors"
	"io"
	"net"
	nethttp "net/http"
	"strings"
	"testing"
	"time"
)

// blockingHook is a hook whose Request blocks until its ctx ends, as one holding a request for
// a reviewer does; entered gets a value when it starts, ended the ctx's cause when it returns.
func blockingHook() (*fakeHook, chan struct{}, chan error) {
	entered, ended := make(chan struct{}, 1), make(chan error, 1)
	h := newFakeHook()
	h.decide = func(ctx context.Context, r *Request) Verdict {
		entered <- struct{}{}
		<-ctx.Done()
		ended <- context.Cause(ctx)
		return Verdict{Allow: true} // an approval that came too late must not be forwarded
	}
	return h, entered, ended
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("waited for %s", what)
		var zero T
		return zero
	}
}

// TestCancelEndsServe: ending Serve's ctx ends it at once, whether a Hook.Request is blocked or
// the upstream is slow; the request is recorded once, nothing is forwarded after, and no
// goroutine is left behind.
func TestCancelEndsServe(t *testing.T) {
	t.Run("blocked hook", func(t *testing.T) {
		up := startUpstream(t, echoHandler)
		hook, entered, ended := blockingHook()
		p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
		conn := dialRaw(t, p.addr)
		conn.send(t, "POST /held HTTP/1.1\r\nHost: api.test\r\nContent-Length: 2\r\n\r\nhi")
		waitFor(t, entered, "the hook to be asked")
		p.cancel()
		if err := p.waitServed(t); !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
		if cause := waitFor(t, ended, "the hook to return"); !errors.Is(cause, context.Canceled) {
			t.Errorf("hook's ctx ended by %v", cause)
		}
		ex := hook.waitExchanges(t, 1)
		if len(ex) != 1 || ex[0].Status != 0 || ex[0].Err == nil {
			t.Errorf("recorded %+v", ex[0])
		}
		if up.hits.Load() != 0 {
			t.Error("the held request was forwarded")
		}
		if !conn.closed() {
			t.Error("client connection still open")
		}
		checkNoGoroutines(t)
	})
	t.Run("slow upstream", func(t *testing.T) {
		reached := make(chan struct{}, 1)
		release := make(chan struct{})
		up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
			reached <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		t.Cleanup(func() { close(release) })
		hook := newFakeHook()
		p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
		conn := dialRaw(t, p.addr)
		conn.send(t, "GET /slow HTTP/1.1\r\nHost: api.test\r\n\r\n")
		waitFor(t, reached, "the upstream to get the request")
		p.cancel()
		if err := p.waitServed(t); !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
		if ex := hook.waitExchanges(t, 1); len(ex) != 1 || ex[0].Status != 0 || ex[0].Err == nil {
			t.Errorf("recorded %+v", ex[0])
		}
		checkNoGoroutines(t)
	})
	t.Run("streaming response", func(t *testing.T) {
		up := startLineStreamer(t, "text/event-stream")
		hook := newFakeHook()
		hook.masker = testPlan(t)
		p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
		_, body := streamClient(t, p.addr, "/events")
		up.send(t, "data: one\n")
		readLineWithin(t, body)
		p.cancel()
		if err := p.waitServed(t); !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v, want context.Canceled", err)
		}
		if _, err := io.ReadAll(body); err == nil {
			t.Error("the cut stream ended cleanly")
		}
		checkNoGoroutines(t)
	})
}

// TestClientGoneEndsHook: a client that goes away while its request is held ends the hook's ctx
// (errClientGone), and nothing is forwarded.
func TestClientGoneEndsHook(t *testing.T) {
	up := startUpstream(t, echoHandler)
	hook, entered, ended := blockingHook()
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	conn := dialRaw(t, p.addr)
	conn.send(t, "GET /held HTTP/1.1\r\nHost: api.test\r\n\r\n")
	waitFor(t, entered, "the hook to be asked")
	conn.Close()
	if cause := waitFor(t, ended, "the hook to return"); !errors.Is(cause, errClientGone) {
		t.Errorf("hook's ctx ended by %v, want errClientGone", cause)
	}
	if err := p.waitServed(t); !errors.Is(err, errClientGone) {
		t.Errorf("Serve returned %v", err)
	}
	if e := hook.waitExchanges(t, 1)[0]; e.Status != 0 || !errors.Is(e.Err, errClientGone) {
		t.Errorf("recorded status %d err %v", e.Status, e.Err)
	}
	if up.hits.Load() != 0 {
		t.Error("the request was forwarded")
	}
}

// TestExchangedOncePerRequest runs each way a request can end on a connection of its own and
// checks, once Serve has returned, that the hook was told exactly once, with the right status.
func TestExchangedOncePerRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		name     string
		raw      string
		decide   func(context.Context, *Request) Verdict
		masker   Masker
		upstream string // "" for the echo upstream
		after    func(*rawConn, *proxyFixture)
		status   int
		judged   bool
		failed   bool // Exchange.Err set
	}{
		{name: "allowed", raw: "GET /ok HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n", status: 200, judged: true},
		{name: "refused by the hook", raw: "GET /no HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
			decide: func(context.Context, *Request) Verdict { return Verdict{Message: "no"} }, status: 403, judged: true},
		{name: "malformed", raw: "GET /a/../b HTTP/1.1\r\nHost: api.test\r\n\r\n", status: 400},
		{name: "body too large", raw: "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 99999\r\n\r\n", status: 413},
		{name: "head cut short", raw: "GET / HTTP/1.1\r\nHost: api", after: func(c *rawConn, _ *proxyFixture) { c.Close() }, status: 0, failed: true},
		{name: "body cut short", raw: "POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 10\r\n\r\nabc", after: func(c *rawConn, _ *proxyFixture) { c.Close() }, status: 0, failed: true},
		{name: "upstream unreachable", raw: "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n", upstream: closedAddr, status: 502, judged: true, failed: true},
		{name: "masking fails", raw: "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n", masker: failingMasker{}, status: 502, judged: true, failed: true},
		{name: "client gone while held", raw: "GET / HTTP/1.1\r\nHost: api.test\r\n\r\n",
			decide: func(ctx context.Context, _ *Request) Verdict { <-ctx.Done(); return Verdict{Allow: true} },
			after:  func(c *rawConn, _ *proxyFixture) { time.Sleep(50 * time.Millisecond); c.Close() }, status: 0, judged: true, failed: true},
		{name: "ctx ended while held", raw: "GET / HTTP/1.1\r\nHost: api.test\r\n\r\n",
			decide: func(ctx context.Context, _ *Request) Verdict { <-ctx.Done(); return Verdict{Allow: true} },
			after:  func(_ *rawConn, p *proxyFixture) { time.Sleep(50 * time.Millisecond); p.cancel() }, status: 0, judged: true, failed: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := startUpstream(t, echoHandler)
			addr := c.upstream
			if addr == "" {
				addr = up.addr()
			}
			hook := newFakeHook()
			hook.decide, hook.masker = c.decide, c.masker
			p := startProxy(t, &Server{MaxRequestBody: 1 << 10}, Upstream{Addr: addr}, hook)
			conn := dialRaw(t, p.addr)
			conn.send(t, c.raw)
			if c.after != nil {
				c.after(conn, p)
			} else {
				if resp, _ := conn.response(t, "GET"); resp.StatusCode != c.status {
					t.Errorf("status %d, want %d", resp.StatusCode, c.status)
				}
				conn.Close()
			}
			p.waitServed(t)
			ex := hook.recorded()
			if len(ex) != 1 {
				t.Fatalf("Exchanged called %d times", len(ex))
			}
			e := ex[0]
			if e.Status != c.status || e.Judged != c.judged || (e.Err != nil) != c.failed || e.Request == nil || e.Request.Header == nil {
				t.Errorf("recorded status %d judged %v err %v", e.Status, e.Judged, e.Err)
			}
			if e.Duration <= 0 || e.Request.Started.IsZero() {
				t.Errorf("recorded duration %v, start %v", e.Duration, e.Request.Started)
			}
		})
	}
}

// TestKeepAliveSessionLeavesNothing: a session of several requests, some masked, that the client
// ends, returns nil and leaves no goroutine and no upstream connection behind.
func TestKeepAliveSessionLeavesNothing(t *testing.T) {
	up := startUpstream(t, func(w nethttp.ResponseWriter, r *nethttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"email":"`+testEmail+`","path":"`+r.URL.Path+`"}`)
	})
	hook := newFakeHook()
	hook.masker = testPlan(t)
	p := startProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook)
	conn := dialRaw(t, p.addr)
	for _, path := range []string{"/a", "/b", "/c"} {
		conn.send(t, "GET "+path+" HTTP/1.1\r\nHost: api.test\r\n\r\n")
		resp, body := conn.response(t, "GET")
		if resp.StatusCode != 200 || strings.Contains(string(body), testEmail) || !strings.Contains(string(body), path) {
			t.Fatalf("%s: status %d body %s", path, resp.StatusCode, body)
		}
	}
	conn.Close()
	if err := p.waitServed(t); err != nil {
		t.Errorf("Serve returned %v for a client that closed between requests", err)
	}
	if n := len(hook.recorded()); n != 3 {
		t.Errorf("%d exchanges recorded", n)
	}
	checkNoGoroutines(t)
}
