package daemon

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/agentca"
	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/httpguard"
	"github.com/enforcer-dev/enforcer/internal/policy"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// TestAgentHTTPS: an agent calling an http target over HTTPS gets TLS from the handler, with a
// certificate of the agent CA for the name it asked for, and its requests are judged and
// forwarded with the target's credential as plain ones are. A client that does not trust the
// agent CA gets no further than the handshake.
func TestAgentHTTPS(t *testing.T) {
	const token = "review-token-51d0"
	t.Setenv("REVIEW_API_TOKEN", token)
	ca, roots := testAgentCA(t)
	u := newReviewUpstream(t)
	p, tg := reviewPolicyFor(t, u, `rules:
  - {name: no-deletes, when: 'http.method == "DELETE"', action: block}
`)
	d := &Daemon{httpGuards: &httpguard.Shared{Policy: func() *policy.Policy { return p }, Log: slog.New(slog.DiscardHandler)}}

	for _, c := range []struct {
		name       string
		serverName string // what the client asks for; an address sends no SNI
		verifyAs   string
	}{
		{"by name", "api.internal.test", "api.internal.test"},
		{"by address", "127.0.0.1", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(u.requests())
			agent := tls.Client(reviewAgentOf(t, d, tg, u.addr(), ca), &tls.Config{RootCAs: roots, ServerName: c.serverName, NextProtos: []string{"h2", "http/1.1"}})
			if err := agent.Handshake(); err != nil {
				t.Fatalf("handshake: %v", err)
			}
			st := agent.ConnectionState()
			if err := st.PeerCertificates[0].VerifyHostname(c.verifyAs); err != nil {
				t.Error(err)
			}
			if st.NegotiatedProtocol != "http/1.1" {
				t.Errorf("ALPN %q, want http/1.1", st.NegotiatedProtocol)
			}
			br := bufio.NewReader(agent)
			resp := reviewExchange(t, agent, br, "GET /v1/orders HTTP/1.1\r\nHost: "+u.addr()+"\r\nAuthorization: Bearer made-up\r\n\r\n")
			got := u.requests()[before:]
			if resp.StatusCode != http.StatusOK || len(got) != 1 || !strings.Contains(got[0], "Bearer "+token) || strings.Contains(got[0], "made-up") {
				t.Fatalf("GET over HTTPS: %s, upstream saw %q", resp.Status, got)
			}
			resp = reviewExchange(t, agent, br, "DELETE /v1/orders/7 HTTP/1.1\r\nHost: "+u.addr()+"\r\n\r\n")
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Enforcer-Rule") != "no-deletes" || len(u.requests()) != before+1 {
				t.Errorf("DELETE over HTTPS: %s rule %q; upstream saw %d requests", resp.Status, resp.Header.Get("X-Enforcer-Rule"), len(u.requests())-before)
			}
		})
	}

	t.Run("untrusted", func(t *testing.T) {
		before := len(u.requests())
		agent := tls.Client(reviewAgentOf(t, d, tg, u.addr(), ca), &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "api.internal.test"})
		if err := agent.Handshake(); err == nil {
			t.Fatal("a client that does not trust the agent CA completed the handshake")
		}
		if n := len(u.requests()); n != before {
			t.Errorf("the upstream saw %d requests", n-before)
		}
	})
}

