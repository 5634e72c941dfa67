package record

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residency returns how many of the file's pages are in the page cache, and how many it has.
func residency(t *testing.T, path string) (resident, pages int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, 0
	}
	// Mapping a file does not read it in: mincore reports the page cache as it is.
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	ps := os.Getpagesize()
	vec := make([]byte, (len(m)+ps-1)/ps)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	for _, v := range vec {
		resident += int(v & 1)
	}
	return resident, len(vec)
}

// TestReleasesWrittenPages: once written and synced, a segment's pages leave the page cache:
// closed segments whole, the open one from its start to within a releaseChunk and a folio of its
// end. The log stays intact.
func TestReleasesWrittenPages(t *testing.T) {
	// A folio across the last release's end stays until a later release covers it whole.
	const maxFolio = 2 << 20
	for _, c := range []struct {
		name        string
		segment     int64
		write       uint64
		minSegments int
	}{
		{"open segment", 64 << 20, 12 << 20, 1},
		{"closed segments", 1 << 20, 5 << 20, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openT(t, Options{Dir: dir, SegmentBytes: c.segment, SyncInterval: 5 * time.Millisecond})
			t.Cleanup(func() { r.Close() })
			text := "SELECT abalance FROM pgbench_accounts WHERE aid = 4402021 /* " + strings.Repeat("x", 400) + " */"
			n := 0
			for r.Stats().Bytes < c.write {
				for range 1000 {
					if err := r.Append(Event{Type: TypeStatement, Session: "s1", Statement: &Statement{Text: text, Verdict: VerdictAllow}}, Async); err != nil {
						t.Fatal(err)
					}
					n++
				}
			}
			// The open segment is synced within SyncInterval and released after it.
			openAllowed := (releaseChunk + maxFolio) / os.Getpagesize()
			deadline := time.Now().Add(10 * time.Second)
			for {
				segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
				cached := 0
				for i, seg := range segs {
					res, _ := residency(t, seg)
					if i < len(segs)-1 {
						cached += res
					} else {
						cached += max(0, res-openAllowed)
					}
				}
				if cached == 0 && len(segs) >= c.minSegments {
					break
				}
				if time.Now().After(deadline) {
					for _, seg := range segs {
						res, pages := residency(t, seg)
						t.Logf("%s: %d of %d pages cached", filepath.Base(seg), res, pages)
					}
					t.Fatalf("written and synced pages are still in the page cache (the open segment may keep %d)", openAllowed)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if st := r.Stats(); st.WriteNS == 0 || st.Bytes < c.write {
				t.Errorf("stats %+v: want the bytes written and the time writing them counted", st)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			mustVerify(t, dir, nil)
			if got := len(statementTexts(t, dir)); got != n {
				t.Fatalf("%d statements in the log, want %d", got, n)
			}
		})
	}
}

// TestRingDontNeed: the ring's fadvise drops a file's clean pages from the page cache.
func TestRingDontNeed(t *testing.T) {
	u := newRingT(t)
	defer u.close()
	path := filepath.Join(t.TempDir(), "seg-000000000001.jsonl")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if res, pages := residency(t, path); res < pages/2 {
		t.Fatalf("a file just written has %d of %d pages cached; the test needs them cached", res, pages)
	}
	// The whole file by its length, then (read in again) by the length 0, to its end. Released
	// whole because the page cache keeps a file in folios of up to megabytes and drops a folio
	// only whole: releasing the first half of this file dropped nothing.
	for _, n := range []uint32{1 << 20, 0} {
		if _, err := io.Copy(io.Discard, io.NewSectionReader(f, 0, 1<<20)); err != nil {
			t.Fatal(err)
		}
		if err := u.dontNeed(f, 0, n); err != nil {
			t.Fatalf("fadvise through the ring: %v", err)
		}
		if res, pages := residency(t, path); res != 0 {
			t.Fatalf("after releasing the file (length %d), %d of %d pages are cached", n, res, pages)
		}
	}
}
