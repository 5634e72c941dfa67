package record

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const crashChildEnv = "ENFORCER_RECORD_CRASH_CHILD"

// crashChild appends write-ahead records from several goroutines and prints the text of each one
// whose Append returned, until it is killed.
func crashChild(dir string) {
	r, err := Open(Options{Dir: dir, SegmentBytes: 16 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				text := fmt.Sprintf("UPDATE t SET v = %d WHERE g = %d", i, g)
				d := WriteAhead
				if i%3 == 0 {
					// Async reads are interleaved; they are not acknowledged as durable.
					if err := r.Append(Event{Type: TypeStatement, Session: "read", Statement: &Statement{Text: "SELECT 1", Verdict: VerdictAllow}}, Async); err != nil {
						fmt.Fprintln(os.Stderr, "append:", err)
						os.Exit(3)
					}
				}
				if err := r.Append(Event{Type: TypeStatement, Session: fmt.Sprintf("g%d", g), Statement: &Statement{Class: "write", Text: text, Verdict: VerdictAllow}}, d); err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(3)
				}
				mu.Lock()
				os.Stdout.WriteString(text + "\n")
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashDurability kills a process that appends write-ahead records with SIGKILL mid-run, several
// times over the same log: every Append that returned before the kill is in the log after reopening,
// and the chain verifies. (SIGKILL keeps the page cache; the fdatasync ordering that also covers
// power loss is what write-ahead Append waits for.)
func TestCrashDurability(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDurability$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		n := 0
		killAt := 200 + 150*round
		for sc.Scan() {
			acked[sc.Text()] = true
			n++
			if n == killAt {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v after %d acks, stderr: %s", round, err, n, stderr.String())
		}
		// Reopening must not need AcceptChainBreak.
		r, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		r.Close()
		recs, err := LoadAll(dir)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, rec := range recs {
			if rec.Type == TypeStatement {
				ev, _ := rec.Event()
				have[ev.Statement.Text] = true
			}
		}
		for text := range acked {
			if !have[text] {
				t.Fatalf("round %d: acknowledged write-ahead record %q lost", round, text)
			}
		}
		rep := mustVerify(t, dir, nil)
		if rep.Epochs != 1 {
			t.Fatalf("round %d: chain breaks after crash: %+v", round, rep.Breaks)
		}
		t.Logf("round %d: %d acknowledged, %d records, %d segments", round, len(acked), rep.Records, rep.Segments)
	}
}

// TestFailClosedDiskFull fills a small tmpfs: Append must return an error (the caller refuses the
// statement), every later Append too, and the failure is counted.
func TestFailClosedDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	r := openT(t, Options{Dir: dir})
	big := strings.Repeat("x", 4000)
	var err error
	n := 0
	for ; n < 100; n++ {
		err = r.Append(Event{Type: TypeStatement, Session: "s", Statement: &Statement{Text: big, Verdict: VerdictAllow}}, WriteAhead)
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrLogFailed) || !errors.Is(r.Err(), ErrLogFailed) {
		t.Fatalf("after %d appends to a full disk: err %v", n, err)
	}
	if !strings.Contains(err.Error(), "no space") {
		t.Errorf("error does not say why: %v", err)
	}
	for _, d := range []Durability{Async, WriteAhead} {
		if err := r.Append(sessionEvents("s")[1], d); !errors.Is(err, ErrLogFailed) {
			t.Fatalf("%v append after failure: %v", d, err)
		}
	}
	if _, err := r.Checkpoint(); err == nil {
		t.Fatal("checkpoint after failure succeeded")
	}
	if st := r.Stats(); st.Failures < 3 {
		t.Fatalf("failures counted %d", st.Failures)
	}
	if err := r.Close(); err == nil {
		t.Fatal("Close hid the failure")
	}
}

// TestFailClosedClosedFile closes the segment under the writer (the EBADF/EIO path).
func TestFailClosedClosedFile(t *testing.T) {
	r := openT(t, Options{})
	appendAll(t, r, sessionEvents("s")[:2], WriteAhead)
	r.f.Close()
	// An async append returns once queued; the write fails behind it and the next write-ahead
	// append (which would take it along anyway) reports the failure.
	if err := r.Append(sessionEvents("s")[1], Async); err != nil {
		t.Fatalf("async append: %v", err)
	}
	if err := r.Append(sessionEvents("s")[1], WriteAhead); !errors.Is(err, ErrLogFailed) {
		t.Fatalf("write-ahead append to closed file: %v", err)
	}
	if err := r.Append(sessionEvents("s")[1], Async); !errors.Is(err, ErrLogFailed) {
		t.Fatalf("async append after failure: %v", err)
	}
	r.Close()
	if err := r.Append(sessionEvents("s")[1], Async); err == nil {
		t.Fatal("append after Close succeeded")
	}
}

// diskDir is a temporary directory on a real disk (/var/tmp), even when TMPDIR is a tmpfs where
// fsync costs nothing and no batch would ever form.
func diskDir(t *testing.T) string {
	d, err := os.MkdirTemp("/var/tmp", "enforcer-record-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// TestGroupCommitBatches checks that concurrent write-ahead appends share fsyncs.
func TestGroupCommitBatches(t *testing.T) {
	cases := []struct {
		name       string
		goroutines int
		strict     bool
		d          Durability
	}{
		{"write-ahead x16", 16, false, WriteAhead},
		{"strict async x16", 16, true, Async},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := openT(t, Options{Dir: diskDir(t), Strict: c.strict})
			before := r.Stats()
			var wg sync.WaitGroup
			const per = 50
			for g := 0; g < c.goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						if err := r.Append(Event{Type: TypeStatement, Session: "s", Statement: &Statement{Text: "UPDATE t SET x = 1", Verdict: VerdictAllow}}, c.d); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			st := r.Stats()
			r.Close()
			recs := st.Records - before.Records
			fsyncs := st.Fsyncs - before.Fsyncs
			t.Logf("%d records, %d fsyncs, %.1f records per fsync, max batch %d", recs, fsyncs, float64(recs)/float64(fsyncs), st.MaxBatch)
			if fsyncs == 0 || fsyncs*2 > recs || st.MaxBatch < 2 {
				t.Fatalf("no group commit: %d records, %d fsyncs, max batch %d", recs, fsyncs, st.MaxBatch)
			}
			var inBuckets uint64
			for _, n := range st.BatchSizes {
				inBuckets += n
			}
			if inBuckets != st.Batches || st.BatchSizes[0] == st.Batches {
				t.Fatalf("batch size histogram %v for %d batches", st.BatchSizes, st.Batches)
			}
		})
	}
}

// TestAsyncDoesNotFsyncPerRecord: async appends alone are synced by the timer, not per record.
func TestAsyncDoesNotFsyncPerRecord(t *testing.T) {
	r := openT(t, Options{})
	before := r.Stats().Fsyncs
	for i := 0; i < 500; i++ {
		if err := r.Append(Event{Type: TypeStatement, Session: "s", Statement: &Statement{Text: "SELECT 1", Verdict: VerdictAllow}}, Async); err != nil {
			t.Fatal(err)
		}
	}
	fs := r.Stats().Fsyncs - before
	r.Close()
	if fs > 50 {
		t.Fatalf("%d fsyncs for 500 async appends", fs)
	}
}

// TestTimers: async-only records are synced within SyncInterval and a checkpoint is made after
// CheckpointInterval, without any further Append.
func TestTimers(t *testing.T) {
	r := openT(t, Options{SyncInterval: 20 * time.Millisecond, CheckpointInterval: 50 * time.Millisecond})
	defer r.Close()
	before := r.Stats()
	appendAll(t, r, sessionEvents("s"), Async)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := r.Stats()
		if st.Fsyncs > before.Fsyncs && st.Checkpoints > before.Checkpoints {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no timed sync or checkpoint: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestResultRowCap(t *testing.T) {
	cases := []struct {
		cap, rows, want int
		truncated       bool
	}{
		{0, 150, 100, true}, // default cap
		{5, 3, 3, false},
		{5, 5, 5, false},
		{5, 6, 5, true},
		{-1, 4, 0, true},
	}
	for _, c := range cases {
		dir := t.TempDir()
		r := openT(t, Options{Dir: dir, MaxResultRows: c.cap})
		rows := make([][]*string, c.rows)
		for i := range rows {
			rows[i] = []*string{str(fmt.Sprint(i))}
		}
		res := &Result{Columns: []string{"n"}, RowCount: int64(c.rows), Rows: rows}
		appendAll(t, r, []Event{{Type: TypeResult, Session: "s", Result: res}}, Async)
		r.Close()
		if len(res.Rows) != c.rows {
			t.Fatal("Append changed the caller's result")
		}
		recs, _ := LoadSession(dir, "s")
		ev, _ := recs[0].Event()
		if len(ev.Result.Rows) != c.want || ev.Result.Truncated != c.truncated || ev.Result.RowCount != int64(c.rows) {
			t.Errorf("cap %d rows %d: kept %d truncated %v count %d", c.cap, c.rows, len(ev.Result.Rows), ev.Result.Truncated, ev.Result.RowCount)
		}
	}
}

// TestBackpressure: with a tiny queue, many async appenders wait for the writer instead of being
// refused, and every record arrives.
func TestBackpressure(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, MaxPending: 4, AsyncWindow: 5 * time.Millisecond})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if err := r.Append(Event{Type: TypeStatement, Session: fmt.Sprint(g), Statement: &Statement{Text: "SELECT 1", Verdict: VerdictAllow}}, Async); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	r.Close()
	rep := mustVerify(t, dir, nil)
	if rep.Records < 800 {
		t.Fatalf("%d records", rep.Records)
	}
}

// TestThreadWaits: the real counter is the calling thread's, and a thread that sleeps waits.
func TestThreadWaits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, ok := threadWaits()
	if !ok {
		t.Fatal("getrusage(RUSAGE_THREAD) failed")
	}
	// The thread itself sleeps in the kernel. (time.Sleep parks the goroutine, and its locked
	// thread could find the wake-up already posted and not sleep at all: CI, 2026-12-07.)
	if err := unix.Nanosleep(&unix.Timespec{Nsec: int64(time.Millisecond)}, nil); err != nil {
		t.Fatal(err)
	}
	if after, _ := threadWaits(); after <= before {
		t.Fatalf("voluntary switches %d before a sleep, %d after", before, after)
	}
}

