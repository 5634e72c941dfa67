package httpguard

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
)

// TestReviewerSeesPartsBetweenSecrets: a private key's BEGIN line in one part of a held request
// and its END line in a later part hide nothing between them from the reviewer or the record: a
// JSON body (whatever its Content-Type) is masked value by value, a form pair by pair, header
// fields one by one. A text body in which such a finding runs across lines is refused, not shown.
func TestReviewerSeesPartsBetweenSecrets(t *testing.T) {
	const begin, end = "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"
	jsonBody := `{"note": "` + begin + `", "amount": 1000000, "memo": "` + end + `"}`
	shown := make(chan *approval.Request, 1)
	var broker *approval.Broker
	broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: 5 * time.Second, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type != approval.EventCreated || e.Request == nil {
				return
			}
			shown <- e.Request
			go broker.Approve(context.Background(), e.Request.ID, approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}, "ok")
		}})
	g, rec, dir := loggedGuard(t, parsePolicy(t, testPolicy), broker)
	var visible []string
	for _, c := range []struct {
		name    string
		body    string
		hdr     []string
		visible string // what the reviewer must see; "" for a request refused before review
	}{
		{"JSON", jsonBody, []string{"Content-Type", "application/json"}, `"amount": 1000000`},
		{"JSON as text", jsonBody, []string{"Content-Type", "text/plain"}, `"amount": 1000000`},
		{"JSON without a type", jsonBody, nil, `"amount": 1000000`},
		{"form", "note=" + begin + "&amount=1000000&memo=" + end, []string{"Content-Type", "application/x-www-form-urlencoded"}, "&amount=1000000&"},
		{"header fields", "{}", []string{"A-Note", begin, "X-Tenant", "acme-prod", "Z-Note", end}, "X-Tenant: acme-prod"},
		{"text across lines", "note: " + begin + "\namount: 1000000\nmemo: " + end + "\n", []string{"Content-Type", "text/plain"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := request("POST", "/v1/refunds", c.body, c.hdr...)
			v := exchange(g, req, 201, `{"ok": true}`)
			if c.visible == "" {
				if v.Allow || v.Status != http.StatusForbidden || !strings.Contains(v.Message, "cannot be shown safely to a reviewer") {
					t.Errorf("verdict %+v, want 403: cannot be shown safely", v)
				}
				return
			}
			if !v.Allow {
				t.Fatalf("refused: %+v", v)
			}
			visible = append(visible, c.visible)
			r := <-shown
			seen := r.SQL
			for _, p := range r.Params {
				seen += "\n" + p.Value
			}
			if !strings.Contains(seen, c.visible) || strings.Contains(seen, begin) {
				t.Errorf("the reviewer saw %q: want %q in it and the BEGIN line masked", seen, c.visible)
			}
		})
	}
	var recorded []string
	for _, ev := range sessionRecords(t, rec, dir, g.SessionID()) {
		if st := ev.Statement; st != nil {
			recorded = append(recorded, st.Text)
			for _, p := range st.Params {
				recorded = append(recorded, *p)
			}
		}
	}
	all := strings.Join(recorded, "\n")
	for _, v := range visible {
		if !strings.Contains(all, v) {
			t.Errorf("the record does not keep %q: %q", v, recorded)
		}
	}
	if strings.Contains(all, begin) {
		t.Errorf("the record keeps a BEGIN line: %q", recorded)
	}
}
