package httpguard

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/enforcer-dev/enforcer/internal/approval"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
)

const (
	reviewEmail = "ada.lovelace@example.com"
	reviewKey   = "0123456789abcdef0123456789abcdef" // a secret only its field's name gives away
)

func utf16LE(s string) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return string(b)
}

func gzipString(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// heldRequests is a broker whose requests reviewers see on created; decide says what bob does
// with each (nil: nothing, it times out).
func heldRequests(t *testing.T, timeout time.Duration, decide func(*approval.Request) *bool) (*approval.Broker, chan *approval.Request) {
	t.Helper()
	created := make(chan *approval.Request, 10)
	var broker *approval.Broker
	broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: timeout, LateWindow: time.Minute,
		OnEvent: func(e approval.Event) {
			if e.Type != approval.EventCreated || e.Request == nil {
				return
			}
			created <- e.Request
			if d := decide(e.Request); d != nil {
				rv := approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}
				if *d {
					go broker.Approve(context.Background(), e.Request.ID, rv, "ok")
				} else {
					go broker.Deny(context.Background(), e.Request.ID, rv, "no")
				}
			}
		}})
	return broker, created
}

// TestReviewApprovalBindsWhatIsForwarded: an approval (and a late approval's one-time grant) is
// for the request as the service will read it, every forwarded field included: the same line and
// body with a second Content-Type, another account's header or Content-Encoding: gzip is another
// request, and reviewers see those fields (masked) before they decide.
func TestReviewApprovalBindsWhatIsForwarded(t *testing.T) {
	body := `{"order": 7}`
	base := func(extra ...string) *httpproto.Request {
		return request("POST", "/v1/refunds", body, append([]string{"Content-Type", "application/json"}, extra...)...)
	}
	variants := []struct {
		name string
		req  *httpproto.Request
		show string // what the reviewer must see of it
	}{
		{"second content type", base("Content-Type", "application/x-www-form-urlencoded"), "application/x-www-form-urlencoded"},
		{"another account", base("X-Account-Id", "43"), "X-Account-Id: 43"},
		{"compressed body", base("Content-Encoding", "gzip"), "Content-Encoding: gzip"},
		{"header carrying an address", base("X-On-Behalf-Of", reviewEmail), "X-On-Behalf-Of: [REDACTED:email]"},
	}
	pol := parsePolicy(t, testPolicy)
	approve := true
	broker, created := heldRequests(t, 5*time.Second, func(*approval.Request) *bool { return &approve })
	g, _, _ := loggedGuard(t, pol, broker)
	if v := exchange(g, base(), 201, "{}"); !v.Allow {
		t.Fatalf("plain request refused: %+v", v)
	}
	plain := <-created
	for _, c := range variants {
		t.Run(c.name, func(t *testing.T) {
			if v := exchange(g, c.req, 201, "{}"); !v.Allow {
				t.Fatalf("refused: %+v", v)
			}
			r := <-created
			if r.Hash == plain.Hash {
				t.Errorf("bound like the plain request: an approval of one lets the other through")
			}
			if !strings.Contains(r.SQL, c.show) {
				t.Errorf("the reviewer saw %q, without %q", r.SQL, c.show)
			}
			if strings.Contains(r.SQL, reviewEmail) {
				t.Errorf("the reviewer saw the address unmasked: %q", r.SQL)
			}
		})
	}

	// A late approval's grant lets the identical request through once, not a variant of it.
	broker, created = heldRequests(t, 300*time.Millisecond, func(*approval.Request) *bool { return nil })
	g, _, _ = loggedGuard(t, pol, broker)
	if v := exchange(g, base(), 201, "{}"); v.Allow {
		t.Fatalf("nobody approved, yet it passed: %+v", v)
	}
	expired := <-created
	if _, err := broker.Approve(context.Background(), expired.ID, approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}, "late but fine"); err != nil {
		t.Fatalf("late approval: %v", err)
	}
	if v := exchange(g, base("X-Account-Id", "43"), 201, "{}"); v.Allow {
		t.Errorf("the grant for POST /v1/refunds let the same refund on another account through: %+v", v)
	} else if v.Header.Get("X-Enforcer-Approval") == expired.ID {
		t.Errorf("the variant was answered as the expired request: %+v", v)
	}
	if v := exchange(g, base(), 201, "{}"); !v.Allow {
		t.Errorf("the identical request did not use its grant: %+v", v)
	}
}

