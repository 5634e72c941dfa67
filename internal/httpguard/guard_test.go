package httpguard

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/record"
)

const testPolicy = `version: 1
targets:
  - name: api
    match: {addresses: [198.18.0.2], ports: [8080]}
    protocol: http
grants:
  - {groups: [eng], targets: [api]}
rules:
  - {name: no-deletes, when: 'http.method == "DELETE"', action: block, message: use the console}
  - {name: allow-search, when: 'http.method == "POST" && http.path == "/v1/search"', action: allow}
  - {name: refunds, when: 'http.method == "POST" && http.path == "/v1/refunds"', action: approve, approvers: [ops]}
  - {name: no-drop, when: 'sql.kind == "DROP"', action: block}
`

func parsePolicy(t *testing.T, text string) *policy.Policy {
	t.Helper()
	pol, err := policy.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// loggedGuard returns alice's guard on the policy's first target, recording into a new log, and
// the log's directory.
func loggedGuard(t *testing.T, pol *policy.Policy, broker *approval.Broker) (*Guard, *record.Recorder, string) {
	t.Helper()
	dir := t.TempDir()
	rec, err := record.Open(record.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close() })
	sh := &Shared{Policy: func() *policy.Policy { return pol }, Approvals: broker, Recorder: rec,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	// The Host the daemon sends for this target (its upstream's own name with a credential).
	sent := pol.Targets[0].Upstream.HTTPHost("198.18.0.2:8080")
	g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}, Host: sent,
		Argv: []string{"curl", "-H", "Authorization: Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc"},
		// The agent chose the name its ClientHello asked for.
		ClientParams: map[string]string{"tls": "TLS 1.3", "server_name": "4111111111111111.api.internal"}})
	return g, rec, dir
}

