package record

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// ENFORCER_RECORD_SYSCALLS=1 runs every test with the writer's own fdatasync (the path taken
	// where io_uring is disabled); scripts/test.sh runs the package both ways.
	testHookNoRing = os.Getenv("ENFORCER_RECORD_SYSCALLS") != ""
	os.Exit(m.Run())
}

// TestURingABISizes: the structures shared with the kernel have the sizes of
// include/uapi/linux/io_uring.h.
func TestURingABISizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"io_uring_params", unsafe.Sizeof(uringParams{}), 120},
		{"io_uring_sqe", unsafe.Sizeof(uringSQE{}), uringSQESize},
		{"io_uring_cqe", unsafe.Sizeof(uringCQE{}), uringCQESize},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}

// ringRecorder opens a recorder that syncs through io_uring, also in the run with
// ENFORCER_RECORD_SYSCALLS (the tests of this package do not run in parallel). The kernels these
// tests run on allow io_uring; one that refuses it fails them, saying why.
func ringRecorder(t *testing.T, opts Options) *Recorder {
	t.Helper()
	u := newRingT(t)
	u.close()
	saved := testHookNoRing
	testHookNoRing = false
	t.Cleanup(func() { testHookNoRing = saved })
	r := openT(t, opts)
	if !r.Stats().SyncRing {
		t.Fatal("io_uring works here, but the recorder does not sync through it")
	}
	return r
}

func newRingT(t *testing.T) *syncRing {
	t.Helper()
	u, err := newSyncRing()
	if err != nil {
		t.Fatalf("io_uring unavailable: %v (these tests need kernel.io_uring_disabled=0 and no seccomp filter on io_uring)", err)
	}
	return u
}

// TestSyncRing: with syncs through the ring, write-ahead and async records and rotations all land
// in order and verify, and the syncs happen.
func TestSyncRing(t *testing.T) {
	dir := t.TempDir()
	r := ringRecorder(t, Options{Dir: dir, SegmentBytes: 16 << 10})
	var want []string
	for i := 0; i < 300; i++ {
		text := "update t set n = n + 1 where id = " + string(rune('a'+i%26))
		d := Async
		if i%3 == 0 {
			d = WriteAhead
		}
		if err := r.Append(Event{Type: TypeStatement, Session: "s1", Statement: &Statement{Text: text, Verdict: VerdictAllow}}, d); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		want = append(want, text)
	}
	st := r.Stats()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if !st.SyncRing || st.Fsyncs < 100 || st.Rotations == 0 {
		t.Fatalf("stats %+v: want syncs through io_uring, one per write-ahead record at least, and rotations", st)
	}
	mustVerify(t, dir, nil)
	got := statementTexts(t, dir)
	if len(got) != len(want) {
		t.Fatalf("%d statements in the log, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statement %d is %q, want %q", i, got[i], want[i])
		}
	}
}

// TestSyncRingSubmitFailureFallsBack: when the ring stops taking submissions, the writer syncs
// with the system call from then on, and nothing is lost or refused.
func TestSyncRingSubmitFailureFallsBack(t *testing.T) {
	dir := t.TempDir()
	r := ringRecorder(t, Options{Dir: dir})
	ev := Event{Type: TypeStatement, Session: "s1", Statement: &Statement{Text: "delete from t where id = 1", Verdict: VerdictAllow}}
	if err := r.Append(ev, WriteAhead); err != nil {
		t.Fatal(err)
	}
	// The ring's descriptor now names /dev/null, which io_uring_enter refuses.
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if err := unix.Dup2(int(null.Fd()), r.syncs.fd); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := r.Append(ev, WriteAhead); err != nil {
			t.Fatalf("append after the ring failed: %v", err)
		}
	}
	if r.Stats().SyncRing {
		t.Fatal("the recorder still reports io_uring after a failed submission")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(statementTexts(t, dir)); n != 6 {
		t.Fatalf("%d statements in the log, want 6", n)
	}
	mustVerify(t, dir, nil)
}

// statementTexts is the text of every statement record in the log in dir, in order.
func statementTexts(t *testing.T, dir string) []string {
	t.Helper()
	recs, err := LoadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for i := range recs {
		if recs[i].Type != TypeStatement {
			continue
		}
		ev, err := recs[i].Event()
		if err != nil {
			t.Fatalf("record %d: %v", recs[i].Seq, err)
		}
		texts = append(texts, ev.Statement.Text)
	}
	return texts
}

// TestCheckpointSyncsThroughRing: a checkpoint's syncs, of the segment, of the chain state file
// and of the directory, all go through the ring, so none of them holds the daemon's P.
func TestCheckpointSyncsThroughRing(t *testing.T) {
	r := ringRecorder(t, Options{Dir: t.TempDir()})
	ev := Event{Type: TypeStatement, Session: "s1", Statement: &Statement{Text: "delete from t where id = 1", Verdict: VerdictAllow}}
	if err := r.Append(ev, WriteAhead); err != nil {
		t.Fatal(err)
	}
	ringOps := func() uint64 {
		r.syncs.mu.Lock()
		defer r.syncs.mu.Unlock()
		return r.syncs.ops
	}
	ops, segmentSyncs := ringOps(), r.Stats().Fsyncs
	if _, err := r.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	ops, segmentSyncs = ringOps()-ops, r.Stats().Fsyncs-segmentSyncs
	if segmentSyncs == 0 || ops != segmentSyncs+2 {
		t.Fatalf("a checkpoint made %d syncs through the ring and %d of the segment; want the segment's, the state file's and the directory's", ops, segmentSyncs)
	}
}

// TestRingUnlink: a file unlinked through the ring is gone, and unlinking it again gives the
// kernel's ENOENT (so this kernel knows the operation: retention does not fall back to its own
// system call here).
func TestRingUnlink(t *testing.T) {
	u := newRingT(t)
	defer u.close()
	path := filepath.Join(t.TempDir(), "seg-000000000001.jsonl")
	if err := os.WriteFile(path, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.unlink(path); err != nil {
		t.Fatalf("unlink through the ring: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after the unlink: %v", err)
	}
	if err := u.unlink(path); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, errRingSubmit) {
		t.Fatalf("unlink of a missing file: %v, want ENOENT from the kernel", err)
	}
}

// TestSyncRingReportsSyncErrors: a sync that fails in the kernel comes back as that error, not as
// a submission failure (which would let the caller retry it with the system call).
func TestSyncRingReportsSyncErrors(t *testing.T) {
	u := newRingT(t)
	defer u.close()
	f, err := os.Create(t.TempDir() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	for _, dataOnly := range []bool{true, false} {
		if err := u.sync(f, dataOnly); err != nil {
			t.Fatalf("sync (data only %v) of an open file: %v", dataOnly, err)
		}
	}
	// A descriptor no process can have open: the kernel's EBADF must come back as the sync's error.
	err = u.sync(os.NewFile(1<<30, "none"), true)
	if err == nil || errors.Is(err, errRingSubmit) || !errors.Is(err, unix.EBADF) {
		t.Fatalf("sync of a descriptor that is not open: %v, want EBADF from the kernel", err)
	}
	f.Close()
}
