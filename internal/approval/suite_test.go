package approval

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// The suite below runs against every Store (memory, file, PostgreSQL): the stores must behave alike.

// deadline bounds every wait in these tests; it is never an assertion about speed.
const deadline = 20 * time.Second

type result struct {
	out Outcome
	err error
}

type held struct {
	id   string
	req  *Request
	done chan result
}

func (h held) wait(t *testing.T) Outcome {
	t.Helper()
	select {
	case r := <-h.done:
		if r.err != nil {
			t.Fatalf("Request %s: %v", h.id, r.err)
		}
		return r.out
	case <-time.After(deadline):
		t.Fatalf("request %s still blocked after %s", h.id, deadline)
	}
	return Outcome{}
}

// expiresSoon is the timeout of requests that are meant to expire: short enough to wait for,
// long enough for any store's Create (the PostgreSQL store's insert shares it) on a loaded
// machine.
const expiresSoon = time.Second

// hold starts Request in the background and returns once the notice names the request id.
func hold(t *testing.T, ctx context.Context, b *Broker, spec Spec) held {
	t.Helper()
	h := held{done: make(chan result, 1)}
	notice := make(chan *Request, 1)
	go func() {
		out, err := b.Request(ctx, spec, func(r *Request) error { notice <- r; return nil })
		h.done <- result{out, err}
	}()
	select {
	case r := <-notice:
		h.id, h.req = r.ID, r
	case r := <-h.done:
		t.Fatalf("Request returned before its notice: %+v, %v", r.out, r.err)
	case <-time.After(deadline):
		t.Fatal("no notice")
	}
	return h
}

var (
	alice = Identity{Subject: "alice", Email: "alice@example.com", Groups: []string{"engineering"}, SessionID: "s1", UID: 1000}
	bob   = Reviewer{Subject: "bob", Email: "bob@example.com", Groups: []string{"dba"}}
	carol = Reviewer{Subject: "carol", Groups: []string{"engineering", "sre"}}
	dave  = Reviewer{Subject: "dave", Groups: []string{"sre"}}
)

func updateSpec(id string) Spec {
	return Spec{
		Identity: alice,
		Process:  Process{Comm: "claude", PID: 4242, Cmdline: "claude --dangerously"},
		Target:   "prod-db", Database: "app", DBUser: "agent_rw",
		SQL:        "UPDATE accounts SET plan = $1 WHERE id = " + id,
		Params:     []Param{{Value: []byte("pro"), TypeOID: 25}},
		Display:    []DisplayParam{{TypeOID: 25, Value: "p**"}},
		Rule:       "writes-need-review",
		RuleDigest: reviewDigest,
		Approvers:  []string{"dba", "sre"},
		Timeout:    30 * time.Second,
	}
}

// reviewDigest stands for the digest of writes-need-review's definition in updateSpec.
const reviewDigest = "digest-of-writes-need-review-v1"

type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

func (l *eventLog) types(id string) []EventType {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []EventType
	for _, ev := range l.events {
		if (ev.Request != nil && ev.Request.ID == id) || (ev.Grant != nil && ev.Grant.RequestID == id) {
			out = append(out, ev.Type)
		}
	}
	return out
}

