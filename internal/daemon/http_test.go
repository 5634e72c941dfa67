package daemon

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/agentca"
	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/httpguard"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// reviewCA is a certificate authority made for one test.
type reviewCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate as PEM, for ca_file
}

var reviewSerial struct {
	sync.Mutex
	n int64
}

func nextReviewSerial() *big.Int {
	reviewSerial.Lock()
	defer reviewSerial.Unlock()
	reviewSerial.n++
	return big.NewInt(reviewSerial.n)
}

func newReviewCA(t *testing.T, name string) *reviewCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextReviewSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &reviewCA{cert: cert, key: key, file: file}
}

// leaf is a server certificate of ca for the names and addresses given, valid until notAfter,
// for the extended key usage given.
func (ca *reviewCA) leaf(t *testing.T, dns []string, ips []string, notAfter time.Time, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextReviewSerial(),
		Subject:      pkix.Name{CommonName: "leaf"},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     notAfter,
		DNSNames:     dns,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// reviewTLSServer answers TLS handshakes on a loopback address ("127.0.0.1" or "::1") with cert
// and returns the address it listens on.
func reviewTLSServer(t *testing.T, host string, cert tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
			tc.Handshake()
			tc.Close()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestHTTPUpstreamTLSChecksWhoAnswers: the TLS an http target's upstream gets, against real
// servers on loopback. verify-full checks the chain against ca_file (or the system's roots) and
// the name: server_name, else the upstream's host, an IPv6 address included; verify-ca checks the
// chain alone, as a server certificate, valid now.
func TestHTTPUpstreamTLSChecksWhoAnswers(t *testing.T) {
	ca, other := newReviewCA(t, "review-ca"), newReviewCA(t, "other-ca")
	later := time.Now().Add(time.Hour)
	byName := ca.leaf(t, []string{"api.internal"}, nil, later, x509.ExtKeyUsageServerAuth)
	byAddress := ca.leaf(t, nil, []string{"127.0.0.1", "::1"}, later, x509.ExtKeyUsageServerAuth)
	otherCA := other.leaf(t, []string{"api.internal"}, []string{"127.0.0.1", "::1"}, later, x509.ExtKeyUsageServerAuth)
	expired := ca.leaf(t, []string{"api.internal"}, []string{"127.0.0.1"}, time.Now().Add(-time.Hour), x509.ExtKeyUsageServerAuth)
	clientOnly := ca.leaf(t, []string{"api.internal"}, []string{"127.0.0.1"}, later, x509.ExtKeyUsageClientAuth)
	for _, c := range []struct {
		name       string
		host       string // where the server listens
		cert       tls.Certificate
		mode       string
		caFile     string
		serverName string
		ok         bool
	}{
		{"verify-full, server_name", "127.0.0.1", byName, "verify-full", ca.file, "api.internal", true},
		{"verify-full, IPv4 address as the name", "127.0.0.1", byAddress, "verify-full", ca.file, "", true},
		{"verify-full, IPv6 address as the name", "::1", byAddress, "verify-full", ca.file, "", true},
		{"verify-full, IPv6 address, certificate for a name", "::1", byName, "verify-full", ca.file, "", false},
		{"verify-full, another server_name", "127.0.0.1", byName, "verify-full", ca.file, "billing.internal", false},
		{"verify-full, another CA", "127.0.0.1", otherCA, "verify-full", ca.file, "api.internal", false},
		{"verify-full, system roots", "127.0.0.1", byName, "verify-full", "", "api.internal", false},
		{"verify-full, expired", "127.0.0.1", expired, "verify-full", ca.file, "api.internal", false},
		{"verify-ca, any name of the CA", "127.0.0.1", byName, "verify-ca", ca.file, "", true},
		{"verify-ca, IPv6, any name of the CA", "::1", byName, "verify-ca", ca.file, "billing.internal", true},
		{"verify-ca, another CA", "127.0.0.1", otherCA, "verify-ca", ca.file, "", false},
		{"verify-ca, expired", "127.0.0.1", expired, "verify-ca", ca.file, "", false},
		{"verify-ca, client certificate", "127.0.0.1", clientOnly, "verify-ca", ca.file, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := reviewTLSServer(t, c.host, c.cert)
			cfg, err := httpTLSConfig(policy.Upstream{TLS: c.mode, CAFile: c.caFile, ServerName: c.serverName}, c.mode, addr, c.serverName)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MinVersion < tls.VersionTLS12 {
				t.Errorf("MinVersion %x", cfg.MinVersion)
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			if err == nil {
				conn.Close()
			}
			if (err == nil) != c.ok {
				t.Errorf("handshake with %s: err %v; want ok %v", addr, err, c.ok)
			}
		})
	}
	if _, err := httpTLSConfig(policy.Upstream{TLS: "require"}, "require", "198.18.1.3:443", ""); err == nil {
		t.Error("tls mode require: a configuration; want an error (it checks no one)")
	}
	if _, err := httpTLSConfig(policy.Upstream{TLS: "verify-full", CAFile: filepath.Join(t.TempDir(), "none.pem")}, "verify-full", "198.18.1.3:443", ""); err == nil {
		t.Error("a missing ca_file: a configuration; want an error")
	}
}

// reviewTarget is the first target of a policy text.
func reviewTarget(t *testing.T, text string) (*policy.Policy, *policy.Target) {
	t.Helper()
	p := parsePolicy(t, text)
	return p, p.Targets[0]
}

// TestHTTPUpstreamCredential: the credential the daemon builds from an http target (bearer, HTTP
// Basic, a header of its own), the address and TLS it goes with, and errors that never carry the
// secret.
func TestHTTPUpstreamCredential(t *testing.T) {
	const secret = "s3cr3t-review-token"
	t.Setenv("REVIEW_API_TOKEN", secret)
	t.Setenv("REVIEW_BROKEN_TOKEN", "s3cr3t\r\nX-Injected: 1")
	t.Setenv("REVIEW_EMPTY_TOKEN", "")
	for _, c := range []struct {
		name, match, upstream, dst string
		addr, serverName           string // "" serverName: no TLS
		header, value, user        string
		err                        string
		// agentTLS, when set, is the name the agent's HTTPS ClientHello gave ("-": none).
		agentTLS string
	}{
		{"bearer, verify-full by address", "{addresses: [198.18.1.3], ports: [443]}", "{password_env: REVIEW_API_TOKEN}", "198.18.1.3:443",
			"198.18.1.3:443", "198.18.1.3", "Authorization", "Bearer " + secret, "", "", ""},
		{"bearer, IPv6 destination", `{addresses: ["2001:db8::7"], ports: [443]}`, "{password_env: REVIEW_API_TOKEN}", "[2001:db8::7]:443",
			"[2001:db8::7]:443", "2001:db8::7", "Authorization", "Bearer " + secret, "", "", ""},
		{"basic, fixed address and name", "{addresses: [198.18.0.0/15], ports: [443]}", `{address: "api.internal:8443", user: svc, password_env: REVIEW_API_TOKEN, server_name: api.internal}`, "198.18.9.9:443",
			"api.internal:8443", "api.internal", "Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("svc:"+secret)), "svc", "", ""},
		{"header, in clear as written", "{addresses: [198.18.1.3], ports: [80]}", "{password_env: REVIEW_API_TOKEN, header: X-Api-Key, tls: disable}", "198.18.1.3:80",
			"198.18.1.3:80", "", "X-Api-Key", secret, "", "", ""},
		{"no secret", "{addresses: [198.18.1.3], ports: [80]}", "", "198.18.1.3:80",
			"198.18.1.3:80", "", "", "", "", "", ""},
		{"secret with a line break", "{addresses: [198.18.1.3], ports: [80]}", "{password_env: REVIEW_BROKEN_TOKEN, tls: disable}", "198.18.1.3:80",
			"", "", "", "", "", "line break", ""},
		{"empty secret", "{addresses: [198.18.1.3], ports: [80]}", "{password_env: REVIEW_EMPTY_TOKEN, tls: disable}", "198.18.1.3:80",
			"", "", "", "", "", "empty", ""},
		{"unset variable", "{addresses: [198.18.1.3], ports: [80]}", "{password_env: REVIEW_UNSET_TOKEN, tls: disable}", "198.18.1.3:80",
			"", "", "", "", "", "REVIEW_UNSET_TOKEN is not set", ""},
		// An agent that called over HTTPS is not downgraded; the name checked upstream is the
		// agent's only when no credential goes there.
		{"agent's HTTPS, no credential: the name it asked for", "{addresses: [198.18.1.3], ports: [443]}", "", "198.18.1.3:443",
			"198.18.1.3:443", "api.internal.test", "", "", "", "", "api.internal.test"},
		{"agent's HTTPS without a name, no credential: the address", "{addresses: [198.18.1.3], ports: [443]}", "", "198.18.1.3:443",
			"198.18.1.3:443", "198.18.1.3", "", "", "", "", "-"},
		{"agent's HTTPS, a credential: never the agent's name", "{addresses: [198.18.1.3], ports: [443]}", "{password_env: REVIEW_API_TOKEN}", "198.18.1.3:443",
			"198.18.1.3:443", "198.18.1.3", "Authorization", "Bearer " + secret, "", "", "attacker.example"},
		{"agent's HTTPS, server_name written", "{addresses: [198.18.1.3], ports: [443]}", "{server_name: api.internal, tls: verify-full}", "198.18.1.3:443",
			"198.18.1.3:443", "api.internal", "", "", "", "", "attacker.example"},
		{"agent's HTTPS, a pinned host: its name, not the agent's", "{addresses: [198.18.1.3], ports: [443]}", `{host: "api.internal:8443"}`, "198.18.1.3:443",
			"198.18.1.3:443", "api.internal", "", "", "", "", "attacker.example"},
		{"agent's HTTPS, tls: disable written", "{addresses: [198.18.1.3], ports: [443]}", "{tls: disable}", "198.18.1.3:443",
			"198.18.1.3:443", "", "", "", "", "", "api.internal.test"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := "version: 1\ntargets:\n  - name: api\n    protocol: http\n    match: " + c.match + "\n"
			if c.upstream != "" {
				text += "    upstream: " + c.upstream + "\n"
			}
			_, tg := reviewTarget(t, text)
			var agentTLS *tls.ConnectionState
			if c.agentTLS != "" {
				agentTLS = &tls.ConnectionState{ServerName: strings.TrimPrefix(c.agentTLS, "-")}
			}
			up, user, err := httpUpstream(&proxy.Conn{Target: tg, Origin: redirect.Origin{Dst: netip.MustParseAddrPort(c.dst)}}, agentTLS)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v; want one saying %q", err, c.err)
				}
				if strings.Contains(err.Error(), "s3cr3t") {
					t.Fatalf("the error carries the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if up.Addr != c.addr || user != c.user {
				t.Errorf("address %q user %q; want %q %q", up.Addr, user, c.addr, c.user)
			}
			switch {
			case c.serverName == "" && up.TLS != nil:
				t.Errorf("TLS to %s; want none", up.Addr)
			case c.serverName != "" && (up.TLS == nil || up.TLS.ServerName != c.serverName || up.TLS.InsecureSkipVerify):
				t.Errorf("TLS %+v; want verify-full of %q", up.TLS, c.serverName)
			}
			switch {
			case c.header == "" && up.Credential != nil:
				t.Errorf("credential %v; want none", up.Credential)
			case c.header != "" && (up.Credential == nil || up.Credential.Header != c.header || up.Credential.Value != c.value):
				t.Errorf("credential %v; want %s", up.Credential, c.header)
			}
			if up.Credential != nil && strings.Contains(fmt.Sprint(up.Credential, *up.Credential)+fmt.Sprintf("%#v", *up.Credential), "s3cr3t") {
				t.Error("a printed credential shows the secret")
			}
		})
	}
}

// reviewAgent is an agent's connection served by the daemon's http handler, with the guard the
// daemon builds for it, as alice (group eng) from this process.
func reviewAgent(t *testing.T, d *Daemon, tg *policy.Target, dst string) net.Conn {
	t.Helper()
	ca, _ := testAgentCA(t)
	return reviewAgentOf(t, d, tg, dst, ca)
}

// reviewAgentOf is reviewAgent with ca as the agent CA.
func reviewAgentOf(t *testing.T, d *Daemon, tg *policy.Target, dst string, ca *agentca.Authority) net.Conn {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	agent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	served, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	c := &proxy.Conn{
		ID:       1,
		Client:   served,
		Target:   tg,
		Origin:   redirect.Origin{Dst: netip.MustParseAddrPort(dst), PID: uint32(os.Getpid()), Comm: "curl"},
		Identity: identity.Session{ID: "s-alice", Subject: "alice", Groups: []string{"eng"}},
		Log:      slog.New(slog.DiscardHandler),
	}
	h := &httpHandler{srv: &httpproto.Server{}, guard: d.httpGuard, ca: ca}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Serve(ctx, c)
		c.Close()
	}()
	t.Cleanup(func() {
		cancel()
		agent.Close()
		<-done
	})
	agent.SetDeadline(time.Now().Add(20 * time.Second))
	return agent
}

// reviewUpstream is a plain-HTTP API on loopback that keeps the Host, Authorization, method, path
// and X-Force (as Go's Header.Get reads it: the first) of every request it gets.
type reviewUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // "HOST AUTHORIZATION METHOD PATH X-FORCE"
}

