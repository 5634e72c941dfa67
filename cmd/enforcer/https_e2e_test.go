package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
)

// TestHTTPSFromTheAgent: an agent's https:// calls to an http target are judged, masked,
// recorded and given the target's credential as its plain ones are. `enforcer run` makes the
// command trust the agent CA, so curl needs no option; a client that trusts other roots only
// gets no further than the handshake. Upstream, the TLS the agent asked for is kept: checked
// against server_name with a credential, against the name the agent asked for without one. An
// agent refused before any request is told why over its TLS.
func TestHTTPSFromTheAgent(t *testing.T) {
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users:        []devidp.User{{Subject: "alice", Email: "alice@example.test", Groups: []string{"engineering"}}},
		PollInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {issuer: %q, client_id: %q}\n", idp.Issuer(), idp.ClientID()))
	peer := e.ns.PeerAddr.String()
	api := &apiService{token: "tok-" + strings.Repeat("5", 24)}
	caPEM, cert := testCA(t, "api.internal.test")
	e.serveAPI(net.JoinHostPort(peer, "9443"), api, &cert)
	tokenFile := filepath.Join(e.dir, "api.token")
	caFile := filepath.Join(e.dir, "api-ca.pem")
	os.WriteFile(tokenFile, []byte(api.token+"\n"), 0o600)
	os.WriteFile(caFile, caPEM, 0o644)
	// The same API as llmName (the lab's DNS gives it), for targets matched by that name.
	llmCAPEM, llmCert := testCA(t, llmName)
	e.serveAPI(net.JoinHostPort(peer, "10443"), api, &llmCert)
	llmCAFile := filepath.Join(e.dir, "llm-ca.pem")
	os.WriteFile(llmCAFile, llmCAPEM, 0o644)
	e.targetsYAML = fmt.Sprintf(`  - name: api
    match: {addresses: ["%[1]s"], ports: [443]}
    protocol: http
    upstream: {address: "%[1]s:9443", password_file: %[2]s, ca_file: %[3]s, server_name: api.internal.test}
  - name: api-open
    match: {addresses: ["%[1]s"], ports: [8443]}
    protocol: http
    upstream: {address: "%[1]s:9443", ca_file: %[3]s, tls: verify-full}
  - name: api-by-name
    match: {sni: ["%[4]s"], ports: [10443]}
    protocol: http
    upstream: {password_file: %[2]s, ca_file: %[5]s}
  - name: api-by-name-wrong-cert
    match: {sni: ["%[4]s"], ports: [9443]}
    protocol: http
    upstream: {password_file: %[2]s, ca_file: %[5]s}
`, peer, tokenFile, caFile, llmName, llmCAFile)
	e.tailYAML = httpRules
	e.setPolicy()
	loginAs(t, e, idp, "alice")

	curl := func(args ...string) (string, int) {
		return e.run(append([]string{"curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}"}, args...)...)
	}
	byName := []string{"--resolve", "api.internal.test:443:" + peer, "--resolve", "api.internal.test:8443:" + peer}

	// By address (no SNI: the certificate is for the address) and by name, with no CA option:
	// `enforcer run` set CURL_CA_BUNDLE. The JSON is masked; the API got the target's token.
	for _, url := range []string{"https://" + peer + "/v1/customers/1", "https://api.internal.test/v1/customers/1"} {
		out, code := curl(append(byName, url)...)
		if code != 0 || !strings.HasSuffix(out, "200") || !strings.Contains(out, `"plan": "gold"`) ||
			strings.Contains(out, "ada.lovelace@example.com") || strings.Contains(out, "4111 1111 1111 1111") {
			t.Fatalf("GET %s over HTTPS (exit %d): %q", url, code, out)
		}
	}
	// A rule still blocks before the API sees anything.
	writes := api.writes.Load()
	out, _ := curl(append(byName, "-X", "DELETE", "https://api.internal.test/v1/customers/1")...)
	if !strings.HasSuffix(out, "403") || !strings.Contains(out, "no-deletes") || api.writes.Load() != writes {
		t.Errorf("DELETE over HTTPS: %q", out)
	}
	// A client that trusts only other roots stops at the handshake (curl: exit 60).
	before := api.count()
	if out, code := curl("--cacert", caFile, "https://"+peer+"/v1/status"); code != 60 || api.count() != before {
		t.Errorf("a client that does not trust the agent CA: exit %d, %q; the API saw %d requests", code, out, api.count()-before)
	}
	// Without a credential the upstream is checked against the name the agent asked for: by name
	// the API answers (401: no token goes there), by address its certificate does not match.
	before = api.count()
	if out, _ := curl(append(byName, "https://api.internal.test:8443/v1/status")...); !strings.HasSuffix(out, "401") || api.count() != before+1 {
		t.Errorf("no credential, by name: %q", out)
	}
	if out, _ := curl("https://" + net.JoinHostPort(peer, "8443") + "/v1/status"); !strings.HasSuffix(out, "502") || api.count() != before+1 {
		t.Errorf("no credential, by address: %q", out)
	}

	// A target matched by name: the proxy reads the ClientHello, answers it for that name, and
	// forwards to the name's address (the policy's resolver) over TLS checked against it, the
	// credential with it as Host. The agent's own destination does not choose the host.
	other := addLabAddress(t, e)
	for _, dst := range []string{peer, other.String()} {
		before = api.count()
		out, _ := curl("--resolve", llmName+":10443:"+dst, "https://"+llmName+":10443/v1/customers/1")
		if !strings.HasSuffix(out, "200") || !strings.Contains(out, `"plan": "gold"`) || strings.Contains(out, "ada.lovelace@example.com") || api.count() != before+1 {
			t.Errorf("by name, the agent dialling %s: %q", dst, out)
		}
	}
	api.mu.Lock()
	last := api.headers[len(api.headers)-1]
	api.mu.Unlock()
	if last.Get("Authorization") != "Bearer "+api.token {
		t.Errorf("by name, the API got Authorization %q", last.Get("Authorization"))
	}
	// The name's server must hold a certificate for it: one for another name gets nothing,
	// the credential least of all.
	before = api.count()
	if out, _ := curl("--resolve", llmName+":9443:"+peer, "https://"+llmName+":9443/v1/status"); !strings.HasSuffix(out, "502") || api.count() != before {
		t.Errorf("by name, a server without the name's certificate: %q (the API saw %d requests)", out, api.count()-before)
	}

	// enforcer agent-ca prints the certificate the daemon publishes, and how to trust it.
	pemOut, err := exec.Command(enforcerBin, "agent-ca", "--socket", e.socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	file, err := exec.Command(enforcerBin, "agent-ca", "--file", "--socket", e.socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	published, err := os.ReadFile(strings.TrimSpace(string(file)))
	if err != nil || string(published) != string(pemOut) || !strings.HasPrefix(string(pemOut), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("agent-ca printed %q; %s holds %q (%v)", pemOut, file, published, err)
	}
	if fi, err := os.Stat(strings.TrimSpace(string(file))); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("published certificate: %v %v", fi.Mode(), err)
	}
	if st := e.status(); st.AgentCA != strings.TrimSpace(string(file)) {
		t.Errorf("status names the agent CA %q, agent-ca --file %q", st.AgentCA, file)
	}
	env, _ := exec.Command(enforcerBin, "agent-ca", "--env", "--socket", e.socket).Output()
	if !strings.Contains(string(env), "export NODE_EXTRA_CA_CERTS="+strings.TrimSpace(string(file))) || !strings.Contains(string(env), "export SSL_CERT_FILE=") {
		t.Errorf("agent-ca --env: %s", env)
	}

	// The record says the agent spoke TLS, and to which name.
	var all strings.Builder
	for _, s := range e.closedSessions("http", 8) {
		r, _ := e.cli("replay", s.ID, "--json")
		all.WriteString(r)
	}
	if !strings.Contains(all.String(), `"server_name": "api.internal.test"`) || !strings.Contains(all.String(), `"tls": "TLS 1.3"`) {
		t.Errorf("the record does not say the agent spoke TLS to api.internal.test:\n%s", all.String())
	}
	if strings.Contains(all.String(), api.token) {
		t.Error("the record holds the API token")
	}
	if out, err := e.cli("record", "verify"); err != nil {
		t.Fatalf("verify: %v %s", err, out)
	}

	// Refused before any request: the reason arrives over TLS, with the command to run. The
	// command started while alice was logged in; its connection comes after her logout.
	done := make(chan string, 1)
	go func() {
		o, _ := e.run(append([]string{"sh", "-c", `sleep 3; exec curl "$@"`, "curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"}, append(byName, "https://api.internal.test/v1/status")...)...)
		done <- o
	}()
	time.Sleep(time.Second)
	if out, err := exec.Command(enforcerBin, "logout", "--socket", e.socket).CombinedOutput(); err != nil {
		t.Fatalf("logout: %v %s", err, out)
	}
	if out := <-done; !strings.HasSuffix(out, "403") || !strings.Contains(out, "enforcer login") {
		t.Errorf("refused over HTTPS: %q", out)
	}
}
