package record

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDurable: Durable names the last record on disk. Async records are not durable until the
// writer syncs them; a write-ahead record is by the time Append returns; a log reopened after a
// crash is durable up to its last record as soon as Open returns.
func TestDurable(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SyncInterval: 3600e9})
	ev := Event{Type: TypeStatement, Session: "s1", Statement: &Statement{Text: "SELECT 1", Verdict: VerdictAllow}}
	if err := r.Append(ev, WriteAhead); err != nil {
		t.Fatal(err)
	}
	wa := r.Durable()
	if wa < 2 {
		t.Fatalf("Durable() = %d after a write-ahead record (seq 2)", wa)
	}
	for range 5 {
		if err := r.Append(ev, Async); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.Durable(); got != wa {
		t.Fatalf("Durable() = %d with async records unsynced, want %d", got, wa)
	}
	if err := r.Append(ev, WriteAhead); err != nil {
		t.Fatal(err)
	}
	if got := r.Durable(); got != wa+6 {
		t.Fatalf("Durable() = %d after a write-ahead record behind 5 async ones, want %d", got, wa+6)
	}
	r.Close()
	r2 := openT(t, Options{Dir: dir})
	defer r2.Close()
	if got, last := r2.Durable(), lastSeq(t, dir); got != last {
		t.Fatalf("Durable() = %d after Open, the log ends at %d", got, last)
	}
}

// TestChainBreakStartsNewLog: after a tail truncation is accepted, the records that follow are a
// new log: a new segment whose header names a new log id, so a copy of the log keyed by log and
// seq never takes them for the removed records whose seqs they reuse.
func TestChainBreakStartsNewLog(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	ev := Event{Type: TypeStatement, Session: "s1", Statement: &Statement{Text: "SELECT 1", Verdict: VerdictAllow}}
	for range 20 {
		if err := r.Append(ev, WriteAhead); err != nil {
			t.Fatal(err)
		}
	}
	oldLog := r.LogID()
	r.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*"))
	b, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if err := os.WriteFile(segs[len(segs)-1], bytes.Join(lines[:len(lines)-6], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	r2 := openT(t, Options{Dir: dir, AcceptChainBreak: true})
	newLog := r2.LogID()
	r2.Close()
	if newLog == oldLog {
		t.Fatal("the log goes on under its old id after a chain break")
	}
	starts, err := SegmentStarts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(starts) != 2 || starts[0].LogID != oldLog || starts[1].LogID != newLog || starts[1].Seq <= starts[0].Seq {
		t.Fatalf("segments after the break: %+v (old log %s, new %s)", starts, oldLog, newLog)
	}
	if rep, err := Verify(dir, nil); err != nil || !rep.OK() {
		t.Fatalf("verify after the break: %v %+v", err, rep)
	}
}

func lastSeq(t *testing.T, dir string) uint64 {
	t.Helper()
	all, err := LoadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	return all[len(all)-1].Seq
}