// TestReviewRecordsHoldNoSecret: what the log keeps of a request is masked whatever form the
// agent gives it: a secret whose field name says what it is, a value the proxy quoted in its own
// refusal, a body in UTF-16 or gzip.
func TestReviewRecordsHoldNoSecret(t *testing.T) {
	refusal := `invalid Host header "` + reviewEmail + `"`
	cases := []struct {
		name string
		run  func(g *Guard)
	}{
		{"secret in a field named for it", func(g *Guard) {
			exchange(g, request("GET", "/v1/customers", "", "X-Api-Key", reviewKey), 200, "{}")
		}},
		{"value quoted in the proxy's refusal", func(g *Guard) {
			r := request("GET", "/v1/customers", "")
			body, _ := json.Marshal(map[string]string{"error": refusal})
			g.Exchanged(&httpproto.Exchange{Request: r, Verdict: httpproto.Verdict{Status: 400, Message: refusal},
				Status: 400, ContentType: "application/json", Body: body, BodyBytes: int64(len(body)),
				Err: errors.New("request refused: 400 " + refusal)})
		}},
		{"UTF-16 body", func(g *Guard) {
			exchange(g, request("POST", "/v1/search", utf16LE(`{"email":"`+reviewEmail+`"}`), "Content-Type", "application/json; charset=utf-16le"), 200, "{}")
		}},
		{"gzip body", func(g *Guard) {
			exchange(g, request("POST", "/v1/search", gzipString(t, `{"email":"`+reviewEmail+`"}`), "Content-Type", "application/json", "Content-Encoding", "gzip"), 200, "{}")
		}},
		{"object keyed by an address", func(g *Guard) {
			exchange(g, request("POST", "/v1/search", `{"`+reviewEmail+`":{"plan":"gold"}}`, "Content-Type", "application/json"), 200, "{}")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, rec, dir := loggedGuard(t, parsePolicy(t, testPolicy), nil)
			c.run(g)
			g.End("client closed", 0, 0)
			var all strings.Builder
			for _, ev := range sessionRecords(t, rec, dir, g.SessionID()) {
				out, _ := json.Marshal(ev)
				all.Write(out)
			}
			text := all.String()
			// As an auditor reading the log would: JSON escapes decoded, NULs of UTF-16 dropped.
			var decoded strings.Builder
			for line := range strings.SplitSeq(text, "}{") {
				decoded.WriteString(strings.ReplaceAll(line, `\u0000`, ""))
			}
			for _, leak := range []string{reviewEmail, reviewKey} {
				if strings.Contains(decoded.String(), leak) {
					t.Errorf("the log holds %q:\n%s", leak, text)
				}
			}
		})
	}
}

// TestReviewReviewerSeesGzipBody: a compressed body is shown to reviewers decoded and masked,
// not as compressed bytes they cannot read (and would approve blind).
func TestReviewReviewerSeesGzipBody(t *testing.T) {
	approve := false
	broker, created := heldRequests(t, 5*time.Second, func(*approval.Request) *bool { return &approve })
	g, _, _ := loggedGuard(t, parsePolicy(t, testPolicy), broker)
	doc := `{"order": 7, "email": "` + reviewEmail + `"}`
	exchange(g, request("POST", "/v1/refunds", gzipString(t, doc), "Content-Type", "application/json", "Content-Encoding", "gzip"), 201, "")
	r := <-created
	if len(r.Params) != 1 || !strings.Contains(r.Params[0].Value, `"order": 7`) || strings.Contains(r.Params[0].Value, reviewEmail) {
		t.Errorf("the reviewer saw the body as %+v", r.Params)
	}
	if !strings.Contains(r.SQL, "Content-Encoding: gzip") {
		t.Errorf("the reviewer was not told the body is compressed: %q", r.SQL)
	}
}

// TestReviewApprovalHostAsSent: the agent's Host is part of what is approved (and shown) only when
// it is the Host the service gets: with a credential the daemon sends the upstream's own name, so
// a Host the agent picks changes nothing and is neither bound nor shown as if it mattered.
func TestReviewApprovalHostAsSent(t *testing.T) {
	credentialed := strings.Replace(testPolicy, "    protocol: http\n",
		"    protocol: http\n    upstream: {password_file: /etc/enforcer/secrets/api, tls: disable}\n", 1)
	for _, c := range []struct {
		name      string
		policy    string
		hostBound bool
	}{
		{"no credential: the agent's Host is sent", testPolicy, true},
		{"credential: the upstream's name is sent", credentialed, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			approve := true
			broker, created := heldRequests(t, 5*time.Second, func(*approval.Request) *bool { return &approve })
			g, _, _ := loggedGuard(t, parsePolicy(t, c.policy), broker)
			var held []*approval.Request
			for _, host := range []string{"api.internal", "billing.internal"} {
				r := request("POST", "/v1/refunds", "{}", "Content-Type", "application/json")
				r.Host = host
				if v := exchange(g, r, 201, "{}"); !v.Allow {
					t.Fatalf("refused: %+v", v)
				}
				held = append(held, <-created)
			}
			if bound := held[0].Hash != held[1].Hash; bound != c.hostBound {
				t.Errorf("Host bound: %v, want %v", bound, c.hostBound)
			}
			if shown := strings.Contains(held[1].SQL, "Host: billing.internal"); shown != c.hostBound {
				t.Errorf("the reviewer saw %q", held[1].SQL)
			}
		})
	}
}
