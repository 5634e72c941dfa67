package approval

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type captured struct {
	payload Payload
	header  http.Header
	body    []byte
}

// hookServer is a real HTTP server on loopback that fails the first `fail` deliveries with status.
func hookServer(t *testing.T, fail int, status int) (*httptest.Server, chan captured, *atomic.Int32) {
	t.Helper()
	got := make(chan captured, 100)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if int(n) <= fail {
			w.WriteHeader(status)
			return
		}
		var p Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("payload: %v", err)
		}
		got <- captured{p, r.Header.Clone(), body}
	}))
	t.Cleanup(srv.Close)
	return srv, got, &calls
}

func newNotifier(t *testing.T, cfg NotifierConfig) *Notifier {
	t.Helper()
	if cfg.Backoff == 0 {
		cfg.Backoff = 10 * time.Millisecond
	}
	n, err := NewNotifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testEvent(typ EventType) Event {
	spec := updateSpec("1")
	r := &Request{ID: "apr_abcdefgh23", Identity: spec.Identity, Process: spec.Process, Target: spec.Target, Database: spec.Database,
		DBUser: spec.DBUser, SQL: spec.SQL, Params: spec.Display, Rule: spec.Rule, Approvers: spec.Approvers, Quorum: 1,
		Timeout: time.Minute, State: StatePending}
	return Event{Type: typ, Time: time.Now(), Request: r}
}

func TestWebhookRetriesThenDelivers(t *testing.T) {
	srv, got, calls := hookServer(t, 2, http.StatusServiceUnavailable)
	const secret = "s3cret"
	n := newNotifier(t, NotifierConfig{Webhooks: []Webhook{{Name: "slack", URL: srv.URL + "/hook", Secret: secret}}})
	n.Notify(testEvent(EventCreated))
	var c captured
	select {
	case c = <-got:
	case <-time.After(deadline):
		t.Fatal("no delivery")
	}
	if calls.Load() != 3 {
		t.Errorf("%d attempts, want 3", calls.Load())
	}
	if c.payload.Event != EventCreated || c.payload.Request.ID != "apr_abcdefgh23" {
		t.Errorf("payload %+v", c.payload)
	}
	for _, want := range []string{"apr_abcdefgh23", "alice@example.com", "UPDATE accounts", "claude", "dba or sre", "enforcer approve"} {
		if !strings.Contains(c.payload.Text, want) {
			t.Errorf("text %q lacks %q", c.payload.Text, want)
		}
	}
	ts := c.header.Get(TimestampHeader)
	if sig := c.header.Get(SignatureHeader); sig != Sign([]byte(secret), ts, c.body) || !strings.HasPrefix(sig, "v1=") {
		t.Errorf("signature %q does not verify", sig)
	}
	if Sign([]byte("other"), ts, c.body) == c.header.Get(SignatureHeader) {
		t.Error("signature does not depend on the secret")
	}
	waitFor(t, "stats", func() bool { return n.Stats().Delivered == 1 })
	if s := n.Stats(); s.Retries != 2 || s.Failed != 0 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	tests := []struct {
		name         string
		status       int
		wantAttempts int32
	}{
		{"server error retried up to MaxAttempts", http.StatusInternalServerError, 3},
		{"rate limited retried", http.StatusTooManyRequests, 3},
		{"client error not retried", http.StatusBadRequest, 1},
		{"gone not retried", http.StatusNotFound, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, calls := hookServer(t, 1000, tt.status)
			n := newNotifier(t, NotifierConfig{MaxAttempts: 3, Webhooks: []Webhook{{Name: "x", URL: srv.URL}}})
			n.Notify(testEvent(EventExpired))
			waitFor(t, "give up", func() bool { return n.Stats().Failed == 1 })
			if calls.Load() != tt.wantAttempts {
				t.Errorf("%d attempts, want %d", calls.Load(), tt.wantAttempts)
			}
		})
	}
}

// TestWebhookFullQueueDoesNotBlock stalls the endpoint so the queue fills: Notify must keep
// returning, dropping and counting.
func TestWebhookFullQueueDoesNotBlock(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(srv.Close)
	t.Cleanup(unblock) // runs before srv.Close
	n := newNotifier(t, NotifierConfig{QueueSize: 4, Webhooks: []Webhook{{Name: "stuck", URL: srv.URL}}})

	done := make(chan struct{})
	go func() {
		for range 1000 {
			n.Notify(testEvent(EventCreated))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatal("Notify blocked on a full queue")
	}
	// One delivery in flight, four queued, the rest dropped.
	if d := n.Stats().Dropped; d < 1000-5 {
		t.Errorf("dropped %d, want at least %d", d, 1000-5)
	}
	unblock()
	waitFor(t, "queued deliveries", func() bool { return n.Stats().Delivered >= 1 })
}

func TestWebhookFilters(t *testing.T) {
	srv, got, _ := hookServer(t, 0, 0)
	n := newNotifier(t, NotifierConfig{Webhooks: []Webhook{
		{Name: "all", URL: srv.URL + "/all"},
		{Name: "other-rule", URL: srv.URL + "/other", Rules: []string{"ddl-needs-review"}},
	}})
	n.Notify(testEvent(EventNoticeSent)) // not a notification event
	remote := testEvent(EventCreated)
	remote.Remote = true // the other daemon notifies
	n.Notify(remote)
	n.Notify(testEvent(EventDecided))
	select {
	case c := <-got:
		if c.payload.Event != EventDecided {
			t.Errorf("delivered %s", c.payload.Event)
		}
	case <-time.After(deadline):
		t.Fatal("no delivery")
	}
	waitFor(t, "stats", func() bool { return n.Stats().Delivered == 1 })
	time.Sleep(50 * time.Millisecond) // give a wrong delivery the chance to show up
	if s := n.Stats(); s.Delivered != 1 || len(got) != 0 {
		t.Errorf("stats %+v, %d extra deliveries", s, len(got))
	}
}

func TestWebhookBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x/y", "http://", "https://hooks.slack.com/services/T0/B0/SECRETTOKEN\x7f"} {
		_, err := NewNotifier(NotifierConfig{Webhooks: []Webhook{{Name: "bad", URL: u}}})
		if err == nil {
			t.Errorf("URL %q accepted", u)
		} else if strings.Contains(err.Error(), "SECRETTOKEN") {
			t.Errorf("error leaks the URL: %v", err)
		}
	}
}

// TestBrokerNotifies runs a request through a Broker wired to a Notifier.
func TestBrokerNotifies(t *testing.T) {
	srv, got, _ := hookServer(t, 0, 0)
	n := newNotifier(t, NotifierConfig{Webhooks: []Webhook{{Name: "all", URL: srv.URL}}})
	b := NewBroker(NewMemoryStore(), Config{Notifier: n})
	ctx := context.Background()
	h := hold(t, ctx, b, updateSpec("1"))
	if _, err := b.Approve(ctx, h.id, bob, "ship it"); err != nil {
		t.Fatal(err)
	}
	h.wait(t)
	var texts []string
	for range 2 {
		select {
		case c := <-got:
			texts = append(texts, string(c.payload.Event)+": "+c.payload.Text)
		case <-time.After(deadline):
			t.Fatalf("deliveries so far: %v", texts)
		}
	}
	if !strings.HasPrefix(texts[0], "created") || !strings.HasPrefix(texts[1], "decided") || !strings.Contains(texts[1], "ship it") {
		t.Errorf("deliveries %q", texts)
	}
}