// TestSlowRawWriteFallsBack: once a raw segment write waits in the kernel longer than
// rawWriteLimit, later writes take the blocking path, and the log stays whole across the switch; a
// write that only took long because the thread was preempted does not switch. The clock here jumps
// 5 ms per reading, so every raw write looks slow, and threadWaits is replaced: a test cannot make
// the page cache wait on demand.
func TestSlowRawWriteFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		waited bool
	}{{"waited", true}, {"preempted", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
			clock := func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				now = now.Add(5 * time.Millisecond)
				return now
			}
			var waits atomic.Int64
			saved := threadWaits
			threadWaits = func() (int64, bool) {
				if tc.waited {
					return waits.Add(1), true
				}
				return waits.Load(), true
			}
			defer func() { threadWaits = saved }()
			dir := t.TempDir()
			r := openT(t, Options{Dir: dir, Now: clock})
			ev := Event{Type: TypeStatement, Session: "s1", Statement: &Statement{Text: "select 1", Verdict: VerdictAllow}}
			for i := 0; i < 3; i++ {
				if err := r.Append(ev, WriteAhead); err != nil {
					t.Fatal(err)
				}
			}
			// Each write-ahead Append returned after the writer's write (its done channel orders
			// them), so the switch is settled.
			if got := r.Stats().BlockingWrites; got != tc.waited {
				t.Fatalf("after slow raw writes that waited=%v, BlockingWrites=%v", tc.waited, got)
			}
			if err := r.Append(ev, WriteAhead); err != nil {
				t.Fatalf("append after the slow writes: %v", err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if rep := mustVerify(t, dir, nil); rep.Records < 5 {
				t.Fatalf("verified %d records, want the header and 4 statements at least", rep.Records)
			}
		})
	}
}
