package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// apiService is the "remote" HTTP API of the tests: it answers only requests that carry its
// token, and remembers the headers and requests it saw.
type apiService struct {
	token    string
	mu       sync.Mutex
	headers  []http.Header
	requests []string
	writes   atomic.Int64 // requests that could change state and reached it
}

func (a *apiService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.headers = append(a.headers, r.Header.Clone())
	a.requests = append(a.requests, r.Method+" "+r.URL.RequestURI())
	a.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+a.token {
		http.Error(w, `{"error": "unauthorised"}`, http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		a.writes.Add(1)
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/customers/1":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id": 1, "name": "Ada", "email": "ada.lovelace@example.com", "card": "4111 1111 1111 1111", "plan": "gold"}`)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/export.csv":
		w.Header().Set("Content-Type", "text/csv")
		io.WriteString(w, "id,email\n1,ada.lovelace@example.com\n")
	case r.Method == http.MethodPost && r.URL.Path == "/v1/refunds":
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"refund": "created", "request": %s}`, body)
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"service": "api", "status": "ok"}`)
	}
}

func (a *apiService) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

func (a *apiService) saw(req string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.requests {
		if r == req {
			return true
		}
	}
	return false
}

// serveAPI runs svc in the lab namespace at addr until the test ends, over TLS when cert is set.
func (e *env) serveAPI(addr string, svc http.Handler, cert *tls.Certificate) {
	e.t.Helper()
	ln, err := e.ns.Listen("tcp", addr)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := &http.Server{Handler: svc, ReadHeaderTimeout: 5 * time.Second}
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
		go srv.ServeTLS(ln, "", "")
	} else {
		go srv.Serve(ln)
	}
	e.t.Cleanup(func() { srv.Close() })
}

// testCA returns a CA's PEM and a certificate it signed for name.
func testCA(t *testing.T, name string) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "enforcer test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

const httpRules = `rules:
  - {name: no-deletes, when: 'http.method == "DELETE"', action: block, message: deletes go through the console}
  - {name: refunds-need-review, when: 'http.method == "POST" && http.path == "/v1/refunds"', action: approve, approvers: [dba]}
  - {name: no-destructive-ddl, when: 'sql.kind == "DROP"', action: block}
approvals: {timeout: 20s}
`

// TestHTTPTarget: an agent's plain HTTP requests to an http target reach the API with the
// target's token (the agent's own Authorization and forwarding headers do not), over TLS checked
// against the target's CA when the target says so; JSON and CSV bodies reach the agent masked;
// a rule blocks DELETE before the API sees it; a POST waits for a reviewer and runs once approved;
// path tricks are refused; every request is recorded, masked, and the log verifies.
func TestHTTPTarget(t *testing.T) {
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{
			{Subject: "alice", Email: "alice@example.test", Groups: []string{"engineering"}},
			{Subject: "carol", Email: "carol@example.test", Groups: []string{"dba"}},
		},
		PollInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {issuer: %q, client_id: %q}\n", idp.Issuer(), idp.ClientID()))
	peer := e.ns.PeerAddr.String()
	api := &apiService{token: "tok-" + strings.Repeat("7", 24)}
	e.serveAPI(net.JoinHostPort(peer, "8080"), api, nil)
	caPEM, cert := testCA(t, "api.internal.test")
	e.serveAPI(net.JoinHostPort(peer, "9443"), api, &cert)
	tokenFile := filepath.Join(e.dir, "api.token")
	caFile := filepath.Join(e.dir, "api-ca.pem")
	os.WriteFile(tokenFile, []byte(api.token+"\n"), 0o600)
	os.WriteFile(caFile, caPEM, 0o644)
	e.targetsYAML = fmt.Sprintf(`  - name: api
    match: {addresses: ["%[1]s"], ports: [8080]}
    protocol: http
    upstream: {password_file: %[2]s, tls: disable}
  - name: api-tls
    match: {addresses: ["%[1]s"], ports: [8081]}
    protocol: http
    upstream: {address: "%[1]s:9443", password_file: %[2]s, ca_file: %[3]s, server_name: api.internal.test}
  - name: api-wrong-name
    match: {addresses: ["%[1]s"], ports: [8082]}
    protocol: http
    upstream: {address: "%[1]s:9443", password_file: %[2]s, ca_file: %[3]s, server_name: other.test}
