package approval

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// compactNext makes the store's next journal append end in a compaction, as it does once the
// journal has grown well past the live state.
func compactNext(s *FileStore) {
	s.mu.Lock()
	s.lines = 1 << 20
	s.mu.Unlock()
}

// lateGrant opens a store at path with a request that expired and was then approved late,
// compacting at the approval if compact is set; it returns the store and the request.
func lateGrant(t *testing.T, path string, compact bool) (*FileStore, *Request) {
	t.Helper()
	ctx := context.Background()
	s, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := storedRequest("apr_aaaaaaaaaa", now)
	if err := s.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Finish(ctx, r.ID, StateExpired, "", now); err != nil {
		t.Fatal(err)
	}
	if compact {
		compactNext(s)
	}
	if _, g, err := s.Decide(ctx, r.ID, Decision{Reviewer: bob, Verdict: Approve, Time: time.Now()}, Windows{Late: time.Hour, Grant: time.Hour}); err != nil || g == nil {
		t.Fatalf("late approval: grant %v, %v", g, err)
	}
	return s, r
}

// A decision whose journal append happens to trigger a compaction survives a restart: the
// compacted journal holds the decision and the grant it made.
func TestFileStoreDecisionThatCompactsSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "approvals.journal")
	s, r := lateGrant(t, path, true)
	s.Close()
	s, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Get(ctx, r.ID); err != nil || got.State != StateApproved || !got.Late {
		t.Errorf("late-approved request after a restart: state %v, %v", got.State, err)
	}
	if g, err := s.ConsumeGrant(ctx, r.Hash, r.Rule, r.RuleDigest, time.Now()); err != nil || g == nil {
		t.Errorf("grant of the late approval after a restart: %v, %v", g, err)
	}
}

// A one-time grant consumed by an append that triggers a compaction stays consumed after a
// restart: otherwise the approved statement could run a second time.
func TestFileStoreGrantConsumedAtCompactionStaysConsumed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "approvals.journal")
	s, r := lateGrant(t, path, false)
	compactNext(s)
	if g, err := s.ConsumeGrant(ctx, r.Hash, r.Rule, r.RuleDigest, time.Now()); err != nil || g == nil {
		t.Fatalf("consume the grant: %v, %v", g, err)
	}
	s.Close()
	s, err := OpenFileStore(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g, err := s.ConsumeGrant(ctx, r.Hash, r.Rule, r.RuleDigest, time.Now()); err != nil || g != nil {
		t.Errorf("a consumed grant was consumed again after a restart: %+v, %v", g, err)
	}
}
