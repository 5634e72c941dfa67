package pgsink

import (
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestSinkShipsBacklogOfLargeRecords: a backlog of records that together exceed what PostgreSQL
// takes in one message (1 GB) is shipped, not retried as one batch forever. (It writes a 540 MB
// log: nothing smaller reaches the limit.)
func TestSinkShipsBacklogOfLargeRecords(t *testing.T) {
	_, dsn := sinkDB(t)
	dir := t.TempDir()
	rec, err := record.Open(record.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB of '<' (the default cap of a statement's text) is 6 MiB in the log: \u003c.
	text := strings.Repeat("<", 1<<20)
	for i := 0; i < 90; i++ {
		if err := rec.Append(record.Event{Type: record.TypeStatement, Session: "s1",
			Statement: &record.Statement{Text: text, Verdict: record.VerdictAllow}}, record.Async); err != nil {
			t.Fatal(err)
		}
	}
	rec.Close()
	rep, err := record.Verify(dir, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problem)
	}
	s := newSink(t, Config{Dir: dir, ConnString: dsn, Host: "big", Poll: 10 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	st := shipUntil(t, s, rep.LastSeq, 4*time.Minute) // stuck forever without the byte bound; about 20 s, 60 under -race
	if st.Shipped < rep.LastSeq {
		t.Fatalf("sink stuck at %d of %d: %+v", st.Shipped, rep.LastSeq, st)
	}
}
