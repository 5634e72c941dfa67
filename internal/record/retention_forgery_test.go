package record

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestForgedRetentionDoesNotHideCheckpointedRecords: deleting the oldest segments, the exported
// checkpoint's record among them, and appending a retention record that claims the deletion (no
// key needed) fails Verify against the checkpoint; a real retention that removed that record
// passes.
func TestForgedRetentionDoesNotHideCheckpointedRecords(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 3000, Now: clock})
	appendAll(t, r, sessionEvents("a"), WriteAhead)
	cp, err := r.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("b%d", i)), WriteAhead)
	}
	r.Close()
	mustVerify(t, dir, &cp)

	// The forgery: the segments up to the first one that starts after cp.Seq go, and a
	// retention record naming them is appended to the newest segment.
	l := readLog(t, dir)
	k := -1
	var h Record
	for i := range l.lines {
		if h, _, _ = parseLine(l.lines[i][0]); h.Seq > cp.Seq+1 {
			k = i
			break
		}
	}
	if k < 1 {
		t.Fatal("want segments after the checkpoint")
	}
	forged := forgeRetention(t, l, k)
	if rep, err := Verify(forged, nil); err != nil || !rep.OK() {
		t.Fatalf("the forgery is a well-formed log (%v %v); only the checkpoint can tell", err, rep.Problem)
	}
	rep, err := Verify(forged, &cp)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problem.Kind != KindMissingAnchor {
		t.Fatalf("segments removed under a forged retention record verified against the checkpoint: %+v %v", rep.Problem, rep.Notes)
	}

	// The real thing: retention by age removes the same segments.
	now = now.Add(48 * time.Hour)
	ageOut(t, dir, k, now, clock)
	rep = mustVerify(t, dir, &cp)
	if rep.FirstSeq <= cp.Seq || len(rep.Retentions) == 0 {
		t.Fatalf("retention did not remove the checkpointed record: first seq %d, checkpoint %d", rep.FirstSeq, cp.Seq)
	}
}

// forgeRetention writes to a new directory the log l without its k oldest segments, with a
// retention record that claims their removal appended to the newest: sealed as the recorder
// seals records, signed by no one (whoever can write the files can do as much).
func forgeRetention(t *testing.T, l *logLines, k int) string {
	t.Helper()
	h, _, _ := parseLine(l.lines[k][0])
	l.names, l.lines = l.names[k:], l.lines[k:]
	last := len(l.lines) - 1
	tail, _, _ := parseLine(l.lines[last][len(l.lines[last])-1])
	data := fmt.Sprintf(`{"anchor_hash":"%s","anchor_seq":%d,"first_segment":%d,"reason":"max_age 720h0m0s","removed_bytes":9000,"removed_from":1,"removed_to":%d}`, h.Prev, h.Seq-1, k+1, k)
	var s sealer
	line, _ := s.seal(nil, []byte(data), nil, []byte(tail.Hash), tail.Seq+1, []byte(tail.Time), TypeRetention)
	l.lines[last] = append(l.lines[last], bytes.TrimSuffix(line, []byte("\n")))
	forged := t.TempDir()
	l.write(t, forged)
	return forged
}

// ageOut makes the k oldest segments of the log in dir older than a day at now and the others
// young, then opens and closes the log with a day's max_age, so retention removes those k.
func ageOut(t *testing.T, dir string, k int, now time.Time, clock func() time.Time) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
	for i, p := range segs {
		ts := now
		if i < k {
			ts = now.Add(-72 * time.Hour)
		}
		os.Chtimes(p, ts, ts)
	}
	r := openT(t, Options{Dir: dir, SegmentBytes: 3000, Now: clock, MaxAge: 24 * time.Hour})
	r.Close()
}
