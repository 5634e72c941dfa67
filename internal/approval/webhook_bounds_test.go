package approval

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A webhook delivery goes only to the URL the operator configured: a redirect from that endpoint
// (or from whoever answers for it) is not followed, so held statements and identities are never
// posted to a host, or over a scheme, the operator did not choose.
func TestWebhookDoesNotFollowRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	t.Cleanup(other.Close)
	var calls atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Redirect(w, r, other.URL+"/collect", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(hook.Close)

	n := newNotifier(t, NotifierConfig{MaxAttempts: 2, Webhooks: []Webhook{{Name: "slack", URL: hook.URL + "/hook", Secret: "s3cret"}}})
	n.Notify(testEvent(EventCreated))
	waitFor(t, "the delivery to end", func() bool { s := n.Stats(); return s.Failed+s.Delivered == 1 })
	if got := elsewhere.Load(); got != 0 {
		t.Errorf("the redirect target got %d deliveries; want none", got)
	}
	if s := n.Stats(); s.Delivered != 0 || s.Failed != 1 {
		t.Errorf("stats %+v: a redirect is not a delivery", s)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d attempts; a redirect is permanent, want 1", got)
	}
}

// The statement in the Slack text stays inside its code block whatever backticks the agent puts in
// it (a comment or a string literal can hold any), and agent-controlled fields cannot add Slack
// markup (mentions, links) to what reviewers read.
func TestSummaryAgentTextCannotLeaveCodeBlock(t *testing.T) {
	for _, sql := range []string{
		"UPDATE t SET a = 1 WHERE id = 1 /* ````` */",
		"UPDATE t SET a = 1 WHERE id = 1 /* ``` */",
		"UPDATE t SET a = 1 WHERE id = 1 /* ```````` x ``` */",
		"``UPDATE t SET a = 1 WHERE id = 1 /* <!channel> */",
		"UPDATE t SET a = 1 WHERE id = 1 /*`",
	} {
		ev := testEvent(EventCreated)
		ev.Request.SQL = sql
		s := Summary(ev)
		open := strings.Index(s, "```")
		end := strings.LastIndex(s, "```")
		if open < 0 || end <= open {
			t.Fatalf("%q: no code block in %q", sql, s)
		}
		inner := s[open+3 : end]
		if strings.Contains(inner, "```") {
			t.Errorf("%q: the code block closes early: %q", sql, s)
		}
		if strings.HasPrefix(inner, "`") || strings.HasSuffix(inner, "`") {
			t.Errorf("%q: a backtick touches the fence: %q", sql, s)
		}
		if strings.Contains(inner, "<!") {
			t.Errorf("%q: Slack markup reaches the message: %q", sql, s)
		}
	}
	ev := testEvent(EventCreated)
	ev.Request.Process.Comm = "<!channel>"
	ev.Request.Identity.Email = "<https://evil.example|ok>"
	if s := Summary(ev); strings.Contains(s, "<!channel>") || strings.Contains(s, "<https://") {
		t.Errorf("Slack markup from the agent or the identity provider reaches the message: %q", s)
	}
}

// A slow webhook endpoint holds only its own worker, for at most the attempt timeout; Notify and
// other endpoints are not delayed by it.
func TestWebhookSlowEndpointIsBounded(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select { // a body that never ends
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); slow.Close() })
	fast, got, _ := hookServer(t, 0, 0)
	n := newNotifier(t, NotifierConfig{Timeout: 200 * time.Millisecond, MaxAttempts: 1, Webhooks: []Webhook{
		{Name: "slow", URL: slow.URL}, {Name: "fast", URL: fast.URL},
	}})
	start := time.Now()
	for range 3 {
		n.Notify(testEvent(EventCreated))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Notify blocked for %s", d)
	}
	for range 3 {
		select {
		case <-got:
		case <-time.After(deadline):
			t.Fatal("the fast endpoint waited for the slow one")
		}
	}
	waitFor(t, "the slow endpoint's deliveries to end", func() bool { return n.Stats().Failed+n.Stats().Delivered >= 6 })
}
