package record

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// A checkpoint request taken together with a batch whose write fails is answered with the
// failure, and Close does not leave it waiting.
func TestCheckpointAnsweredAfterWriteFailure(t *testing.T) {
	r := openT(t, Options{AsyncWindow: 5 * time.Second})
	appendAll(t, r, sessionEvents("s")[:2], WriteAhead)
	r.f.Close() // the next write fails (EBADF)
	if err := r.Append(sessionEvents("s")[1], Async); err != nil {
		t.Fatalf("async append: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.Checkpoint(); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Checkpoint succeeded on a failed log")
		}
		r.Close()
		return
	case <-time.After(3 * time.Second):
		t.Errorf("Checkpoint() still blocked 3s after the log failed (Err()=%v)", r.Err())
	}
	r.Close()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Errorf("Checkpoint() still blocked after Close")
	}
}

// A log wiped down to one segment holding an incomplete line does not verify against a
// checkpoint.
func TestVerifyWipedLogAgainstCheckpoint(t *testing.T) {
	for _, rest := range []string{"x", `{"seq":1`} {
		dir := t.TempDir()
		r := openT(t, Options{Dir: dir})
		appendAll(t, r, sessionEvents("s"), WriteAhead)
		cp, err := r.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		mustVerify(t, dir, &cp)
		segs, _ := listSegments(dir)
		for _, s := range segs {
			os.Remove(s.Path)
		}
		os.WriteFile(filepath.Join(dir, segmentName(1)), []byte(rest), 0o600)
		rep, err := Verify(dir, &cp)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || rep.Problem.Kind != KindTruncated {
			t.Errorf("%q: log wiped to an incomplete line: problem %v, want %s (records=%d)", rest, rep.Problem, KindTruncated, rep.Records)
		}
		// Without a checkpoint nothing says how long the log was.
		if rep, err := Verify(dir, nil); err != nil || !rep.OK() {
			t.Errorf("%q without checkpoint: %v %v", rest, err, rep.Problem)
		}
	}
}

// Append refuses an event time a record cannot hold, before queueing anything; the years
// 0 and 9999 are written and verify.
func TestAppendTimeOutOfRange(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	for _, tm := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("x", -3600)), // year 10000 in UTC
	} {
		ev := sessionEvents("s")[1]
		ev.Time = tm
		before := r.Stats().Records
		if err := r.Append(ev, WriteAhead); err == nil || !strings.Contains(err.Error(), "0-9999") {
			t.Errorf("%v: Append = %v, want an error about the years", tm, err)
		}
		if got := r.Stats().Records; got != before {
			t.Errorf("%v: %d records written", tm, got-before)
		}
	}
	if r.Err() != nil {
		t.Fatalf("a refused time failed the log: %v", r.Err())
	}
	for _, tm := range []time.Time{
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		ev := sessionEvents("s")[1]
		ev.Time = tm
		if err := r.Append(ev, WriteAhead); err != nil {
			t.Errorf("%v: %v", tm, err)
		}
	}
	r.Close()
	mustVerify(t, dir, nil)
	r2, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	r2.Close()
}

// advClock is a clock a test moves forward.
type advClock struct{ off atomic.Int64 }

func (c *advClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *advClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// agedLog makes a log of several segments, checkpoints it and ages every segment past MaxAge.
func agedLog(t *testing.T, opts Options) (*Recorder, *advClock, []segmentFile) {
	t.Helper()
	clock := &advClock{}
	opts.Dir, opts.SegmentBytes, opts.MaxAge = t.TempDir(), 2000, time.Hour
	opts.SyncInterval, opts.Now = 10*time.Millisecond, clock.now
	r := openT(t, opts)
	for i := 0; i < 3; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprint("s", i)), WriteAhead)
	}
	// The open segment holds session records too (a rotation may have just left it only its
	// header).
	for open := false; !open; {
		appendAll(t, r, sessionEvents("q")[1:2], WriteAhead)
		segs, _ := listSegments(opts.Dir)
		lines, _, _ := readLines(segs[len(segs)-1].Path)
		for _, ln := range lines {
			rec, _, _ := parseLine(ln)
			open = open || isSessionType(rec.Type)
		}
	}
	if _, err := r.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(opts.Dir)
	if len(segs) < 3 {
		t.Fatalf("want several segments, have %d", len(segs))
	}
	old := time.Now().Add(-48 * time.Hour)
	for _, s := range segs {
		os.Chtimes(s.Path, old, old)
	}
	return r, clock, segs
}

