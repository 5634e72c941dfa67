package record

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestForgedRetentionDoesNotHideRecordsBeforeCheckpoint: the exported checkpoint's hash commits
// to every record before it, so deleting the oldest segments (all before the checkpoint's
// record, which stays) and appending an unsigned retention record that claims the deletion fails
// Verify against the checkpoint; a real retention that removed the same segments passes.
func TestForgedRetentionDoesNotHideRecordsBeforeCheckpoint(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 3000, Now: clock})
	for i := 0; i < 5; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), WriteAhead)
	}
	cp, err := r.Checkpoint() // exported after every session: the usual, latest one
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, r, sessionEvents("after"), WriteAhead)
	r.Close()
	mustVerify(t, dir, &cp)

	// The forgery: the two oldest segments go (the checkpoint's record is far later), and a
	// retention record naming them is appended to the newest segment.
	const k = 2
	l := readLog(t, dir)
	if len(l.lines) < k+2 {
		t.Fatalf("want more than %d segments, have %d", k+1, len(l.lines))
	}
	h, _, _ := parseLine(l.lines[k][0])
	if h.Seq >= cp.Seq {
		t.Fatalf("segment %d starts at seq %d, not before the checkpoint's %d", k+1, h.Seq, cp.Seq)
	}
	forged := forgeRetention(t, l, k)
	rep, err := Verify(forged, &cp)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problem.Kind != KindMissingAnchor {
		t.Fatalf("segments before the checkpoint removed under a forged retention record verified against it: %+v %v", rep.Problem, rep.Notes)
	}

	// The real thing: retention by age removes the same segments.
	now = now.Add(48 * time.Hour)
	ageOut(t, dir, k, now, clock)
	rep = mustVerify(t, dir, &cp)
	if rep.FirstSeq != h.Seq || len(rep.Retentions) == 0 || rep.Checkpoint == nil || !rep.Checkpoint.Matched {
		t.Fatalf("after real retention: first seq %d (want %d), retentions %v, checkpoint %+v", rep.FirstSeq, h.Seq, rep.Retentions, rep.Checkpoint)
	}
}

// TestVerifyEmptyNewestSegmentIsNotTampering: the recorder creates a segment and then writes its
// header, so a log read at that moment (or left so by a crash there, which Open cleans up) has
// an empty newest segment: Verify notes it and passes, and the same empty segment before another
// one still fails.
func TestVerifyEmptyNewestSegmentIsNotTampering(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	appendAll(t, r, sessionEvents("a"), WriteAhead)
	cp, err := r.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	next := filepath.Join(dir, segmentName(segs[len(segs)-1].Num+1))
	if err := os.WriteFile(next, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, &cp)
	if len(rep.Notes) == 0 {
		t.Errorf("empty newest segment not noted")
	}
	after := filepath.Join(dir, segmentName(segs[len(segs)-1].Num+2))
	if err := os.WriteFile(after, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir, &cp); err != nil || rep.OK() || rep.Problem.Kind != KindBadSegment {
		t.Fatalf("an empty segment before another one: %v %+v", err, rep.Problem)
	}
}