func newReviewUpstream(t *testing.T) *reviewUpstream {
	u := &reviewUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Host+" "+r.Header.Get("Authorization")+" "+r.Method+" "+r.URL.Path+" "+r.Header.Get("X-Force"))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok": true}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *reviewUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

func (u *reviewUpstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

// reviewPolicyFor is a policy with one http target, api, for the upstream u, its token from
// REVIEW_API_TOKEN, granted to eng, with the rules given.
func reviewPolicyFor(t *testing.T, u *reviewUpstream, rules string) (*policy.Policy, *policy.Target) {
	t.Helper()
	ap := netip.MustParseAddrPort(u.addr())
	return reviewTarget(t, fmt.Sprintf(`version: 1
targets:
  - name: api
    protocol: http
    match: {addresses: [%s], ports: [%d]}
    upstream: {password_env: REVIEW_API_TOKEN, tls: disable}
grants:
  - {groups: [eng], targets: [api]}
default: allow
%s`, ap.Addr(), ap.Port(), rules))
}

// reviewExchange sends one raw request on agent and reads its response.
func reviewExchange(t *testing.T, agent net.Conn, br *bufio.Reader, request string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(agent, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestAgentCannotPickTheVirtualHostThatGetsTheCredential: with no upstream.host, the agent's Host
// goes upstream with the target's credential. Where the upstream is a shared ingress or reverse
// proxy (nginx, an API gateway, a Kubernetes ingress, routing by Host after TLS), the agent's Host
// picks the service that receives the token: one whose request logs the agent can read, or one
// that forwards elsewhere. The credential must reach the target's service only, so a request
// carrying it must not go with a Host the agent chose (it is refused, or sent with the target's).
func TestAgentCannotPickTheVirtualHostThatGetsTheCredential(t *testing.T) {
	const token = "review-token-3f9a"
	t.Setenv("REVIEW_API_TOKEN", token)
	u := newReviewUpstream(t)
	p, tg := reviewPolicyFor(t, u, "")
	d := &Daemon{httpGuards: &httpguard.Shared{Policy: func() *policy.Policy { return p }, Log: slog.New(slog.DiscardHandler)}}
	agent := reviewAgent(t, d, tg, u.addr())
	br := bufio.NewReader(agent)

	// The wiring works: a request to the target's own address gets the token.
	resp := reviewExchange(t, agent, br, "GET /v1/orders HTTP/1.1\r\nHost: "+u.addr()+"\r\n\r\n")
	if got := u.requests(); resp.StatusCode != http.StatusOK || len(got) != 1 || !strings.Contains(got[0], "Bearer "+token) {
		t.Fatalf("request to the target: %s, upstream saw %q", resp.Status, got)
	}
	reviewExchange(t, agent, br, "GET /v1/orders HTTP/1.1\r\nHost: billing.internal\r\n\r\n")
	for _, r := range u.requests() {
		if strings.HasPrefix(r, "billing.internal ") && strings.Contains(r, token) {
			t.Errorf("the upstream got the target's credential with the agent's Host: %q", r)
		}
	}
}

// TestReviewersSeeTheHeadersTheServerActsOn: a held request is shown to reviewers (`enforcer
// approvals`, webhooks) as its request line, Content-Type, Host and body, and the approval is bound
// to those alone; every other header goes upstream as the agent sent it. Some headers decide
// whom a request acts as or for: Kubernetes' Impersonate-User and Impersonate-Group, Stripe's
// Stripe-Account, a tenant header. A reviewer who approves "POST /api/v1/namespaces/x/pods" must
// see that it runs as system:admin (and a late approval's grant must not let the agent add it).
func TestReviewersSeeTheHeadersTheServerActsOn(t *testing.T) {
	t.Setenv("REVIEW_API_TOKEN", "review-token-77c1")
	u := newReviewUpstream(t)
	p, tg := reviewPolicyFor(t, u, `rules:
  - {name: pod-changes, when: 'http.method == "POST" && http.path.startsWith("/api/v1/namespaces/")', action: approve, approvers: [sre]}
`)
	broker := approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: time.Minute, LateWindow: -1, Logger: slog.New(slog.DiscardHandler)})
	d := &Daemon{httpGuards: &httpguard.Shared{Policy: func() *policy.Policy { return p }, Approvals: broker, Log: slog.New(slog.DiscardHandler)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := broker.Watch(ctx)
	agent := reviewAgent(t, d, tg, u.addr())
	responses := make(chan *http.Response, 1)
	go func() {
		defer close(responses)
		resp, err := http.ReadResponse(bufio.NewReader(agent), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			responses <- resp
		}
	}()

	body := `{"metadata": {"name": "debug"}}`
	request := "POST /api/v1/namespaces/prod/pods HTTP/1.1\r\nHost: " + u.addr() + "\r\nContent-Type: application/json\r\n" +
		"Impersonate-User: system:admin\r\nImpersonate-Group: system:masters\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(agent, request); err != nil {
		t.Fatal(err)
	}
	var held *approval.Request
	timeout := time.After(15 * time.Second)
	for held == nil {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("watch ended")
			}
			if ev.Type == approval.EventCreated {
				held = ev.Request
			}
		case resp := <-responses:
			t.Fatalf("answered %v before any approval was requested", resp)
		case <-timeout:
			t.Fatal("no approval request within 15s")
		}
	}
	if !strings.Contains(held.SQL, "POST /api/v1/namespaces/prod/pods") {
		t.Fatalf("held request shown as %q", held.SQL)
	}
	for _, h := range []string{"impersonate-user: system:admin", "impersonate-group: system:masters"} {
		if !strings.Contains(strings.ToLower(held.SQL), h) {
			t.Errorf("reviewers are shown %q (webhook: %s); %q, which the server acts on, is not in it", held.SQL, approval.Summary(approval.Event{Type: approval.EventCreated, Request: held}), h)
		}
	}
	if _, err := broker.Deny(ctx, held.ID, approval.Reviewer{Subject: "bob", Groups: []string{"sre"}}, "not now"); err != nil {
		t.Fatal(err)
	}
	select {
	case resp := <-responses:
		if resp == nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Enforcer-Approval") != held.ID {
			t.Errorf("denied request answered %v", resp)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer within 15s of the denial")
	}
	if got := u.requests(); len(got) != 0 {
		t.Errorf("the upstream got %q for a denied request", got)
	}
}