// MaxAge applies between rotations: closed segments older than it go, and so does the open one
// once all its session records are older, without a rotation per check afterwards.
func TestMaxAgeWithoutRotation(t *testing.T) {
	r, clock, before := agedLog(t, Options{})
	dir := r.Dir()
	clock.advance(2 * retentionEvery)
	deadline := time.Now().Add(3 * time.Second)
	var segs []segmentFile
	for time.Now().Before(deadline) {
		if segs, _ = listSegments(dir); len(segs) > 0 && segs[0].Num > before[len(before)-1].Num {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(segs) == 0 || segs[0].Num <= before[len(before)-1].Num {
		t.Fatalf("segments %d..%d, 48h old with MaxAge 1h, still on disk (now %v)", before[0].Num, before[len(before)-1].Num, segs)
	}
	rot := r.Stats().Rotations
	clock.advance(2 * retentionEvery)
	time.Sleep(100 * time.Millisecond)
	if got := r.Stats().Rotations; got != rot {
		t.Errorf("%d rotations on a quiet host after its old records went", got-rot)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, nil)
	if len(rep.Retentions) == 0 {
		t.Error("no retention record")
	}
}

// Periodic retention keeps what the fleet sink has not shipped.
func TestMaxAgeWithoutRotationKeepFrom(t *testing.T) {
	r, clock, before := agedLog(t, Options{KeepFrom: func() uint64 { return 1 }})
	clock.advance(2 * retentionEvery)
	time.Sleep(200 * time.Millisecond)
	segs, _ := listSegments(r.Dir())
	if segs[0].Num != before[0].Num {
		t.Errorf("segment %d removed before the sink shipped it", before[0].Num)
	}
	rot := r.Stats().Rotations
	clock.advance(2 * retentionEvery)
	time.Sleep(100 * time.Millisecond)
	if got := r.Stats().Rotations; got != rot {
		t.Errorf("%d rotations while retention waits for the sink", got-rot)
	}
	r.Close()
	mustVerify(t, r.Dir(), nil)
}

// A host key others can read, or that another user owns, stops the recorder with what to run.
func TestHostKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	r.Close()
	key := filepath.Join(dir, keyFile)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620} {
		os.Chmod(key, mode)
		r, err := Open(Options{Dir: dir})
		if err == nil {
			r.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
			t.Errorf("key mode %04o: Open = %v, want a refusal naming chmod 600", mode, err)
		}
	}
	os.Chmod(key, 0o600)
	r = openT(t, Options{Dir: dir})
	r.Close()
	if os.Getuid() != 0 {
		t.Fatal("this test chowns the key: run it as root, like the rest of the suite")
	}
	if err := os.Chown(key, 65534, -1); err != nil {
		t.Fatal(err)
	}
	r, err := Open(Options{Dir: dir})
	if err == nil {
		r.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "chown 0 "+key) {
		t.Errorf("key owned by another uid: Open = %v", err)
	}
}

// LatestCheckpoint exports only a checkpoint that is signed by the log's (this host's) key and
// reports unreadable lines.
func TestLatestCheckpointChecked(t *testing.T) {
	newLog := func() (string, *Recorder) {
		dir := t.TempDir()
		r := openT(t, Options{Dir: dir})
		appendAll(t, r, sessionEvents("s"), WriteAhead)
		return dir, r
	}
	t.Run("ok", func(t *testing.T) {
		dir, r := newLog()
		cp, err := r.Checkpoint()
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		got, err := LatestCheckpoint(dir)
		if err != nil || *got != cp {
			t.Fatalf("LatestCheckpoint = %+v, %v; want %+v", got, err, cp)
		}
	})
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	t.Run("bad signature", func(t *testing.T) {
		dir, r := newLog()
		r.key = other // signs with another key but names the log's
		r.Checkpoint()
		r.Close()
		if cp, err := LatestCheckpoint(dir); err == nil {
			t.Errorf("exported a checkpoint with a bad signature: %+v", cp)
		}
	})
	t.Run("other key", func(t *testing.T) {
		dir, r := newLog()
		r.key, r.pub = other, hex.EncodeToString(other.Public().(ed25519.PublicKey))
		r.Checkpoint()
		r.Close()
		if cp, err := LatestCheckpoint(dir); err == nil {
			t.Errorf("exported a checkpoint signed by a key the log does not declare: %+v", cp)
		}
	})
	t.Run("not this host's key", func(t *testing.T) {
		dir, r := newLog()
		r.Checkpoint()
		r.Close()
		os.WriteFile(filepath.Join(dir, pubFile), []byte(hex.EncodeToString(other.Public().(ed25519.PublicKey))+"\n"), 0o644)
		if cp, err := LatestCheckpoint(dir); err == nil {
			t.Errorf("exported a checkpoint not signed by host.pub's key: %+v", cp)
		}
	})
	t.Run("unreadable line", func(t *testing.T) {
		dir, r := newLog()
		r.Checkpoint()
		r.Close()
		segs, _ := listSegments(dir)
		f, _ := os.OpenFile(segs[len(segs)-1].Path, os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString("garbage\n")
		f.Close()
		if _, err := LatestCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "unreadable") {
			t.Errorf("LatestCheckpoint = %v, want an unreadable line reported", err)
		}
	})
}