func request(method, target, body string, hdr ...string) *httpproto.Request {
	path, query, _ := strings.Cut(target, "?")
	r := &httpproto.Request{Method: method, Path: path, RawQuery: query, Host: "api.internal", Header: http.Header{}, Body: []byte(body), Started: time.Now()}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

// exchange runs one request through the guard as the proxy does: judged, then reported.
func exchange(g *Guard, r *httpproto.Request, status int, body string) httpproto.Verdict {
	v := g.Request(context.Background(), r)
	e := &httpproto.Exchange{Request: r, Judged: true, Verdict: v, Status: status, ContentType: "application/json", Body: []byte(body), BodyBytes: int64(len(body)), Duration: time.Millisecond}
	if !v.Allow {
		e.Status, e.Body, e.BodyBytes = v.Status, nil, 0
	}
	g.Exchanged(e)
	return v
}

func sessionRecords(t *testing.T, rec *record.Recorder, dir, id string) []record.Event {
	t.Helper()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := record.LoadSession(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	var evs []record.Event
	for _, r := range recs {
		ev, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// TestVerdicts: each request gets the verdict its rules give, refusals say which rule and why.
func TestVerdicts(t *testing.T) {
	g, _, _ := loggedGuard(t, parsePolicy(t, testPolicy), nil)
	cases := []struct {
		name   string
		req    *httpproto.Request
		allow  bool
		status int
		msg    string
	}{
		{"read", request("GET", "/v1/customers/1", ""), true, 0, ""},
		{"head", request("HEAD", "/v1/customers/1", ""), true, 0, ""},
		{"rule blocks", request("DELETE", "/v1/customers/1", ""), false, 403, "no-deletes: use the console"},
		{"rule allows a write", request("POST", "/v1/search", `{"q": "x"}`), true, 0, ""},
		{"default blocks other writes", request("PUT", "/v1/customers/1", "{}"), false, 403, "GET"},
		{"approval without a broker", request("POST", "/v1/refunds", "{}"), false, 403, "no approval service"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := exchange(g, c.req, 200, "{}")
			if v.Allow != c.allow || (!c.allow && (v.Status != c.status || !strings.Contains(v.Message, c.msg))) {
				t.Errorf("verdict %+v, want allow %v status %d message with %q", v, c.allow, c.status, c.msg)
			}
		})
	}
}

// TestRecorded: reads are recorded with what the agent received; a write is durable before
// Request returns (it is forwarded only then) and its response follows apart; a blocked request
// is recorded with its rule; a request the proxy refused before judging it is recorded too.
// Secrets in the query, the body and the process's arguments are masked.
func TestRecorded(t *testing.T) {
	g, rec, dir := loggedGuard(t, parsePolicy(t, testPolicy), nil)
	exchange(g, request("GET", "/v1/customers?card=4111111111111111", ""), 200, `{"email": "[REDACTED:email]"}`)

	w := request("POST", "/v1/search", `{"email": "ada.lovelace@example.com"}`, "Content-Type", "application/json", "Cookie", "session=abc123secret")
	if v := g.Request(context.Background(), w); !v.Allow {
		t.Fatalf("write refused: %+v", v)
	}
	// Before the proxy forwards the write, its record is on disk.
	recs, err := record.LoadSession(dir, g.SessionID())
	if err != nil {
		t.Fatal(err)
	}
	var ahead bool
	for _, r := range recs {
		if ev, _ := r.Event(); ev.Statement != nil && strings.HasPrefix(ev.Statement.Text, "POST /v1/search") {
			ahead = ev.Statement.ID != 0 && ev.Statement.Result == nil
		}
	}
	if !ahead {
		t.Fatal("the write was not recorded ahead of its forwarding")
	}
	g.Exchanged(&httpproto.Exchange{Request: w, Judged: true, Verdict: httpproto.Verdict{Allow: true}, Status: 200, ContentType: "application/json", Body: []byte(`{"hits": 0}`), BodyBytes: 11})

	exchange(g, request("DELETE", "/v1/customers/1", ""), 0, "")
	bad := request("GET", "/v1/../admin", "")
	g.Exchanged(&httpproto.Exchange{Request: bad, Status: 400, Err: errBadTarget})
	g.End("client closed", 100, 200)

	evs := sessionRecords(t, rec, dir, g.SessionID())
	var text strings.Builder
	for _, ev := range evs {
		out, _ := json.Marshal(ev)
		text.Write(out)
	}
	all := text.String()
	for _, leak := range []string{"4111111111111111", "ada.lovelace@example.com", "abc123secret", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"} {
		if strings.Contains(all, leak) {
			t.Errorf("the log holds %q:\n%s", leak, all)
		}
	}
	types := []record.Type{}
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	want := []record.Type{record.TypeSessionStart, record.TypeStatement, record.TypeStatement, record.TypeResult, record.TypeStatement, record.TypeStatement, record.TypeSessionEnd}
	if strings.Join(typeNames(types), " ") != strings.Join(typeNames(want), " ") {
		t.Fatalf("records %v, want %v", types, want)
	}
	read, write, result, blocked, refused := evs[1].Statement, evs[2].Statement, evs[3].Result, evs[4].Statement, evs[5].Statement
	if read.Verdict != record.VerdictAllow || read.Result == nil || read.Result.CommandTag != "200 OK" || read.Result.ContentType != "application/json" || read.Class != "read" {
		t.Errorf("read: %+v %+v", read, read.Result)
	}
	if write.Class != "write" || len(write.Params) != 1 || !strings.Contains(*write.Params[0], "[REDACTED:email]") || !strings.Contains(write.Text, "Cookie: [REDACTED]") {
		t.Errorf("write: %+v", write)
	}
	if result.StatementID != write.ID || result.Bytes != 11 {
		t.Errorf("write's result: %+v", result)
	}
	if blocked.Verdict != record.VerdictBlock || blocked.Rule != "no-deletes" || blocked.Result == nil || !strings.Contains(blocked.Result.Error, "use the console") {
		t.Errorf("blocked: %+v %+v", blocked, blocked.Result)
	}
	if refused.Verdict != record.VerdictBlock || !strings.HasPrefix(refused.Text, "GET /v1/../admin") || refused.Result == nil || refused.Result.CommandTag != "400 Bad Request" {
		t.Errorf("refused by the proxy: %+v %+v", refused, refused.Result)
	}
}

func typeNames(ts []record.Type) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}

var errBadTarget = &targetError{}

type targetError struct{}

func (*targetError) Error() string { return "request target with dot segments" }

// TestLogUnavailableRefuses: when the log cannot be written, nothing is forwarded.
func TestLogUnavailableRefuses(t *testing.T) {
	g, rec, _ := loggedGuard(t, parsePolicy(t, testPolicy), nil)
	rec.Close()
	for _, r := range []*httpproto.Request{request("POST", "/v1/search", "{}"), request("GET", "/", "")} {
		v := g.Request(context.Background(), r)
		if r.Method == "POST" && (v.Allow || v.Status != http.StatusServiceUnavailable) {
			t.Errorf("%s with the log closed: %+v", r.Method, v)
		}
		g.Exchanged(&httpproto.Exchange{Request: r, Judged: true, Verdict: v, Status: v.Status})
	}
	// A guard whose session start could not be written refuses everything.
	sh := &Shared{Policy: g.sh.Policy, Recorder: rec, Log: g.sh.Log}
	g2 := sh.NewGuard(g.info)
	if v := g2.Request(context.Background(), request("GET", "/", "")); v.Allow || v.Status != http.StatusServiceUnavailable {
		t.Errorf("GET on a session whose start was not recorded: %+v", v)
	}
}

// TestApproval: a held request passes once a reviewer approves exactly it; a denial reaches the
// client with the reviewer's reason and the request id; reviewers see the body masked.
func TestApproval(t *testing.T) {
	pol := parsePolicy(t, testPolicy)
	var broker *approval.Broker
	decide := make(chan bool, 2)
	shown := make(chan *approval.Request, 2)
	broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: 5 * time.Second, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type != approval.EventCreated || e.Request == nil {
				return
			}
			shown <- e.Request
			approve := <-decide
			rv := approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}
			if approve {
				go broker.Approve(context.Background(), e.Request.ID, rv, "ok")
			} else {
				go broker.Deny(context.Background(), e.Request.ID, rv, "not today")
			}
		}})
	g, rec, dir := loggedGuard(t, pol, broker)
	body := `{"order": 7, "card": "4111 1111 1111 1111"}`
	decide <- true
	v := exchange(g, request("POST", "/v1/refunds", body, "Content-Type", "application/json"), 201, `{"ok": true}`)
	if !v.Allow {
		t.Fatalf("approved request refused: %+v", v)
	}
	r := <-shown
	if !strings.HasPrefix(r.SQL, "HTTP POST /v1/refunds") || len(r.Params) != 1 || strings.Contains(r.Params[0].Value, "4111 1111 1111 1111") {
		t.Errorf("reviewers saw %q %+v", r.SQL, r.Params)
	}
	decide <- false
	v = exchange(g, request("POST", "/v1/refunds", body, "Content-Type", "application/json"), 201, "")
	r = <-shown
	if v.Allow || v.Status != http.StatusForbidden || !strings.Contains(v.Message, "not today") || v.Header.Get("X-Enforcer-Approval") != r.ID {
		t.Errorf("denied request: %+v", v)
	}
	evs := sessionRecords(t, rec, dir, g.SessionID())
	var states []string
	for _, ev := range evs {
		if ev.Approval != nil {
			states = append(states, ev.Approval.State)
		}
	}
	if strings.Join(states, " ") != "requested approved requested denied" {
		t.Errorf("approval records %v", states)
	}
}

// TestRulesSeeTheDecodedPath: what the proxy lets through percent-encoded decodes to what the
// server routes by, and rules see it decoded: a block rule on "/users/a@b" holds for
// "/users/a%40b"; the Host rules see is the one sent upstream.
func TestRulesSeeTheDecodedPath(t *testing.T) {
	r := request("GET", "/users/a%40b/caf%C3%A9", "")
	r.Host = "agent-picked.internal"
	got := RuleRequest(r, "api.internal")
	if got.Path != "/users/a@b/café" || got.Host != "api.internal" {
		t.Errorf("rules see path %q host %q", got.Path, got.Host)
	}
	if got := RuleRequest(r, ""); got.Host != "agent-picked.internal" {
		t.Errorf("with the agent's Host forwarded, rules see %q", got.Host)
	}
}
