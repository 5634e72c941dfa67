package approval

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func storedRequest(id string, now time.Time) *Request {
	spec := updateSpec("1")
	return &Request{ID: id, Created: now, Deadline: now.Add(time.Hour), Identity: spec.Identity, Target: spec.Target,
		Database: spec.Database, DBUser: spec.DBUser, SQL: spec.SQL, Hash: spec.Binding().Hash(), Rule: spec.Rule, RuleDigest: spec.RuleDigest,
		Approvers: spec.Approvers, Quorum: 1, Timeout: time.Hour, State: StatePending}
}

// A journal append that fails part-way (disk full, file size limit) leaves no partial line for
// later appends to follow: the change is refused, and the journal still loads after a restart
// with the state the store acknowledged.
func TestFileStoreFailedAppendLeavesJournalReadable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "approvals.journal")
	s, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	if err := s.Create(ctx, storedRequest("apr_aaaaaaaaaa", now)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	// Let the next write stop 40 bytes in, as a full disk would. Go ignores SIGXFSZ, so the write
	// returns short with EFBIG.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(fi.Size()) + 40
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	_, _, derr := s.Decide(ctx, "apr_aaaaaaaaaa", Decision{Reviewer: bob, Verdict: Approve, Time: time.Now()}, Windows{})
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if derr == nil {
		t.Fatal("a decision whose journal write failed was acknowledged")
	}
	if r, err := s.Get(ctx, "apr_aaaaaaaaaa"); err != nil || r.State != StatePending {
		t.Fatalf("after the failed decision: %+v, %v", r, err)
	}

	// The disk has room again: later changes are stored and survive a restart.
	if err := s.Create(ctx, storedRequest("apr_bbbbbbbbbb", now.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Decide(ctx, "apr_bbbbbbbbbb", Decision{Reviewer: bob, Verdict: Deny, Reason: "no", Time: time.Now()}, Windows{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatalf("reopen after a failed append: %v", err)
	}
	defer s2.Close()
	if r, err := s2.Get(ctx, "apr_bbbbbbbbbb"); err != nil || r.State != StateDenied {
		t.Errorf("denied request after restart: %+v, %v", r, err)
	}
	if r, err := s2.Get(ctx, "apr_aaaaaaaaaa"); err != nil || r.State != StateFailed || len(r.Decisions) != 0 {
		t.Errorf("request whose decision was refused, after restart: %+v, %v", r, err)
	}
}
