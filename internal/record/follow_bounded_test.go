package record

import (
	"strings"
	"testing"
)

// TestFollowerReadAheadBounded: a Follower (the fleet sink's reader, inside the daemon) behind on
// a log of large records holds about followBytes of them in memory, not thousands of records.
func TestFollowerReadAheadBounded(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 8 << 20})
	text := strings.Repeat("<", 1<<20) // 6 MiB in the log
	for i := 0; i < 24; i++ {
		appendAll(t, r, []Event{{Type: TypeStatement, Session: "s", Statement: &Statement{Text: text, Verdict: VerdictAllow}}}, WriteAhead)
	}
	r.Close()
	f, err := NewFollower(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for seen < 30 {
		lines, err := f.ReadAvailable(1)
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) == 0 {
			break
		}
		seen++
		held := 0
		for _, q := range f.queued {
			held += len(q.line)
		}
		if held > 48<<20 { // followBytes and one segment
			t.Fatalf("after %d records the follower holds %d bytes ahead (%d records)", seen, held, len(f.queued))
		}
	}
	if seen < 24 {
		t.Fatalf("read %d records, want the whole log", seen)
	}
}