// checkCut checks that got is want cut to limit bytes with its marker.
func checkCut(t *testing.T, what, got, want string, limit int) {
	t.Helper()
	i := strings.Index(got, cutMarker)
	if len(want) <= limit {
		if got != want {
			t.Errorf("%s: %q changed to %q", what, want, got)
		}
		return
	}
	if i < 0 {
		t.Fatalf("%s: %d bytes recorded without a cut marker: %.80q", what, len(want), got)
	}
	prefix := got[:i]
	sum := sha256.Sum256([]byte(want))
	marker := fmt.Sprintf("%s%d bytes, sha256 %x]", cutMarker, len(want), sum)
	if got[i:] != marker {
		t.Errorf("%s: marker %q, want %q", what, got[i:], marker)
	}
	keep := max(limit-len(marker), 0)
	if !strings.HasPrefix(want, prefix) || len(prefix) > keep || len(prefix) < keep-utf8.UTFMax+1 {
		t.Errorf("%s: kept %q of %d bytes with limit %d", what, prefix, len(want), limit)
	}
	if limit >= len(marker) && len(got) > limit {
		t.Errorf("%s: cut to %d bytes, over the limit %d", what, len(got), limit)
	}
	if limit >= MinValueBytes && CutValue(got, limit) != got {
		t.Errorf("%s: cut again: %q", what, CutValue(got, limit))
	}
	if utf8.ValidString(want) && !utf8.ValidString(got) {
		t.Errorf("%s: cut inside a UTF-8 sequence: %q", what, got)
	}
}

// Values the agent or the server controls are recorded cut to the caps, with a marker an
// auditor can match; the caller's event is not changed.
func TestValueCaps(t *testing.T) {
	dir := t.TempDir()
	const vmax, tmax = MinValueBytes, 140
	r := openT(t, Options{Dir: dir, MaxValueBytes: vmax, MaxTextBytes: tmax})
	// With their markers (92 bytes), both cuts fall inside a character.
	long := "x" + strings.Repeat("é", 100)
	text := "SELECT '" + strings.Repeat("a", 39) + strings.Repeat("€", 50) + "'"
	short := "1"
	st := &Statement{Class: "read", Text: text, Verdict: VerdictAllow, Params: []*string{&short, nil, &long},
		Result: &Result{Columns: []string{"id", long}, RowCount: 2, Rows: [][]*string{{&short, nil}, {&long, &short}}}}
	res := &Result{CommandTag: "SELECT 1", Error: long, RowCount: 1, Rows: [][]*string{{&short}}}
	evs := []Event{
		{Type: TypeSessionStart, Session: "s", Start: &SessionStart{Protocol: "postgres",
			ClientParams: map[string]string{"application_name": long, long: "x"}, Process: Process{Cmdline: []string{"psql", long}}}},
		{Type: TypeStatement, Session: "s", Statement: st},
		{Type: TypeResult, Session: "s", Result: res},
		{Type: TypeNotice, Session: "s", Notice: &Notice{Message: long, Severity: "NOTICE"}},
	}
	appendAll(t, r, evs, WriteAhead)
	r.Close()
	// The caller's values are as they were.
	if st.Text != text || *st.Params[2] != long || *st.Result.Rows[1][0] != long || st.Result.Truncated || res.Error != long || evs[3].Notice.Message != long {
		t.Fatal("Append changed the caller's event")
	}
	mustVerify(t, dir, nil)
	segs, _ := listSegments(dir)
	lines, _, _ := readLines(segs[0].Path)
	got := map[Type]Event{}
	for _, ln := range lines {
		rec, _, err := parseLine(ln)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := rec.Event()
		if err != nil {
			t.Fatal(err)
		}
		got[rec.Type] = ev
	}
	gs := got[TypeStatement].Statement
	checkCut(t, "text", gs.Text, text, tmax)
	checkCut(t, "param 0", *gs.Params[0], short, vmax)
	if gs.Params[1] != nil {
		t.Error("NULL param recorded as a value")
	}
	checkCut(t, "param 2", *gs.Params[2], long, vmax)
	checkCut(t, "column", gs.Result.Columns[1], long, vmax)
	checkCut(t, "cell", *gs.Result.Rows[1][0], long, vmax)
	checkCut(t, "cell", *gs.Result.Rows[0][0], short, vmax)
	if !gs.Result.Truncated {
		t.Error("result with a cut cell not marked truncated")
	}
	gr := got[TypeResult].Result
	checkCut(t, "error", gr.Error, long, vmax)
	checkCut(t, "notice", got[TypeNotice].Notice.Message, long, vmax)
	gst := got[TypeSessionStart].Start
	checkCut(t, "client param", gst.ClientParams["application_name"], long, vmax)
	checkCut(t, "cmdline", gst.Process.Cmdline[1], long, vmax)
	if len(gst.ClientParams) != 2 {
		t.Errorf("client params %q", gst.ClientParams)
	}
}

