package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/enforcer-dev/enforcer/internal/ratelimit"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// longSpec is updateSpec with a text and parameters far past the caps; tail ends the text, past
// what is shown.
func longSpec(tail string) Spec {
	spec := updateSpec("1")
	spec.SQL += " /* " + strings.Repeat("x", 200<<10) + " */ -- " + tail
	spec.Params, spec.Display = nil, nil
	for i := range 40 {
		v := strings.Repeat(fmt.Sprint(i%10), 3<<10)
		if i == 0 {
			v = strings.Repeat("é", 5<<10)
		}
		spec.Params = append(spec.Params, Param{Value: []byte(v), TypeOID: 25})
		spec.Display = append(spec.Display, DisplayParam{Value: v, TypeOID: 25})
	}
	return spec
}

// cutSuffix is the marker that ends s cut: its length and SHA-256.
func cutSuffix(s string) string { return record.CutValue(s, 0) }

// shownBytes is what r's parameters weigh against MaxShownParams.
func shownBytes(r *Request) int {
	n := 0
	for _, p := range r.Params {
		n += len(p.Value) + paramCost
	}
	return n
}

func TestCutShown(t *testing.T) {
	many := make([]DisplayParam, 60000)
	tests := []struct {
		name        string
		sql         string
		params      []DisplayParam
		wantSQLCut  bool
		wantCut     []bool // per kept parameter
		wantOmitted int
	}{
		{"short stays whole", "SELECT 1", []DisplayParam{{Value: "a"}, {Null: true}}, false, []bool{false, false}, 0},
		{"text at the cap stays whole", strings.Repeat("s", MaxShownText), nil, false, nil, 0},
		{"text past the cap", strings.Repeat("s", MaxShownText+1), nil, true, nil, 0},
		{"one long parameter", "x", []DisplayParam{{Value: strings.Repeat("p", MaxShownParam+1)}, {Value: "b"}}, false, []bool{true, false}, 0},
		{"parameters past the total", "x", func() []DisplayParam {
			ps := make([]DisplayParam, 20)
			for i := range ps {
				ps[i].Value = strings.Repeat("p", MaxShownParam)
			}
			return ps
		}(), false, []bool{false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, true}, 4},
		{"tens of thousands of empty parameters", "x", many, false, make([]bool, MaxShownParams/paramCost), 60000 - MaxShownParams/paramCost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Request{SQL: tt.sql, Params: append([]DisplayParam(nil), tt.params...), Process: Process{Cmdline: strings.Repeat("a ", 1<<20)}}
			r.cutShown(createdCaps)
			if r.SQLCut != tt.wantSQLCut || len(r.SQL) > MaxShownText {
				t.Errorf("text of %d bytes cut %v, want cut %v", len(r.SQL), r.SQLCut, tt.wantSQLCut)
			}
			if r.SQLCut && !strings.HasSuffix(r.SQL, cutSuffix(tt.sql)) {
				t.Errorf("text does not end in the whole text's marker: %q", r.SQL[len(r.SQL)-100:])
			}
			if len(r.Params) != len(tt.wantCut) || r.ParamsOmitted != tt.wantOmitted {
				t.Fatalf("kept %d parameters, %d left out; want %d and %d", len(r.Params), r.ParamsOmitted, len(tt.wantCut), tt.wantOmitted)
			}
			for i, p := range r.Params {
				if p.Cut != tt.wantCut[i] || len(p.Value) > MaxShownParam || p.Null != tt.params[i].Null {
					t.Errorf("parameter %d: %d bytes, cut %v; want cut %v", i, len(p.Value), p.Cut, tt.wantCut[i])
				}
				if p.Cut && !strings.HasSuffix(p.Value, cutSuffix(tt.params[i].Value)) {
					t.Errorf("parameter %d does not end in its whole value's marker", i)
				}
			}
			if n := shownBytes(r); n > MaxShownParams {
				t.Errorf("%d bytes of parameters", n)
			}
			if len(r.Process.Cmdline) > createdCaps.cmdline {
				t.Errorf("%d bytes of arguments", len(r.Process.Cmdline))
			}
			// Cutting again, to the ended caps, keeps the marker of the whole value.
			whole := r.Clone()
			r.State = StateWithdrawn
			r.endUndecided(time.Time{})
			if len(r.SQL) > endedCaps.text || shownBytes(r) > endedCaps.params {
				t.Errorf("ended: %d bytes of text, %d of parameters", len(r.SQL), shownBytes(r))
			}
			if whole.SQLCut && !strings.HasSuffix(r.SQL, cutSuffix(tt.sql)) {
				t.Errorf("ended: the text's marker is not the whole text's: %q", r.SQL[max(len(r.SQL)-100, 0):])
			}
			if len(r.Params)+r.ParamsOmitted != len(tt.params) {
				t.Errorf("ended: %d parameters kept and %d left out, of %d", len(r.Params), r.ParamsOmitted, len(tt.params))
			}
		})
	}
}

