package record

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func str(s string) *string { return &s }

// sessionEvents is a small but complete session: start, statements of each verdict, results,
// a notice, an approval, end.
func sessionEvents(id string) []Event {
	return []Event{
		{Type: TypeSessionStart, Session: id, Start: &SessionStart{
			CgroupID: 4242, CgroupPath: "/enforcer.slice/run-1", ClientParams: map[string]string{"application_name": "psql", "database": "app"},
			Identity: Identity{Email: "alice@example.com", Groups: []string{"eng"}, Provider: "https://idp.example", Subject: "u-1"},
			Origin:   "198.18.0.2:5432", Process: Process{Cmdline: []string{"psql", "-h", "db"}, Comm: "psql", Exe: "/usr/bin/psql", PID: 99, UID: 1000},
			Protocol: "postgres", Target: Target{Address: "198.18.0.2:5432", Database: "app", Name: "prod-db", User: "agent_ro"},
		}},
		{Type: TypeStatement, Session: id, Statement: &Statement{Class: "read", Protocol: "simple", Text: "SELECT id, email FROM users ORDER BY id LIMIT 2", Verdict: VerdictAllow}},
		{Type: TypeResult, Session: id, Result: &Result{Columns: []string{"id", "email"}, CommandTag: "SELECT 2", DurationUS: 1234, RowCount: 2,
			Rows: [][]*string{{str("1"), str("a****@example.com")}, {str("2"), nil}}}},
		{Type: TypeStatement, Session: id, Statement: &Statement{Class: "ddl", Protocol: "simple", Rule: "no-destructive-ddl", Text: "DROP TABLE users", Verdict: VerdictBlock}},
		{Type: TypeNotice, Session: id, Notice: &Notice{Code: "01000", Message: "statement held for approval ap-1", Severity: "NOTICE"}},
		{Type: TypeStatement, Session: id, Statement: &Statement{ApprovalID: "ap-1", Class: "write", Params: []*string{str("7")}, Protocol: "extended", Rule: "writes-need-review", Text: "DELETE FROM orders WHERE id = $1", Verdict: VerdictApprove}},
		{Type: TypeApproval, Session: id, Approval: &Approval{Approvers: []string{"dba"}, ID: "ap-1", State: ApprovalRequested}},
		{Type: TypeApproval, Session: id, Approval: &Approval{By: "bob@example.com", ID: "ap-1", State: ApprovalApproved}},
		{Type: TypeResult, Session: id, Result: &Result{CommandTag: "DELETE 1", RowCount: 1}},
		{Type: TypeSessionEnd, Session: id, End: &SessionEnd{BytesIn: 321, BytesOut: 4567, DurationUS: 2_500_000, Reason: "client closed"}},
	}
}

func openT(t testing.TB, opts Options) *Recorder {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	r, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

func appendAll(t testing.TB, r *Recorder, evs []Event, d Durability) {
	t.Helper()
	for _, ev := range evs {
		if err := r.Append(ev, d); err != nil {
			t.Fatalf("Append %s: %v", ev.Type, err)
		}
	}
}

func mustVerify(t testing.TB, dir string, cp *Checkpoint) *Report {
	t.Helper()
	rep, err := Verify(dir, cp)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("Verify: %v", rep.Problem)
	}
	return rep
}

func TestAppendVerifyRestart(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	appendAll(t, r, sessionEvents("s1"), WriteAhead)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, nil)
	// header + 10 events + final checkpoint
	if rep.Records != 12 || rep.Checkpoints != 1 {
		t.Fatalf("records %d checkpoints %d, want 12 and 1", rep.Records, rep.Checkpoints)
	}
	for i := 0; i < 3; i++ {
		r = openT(t, Options{Dir: dir})
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i+2)), Async)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rep = mustVerify(t, dir, nil)
	if rep.Records != 12+3*11 || rep.FirstSeq != 1 || rep.LastSeq != rep.Records || rep.Epochs != 1 {
		t.Fatalf("after restarts: %+v", rep)
	}
	for _, p := range []string{dir, filepath.Join(dir, "chain.state"), filepath.Join(dir, "host.key"), filepath.Join(dir, segmentName(1))} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func TestRotationKeepsChain(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 2048})
	for i := 0; i < 10; i++ {
		// Rotation happens between batches; write-ahead appends make each record its own batch.
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), WriteAhead)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, nil)
	if rep.Segments < 5 {
		t.Fatalf("only %d segments; rotation did not happen", rep.Segments)
	}
	if r.Stats().Rotations == 0 {
		t.Fatal("no rotation counted")
	}
}

