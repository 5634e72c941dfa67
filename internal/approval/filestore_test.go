package approval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFileStoreRestart simulates a daemon restart: a second FileStore opens the file the first one
// wrote while a request was still pending and a late grant was unused.
func TestFileStoreRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "approvals.json")
	s1, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	b1 := NewBroker(s1, Config{Timeout: 150 * time.Millisecond})

	// A late approval leaves a grant for the statement with id = 1.
	granted := hold(t, ctx, b1, updateSpec("1"))
	granted.wait(t)
	if _, err := b1.Approve(ctx, granted.id, bob, "late but fine"); err != nil {
		t.Fatal(err)
	}
	// A request that is still pending when the "daemon" stops.
	spec := updateSpec("7")
	spec.Timeout = time.Hour
	b1long := NewBroker(s1, Config{Timeout: time.Hour})
	cctx, cancel := context.WithCancel(ctx)
	pending := hold(t, cctx, b1long, spec)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), `"pro"`) {
		t.Error("raw parameter value written to the store")
	}

	if _, err := OpenFileStore(path, 0); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second open while the first is live: %v", err)
	}
	// The "daemon" stops: its store closes, its client connections are gone.
	s1.Close()
	cancel()
	if res := <-pending.done; res.err == nil || res.out.Approved() {
		t.Fatalf("waiter of a closed store: %+v, %v", res.out, res.err)
	}

	s2, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	b2 := NewBroker(s2, Config{})
	r, err := b2.Get(ctx, pending.id)
	if err != nil || r.State != StateFailed || !strings.Contains(r.Reason, "restarted") {
		t.Fatalf("pending request after restart: %+v, %v", r, err)
	}
	if _, err := b2.Approve(ctx, pending.id, bob, ""); err == nil {
		t.Error("approved a request whose waiter is gone")
	}
	r, err = b2.Get(ctx, granted.id)
	if err != nil || r.State != StateApproved || len(r.Decisions) != 1 || r.Decisions[0].Reason != "late but fine" {
		t.Fatalf("decided request after restart: %+v, %v", r, err)
	}
	out, err := b2.Request(ctx, updateSpec("1"), nil)
	if err != nil || !out.Approved() || out.Grant == nil {
		t.Fatalf("grant after restart: %+v, %v", out, err)
	}
	// The consumed grant is remembered across another restart.
	s2.Close()
	s3, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := s3.ConsumeGrant(ctx, updateSpec("1").Binding().Hash(), updateSpec("1").Rule, updateSpec("1").RuleDigest, time.Now()); err != nil || g != nil {
		t.Fatalf("grant consumed twice across restarts: %+v, %v", g, err)
	}
}

func TestFileStoreBadFile(t *testing.T) {
	const header = `{"version":1}` + "\n"
	tests := map[string]string{
		"not json":            "{\n",
		"no header":           `{"request":{"id":"apr_aaaaaaaaaa","state":"pending"}}` + "\n",
		"future version":      `{"version": 99}` + "\n",
		"request without id":  header + `{"request": {"state": "pending"}}` + "\n",
		"bad state":           header + `{"request": {"id": "apr_aaaaaaaaaa", "state": "maybe"}}` + "\n",
		"grant without hash":  header + `{"grant": {"request_id": "x"}}` + "\n",
		"empty line":          header + "{}\n",
		"corrupt middle line": header + "{garbage\n" + `{"grant": {"request_id": "x", "hash": "y"}}` + "\n",
		"torn header":         `{"vers`,
	}
	for name, content := range tests {
		path := filepath.Join(t.TempDir(), "approvals.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenFileStore(path, 0); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

// TestFileStoreTornTail appends half a line, as a crash during a write would leave, and expects
// everything before it to load.
func TestFileStoreTornTail(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "approvals.json")
	s, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBroker(s, Config{})
	h := hold(t, ctx, b, updateSpec("1"))
	b.Approve(ctx, h.id, bob, "")
	h.wait(t)
	s.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"request": {"id": "apr_bbbb`)
	f.Close()
	s2, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if r, err := s2.Get(ctx, h.id); err != nil || r.State != StateApproved {
		t.Fatalf("after torn tail: %+v, %v", r, err)
	}
}

// TestFileStoreCompacts checks that the journal stays bounded by the live state and that a
// compacted journal loads the same state.
func TestFileStoreCompacts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "approvals.json")
	s, err := OpenFileStore(path, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s.compact = 50
	b := NewBroker(s, Config{RequestBurst: 100})
	var last string
	for i := range 100 {
		h := hold(t, ctx, b, updateSpec(fmt.Sprint(i)))
		b.Deny(ctx, h.id, bob, "no")
		h.wait(t)
		last = h.id
	}
	s.mu.Lock()
	lines := s.lines
	s.mu.Unlock()
	if lines >= 200 {
		t.Errorf("%d journal lines after 200 changes: never compacted", lines)
	}
	s.Close()
	time.Sleep(5 * time.Millisecond)
	s2, err := OpenFileStore(path, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Get(ctx, last); !errors.Is(err, ErrNotFound) {
		t.Errorf("finished request kept past retention: %v", err)
	}
	raw, _ := os.ReadFile(path)
	if n := bytes.Count(raw, []byte("\n")); n != 1 {
		t.Errorf("compacted journal has %d lines, want only the header", n)
	}
}