func TestRequestLimit(t *testing.T) {
	type take struct {
		person string
		at     time.Duration
		ok     bool
		wait   time.Duration // when refused
	}
	tests := []struct {
		name  string
		takes []take
	}{
		{"a burst, then refused until a token comes back", []take{
			{"alice", 0, true, 0}, {"alice", 0, true, 0}, {"alice", 0, true, 0},
			{"alice", 0, false, 5 * time.Second},
			{"alice", 3 * time.Second, false, 2 * time.Second},
			{"alice", 5 * time.Second, true, 0},
			{"alice", 5 * time.Second, false, 5 * time.Second},
		}},
		{"people have their own buckets", []take{
			{"alice", 0, true, 0}, {"alice", 0, true, 0}, {"alice", 0, true, 0},
			{"alice", 0, false, 5 * time.Second},
			{"dave", 0, true, 0},
		}},
		{"an idle person's bucket fills up to the burst only", []take{
			{"alice", 0, true, 0},
			{"alice", time.Hour, true, 0}, {"alice", time.Hour, true, 0}, {"alice", time.Hour, true, 0},
			{"alice", time.Hour, false, 5 * time.Second},
		}},
		{"a wait is said in whole seconds, rounded up", []take{
			{"alice", 0, true, 0}, {"alice", 0, true, 0}, {"alice", 0, true, 0},
			{"alice", 3750 * time.Millisecond, false, 2 * time.Second},
			{"alice", 4999 * time.Millisecond, false, time.Second},
			{"alice", 5 * time.Second, true, 0},
		}},
		{"a refusal takes no token", []take{
			{"alice", 0, true, 0}, {"alice", 0, true, 0}, {"alice", 0, true, 0},
			{"alice", time.Second, false, 4 * time.Second}, {"alice", 2 * time.Second, false, 3 * time.Second},
			{"alice", 5 * time.Second, true, 0},
		}},
	}
	start := time.Unix(1_800_000_000, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := requestLimit{ratelimit.Buckets[string]{Burst: 3, Every: 5 * time.Second}}
			for i, tk := range tt.takes {
				wait, ok := l.Take(tk.person, start.Add(tk.at))
				if ok != tk.ok || (!ok && wait != tk.wait) {
					t.Errorf("take %d (%s at %v): ok %v, wait %v; want %v, %v", i, tk.person, tk.at, ok, wait, tk.ok, tk.wait)
				}
			}
		})
	}
}

// TestWebhookTakesPersonsInTurn: one person's flood of events does not push another person's out
// of a slow endpoint's queue, nor far back in it; what is dropped is the flooder's, and counted.
func TestWebhookTakesPersonsInTurn(t *testing.T) {
	tests := []struct {
		name        string
		floodBefore bool // the flood is queued before the other person's event, or after
	}{
		{"another's event after a flood", true},
		{"a flood after another's event", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var order []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				var p Payload
				json.Unmarshal(body, &p)
				time.Sleep(20 * time.Millisecond) // a slow channel
				mu.Lock()
				order = append(order, p.Request.Identity.Subject)
				mu.Unlock()
			}))
			t.Cleanup(srv.Close)
			const queue, flood = 8, 100
			n := newNotifier(t, NotifierConfig{QueueSize: queue, Webhooks: []Webhook{{Name: "reviewers", URL: srv.URL}}})
			floodOf := func(who string) (dropped int) {
				for range flood {
					ev := testEvent(EventCreated)
					ev.Request.Identity = Identity{Subject: who}
					dropped += n.Notify(ev)
				}
				return dropped
			}
			dave := testEvent(EventCreated)
			dave.Request.Identity = Identity{Subject: "dave"}
			dropped := 0
			if tt.floodBefore {
				dropped += floodOf("alice")
			}
			dropped += n.Notify(dave)
			mu.Lock()
			mark := len(order) // deliveries done before dave's was queued
			mu.Unlock()
			if !tt.floodBefore {
				dropped += floodOf("alice")
			}
			waitFor(t, "the queue to drain", func() bool {
				s := n.Stats()
				return s.Delivered+s.Dropped >= flood+1
			})
			mu.Lock()
			defer mu.Unlock()
			daves := -1
			for i, who := range order {
				if who == "dave" {
					daves = i
				}
			}
			if daves < 0 {
				t.Fatalf("dave's event never reached the endpoint: delivered %v", order)
			}
			// One of alice's may be in flight as dave's is queued, and it may be her turn next.
			if daves-mark > 2 {
				t.Errorf("dave's event was delivery %d, %d after it was queued, behind alice's flood: %v", daves, daves-mark, order)
			}
			if s := n.Stats(); s.Dropped == 0 || int(s.Dropped) != dropped || int(s.Delivered)+dropped != flood+1 {
				t.Errorf("stats %+v, Notify reported %d dropped; want every event delivered or counted dropped", s, dropped)
			}
		})
	}
}