func TestRetentionKeepsVerifiable(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 2048, MaxBytes: 8 << 10})
	for i := 0; i < 30; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), WriteAhead)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(dir)
	if segs[0].Num == 1 {
		t.Fatal("retention removed nothing")
	}
	rep := mustVerify(t, dir, nil)
	if len(rep.Retentions) == 0 || rep.FirstSeq == 1 {
		t.Fatalf("report %+v", rep)
	}
	var total int64
	for _, s := range segs {
		total += s.Size
	}
	if total > 8<<10+2048+4096 {
		t.Fatalf("log is %d bytes after retention", total)
	}
	// Removing the oldest remaining segment by hand is not covered by any retention record.
	os.Remove(segs[0].Path)
	rep, err := Verify(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problem.Kind != KindMissingAnchor {
		t.Fatalf("deleting the first segment by hand: %+v", rep.Problem)
	}
}

func TestRetentionRespectsKeepFrom(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 2048, MaxBytes: 4 << 10, KeepFrom: func() uint64 { return 5 }})
	for i := 0; i < 20; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), WriteAhead)
	}
	r.Close()
	segs, _ := listSegments(dir)
	if segs[0].Num != 1 {
		t.Fatalf("segment 1 holds seq 5 (not shipped) but was removed")
	}
}

func TestChainStateMismatch(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		reason string
	}{
		{"state missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, stateFile)) }, "state file is missing"},
		{"tail removed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, segmentName(1))
			lines, _, _ := readLines(p)
			var b []byte
			for _, l := range lines[:len(lines)-3] {
				b = append(append(b, l...), '\n')
			}
			os.WriteFile(p, b, 0o600)
		}, "records were removed"},
		{"log removed", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, segmentName(1))) }, "log is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openT(t, Options{Dir: dir})
			appendAll(t, r, sessionEvents("s1"), WriteAhead)
			r.Close()
			c.damage(t, dir)
			_, err := Open(Options{Dir: dir})
			var cb *ChainBreakError
			if !errors.As(err, &cb) || !strings.Contains(cb.Reason, c.reason) {
				t.Fatalf("Open after damage: %v, want chain break %q", err, c.reason)
			}
			r, err = Open(Options{Dir: dir, AcceptChainBreak: true})
			if err != nil {
				t.Fatalf("Open with AcceptChainBreak: %v", err)
			}
			appendAll(t, r, sessionEvents("s2"), WriteAhead)
			r.Close()
			rep := mustVerify(t, dir, nil)
			if len(rep.Breaks) != 1 || !strings.Contains(rep.Breaks[0].Reason, c.reason) {
				t.Fatalf("breaks %+v", rep.Breaks)
			}
			// The next start is clean.
			r = openT(t, Options{Dir: dir})
			r.Close()
		})
	}
}