// checkEvents compares event sequences. notice_sent is emitted after the caller's notice function
// returns, so a decision may be recorded before it; it is compared apart from the rest.
func checkEvents(t *testing.T, got []EventType, want ...EventType) {
	t.Helper()
	strip := func(in []EventType) ([]EventType, int) {
		var out []EventType
		n := 0
		for _, e := range in {
			if e == EventNoticeSent {
				n++
				continue
			}
			out = append(out, e)
		}
		return out, n
	}
	g, gn := strip(got)
	w, wn := strip(want)
	if fmt.Sprint(g) != fmt.Sprint(w) || gn != wn || (len(got) > 0 && got[0] != EventCreated) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func storeSuite(t *testing.T, open func(t *testing.T) Store) {
	newBroker := func(t *testing.T, cfg Config) (*Broker, *eventLog) {
		log := &eventLog{}
		cfg.OnEvent = log.add
		if cfg.PollInterval == 0 {
			cfg.PollInterval = time.Hour // prove that change notifications wake waiters
		}
		return NewBroker(open(t), cfg), log
	}
	ctx := context.Background()

	t.Run("approve", func(t *testing.T) {
		b, log := newBroker(t, Config{})
		h := hold(t, ctx, b, updateSpec("1"))
		if h.req.State != StatePending || h.req.Params[0].Value != "p**" || h.req.Hash != updateSpec("1").Binding().Hash() {
			t.Fatalf("notice got %+v", h.req)
		}
		if !strings.Contains(NoticeText(h.req), h.id) || !strings.Contains(NoticeText(h.req), "dba or sre") {
			t.Errorf("notice text %q lacks id or approvers", NoticeText(h.req))
		}
		r, err := b.Approve(ctx, strings.ToUpper(h.id), bob, "looks fine")
		if err != nil {
			t.Fatal(err)
		}
		if r.State != StateApproved {
			t.Fatalf("after approval state = %s", r.State)
		}
		out := h.wait(t)
		if !out.Approved() || out.Request.Decisions[0].Reviewer.Subject != "bob" || out.Request.Decisions[0].Reason != "looks fine" {
			t.Fatalf("outcome %+v", out)
		}
		checkEvents(t, log.types(h.id), EventCreated, EventNoticeSent, EventDecided)
		if _, err := b.Approve(ctx, h.id, dave, ""); !errors.Is(err, ErrNotPending) {
			t.Errorf("vote on approved request: %v, want ErrNotPending", err)
		}
		if s := b.Stats(); s.Created != 1 || s.Approved != 1 || s.Votes != 1 || s.NoticesSent != 1 || s.Refused != 1 {
			t.Errorf("stats %+v", s)
		}
	})

	t.Run("deny", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		h := hold(t, ctx, b, updateSpec("1"))
		if _, err := b.Deny(ctx, h.id, bob, "  "); !errors.Is(err, ErrReasonRequired) {
			t.Fatalf("deny without reason: %v", err)
		}
		if _, err := b.Deny(ctx, h.id, bob, "not during the freeze"); err != nil {
			t.Fatal(err)
		}
		out := h.wait(t)
		if out.State != StateDenied || !strings.Contains(out.Message(), "not during the freeze") || !strings.Contains(out.Message(), "bob") {
			t.Fatalf("outcome %s: %q", out.State, out.Message())
		}
		if _, err := b.Approve(ctx, h.id, dave, ""); !errors.Is(err, ErrNotPending) {
			t.Errorf("approve after deny: %v", err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		b, log := newBroker(t, Config{Timeout: expiresSoon})
		h := hold(t, ctx, b, updateSpec("1"))
		out := h.wait(t)
		if out.State != StateExpired || !strings.Contains(out.Hint(), h.id) {
			t.Fatalf("outcome %s hint %q", out.State, out.Hint())
		}
		r, err := b.Get(ctx, h.id)
		if err != nil || r.State != StateExpired {
			t.Fatalf("stored %v, %v", r, err)
		}
		if got := log.types(h.id); got[len(got)-1] != EventExpired {
			t.Errorf("events %v", got)
		}
	})

	t.Run("shorter timeout from the caller", func(t *testing.T) {
		b, _ := newBroker(t, Config{Timeout: time.Hour})
		spec := updateSpec("1")
		spec.Timeout = expiresSoon
		h := hold(t, ctx, b, spec)
		if out := h.wait(t); out.State != StateExpired || out.Request.Timeout != spec.Timeout {
			t.Fatalf("outcome %+v", out)
		}
	})

	t.Run("approve after timeout", func(t *testing.T) {
		b, log := newBroker(t, Config{Timeout: expiresSoon})
		h := hold(t, ctx, b, updateSpec("1"))
		if out := h.wait(t); out.State != StateExpired {
			t.Fatalf("first try %s", out.State)
		}
		r, err := b.Approve(ctx, h.id, bob, "ok, retry it")
		if err != nil {
			t.Fatal(err)
		}
		if r.State != StateApproved || !r.Late || r.GrantExpires.IsZero() {
			t.Fatalf("late approval stored %+v", r)
		}

		// Statements that differ in any bound detail do not match the grant: each becomes a new
		// request (withdrawn here by cancelling, so nothing waits for the timeout; on a loaded
		// machine the 150-ms timeout may end it first, which is as much a new request).
		variants := map[string]func(*Spec){
			"literal":   func(s *Spec) { s.SQL = strings.Replace(s.SQL, "id = 1", "id = 2", 1) },
			"parameter": func(s *Spec) { s.Params[0].Value = []byte("free") },
			"type":      func(s *Spec) { s.Params[0].TypeOID = 1043 },
			"identity":  func(s *Spec) { s.Identity.Subject = "mallory" },
			"database":  func(s *Spec) { s.Database = "billing" },
		}
		for name, change := range variants {
			spec := updateSpec("1")
			change(&spec)
			cctx, cancel := context.WithCancel(ctx)
			v := hold(t, cctx, b, spec)
			cancel()
			out := v.wait(t)
			if out.State != StateWithdrawn && out.State != StateExpired || out.Grant != nil || v.id == h.id {
				t.Errorf("%s changed: %+v, want a new request, withdrawn or expired", name, out)
			}
		}

		// The identical statement passes once, without a new request or notice.
		out, err := b.Request(ctx, updateSpec("1"), func(*Request) error { t.Error("notice for a granted retry"); return nil })
		if err != nil || !out.Approved() || out.Grant == nil || out.ID() != h.id {
			t.Fatalf("retry: %+v, %v", out, err)
		}
		// A second retry needs a new approval.
		second := hold(t, ctx, b, updateSpec("1"))
		if second.id == h.id {
			t.Fatal("second retry reused the request")
		}
		if out := second.wait(t); out.State != StateExpired {
			t.Fatalf("second retry %s, want expired", out.State)
		}
		checkEvents(t, log.types(h.id), EventCreated, EventNoticeSent, EventExpired, EventDecided, EventGranted, EventConsumed)
		if s := b.Stats(); s.Granted != 1 || s.GrantsConsumed != 1 {
			t.Errorf("stats %+v", s)
		}
	})

	// The daemon whose client waited died before expiring its request: a decision after the
	// deadline treats the request as expired, so it can only create a grant, never let the
	// original (gone) client through.
	t.Run("decision after the deadline without a waiter", func(t *testing.T) {
		store := open(t)
		b := NewBroker(store, Config{})
		spec := updateSpec("9")
		now := time.Now()
		r := &Request{ID: NewID(), Created: now.Add(-2 * time.Minute), Deadline: now.Add(-time.Minute), Owner: "gone",
			Identity: spec.Identity, Target: spec.Target, Database: spec.Database, DBUser: spec.DBUser, SQL: spec.SQL,
			Hash: spec.Binding().Hash(), Rule: spec.Rule, RuleDigest: spec.RuleDigest, Approvers: spec.Approvers, Quorum: 1, Timeout: time.Minute, State: StatePending}
		if err := store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Deny(ctx, r.ID, bob, "too late anyway"); !errors.Is(err, ErrNotPending) {
			t.Errorf("deny after the deadline: %v", err)
		}
		got, err := b.Approve(ctx, r.ID, bob, "")
		if err != nil || got.State != StateApproved || !got.Late || !got.Closed.Equal(r.Deadline) {
			t.Fatalf("approve after the deadline: %+v, %v", got, err)
		}
		out, err := b.Request(ctx, spec, nil)
		if err != nil || !out.Approved() || out.Grant == nil || out.Grant.RequestID != r.ID {
			t.Fatalf("retry: %+v, %v", out, err)
		}
	})

	// A late grant passes a retry only while the policy sends the statement to the rule it was
	// given under, as that rule was then defined; a reload that changes the rule revokes it.
	t.Run("grant bound to its rule", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			rule     string
			digest   string
			reloaded map[string]string // nil: no reload
			passes   bool
		}{
			{name: "same rule and definition", rule: "writes-need-review", digest: reviewDigest, passes: true},
			{name: "same rule, other definition", rule: "writes-need-review", digest: "v2"},
			{name: "another rule", rule: "all-writes", digest: reviewDigest},
			{name: "reload leaves the rule", rule: "writes-need-review", digest: reviewDigest, reloaded: map[string]string{"writes-need-review": reviewDigest}, passes: true},
			// Revoked: the grant does not come back when the rule is later defined as it was.
			{name: "reload changed the rule", rule: "writes-need-review", digest: reviewDigest, reloaded: map[string]string{"writes-need-review": "v2"}},
			{name: "reload removed the rule", rule: "writes-need-review", digest: reviewDigest, reloaded: map[string]string{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// Timeouts leave the store time to answer on a loaded machine.
				b, _ := newBroker(t, Config{Timeout: time.Second, LateWindow: time.Hour})
				h := hold(t, ctx, b, updateSpec("1"))
				if out := h.wait(t); out.State != StateExpired {
					t.Fatalf("outcome %s, want expired", out.State)
				}
				if _, err := b.Approve(ctx, h.id, bob, "late"); err != nil {
					t.Fatal(err)
				}
				if tc.reloaded != nil {
					_, revoked, err := b.ApplyRules(ctx, tc.reloaded)
					if err != nil {
						t.Fatal(err)
					}
					if want := map[bool]int{true: 0, false: 1}[tc.passes]; revoked != want {
						t.Errorf("ApplyRules revoked %d grants, want %d", revoked, want)
					}
					// Judged as the grant was given: only a revocation stops it.
					if _, _, err := b.ApplyRules(ctx, map[string]string{"writes-need-review": reviewDigest, "all-writes": reviewDigest}); err != nil {
						t.Fatal(err)
					}
				}
				retry := updateSpec("1")
				retry.Rule, retry.RuleDigest = tc.rule, tc.digest
				out, err := b.Request(ctx, retry, nil)
				if err != nil {
					t.Fatal(err)
				}
				if passed := out.Grant != nil; passed != tc.passes {
					t.Errorf("retry: %s (grant %v), want it to pass on the grant: %v", out.State, out.Grant, tc.passes)
				}
				if out.Grant != nil && (out.Grant.Rule != "writes-need-review" || out.Grant.RuleDigest != reviewDigest) {
					t.Errorf("grant %+v does not name the rule it was given under", out.Grant)
				}
			})
		}
	})

	t.Run("late window passed", func(t *testing.T) {
		b, _ := newBroker(t, Config{Timeout: expiresSoon, LateWindow: 50 * time.Millisecond})
		h := hold(t, ctx, b, updateSpec("1"))
		h.wait(t)
		time.Sleep(100 * time.Millisecond)
		if _, err := b.Approve(ctx, h.id, bob, ""); !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "window") {
			t.Fatalf("approve after the window: %v", err)
		}
	})

	t.Run("late approvals disabled", func(t *testing.T) {
		b, _ := newBroker(t, Config{Timeout: expiresSoon, LateWindow: -1})
		h := hold(t, ctx, b, updateSpec("1"))
		h.wait(t)
		if _, err := b.Approve(ctx, h.id, bob, ""); !errors.Is(err, ErrNotPending) {
			t.Fatalf("late approval with the window disabled: %v", err)
		}
	})

	t.Run("refused decisions", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		spec := updateSpec("1")
		spec.Approvers = []string{"engineering", "dba"}
		spec.Quorum = 2
		cctx, cancel := context.WithCancel(ctx)
		h := hold(t, cctx, b, spec)
		defer func() { cancel(); h.wait(t) }()
		self := Reviewer{Subject: "alice", Groups: []string{"dba"}}
		tests := []struct {
			name     string
			id       string
			reviewer Reviewer
			verdict  Verdict
			want     error
		}{
			{"self approval", h.id, self, Approve, ErrSelfApproval},
			{"self denial", h.id, self, Deny, ErrSelfApproval},
			{"outside the groups", h.id, dave, Approve, ErrNotApprover},
			{"no groups", h.id, Reviewer{Subject: "eve"}, Approve, ErrNotApprover},
			{"no subject", h.id, Reviewer{Groups: []string{"dba"}}, Approve, ErrInvalidReviewer},
			{"first vote", h.id, bob, Approve, nil},
			{"second vote by the same reviewer", h.id, bob, Approve, ErrAlreadyDecided},
			{"unknown id", "apr_aaaaaaaaaa", bob, Approve, ErrNotFound},
		}
		for _, tt := range tests {
			var err error
			if tt.verdict == Approve {
				_, err = b.Approve(ctx, tt.id, tt.reviewer, "")
			} else {
				_, err = b.Deny(ctx, tt.id, tt.reviewer, "no")
			}
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
		}
		if _, err := b.Approve(ctx, "apr_0", bob, ""); err == nil {
			t.Error("malformed id accepted")
		}
		r, err := b.Get(ctx, h.id)
		if err != nil || r.State != StatePending || len(r.Decisions) != 1 {
			t.Fatalf("after refusals: %+v, %v", r, err)
		}
	})

	t.Run("quorum 2", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		spec := updateSpec("1")
		spec.Quorum = 2
		h := hold(t, ctx, b, spec)
		r, err := b.Approve(ctx, h.id, bob, "")
		if err != nil || r.State != StatePending || r.Approvals() != 1 {
			t.Fatalf("after one approval: %+v, %v", r, err)
		}
		select {
		case res := <-h.done:
			t.Fatalf("returned after one of two approvals: %+v", res.out)
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := b.Approve(ctx, h.id, carol, "second pair of eyes"); err != nil {
			t.Fatal(err)
		}
		if out := h.wait(t); !out.Approved() || len(out.Request.Decisions) != 2 {
			t.Fatalf("outcome %+v", out)
		}
	})

	t.Run("deny overrides partial quorum", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		spec := updateSpec("1")
		spec.Quorum = 2
		h := hold(t, ctx, b, spec)
		if _, err := b.Approve(ctx, h.id, bob, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Deny(ctx, h.id, dave, "wrong table"); err != nil {
			t.Fatal(err)
		}
		if out := h.wait(t); out.State != StateDenied {
			t.Fatalf("outcome %s", out.State)
		}
	})

	t.Run("cancel while pending", func(t *testing.T) {
		b, log := newBroker(t, Config{})
		cctx, cancel := context.WithCancel(ctx)
		h := hold(t, cctx, b, updateSpec("1"))
		cancel()
		if out := h.wait(t); out.State != StateWithdrawn {
			t.Fatalf("outcome %s", out.State)
		}
		r, err := b.Get(ctx, h.id)
		if err != nil || r.State != StateWithdrawn || r.Reason == "" {
			t.Fatalf("stored %+v, %v", r, err)
		}
		if _, err := b.Approve(ctx, h.id, bob, ""); !errors.Is(err, ErrNotPending) {
			t.Errorf("approve withdrawn: %v", err)
		}
		if got := log.types(h.id); got[len(got)-1] != EventWithdrawn {
			t.Errorf("events %v", got)
		}
	})

	t.Run("notice fails", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		out, err := b.Request(ctx, updateSpec("1"), func(*Request) error { return errors.New("broken pipe") })
		if err != nil || out.State != StateWithdrawn || !strings.Contains(out.Request.Reason, "broken pipe") {
			t.Fatalf("%+v, %v", out, err)
		}
	})

	t.Run("display sql", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		spec := updateSpec("1")
		spec.SQL = "UPDATE accounts SET card = '4111 1111 1111 1111' WHERE id = 1"
		spec.DisplaySQL = "UPDATE accounts SET card = '**** **** **** 1111' WHERE id = 1"
		h := hold(t, ctx, b, spec)
		if h.req.SQL != spec.DisplaySQL || strings.Contains(NoticeText(h.req), "4111 1111") {
			t.Errorf("reviewers see %q", h.req.SQL)
		}
		bound := spec
		bound.DisplaySQL = ""
		if h.req.Hash != bound.Binding().Hash() {
			t.Error("the binding does not cover the SQL as sent")
		}
		if _, err := b.Approve(ctx, h.id, bob, ""); err != nil {
			t.Fatal(err)
		}
		if out := h.wait(t); !out.Approved() {
			t.Fatalf("outcome %+v", out)
		}
	})

	t.Run("bad specs", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		tests := map[string]func(*Spec){
			"no subject":   func(s *Spec) { s.Identity.Subject = "" },
			"no rule":      func(s *Spec) { s.Rule = "" },
			"no approvers": func(s *Spec) { s.Approvers = nil },
			"quorum":       func(s *Spec) { s.Quorum = -1 },
			"display":      func(s *Spec) { s.Display = nil; s.Display = []DisplayParam{} },
		}
		for name, change := range tests {
			spec := updateSpec("1")
			change(&spec)
			if out, err := b.Request(ctx, spec, nil); err == nil || out.Approved() {
				t.Errorf("%s: %+v, %v", name, out, err)
			}
		}
	})

	t.Run("list and watch", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		wctx, stop := context.WithCancel(ctx)
		events := b.Watch(wctx)
		h1 := hold(t, ctx, b, updateSpec("1"))
		h2 := hold(t, ctx, b, updateSpec("2"))
		pending, err := b.List(ctx, Filter{States: []State{StatePending}})
		if err != nil || len(pending) != 2 || pending[0].ID != h1.id || pending[1].ID != h2.id {
			t.Fatalf("pending %v, %v", pending, err)
		}
		if pending[0].SQL != updateSpec("1").SQL || pending[0].Process.PID != 4242 || pending[0].Identity.Email != alice.Email {
			t.Errorf("listed request lost details: %+v", pending[0])
		}
		b.Approve(ctx, h1.id, bob, "")
		b.Deny(ctx, h2.id, bob, "no")
		h1.wait(t)
		h2.wait(t)
		if l, _ := b.List(ctx, Filter{States: []State{StatePending}}); len(l) != 0 {
			t.Errorf("still pending: %v", l)
		}
		if l, _ := b.List(ctx, Filter{Subject: "alice", Limit: 1}); len(l) != 1 || l[0].ID != h1.id {
			t.Errorf("limit: %v", l)
		}
		if l, _ := b.List(ctx, Filter{Subject: "alice", Limit: 1, Newest: true}); len(l) != 1 || l[0].ID != h2.id {
			t.Errorf("limit, newest: %v", l)
		}
		// Each hold's notice may come after the decisions (it is sent from the waiting side):
		// watch until every event is in, or give up after a while.
		seen := map[EventType]int{}
		timeout := time.After(5 * time.Second)
	watch:
		for seen[EventDecided] < 2 || seen[EventNoticeSent] < 2 || seen[EventCreated] < 2 {
			select {
			case ev, ok := <-events:
				if !ok {
					break watch
				}
				seen[ev.Type]++
			case <-timeout:
				break watch
			}
		}
		stop()
		if seen[EventCreated] != 2 || seen[EventNoticeSent] != 2 {
			t.Errorf("watched %v", seen)
		}
	})

	t.Run("a person's pending requests are bounded", func(t *testing.T) {
		b, _ := newBroker(t, Config{MaxPendingPerPerson: 2})
		first, second := hold(t, ctx, b, updateSpec("1")), hold(t, ctx, b, updateSpec("2"))
		out, err := b.Request(ctx, updateSpec("3"), func(*Request) error {
			t.Error("a request over the bound reached its notice")
			return nil
		})
		if !errors.Is(err, ErrTooManyPending) || out.State != StateFailed || !strings.Contains(err.Error(), "alice") {
			t.Fatalf("third of alice's: %+v, %v; want ErrTooManyPending naming her", out, err)
		}
		other := updateSpec("4")
		other.Identity = Identity{Subject: "erin", UID: 1001}
		erins := hold(t, ctx, b, other) // another person is not held back by alice's
		if _, err := b.Deny(ctx, first.id, bob, "no"); err != nil {
			t.Fatal(err)
		}
		first.wait(t)
		again := hold(t, ctx, b, updateSpec("5")) // a decided request makes room
		for _, h := range []held{second, erins, again} {
			if _, err := b.Approve(ctx, h.id, bob, ""); err != nil {
				t.Fatal(err)
			}
			h.wait(t)
		}
		if s := b.Stats(); s.Created != 4 || s.TooMany != 1 {
			t.Errorf("stats %+v; want 4 created, 1 refused as too many", s)
		}
	})

	t.Run("a person's new requests are rate limited", func(t *testing.T) {
		b, _ := newBroker(t, Config{RequestBurst: 3, RequestEvery: time.Hour})
		withdrawn := func(*Request) error { return errors.New("client gone") }
		for i := range 3 {
			if out, err := b.Request(ctx, updateSpec(fmt.Sprint(i)), withdrawn); err != nil || out.State != StateWithdrawn {
				t.Fatalf("request %d of the burst: %+v, %v", i, out, err)
			}
		}
		out, err := b.Request(ctx, updateSpec("3"), func(*Request) error {
			t.Error("a request over the rate limit reached its notice")
			return nil
		})
		if !errors.Is(err, ErrRateLimited) || out.State != StateFailed || !strings.Contains(err.Error(), "alice") || !strings.Contains(err.Error(), "try again in 1h0m0s") {
			t.Fatalf("fourth of alice's: %+v, %v; want ErrRateLimited naming her and when to retry", out, err)
		}
		other := updateSpec("4")
		other.Identity = Identity{Subject: "erin", UID: 1001}
		if out, err := b.Request(ctx, other, withdrawn); err != nil || out.State != StateWithdrawn {
			t.Fatalf("another person held back by alice's requests: %+v, %v", out, err)
		}
		if s := b.Stats(); s.Created != 4 || s.RateLimited != 1 || s.TooMany != 0 {
			t.Errorf("stats %+v; want 4 created, 1 refused as rate limited", s)
		}
	})

	t.Run("long statements are stored cut and bound whole", func(t *testing.T) {
		b, _ := newBroker(t, Config{Timeout: expiresSoon, LateWindow: time.Minute})
		long := longSpec("tail-1")
		h := hold(t, ctx, b, long)
		stored, err := b.Get(ctx, h.id)
		if err != nil {
			t.Fatal(err)
		}
		for what, r := range map[string]*Request{"notice": h.req, "store": stored} {
			if !r.SQLCut || len(r.SQL) > MaxShownText || !strings.HasSuffix(r.SQL, cutSuffix(long.SQL)) {
				t.Errorf("%s: %d bytes of text (cut %v) ending %q; want at most %d ending in the whole text's marker",
					what, len(r.SQL), r.SQLCut, r.SQL[max(len(r.SQL)-120, 0):], MaxShownText)
			}
			if shown := shownBytes(r); shown > MaxShownParams || r.ParamsOmitted == 0 || !r.Params[0].Cut || len(r.Params[0].Value) > MaxShownParam {
				t.Errorf("%s: %d bytes of parameters, %d left out, first cut %v", what, shown, r.ParamsOmitted, r.Params[0].Cut)
			}
			if r.Hash != long.Binding().Hash() {
				t.Errorf("%s: the binding does not cover the whole statement", what)
			}
			if !strings.Contains(CutNote(r), "an approval covers the whole statement") {
				t.Errorf("%s: reviewers are not told it is cut: %q", what, CutNote(r))
			}
		}
		if out := h.wait(t); out.State != StateExpired {
			t.Fatalf("outcome %s", out.State)
		}
		if _, err := b.Approve(ctx, h.id, bob, "late"); err != nil {
			t.Fatal(err)
		}
		// The same first bytes with another tail is another statement: the grant does not pass it.
		gone := func(*Request) error { return errors.New("client gone") }
		if out, err := b.Request(ctx, longSpec("tail-2"), gone); err != nil || out.Grant != nil || out.Approved() {
			t.Fatalf("another statement with the same shown text: %+v, %v", out, err)
		}
		if out, err := b.Request(ctx, long, gone); err != nil || out.Grant == nil || !out.Approved() {
			t.Fatalf("the identical statement after a late approval: %+v, %v", out, err)
		}
	})

	t.Run("a withdrawn request keeps only the start of its statement", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		long := longSpec("tail-1")
		cctx, cancel := context.WithCancel(ctx)
		h := hold(t, cctx, b, long)
		cancel()
		if out := h.wait(t); out.State != StateWithdrawn {
			t.Fatalf("outcome %s", out.State)
		}
		r, err := b.Get(ctx, h.id)
		if err != nil {
			t.Fatal(err)
		}
		if !r.SQLCut || len(r.SQL) > endedCaps.text || !strings.HasSuffix(r.SQL, cutSuffix(long.SQL)) || !strings.HasPrefix(r.SQL, "UPDATE accounts") {
			t.Errorf("kept %d bytes of text ending %q; want its start and the whole text's marker in at most %d", len(r.SQL), r.SQL[max(len(r.SQL)-120, 0):], endedCaps.text)
		}
		if shown := shownBytes(r); shown > endedCaps.params || r.ParamsOmitted != len(long.Params)-len(r.Params) {
			t.Errorf("kept %d bytes of parameters, %d of %d left out", shown, r.ParamsOmitted, len(long.Params))
		}
		if r.Hash != long.Binding().Hash() {
			t.Error("the binding changed")
		}
		if note := CutNote(r); !strings.Contains(note, "can no longer be approved") || strings.Contains(note, "an approval covers") {
			t.Errorf("cut note of an ended request: %q", note)
		}
	})

	// An agent that waits out each held statement instead of cancelling it must not have the
	// store keep ~130 KiB of each for its retention: an expired request keeps its statement only
	// while a late approval may still come.
	t.Run("an expired request keeps only the start of its statement once its late window passed", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			lateWindow time.Duration
			shrinks    bool
		}{
			{name: "late approvals disabled", lateWindow: -1, shrinks: true},
			{name: "late window passed", lateWindow: 50 * time.Millisecond, shrinks: true},
			{name: "within the late window", lateWindow: time.Hour},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b, _ := newBroker(t, Config{Timeout: expiresSoon, LateWindow: tc.lateWindow})
				long := longSpec("tail-1")
				h := hold(t, ctx, b, long)
				if out := h.wait(t); out.State != StateExpired {
					t.Fatalf("outcome %s, want expired", out.State)
				}
				if !tc.shrinks {
					// Neither this daemon's sweep nor that of another sharing the store, with
					// late approvals disabled, takes what a late approval is still asked about.
					if _, err := b.shrinkExpired(time.Now()); err != nil {
						t.Fatal(err)
					}
					if _, err := b.store.ShrinkExpired(ctx, "another-daemon", time.Now().Add(time.Hour)); err != nil {
						t.Fatal(err)
					}
					r, err := b.Get(ctx, h.id)
					if err != nil || r.Shrunk || len(r.SQL) <= endedCaps.text {
						t.Fatalf("within the late window: %d bytes of text (shrunk %v), %v; want it kept as created", len(r.SQL), r.Shrunk, err)
					}
					if _, err := b.Approve(ctx, h.id, bob, "late"); err != nil {
						t.Fatalf("late approval within the window: %v", err)
					}
					return
				}
				var r *Request
				waitFor(t, "the expired request shrunk", func() bool {
					got, err := b.Get(ctx, h.id)
					r = got
					return err == nil && got.Shrunk
				})
				if !r.SQLCut || len(r.SQL) > endedCaps.text || !strings.HasSuffix(r.SQL, cutSuffix(long.SQL)) || !strings.HasPrefix(r.SQL, "UPDATE accounts") {
					t.Errorf("kept %d bytes of text ending %q; want its start and the whole text's marker in at most %d", len(r.SQL), r.SQL[max(len(r.SQL)-120, 0):], endedCaps.text)
				}
				if shown := shownBytes(r); shown > endedCaps.params || r.ParamsOmitted != len(long.Params)-len(r.Params) {
					t.Errorf("kept %d bytes of parameters, %d of %d left out", shown, r.ParamsOmitted, len(long.Params))
				}
				if r.State != StateExpired || r.Hash != long.Binding().Hash() {
					t.Errorf("shrinking changed the request: %s, hash %s", r.State, r.Hash)
				}
				if _, err := b.Approve(ctx, h.id, bob, "late"); !errors.Is(err, ErrNotPending) {
					t.Errorf("late approval of a shrunk request: %v, want ErrNotPending", err)
				}
			})
		}
	})

	t.Run("many concurrent", func(t *testing.T) {
		b, _ := newBroker(t, Config{})
		const n = 50
		type pend struct {
			h       held
			approve bool
		}
		var (
			mu  sync.Mutex
			all []pend
			wg  sync.WaitGroup
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				spec := updateSpec(fmt.Sprint(i))
				spec.Identity.Subject = fmt.Sprintf("agent-%d", i%5)
				h := hold(t, ctx, b, spec)
				mu.Lock()
				all = append(all, pend{h, i%3 != 0})
				mu.Unlock()
			}()
		}
		wg.Wait()
		rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		var dwg sync.WaitGroup
		for _, p := range all {
			dwg.Add(1)
			go func() {
				defer dwg.Done()
				var err error
				if p.approve {
					_, err = b.Approve(ctx, p.h.id, bob, "")
				} else {
					_, err = b.Deny(ctx, p.h.id, dave, "no")
				}
				if err != nil {
					t.Error(err)
				}
			}()
		}
		dwg.Wait()
		for _, p := range all {
			out := p.h.wait(t)
			if out.Approved() != p.approve || out.Request.ID != p.h.id {
				t.Errorf("%s: %s, want approved=%v", p.h.id, out.State, p.approve)
			}
		}
		if s := b.Stats(); s.Created != n || s.Approved+s.Denied != n {
			t.Errorf("stats %+v", s)
		}
	})
}

func TestMemoryStore(t *testing.T) {
	storeSuite(t, func(t *testing.T) Store { return NewMemoryStore() })
}

func TestFileStore(t *testing.T) {
	storeSuite(t, func(t *testing.T) Store {
		s, err := OpenFileStore(t.TempDir()+"/approvals.json", 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