`, peer, tokenFile, caFile)
	e.tailYAML = httpRules
	e.setPolicy()
	loginAs(t, e, idp, "alice")
	reviewer := reviewerCLI(t, e, idp, "carol", 65534)

	curl := func(args ...string) (string, int) {
		return e.run(append([]string{"curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}"}, args...)...)
	}
	base := "http://" + net.JoinHostPort(peer, "8080")

	// Reads pass with the token injected; what the agent sent as its own credential and as its
	// address does not reach the API.
	out, _ := curl("-H", "Authorization: Bearer agent-made-this-up", "-H", "X-Forwarded-For: 10.0.0.1", base+"/v1/status")
	if !strings.Contains(out, `"status": "ok"`) || !strings.HasSuffix(out, "200") {
		t.Fatalf("GET through the proxy: %q", out)
	}
	api.mu.Lock()
	last := api.headers[len(api.headers)-1]
	api.mu.Unlock()
	if last.Get("X-Forwarded-For") != "" || strings.Contains(fmt.Sprint(last), "agent-made-this-up") {
		t.Errorf("the API saw the agent's own headers: %v", last)
	}

	// JSON and CSV bodies are masked on their way to the agent.
	out, _ = curl(base + "/v1/customers/1")
	if strings.Contains(out, "ada.lovelace@example.com") || strings.Contains(out, "4111 1111 1111 1111") || !strings.Contains(out, `"plan": "gold"`) {
		t.Errorf("JSON body at the agent: %q", out)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimSpace(out), "200")), &doc); err != nil {
		t.Errorf("masked JSON is not JSON: %v: %q", err, out)
	}
	out, _ = curl(base + "/v1/export.csv")
	if strings.Contains(out, "ada.lovelace@example.com") || !strings.Contains(out, "id,email") {
		t.Errorf("CSV body at the agent: %q", out)
	}

	// A DELETE is blocked by its rule: the API never sees it.
	writes := api.writes.Load()
	out, _ = curl("-X", "DELETE", base+"/v1/customers/1")
	if !strings.HasSuffix(out, "403") || !strings.Contains(out, "no-deletes") || api.writes.Load() != writes {
		t.Errorf("DELETE: %q (writes %d → %d)", out, writes, api.writes.Load())
	}
	// So is anything the default does not allow (PUT: allow_reads).
	out, _ = curl("-X", "PUT", "--data", "{}", base+"/v1/customers/1")
	if !strings.HasSuffix(out, "403") || api.writes.Load() != writes {
		t.Errorf("PUT under allow_reads: %q", out)
	}
	// A path that could mean another one to the server is refused, not normalised.
	out, _ = curl("--path-as-is", base+"/v1/../admin")
	if !strings.HasSuffix(out, "400") || api.saw("GET /admin") || api.saw("GET /v1/../admin") {
		t.Errorf("dot segments: %q", out)
	}

	// A POST to /v1/refunds waits for a reviewer, then reaches the API once.
	done := make(chan string, 1)
	go func() {
		o, _ := curl("-H", "Content-Type: application/json", "--data", `{"order": 7, "card": "4111 1111 1111 1111"}`, base+"/v1/refunds")
		done <- o
	}()
	id := waitPending(t, e)
	if out, err := reviewer("approvals", "--json").CombinedOutput(); err != nil || strings.Contains(string(out), "4111 1111 1111 1111") || !strings.Contains(string(out), "POST /v1/refunds") {
		t.Errorf("what the reviewer sees: %v %s", err, out)
	}
	if out, err := reviewer("approve", id, "--reason", "refund ok").CombinedOutput(); err != nil {
		t.Fatalf("approve: %v %s", err, out)
	}
	out = <-done
	if !strings.HasSuffix(out, "201") || !strings.Contains(out, `"refund": "created"`) || api.writes.Load() != writes+1 {
		t.Errorf("approved POST: %q", out)
	}

	// TLS upstream: checked against the target's CA and name; a wrong name gets a 502.
	out, _ = curl("http://" + net.JoinHostPort(peer, "8081") + "/v1/status")
	if !strings.Contains(out, `"status": "ok"`) {
		t.Errorf("over TLS: %q", out)
	}
	before := api.count()
	out, _ = curl("http://" + net.JoinHostPort(peer, "8082") + "/v1/status")
	if !strings.HasSuffix(out, "502") || strings.Contains(out, api.token) || api.count() != before {
		t.Errorf("TLS with the wrong server name: %q", out)
	}

	// Every request is in the log: masked, with verdicts, rules and the approval.
	var all strings.Builder
	for _, s := range e.closedSessions("http", 9) {
		r, err := e.cli("replay", s.ID)
		if err != nil {
			t.Fatalf("replay %s: %v %s", s.ID, err, r)
		}
		all.WriteString(r)
	}
	replay := all.String()
	for _, want := range []string{"GET /v1/customers/1", "200 OK, application/json", "BLOCKED", "no-deletes", "refunds-need-review", id, "201 Created", `"plan": "gold"`} {
		if !strings.Contains(replay, want) {
			t.Errorf("replay lacks %q:\n%s", want, replay)
		}
	}
	for _, leak := range []string{"ada.lovelace@example.com", "4111 1111 1111 1111", api.token, "agent-made-this-up"} {
		if strings.Contains(replay, leak) {
			t.Errorf("replay shows %q:\n%s", leak, replay)
		}
	}
	if out, err := e.cli("record", "verify"); err != nil {
		t.Fatalf("verify: %v %s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "daemon.log")); strings.Contains(string(b), api.token) {
		t.Error("the daemon logged the API token")
	}
}

// closedSessions waits (10 s at most) until the log holds n closed sessions of protocol, and
// returns the log's sessions of that protocol.
func (e *env) closedSessions(protocol string, n int) []record.SessionSummary {
	var mine []record.SessionSummary
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		js, _ := e.cli("sessions", "--json")
		var sessions []record.SessionSummary
		json.Unmarshal([]byte(js), &sessions)
		mine = mine[:0]
		closed := 0
		for _, s := range sessions {
			if s.Protocol == protocol {
				mine = append(mine, s)
				if !s.Open {
					closed++
				}
			}
		}
		if closed >= n {
			return mine
		}
	}
	return mine
}