func TestTornTailRecovered(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	appendAll(t, r, sessionEvents("s1"), WriteAhead)
	r.Close()
	p := filepath.Join(dir, segmentName(1))
	f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"data":{"text":"SELECT`)
	f.Close()
	rep := mustVerify(t, dir, nil)
	if len(rep.Notes) != 1 {
		t.Fatalf("torn tail not noted: %+v", rep)
	}
	r = openT(t, Options{Dir: dir})
	appendAll(t, r, sessionEvents("s2"), WriteAhead)
	r.Close()
	rep = mustVerify(t, dir, nil)
	if len(rep.Notes) != 0 {
		t.Fatalf("notes after recovery: %v", rep.Notes)
	}
	recs, err := LoadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rec := range recs {
		if rec.Type == TypeRecovery {
			found = true
		}
	}
	if !found {
		t.Fatal("no recovery record")
	}
}

// TestAppendRejectsBadEvents: each bad event is refused, and leaves nothing behind in the batch
// the good records around it are written in.
func TestAppendRejectsBadEvents(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, AsyncWindow: time.Hour})
	good := Event{Type: TypeNotice, Session: "s", Notice: &Notice{Message: "good"}}
	if err := r.Append(good, Async); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ev   Event
	}{
		{"no payload", Event{Type: TypeStatement, Session: "s"}},
		{"wrong payload", Event{Type: TypeStatement, Session: "s", Result: &Result{}}},
		{"two payloads", Event{Type: TypeStatement, Session: "s", Statement: &Statement{}, Result: &Result{}}},
		{"no session", Event{Type: TypeStatement, Statement: &Statement{}}},
		{"maintenance type", Event{Type: TypeCheckpoint, Session: "s", Checkpoint: &CheckpointData{}}},
	}
	for _, c := range cases {
		if err := r.Append(c.ev, Async); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if err := r.Append(good, Async); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir, nil); err != nil || rep.Problem != nil {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	recs, err := LoadSession(dir, "s")
	if err != nil || len(recs) != 2 {
		t.Fatalf("session s: %d records (%v), want the 2 good ones", len(recs), err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				d := Async
				if i%2 == 0 {
					d = WriteAhead
				}
				for _, ev := range sessionEvents(fmt.Sprintf("g%d-%d", g, i)) {
					if err := r.Append(ev, d); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, nil)
	if want := uint64(8 * 20 * 10); rep.Records < want {
		t.Fatalf("%d records, want ≥ %d", rep.Records, want)
	}
	_ = time.Now
}

// TestStateBehindAfterRotation: a crash between a new segment's header and the state save leaves
// the state one record behind the newest segment; Open accepts that, and an older state that
// still matches the log too, but not one that names a different hash.
func TestStateBehindAfterRotation(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 2048})
	for i := 0; i < 4; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), WriteAhead)
	}
	r.Close()
	segs, _ := listSegments(dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	newest := segs[len(segs)-1]
	hdr, err := firstRecord(newest.Path)
	if err != nil {
		t.Fatal(err)
	}
	prevSeg := segs[len(segs)-2]
	older, err := firstRecord(prevSeg.Path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		st   chainState
		ok   bool
	}{
		{"header links to state", chainState{Hash: hdr.Prev, Seq: hdr.Seq - 1, Segment: prevSeg.Num}, true},
		{"older state matches", chainState{Hash: older.Hash, Seq: older.Seq, Segment: prevSeg.Num}, true},
		{"header links elsewhere", chainState{Hash: older.Hash, Seq: hdr.Seq - 1, Segment: prevSeg.Num}, false},
		{"older state differs", chainState{Hash: hdr.Prev, Seq: older.Seq, Segment: prevSeg.Num}, false},
	}
	for _, c := range cases {
		if err := saveState(dir, c.st, nil); err != nil {
			t.Fatal(err)
		}
		r, err := Open(Options{Dir: dir})
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		var cb *ChainBreakError
		if !c.ok && !errors.As(err, &cb) {
			t.Errorf("%s: %v, want a chain break", c.name, err)
		}
		if r != nil {
			r.Close()
		}
	}
	// The state last saved names a hash the log does not have at its seq: verify says so too.
	if rep, err := Verify(dir, nil); err != nil || rep.Problem == nil || rep.Problem.Kind != KindHashMismatch || !strings.Contains(rep.Problem.Detail, stateFile) {
		t.Errorf("verify with a state the log disagrees with: %v %+v", err, rep.Problem)
	}
	if err := saveState(dir, cases[0].st, nil); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, dir, nil)
}

func TestDurabilityFor(t *testing.T) {
	cases := []struct {
		inert   bool
		verdict string
		want    Durability
	}{
		{true, VerdictAllow, Async},
		{false, VerdictAllow, WriteAhead},
		{true, VerdictApprove, WriteAhead},
		{false, VerdictApprove, WriteAhead},
		{false, VerdictBlock, Async},
	}
	for _, c := range cases {
		if got := DurabilityFor(c.inert, c.verdict); got != c.want {
			t.Errorf("DurabilityFor(%v, %s) = %v, want %v", c.inert, c.verdict, got, c.want)
		}
	}
}

func TestOneRecorderPerDir(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	if _, err := Open(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second recorder on one dir: %v", err)
	}
	r.Close()
	r = openT(t, Options{Dir: dir})
	r.Close()
}

func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	// The recorder's clock runs two days ahead of the segments' modification times.
	r := openT(t, Options{Dir: dir, SegmentBytes: 2048, MaxAge: 24 * time.Hour, Now: func() time.Time { return time.Now().Add(48 * time.Hour) }})
	for i := 0; i < 10; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), WriteAhead)
	}
	r.Close()
	segs, _ := listSegments(dir)
	if len(segs) > 2 || segs[0].Num == 1 {
		t.Fatalf("old segments kept: %d segments from %d", len(segs), segs[0].Num)
	}
	rep := mustVerify(t, dir, nil)
	if len(rep.Retentions) == 0 || !strings.Contains(rep.Retentions[0].Reason, "max_age") {
		t.Fatalf("retentions %+v", rep.Retentions)
	}
}