// TestReloadAndLiveHTTPConnections: rules, defaults and approval settings are read for every
// request, so a reload that changes only them leaves an http connection open; one that changes
// what the connection took when it opened (its upstream and credential, the grant, the masking
// plan, whether and how it is recorded) ends it. A connection opened while recording was off
// would otherwise stay unrecorded after a reload turns recording on.
func TestReloadAndLiveHTTPConnections(t *testing.T) {
	const base = `version: 1
targets:
  - name: api
    match: {addresses: ["198.18.1.3"], ports: [8080]}
    protocol: http
    upstream: {password_env: REVIEW_API_TOKEN, tls: disable}
grants:
  - {groups: [eng], targets: [api]}
`
	for _, c := range []struct {
		name     string
		old, new string
		revoked  bool
	}{
		{"nothing changed", base, base, false},
		{"a rule added", base, base + "rules: [{name: no-deletes, when: 'http.method == \"DELETE\"', action: block}]\n", false},
		{"the default changed", base, base + "default: block\n", false},
		{"approval timeout changed", base, base + "approvals: {timeout: 5s}\n", false},
		{"a detector's style changed", base, base + "masking: {detectors: [{detectors: [email], style: partial}]}\n", true},
		{"masking turned on", base + "masking: {disabled: true}\n", base, true},
		{"masking turned off", base, base + "masking: {disabled: true}\n", false},
		{"upstream Host set", base, strings.Replace(base, "tls: disable}", "tls: disable, host: api.internal}", 1), true},
		{"credential moved to a header", base, strings.Replace(base, "tls: disable}", "tls: disable, header: X-Api-Key}", 1), true},
		{"TLS turned on", base, strings.Replace(base, "tls: disable}", "tls: verify-full, ca_file: /etc/ca.pem, server_name: api.internal}", 1), true},
		{"grant taken away", base, strings.Replace(base, "groups: [eng]", "groups: [sre]", 1), true},
		{"recording turned on", base + "recording: {disabled: true}\n", base, true},
		{"recording made strict", base, base + "recording: {durability: strict}\n", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := parsePolicy(t, c.old)
			conn := aliceConn(old, "api", "198.18.1.3:8080", "")
			if got := revokedBy(old, parsePolicy(t, c.new), conn); got != c.revoked {
				t.Errorf("revoked %v, want %v", got, c.revoked)
			}
		})
	}
}

