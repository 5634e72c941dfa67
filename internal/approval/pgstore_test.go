package approval

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// newPGDatabase creates an empty database on srv and returns its DSN.
func newPGDatabase(t *testing.T, srv *pgtest.Server) string {
	t.Helper()
	name := fmt.Sprintf("approvals_%d", dbSeq.Add(1))
	srv.Exec(t, "CREATE DATABASE "+name)
	return srv.DSN(pgtest.SuperUser, name)
}

var dbSeq atomic.Int64

func openPG(t *testing.T, dsn, owner string) *PGStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	s, err := OpenPGStore(ctx, PGStoreConfig{DSN: dsn, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPGStore(t *testing.T) {
	// Durability is not under test here; without fsync each CREATE DATABASE is cheap.
	srv := pgtest.Start(t, pgtest.WithSetting("fsync", "off"))

	t.Run("suite", func(t *testing.T) {
		storeSuite(t, func(t *testing.T) Store { return openPG(t, newPGDatabase(t, srv), "host-a") })
	})

	// Two daemons share one database: an agent waits on daemon B, the reviewer decides on daemon A.
	t.Run("two daemons", func(t *testing.T) {
		ctx := context.Background()
		dsn := newPGDatabase(t, srv)
		a := NewBroker(openPG(t, dsn, "host-a"), Config{Owner: "host-a", PollInterval: time.Hour, Timeout: 150 * time.Millisecond})
		b := NewBroker(openPG(t, dsn, "host-b"), Config{Owner: "host-b", PollInterval: time.Hour})

		wctx, stop := context.WithCancel(ctx)
		defer stop()
		watchA := a.Watch(wctx)

		h := hold(t, ctx, b, updateSpec("1"))
		if h.req.Owner != "host-b" {
			t.Errorf("owner %q", h.req.Owner)
		}
		// The reviewer on A sees the request B created.
		pending, err := a.List(ctx, Filter{States: []State{StatePending}})
		if err != nil || len(pending) != 1 || pending[0].ID != h.id || pending[0].Process.Comm != "claude" {
			t.Fatalf("pending on A: %v, %v", pending, err)
		}
		waitEvent(t, watchA, h.id, EventCreated, true)
		if _, err := a.Approve(ctx, h.id, bob, "from A"); err != nil {
			t.Fatal(err)
		}
		// PollInterval is an hour: only the notification can have woken B's waiter.
		if out := h.wait(t); !out.Approved() || out.Request.Decisions[0].Reason != "from A" {
			t.Fatalf("outcome on B: %+v", out)
		}

		// Deny through B for a request waiting on A.
		spec := updateSpec("2")
		spec.Timeout = time.Minute
		a2 := NewBroker(openPG(t, dsn, "host-a2"), Config{Owner: "host-a2", PollInterval: time.Hour})
		h2 := hold(t, ctx, a2, spec)
		if _, err := b.Deny(ctx, h2.id, dave, "from B"); err != nil {
			t.Fatal(err)
		}
		if out := h2.wait(t); out.State != StateDenied {
			t.Fatalf("outcome on A: %s", out.State)
		}

		// A late approval through B creates a grant the retry on A consumes, exactly once even when
		// both daemons race for it.
		h3 := hold(t, ctx, a, updateSpec("3"))
		if out := h3.wait(t); out.State != StateExpired {
			t.Fatalf("h3 %s", out.State)
		}
		if _, err := b.Approve(ctx, h3.id, bob, ""); err != nil {
			t.Fatal(err)
		}
		hash := updateSpec("3").Binding().Hash()
		var wins atomic.Int32
		done := make(chan struct{})
		for _, s := range []Store{a.store, b.store, a.store, b.store} {
			go func() {
				defer func() { done <- struct{}{} }()
				g, err := s.ConsumeGrant(ctx, hash, updateSpec("3").Rule, updateSpec("3").RuleDigest, time.Now())
				if err != nil {
					t.Error(err)
				}
				if g != nil {
					wins.Add(1)
				}
			}()
		}
		for range 4 {
			<-done
		}
		if wins.Load() != 1 {
			t.Fatalf("grant consumed %d times", wins.Load())
		}
	})

	t.Run("restart fails own pending only", func(t *testing.T) {
		ctx := context.Background()
		dsn := newPGDatabase(t, srv)
		sa := openPG(t, dsn, "host-a")
		a := NewBroker(sa, Config{Owner: "host-a"})
		b := NewBroker(openPG(t, dsn, "host-b"), Config{Owner: "host-b"})
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ha := hold(t, cctx, a, updateSpec("1"))
		hb := hold(t, cctx, b, updateSpec("2"))

		sa.Close() // daemon A stops; its waiter can no longer store anything
		cancel()
		<-ha.done
		hb.wait(t)

		openPG(t, dsn, "host-a") // daemon A starts again
		r, err := b.Get(ctx, ha.id)
		if err != nil || r.State != StateFailed || !strings.Contains(r.Reason, "restarted") {
			t.Fatalf("A's request after A restarted: %+v, %v", r, err)
		}
		if r, _ := b.Get(ctx, hb.id); r.State != StateWithdrawn {
			t.Fatalf("B's request: %s", r.State)
		}
	})

	// A backlog of expired requests (a week of them after an upgrade) is shrunk in batches; one a
	// reviewer voted on keeps what the reviewer saw, and is not read again batch after batch.
	t.Run("shrinks a backlog of expired requests", func(t *testing.T) {
		ctx := context.Background()
		dsn := newPGDatabase(t, srv)
		s := openPG(t, dsn, "host-a")
		long := longSpec("tail")
		closed := time.Now().Add(-time.Hour)
		expire := func(quorum int) *Request {
			r := &Request{ID: NewID(), Created: closed.Add(-time.Minute), Deadline: closed, Owner: "host-a", Identity: long.Identity,
				SQL: long.SQL, Params: long.Display, Rule: long.Rule, Approvers: long.Approvers, Quorum: quorum, Hash: long.Binding().Hash(), State: StatePending}
			r.cutShown(createdCaps)
			if err := s.Create(ctx, r); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Finish(ctx, r.ID, StateExpired, "", closed); err != nil {
				t.Fatal(err)
			}
			return r
		}
		const backlog = 2*shrinkBatch + 1
		for range backlog {
			expire(1)
		}
		voted := expire(2)
		if _, _, err := s.Decide(ctx, voted.ID, Decision{Reviewer: bob, Verdict: Approve, Time: time.Now()}, Windows{Late: 2 * time.Hour}); err != nil {
			t.Fatal(err)
		}
		cutoff := time.Now().Add(-DefaultLateWindow)
		if n, err := s.ShrinkExpired(ctx, "host-a", cutoff); err != nil || n != backlog {
			t.Fatalf("shrank %d, %v; want %d", n, err, backlog)
		}
		if n, err := s.ShrinkExpired(ctx, "host-a", cutoff); err != nil || n != 0 {
			t.Fatalf("second sweep shrank %d, %v; want none", n, err)
		}
		shrunk, err := s.List(ctx, Filter{States: []State{StateExpired}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range shrunk {
			if want := r.ID != voted.ID; r.Shrunk != want || (len(r.SQL) <= endedCaps.text) != want || r.Hash != long.Binding().Hash() {
				t.Fatalf("%s: %d bytes of text, shrunk %v; want shrunk %v", r.ID, len(r.SQL), r.Shrunk, want)
			}
		}
	})

	t.Run("bad config", func(t *testing.T) {
		ctx := context.Background()
		if _, err := OpenPGStore(ctx, PGStoreConfig{DSN: "postgres://x"}); err == nil {
			t.Error("no owner accepted")
		}
		if _, err := OpenPGStore(ctx, PGStoreConfig{DSN: "host=%%% port=abc", Owner: "h"}); err == nil {
			t.Error("bad DSN accepted")
		}
	})
}

func waitEvent(t *testing.T, ch <-chan Event, id string, typ EventType, remote bool) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case ev := <-ch:
			if ev.Type == typ && ev.Request != nil && ev.Request.ID == id && ev.Remote == remote {
				return
			}
		case <-timeout:
			t.Fatalf("no %s event for %s", typ, id)
		}
	}
}