// The default caps: a cell of a few hundred KiB is kept to 64 KiB, a statement text to 1 MiB.
func TestValueCapsDefault(t *testing.T) {
	r := openT(t, Options{})
	defer r.Close()
	big := strings.Repeat("x", 300<<10)
	text := strings.Repeat("y", 3<<20)
	ev := Event{Type: TypeStatement, Session: "s", Statement: &Statement{Text: text, Verdict: VerdictAllow,
		Result: &Result{RowCount: 1, Rows: [][]*string{{&big}}}}}
	r.capValues(&ev)
	checkCut(t, "text", ev.Statement.Text, text, 1<<20)
	checkCut(t, "cell", *ev.Statement.Result.Rows[0][0], big, 64<<10)
}

// Values under the caps cost no copy and no allocation.
func TestValueCapsNoCopy(t *testing.T) {
	r := openT(t, Options{})
	defer r.Close()
	for _, ev := range sessionEvents("s") {
		orig := ev
		allocs := testing.AllocsPerRun(100, func() {
			e := orig
			r.capValues(&e)
			if e != orig {
				t.Fatalf("%s: payload copied though nothing was cut", orig.Type)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations", ev.Type, allocs)
		}
	}
}

func FuzzCutValue(f *testing.F) {
	f.Add("héllo wörld", 4)
	f.Add("\xff\xfe\x80\x80\x80abc", 3)
	f.Add("€€€", 2)
	f.Add(strings.Repeat("€", 300), MinValueBytes)
	f.Add("", -1)
	f.Add("\x80", -5)
	f.Add(strings.Repeat("x", 1000)+"\xff", 200)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		if limit > 1<<20 {
			return
		}
		got := CutValue(s, limit)
		limit = max(limit, 0)
		if len(s) <= limit {
			if got != s {
				t.Fatalf("%q under the limit changed to %q", s, got)
			}
			return
		}
		checkCut(t, "value", got, s, limit)
	})
}

// BenchmarkCapValues is what the value caps add to an Append with nothing to cut.
func BenchmarkCapValues(b *testing.B) {
	r := openT(b, Options{})
	defer r.Close()
	rows := make([][]*string, 100)
	for i := range rows {
		rows[i] = []*string{str("1"), str("a****@example.com"), nil, str("2026-01-01")}
	}
	for _, ev := range []Event{
		{Type: TypeStatement, Session: "s", Statement: &Statement{Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1", Params: []*string{str("48213")}, Verdict: VerdictAllow}},
		{Type: TypeResult, Session: "s", Result: &Result{Columns: []string{"a", "b", "c", "d"}, CommandTag: "SELECT 100", RowCount: 100, Rows: rows}},
	} {
		b.Run(string(ev.Type), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				e := ev
				r.capValues(&e)
			}
		})
	}
}