// TestBrokerCountsDroppedNotifications: the broker's stats (exported as a metric) count what its
// notifier dropped.
func TestBrokerCountsDroppedNotifications(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	n := newNotifier(t, NotifierConfig{QueueSize: 1, Webhooks: []Webhook{{Name: "stuck", URL: srv.URL}}})
	b := NewBroker(NewMemoryStore(), Config{Notifier: n})
	gone := func(*Request) error { return errors.New("client gone") }
	for i := range 5 {
		if _, err := b.Request(context.Background(), updateSpec(fmt.Sprint(i)), gone); err != nil {
			t.Fatal(err)
		}
	}
	// One in flight, one queued, three dropped.
	waitFor(t, "drops", func() bool { return b.Stats().WebhookDropped >= 3 })
	if b, n := b.Stats().WebhookDropped, n.Stats().Dropped; b != n {
		t.Errorf("broker counts %d dropped, notifier %d", b, n)
	}
}

// TestFileStoreJournalStaysSmall: held statements far past the caps, each withdrawn at once,
// leave the journal a small multiple of the caps, and a restart keeps only their start.
func TestFileStoreJournalStaysSmall(t *testing.T) {
	tests := []struct {
		name         string
		compactBytes int64
		requests     int
		wantAtMost   int64 // journal bytes before the restart
	}{
		// Created at most ~130 KiB (text and parameters at their caps), withdrawn ~2 KiB.
		{"cut when created", compactAfterBytes, 16, 16 * 160 << 10},
		// Past compactBytes of appends, withdrawn requests are rewritten short.
		{"compacted by size", 512 << 10, 40, 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "approvals.journal")
			s, err := OpenFileStore(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			s.compactBytes = tt.compactBytes
			b := NewBroker(s, Config{RequestBurst: tt.requests})
			gone := func(*Request) error { return errors.New("client gone") }
			var ids []string
			for range tt.requests {
				out, err := b.Request(ctx, longSpec("tail"), gone)
				if err != nil || out.State != StateWithdrawn {
					t.Fatalf("%+v, %v", out, err)
				}
				ids = append(ids, out.ID())
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("journal: %d bytes after %d requests", st.Size(), tt.requests)
			if st.Size() > tt.wantAtMost {
				t.Errorf("journal of %d bytes after %d requests of %d bytes, want at most %d", st.Size(), tt.requests, len(longSpec("tail").SQL), tt.wantAtMost)
			}
			s.Close()
			s2, err := OpenFileStore(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			st, _ = os.Stat(path)
			t.Logf("journal: %d bytes after a restart", st.Size())
			if st.Size() > int64(tt.requests)*4<<10 {
				t.Errorf("journal of %d bytes after a restart, for %d withdrawn requests", st.Size(), tt.requests)
			}
			for _, id := range ids {
				if r, err := s2.Get(ctx, id); err != nil || r.State != StateWithdrawn || len(r.SQL) > endedCaps.text {
					t.Fatalf("after a restart: %v; want the withdrawn request with its text's start", err)
				}
			}
		})
	}
}

// TestFileStoreKeepsExpiredShrunk: an expired request shrunk past its late window is journaled
// so, and a restart does not bring back its statement.
func TestFileStoreKeepsExpiredShrunk(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "approvals.journal")
	s, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	long := longSpec("tail")
	closed := time.Now().Add(-time.Hour)
	r := &Request{ID: NewID(), Created: closed.Add(-time.Minute), Deadline: closed, Owner: "host-a", Identity: long.Identity,
		SQL: long.SQL, Params: long.Display, Rule: long.Rule, Approvers: long.Approvers, Hash: long.Binding().Hash(), State: StatePending}
	r.cutShown(createdCaps)
	if err := s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Finish(ctx, r.ID, StateExpired, "", closed); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ShrinkExpired(ctx, "host-a", time.Now().Add(-DefaultLateWindow)); err != nil || n != 1 {
		t.Fatalf("shrank %d, %v; want the one request", n, err)
	}
	s.Close()
	s, err = OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Shrunk || len(got.SQL) > endedCaps.text || shownBytes(got) > endedCaps.params || got.Hash != r.Hash {
		t.Errorf("after a restart: %d bytes of text, %d of parameters (shrunk %v)", len(got.SQL), shownBytes(got), got.Shrunk)
	}
	if st, err := os.Stat(path); err != nil || st.Size() > 8<<10 {
		t.Errorf("journal after a restart: %v, %v; want the shrunk request alone", st.Size(), err)
	}
}