// TestRefusalOverHTTPS: an agent refused before any request (no session, no grant) is told why
// over the TLS it opened, so an HTTPS client shows the reason and the command to run. One over
// its uid's connection limit costs the daemon no handshake: it is reset.
func TestRefusalOverHTTPS(t *testing.T) {
	ca, roots := testAgentCA(t)
	for _, c := range []struct {
		name   string
		reason error
		answer bool
		peeked bool // the proxy read the ClientHello to match the target by name
	}{
		{"no session", &refusal{Message: "no login session for this process", Hint: "run `enforcer login`"}, true, false},
		{"no session, target matched by name", &refusal{Message: "no login session for this process", Hint: "run `enforcer login`"}, true, true},
		{"too many connections", proxy.ErrTooManyConnections, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, pc := agentConn(t)
			served := pc.Client
			h := &httpHandler{srv: &httpproto.Server{}, ca: ca}
			agent := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: "api.internal.test"})
			agent.SetDeadline(time.Now().Add(10 * time.Second))
			if c.peeked {
				go agent.Handshake()
				// The ClientHello's record, as the proxy's SNI read consumes it.
				served.SetReadDeadline(time.Now().Add(10 * time.Second))
				head := make([]byte, 5)
				if _, err := io.ReadFull(served, head); err != nil {
					t.Fatal(err)
				}
				body := make([]byte, int(head[3])<<8|int(head[4]))
				if _, err := io.ReadFull(served, body); err != nil {
					t.Fatal(err)
				}
				served.SetReadDeadline(time.Time{})
				pc.Peeked, pc.SNI = append(head, body...), "api.internal.test"
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.Refuse(context.Background(), pc, c.reason)
				pc.Close()
			}()
			defer func() { <-done }()
			if !c.answer {
				if err := agent.Handshake(); err == nil {
					t.Fatal("the handshake completed")
				}
				return
			}
			io.WriteString(agent, "GET / HTTP/1.1\r\nHost: api.internal.test\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(agent), nil)
			if err != nil {
				t.Fatalf("no HTTP answer over TLS: %v", err)
			}
			var body struct{ Error, Hint string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusForbidden || body.Error != "no login session for this process" || body.Hint != "run `enforcer login`" {
				t.Errorf("refusal over TLS: %s %+v", resp.Status, body)
			}
		})
	}
}

// TestAcceptEnds: what accept waits for (the first byte, the handshake) ends with its bounds,
// and at once when the connection's context ends; nothing is left waiting.
func TestAcceptEnds(t *testing.T) {
	ca, _ := testAgentCA(t)
	for _, c := range []struct {
		name      string
		send      []byte // what the client sends, then nothing
		cancelled bool   // the context ends (a reload, the daemon stopping) instead of a bound
	}{
		{"a client that sends nothing", nil, false},
		{"half a ClientHello", []byte{0x16, 0x03, 0x01, 0x02}, false},
		{"the context ends during the wait", nil, true},
		{"the context ends during the handshake", []byte{0x16, 0x03, 0x01, 0x02}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, pc := agentConn(t)
			raw.Write(c.send)
			h := &httpHandler{srv: &httpproto.Server{}, ca: ca}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			bound := 300 * time.Millisecond
			if c.cancelled {
				bound = time.Hour
				time.AfterFunc(300*time.Millisecond, cancel)
			}
			done := make(chan error, 1)
			go func() {
				_, _, err := h.accept(ctx, pc, bound, bound, true)
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("accept returned a connection")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("accept is still waiting")
			}
		})
	}
}