// TestRepeatedHeaderCannotDodgeHeaderRules: rules see a repeated header as its values joined
// with ", ", and the proxy forwards every copy; servers read one of them (Go's Header.Get and
// Express the first, others the last). A block rule on a header's value misses the same header
// sent twice, and the server acts on the value the rule was written to stop.
func TestRepeatedHeaderCannotDodgeHeaderRules(t *testing.T) {
	t.Setenv("REVIEW_API_TOKEN", "review-token-0b2e")
	u := newReviewUpstream(t)
	p, tg := reviewPolicyFor(t, u, `rules:
  - {name: no-forced-writes, when: '"x-force" in http.headers && http.headers["x-force"] == "1"', action: block}
`)
	d := &Daemon{httpGuards: &httpguard.Shared{Policy: func() *policy.Policy { return p }, Log: slog.New(slog.DiscardHandler)}}
	head := "PUT /v1/orders/7 HTTP/1.1\r\nHost: " + u.addr() + "\r\nContent-Length: 0\r\n"
	for _, c := range []struct {
		name, headers string
	}{
		{"once", "X-Force: 1\r\n"},
		{"twice", "X-Force: 1\r\nX-Force: 1\r\n"},
		{"after another value", "X-Force: 1\r\nX-Force: 0\r\n"},
	} {
		// A refused request ends its connection: each case has its own.
		agent := reviewAgent(t, d, tg, u.addr())
		br := bufio.NewReader(agent)
		before := len(u.requests())
		resp := reviewExchange(t, agent, br, head+c.headers+"\r\n")
		for _, r := range u.requests()[before:] {
			if strings.HasSuffix(r, " 1") {
				t.Errorf("%s: %s, and the upstream read X-Force 1: %q", c.name, resp.Status, r)
			}
		}
	}
}