// TestFileStoreCutsOldJournals: a journal written before the caps, holding whole statements,
// is cut as it is loaded.
func TestFileStoreCutsOldJournals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "approvals.journal")
	long := longSpec("tail")
	r := &Request{ID: NewID(), Created: time.Now(), Identity: long.Identity, SQL: long.SQL, Params: long.Display, Rule: long.Rule,
		Approvers: long.Approvers, Hash: long.Binding().Hash(), State: StateExpired, Closed: time.Now()}
	var lines []byte
	for _, l := range []fileLine{{Version: fileVersion}, {Request: r}} {
		b, _ := json.Marshal(l)
		lines = append(append(lines, b...), '\n')
	}
	if err := os.WriteFile(path, lines, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.SQLCut || len(got.SQL) > MaxShownText || shownBytes(got) > MaxShownParams || got.Hash != r.Hash {
		t.Errorf("loaded %d bytes of text (cut %v), %d of parameters", len(got.SQL), got.SQLCut, shownBytes(got))
	}
}

// FuzzCutShown: whatever the statement, what a request keeps stays within the caps, keeps valid
// UTF-8 valid, and a cut value ends with the whole value's marker, also once the request ended.
func FuzzCutShown(f *testing.F) {
	f.Add("SELECT 1", "a", 1, 1)
	f.Add("é", "€", 20, MaxShownText)
	f.Add("x", "", 3000, MaxShownText+1)
	f.Fuzz(func(t *testing.T, sql, param string, params, repeat int) {
		// Short inputs, repeated: the fuzzer mutates and minimizes them fast.
		if len(sql) > 64 || len(param) > 64 {
			return
		}
		params, repeat = min(max(params, 0), 3000), min(max(repeat, 1), 3*MaxShownText)
		sql = strings.Repeat(sql, min(repeat, 2*MaxShownText/max(len(sql), 1)+1))
		param = strings.Repeat(param, min(repeat, 2*MaxShownParam/max(len(param), 1)+1))
		r := &Request{SQL: sql}
		for i := range params {
			r.Params = append(r.Params, DisplayParam{Value: param + fmt.Sprint(i)})
		}
		whole := r.Clone()
		r.cutShown(createdCaps)
		for _, caps := range []shownCaps{createdCaps, endedCaps} {
			if len(r.SQL) > caps.text || shownBytes(r) > caps.params || len(r.Params)+r.ParamsOmitted != params {
				t.Fatalf("caps %v: %d bytes of text, %d of parameters, %d kept and %d left out of %d",
					caps, len(r.SQL), shownBytes(r), len(r.Params), r.ParamsOmitted, params)
			}
			if r.SQLCut != (len(whole.SQL) > MaxShownText || len(whole.SQL) > caps.text) {
				t.Fatalf("caps %v: text of %d bytes cut %v", caps, len(whole.SQL), r.SQLCut)
			}
			if r.SQLCut && !strings.HasSuffix(r.SQL, cutSuffix(whole.SQL)) {
				t.Fatalf("caps %v: the text's marker is not the whole text's", caps)
			}
			if utf8.ValidString(whole.SQL) && !utf8.ValidString(r.SQL) {
				t.Fatalf("caps %v: valid UTF-8 cut into invalid", caps)
			}
			for i, p := range r.Params {
				if p.Cut && !strings.HasSuffix(p.Value, cutSuffix(whole.Params[i].Value)) {
					t.Fatalf("caps %v: parameter %d's marker is not its whole value's", caps, i)
				}
			}
			r.State = StateWithdrawn
			r.endUndecided(time.Time{})
		}
	})
}