// TestAsyncBytesWakeWriter: queued async records are written as soon as AsyncBytes of them wait,
// not only when AsyncWindow ends; fewer wait for the window (here an hour: for Close).
func TestAsyncBytesWakeWriter(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, AsyncWindow: time.Hour, SyncInterval: time.Hour, AsyncBytes: 4096})
	base := r.Stats().Records // the segment's header
	ev := Event{Type: TypeStatement, Session: "s-1", Statement: &Statement{Text: strings.Repeat("x", 1000), Verdict: VerdictAllow}}
	appendAll(t, r, []Event{ev, ev, ev}, Async)
	if n := r.Stats().Records - base; n != 0 {
		t.Fatalf("%d records written before AsyncBytes were queued", n)
	}
	appendAll(t, r, []Event{ev}, Async) // past 4096 bytes
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().Records-base < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("queued records past AsyncBytes not written: %d of 4", r.Stats().Records-base)
		}
		time.Sleep(time.Millisecond)
	}
	appendAll(t, r, []Event{ev}, Async)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, nil); rep.Records < 5 {
		t.Fatalf("verify saw %d records", rep.Records)
	}
}

// TestFollowerAcrossRotation: a follower reading while appends rotate segments every few records
// sees every record once, in order. Readers take a newer segment's existence to mean the older is
// complete, so a rotation must write everything sealed before the new header first.
func TestFollowerAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 4 << 10, AsyncWindow: time.Millisecond, CheckpointEvery: 50})
	fl, err := NewFollower(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				d := Async
				if i%5 == 0 {
					d = WriteAhead
				}
				ev := Event{Type: TypeNotice, Session: fmt.Sprintf("g%d", g), Notice: &Notice{Message: fmt.Sprintf("n%d", i)}}
				if err := r.Append(ev, d); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var seen []uint64
	follow := func() {
		batch, err := fl.ReadAvailable(1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range batch {
			seen = append(seen, l.Seq)
		}
	}
	appending := make(chan struct{})
	go func() { wg.Wait(); close(appending) }()
	for done := false; !done; {
		select {
		case <-appending:
			done = true
		default:
			follow()
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	follow()
	rep, err := Verify(dir, nil)
	if err != nil || rep.Problem != nil {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if rep.Segments < 5 {
		t.Fatalf("only %d segments: the test did not rotate", rep.Segments)
	}
	for i, seq := range seen {
		if seq != uint64(i+1) {
			t.Fatalf("record %d read as seq %d: the follower skipped or repeated records around a rotation", i+1, seq)
		}
	}
	if uint64(len(seen)) != rep.LastSeq {
		t.Fatalf("follower read %d records, the log has %d", len(seen), rep.LastSeq)
	}
}

// TestAppendCopiesValues: Append keeps nothing of the caller's once it returns (the guard reuses
// its buffers for the next record). Here every string aliases one buffer the caller overwrites
// right after Append returns, and the slices are changed.
func TestAppendCopiesValues(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, AsyncWindow: time.Hour})
	buf := []byte("SELECT a FROM t WHERE id = $1|42|a|7|SELECT 1|read")
	view := func(from, to int) string { return unsafe.String(&buf[from], to-from) }
	param, cell := view(30, 32), view(35, 36)
	st := &Statement{Text: view(0, 29), Class: view(46, 50), Protocol: "extended", Verdict: VerdictAllow, Params: []*string{&param, nil},
		Result: &Result{Columns: []string{view(33, 34)}, ColumnTypes: []uint32{23}, CommandTag: view(37, 45), RowCount: 1, Rows: [][]*string{{&cell}}}}
	if err := r.Append(Event{Type: TypeStatement, Session: "s", Statement: st}, Async); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 'X'
	}
	st.Params[1], st.Result.Columns[0], st.Result.ColumnTypes[0] = &param, "Y", 1
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := LoadSession(dir, "s")
	if err != nil || len(recs) != 1 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	want := `{"class":"read","params":["42",null],"protocol":"extended","result":{"column_types":[23],"columns":["a"],"command_tag":"SELECT 1","row_count":1,"rows":[["7"]]},"text":"SELECT a FROM t WHERE id = $1","verdict":"allow"}`
	if got := string(recs[0].Data); got != want {
		t.Fatalf("recorded\n%s\nwant\n%s", got, want)
	}
}