// TestHeldRequestWithdrawnWhenTLSClientLeaves: an HTTPS agent whose request waits for a
// reviewer and which then goes away withdraws it: the client watch reads through TLS.
func TestHeldRequestWithdrawnWhenTLSClientLeaves(t *testing.T) {
	t.Setenv("REVIEW_API_TOKEN", "review-token-0b7e")
	ca, roots := testAgentCA(t)
	u := newReviewUpstream(t)
	p, tg := reviewPolicyFor(t, u, `rules:
  - {name: refunds, when: 'http.method == "POST"', action: approve, approvers: [sre]}
`)
	broker := approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: time.Minute, LateWindow: -1, Logger: slog.New(slog.DiscardHandler)})
	d := &Daemon{httpGuards: &httpguard.Shared{Policy: func() *policy.Policy { return p }, Approvals: broker, Log: slog.New(slog.DiscardHandler)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := broker.Watch(ctx)
	agent := tls.Client(reviewAgentOf(t, d, tg, u.addr(), ca), &tls.Config{RootCAs: roots, ServerName: "api.internal.test"})
	io.WriteString(agent, "POST /v1/refunds HTTP/1.1\r\nHost: "+u.addr()+"\r\nContent-Length: 2\r\n\r\n{}")
	var id string
	for timeout := time.After(15 * time.Second); ; {
		select {
		case ev := <-events:
			switch {
			case ev.Type == approval.EventCreated:
				id = ev.Request.ID
				agent.Close()
				continue
			case id != "" && ev.Request.ID == id && ev.Request.State == approval.StateWithdrawn:
				if n := len(u.requests()); n != 0 {
					t.Errorf("the upstream got %d requests", n)
				}
				return
			}
		case <-timeout:
			t.Fatalf("request %q not withdrawn within 15s of the client leaving", id)
		}
	}
}

// TestHTTPUpstreamBySNI: a target matched by the name in the agent's ClientHello is reached at
// that name's address over TLS checked against the name (one the policy lists), or the name a
// wildcard target says the credential is for; its requests go with that name as Host (the
// agent's own could front another site), on the port the agent dialled.
func TestHTTPUpstreamBySNI(t *testing.T) {
	t.Setenv("REVIEW_API_TOKEN", "review-token-9c2d")
	for _, c := range []struct {
		name, pattern, upstream, sni, dst string
		serverName, host                  string
	}{
		{"a credential", "api.example.com", "{password_env: REVIEW_API_TOKEN}", "API.Example.com.", "198.18.1.3:443", "api.example.com", "api.example.com"},
		{"no credential: the name's Host, not the agent's", "api.example.com", "", "api.example.com", "198.18.1.3:443", "api.example.com", "api.example.com"},
		{"another port", "api.example.com", "", "api.example.com", "198.18.1.3:8443", "api.example.com", "api.example.com:8443"},
		{"a wildcard and server_name", "*.example.com", "{password_env: REVIEW_API_TOKEN, server_name: gw.example.com}", "api.example.com", "198.18.1.3:443", "gw.example.com", "gw.example.com"},
		{"a wildcard and a pinned host", "*.example.com", "{password_env: REVIEW_API_TOKEN, host: api.example.com}", "v2.example.com", "198.18.1.3:443", "api.example.com", "api.example.com"},
		{"a wildcard, no credential", "*.example.com", "", "v2.example.com", "198.18.1.3:443", "v2.example.com", "v2.example.com"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := "version: 1\ntargets:\n  - name: api\n    protocol: http\n    match: {sni: [\"" + c.pattern + "\"], ports: [443, 8443]}\n"
			if c.upstream != "" {
				text += "    upstream: " + c.upstream + "\n"
			}
			_, tg := reviewTarget(t, text)
			pc := &proxy.Conn{Target: tg, SNI: c.sni, Origin: redirect.Origin{Dst: netip.MustParseAddrPort(c.dst)}}
			// What tls.Server saw is never what decides: the proxy's own reading of the name is.
			up, _, err := httpUpstream(pc, &tls.ConnectionState{ServerName: "attacker.example"})
			if err != nil {
				t.Fatal(err)
			}
			if up.TLS == nil || up.TLS.ServerName != c.serverName || up.TLS.InsecureSkipVerify {
				t.Errorf("TLS %+v; want verify-full of %q", up.TLS, c.serverName)
			}
			if up.Host != c.host {
				t.Errorf("Host %q, want %q", up.Host, c.host)
			}
		})
	}
}

// agentConn is a loopback connection: the agent's end, and the proxy's as a Conn to an http
// target at 198.18.1.3:443. Both are closed when the test ends.
func agentConn(t *testing.T) (net.Conn, *proxy.Conn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	served, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	pc := &proxy.Conn{ID: 1, Client: served, Target: &policy.Target{Name: "api", Protocol: policy.ProtoHTTP},
		Origin: redirect.Origin{Dst: netip.MustParseAddrPort("198.18.1.3:443")}, Log: slog.New(slog.DiscardHandler)}
	t.Cleanup(pc.Close)
	return raw, pc
}

// testAgentCA is a new agent CA, and a pool of roots that trusts it.
func testAgentCA(t *testing.T) (*agentca.Authority, *x509.CertPool) {
	t.Helper()
	ca, err := agentca.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	return ca, roots
}