// TestHTTPRefusalsTellTheAgentWhatToDo: a connection refused before any request (no session, no
// grant) gets a 403 with the message and the hint in JSON; one whose target's upstream cannot be
// used (its secret unreadable) gets a 502 naming the target, nothing is forwarded, and neither
// answer carries the daemon's own error.
func TestHTTPRefusalsTellTheAgentWhatToDo(t *testing.T) {
	u := newReviewUpstream(t)
	p, tg := reviewPolicyFor(t, u, "")
	d := &Daemon{httpGuards: &httpguard.Shared{Policy: func() *policy.Policy { return p }, Log: slog.New(slog.DiscardHandler)}}

	t.Run("no grant", func(t *testing.T) {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		agent, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer agent.Close()
		agent.SetDeadline(time.Now().Add(10 * time.Second))
		served, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		c := &proxy.Conn{Client: served, Target: tg, Log: slog.New(slog.DiscardHandler)}
		io.WriteString(agent, "GET /v1/orders HTTP/1.1\r\nHost: api.internal\r\n\r\n")
		h := &httpHandler{srv: &httpproto.Server{}, guard: d.httpGuard}
		h.Refuse(context.Background(), c, &refusal{Message: `enforcer: access to target "api" needs membership in one of the groups [eng]`, Hint: "ask a policy administrator for a grant"})
		c.Close()
		resp, err := http.ReadResponse(bufio.NewReader(agent), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/json" ||
			!strings.Contains(string(body), `needs membership in one of the groups [eng]`) || !strings.Contains(string(body), `"hint":"ask a policy administrator for a grant"`) {
			t.Errorf("%s %q: %s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
	})

	t.Run("upstream unusable", func(t *testing.T) {
		// An empty secret: the credential cannot be built.
		t.Setenv("REVIEW_API_TOKEN", "")
		agent := reviewAgent(t, d, tg, u.addr())
		resp := reviewExchange(t, agent, bufio.NewReader(agent), "GET /v1/orders HTTP/1.1\r\nHost: "+u.addr()+"\r\n\r\n")
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s; want 502", resp.Status)
		}
		if got := u.requests(); len(got) != 0 {
			t.Errorf("the upstream got %q", got)
		}
	})
}
