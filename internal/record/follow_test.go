package record

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFollowSessionUnknown: following a session the log has no record of fails at once, naming
// the id and what to run to find one, instead of polling forever; also while other sessions keep
// the log growing and rotating.
func TestFollowSessionUnknown(t *testing.T) {
	cases := []struct {
		name string
		fill func(t *testing.T, r *Recorder) (stop func())
	}{
		{"empty log", func(t *testing.T, r *Recorder) func() { return func() {} }},
		{"other sessions", func(t *testing.T, r *Recorder) func() {
			appendAll(t, r, sessionEvents("a"), Async)
			appendAll(t, r, sessionEvents("b")[:3], WriteAhead)
			return func() {}
		}},
		{"busy log", func(t *testing.T, r *Recorder) func() {
			appendAll(t, r, sessionEvents("a"), WriteAhead)
			done := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					default:
					}
					for _, ev := range sessionEvents(fmt.Sprintf("busy%d", i)) {
						if err := r.Append(ev, Async); err != nil {
							t.Errorf("append: %v", err)
							return
						}
					}
				}
			}()
			time.Sleep(50 * time.Millisecond)
			return func() { close(done); wg.Wait() }
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openT(t, Options{Dir: dir, SegmentBytes: 4096})
			defer r.Close()
			stop := c.fill(t, r)
			defer stop()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			calls := 0
			err := FollowSession(ctx, dir, "nope", func(Record) error { calls++; return nil })
			if err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("follow of an unknown session: %v", err)
			}
			if !strings.Contains(err.Error(), `no session "nope"`) || !strings.Contains(err.Error(), "enforcer sessions") {
				t.Errorf("error %q does not say there is no such session and what to run", err)
			}
			if calls != 0 {
				t.Errorf("fn called %d times", calls)
			}
		})
	}
}

// TestFollowSessionExisting: a session with records only far back in a busy log is found and
// followed to its end; one that already ended is printed whole and returns; an error of fn stops
// the follow.
func TestFollowSessionExisting(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 2048})
	defer r.Close()
	live := sessionEvents("live")
	appendAll(t, r, live[:2], WriteAhead)
	for i := 0; i < 20; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("other%d", i)), WriteAhead) // rotates several times
	}
	appendAll(t, r, sessionEvents("ended"), WriteAhead)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var ended []Type
	if err := FollowSession(ctx, dir, "ended", func(rec Record) error { ended = append(ended, rec.Type); return nil }); err != nil {
		t.Fatalf("follow of an ended session: %v", err)
	}
	if len(ended) != 10 || ended[9] != TypeSessionEnd {
		t.Fatalf("followed %v", ended)
	}

	stopErr := errors.New("stop")
	if err := FollowSession(ctx, dir, "live", func(Record) error { return stopErr }); !errors.Is(err, stopErr) {
		t.Fatalf("fn's error not returned: %v", err)
	}

	got := make(chan Type, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- FollowSession(ctx, dir, "live", func(rec Record) error { got <- rec.Type; return nil })
	}()
	for i := 0; i < 2; i++ {
		if g := <-got; g != live[i].Type {
			t.Fatalf("followed %s, want %s", g, live[i].Type)
		}
	}
	appendAll(t, r, live[2:], Async)
	if err := <-errc; err != nil {
		t.Fatalf("follow: %v", err)
	}
	if len(got) != len(live)-2 {
		t.Fatalf("followed %d more records, want %d", len(got), len(live)-2)
	}
}
