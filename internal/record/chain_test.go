package record

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// TestPayloadFieldsSorted keeps every payload struct's fields in JSON key order, which is what makes
// encoding/json's output canonical without a second pass.
func TestPayloadFieldsSorted(t *testing.T) {
	types := []any{SessionStart{}, Identity{}, Process{}, Target{}, Statement{}, Result{}, Notice{}, Approval{},
		SessionEnd{}, SegmentHeader{}, CheckpointData{}, RetentionData{}, ChainBreakData{}, RecoveryData{}, Record{}}
	for _, v := range types {
		rt := reflect.TypeOf(v)
		var names []string
		for i := 0; i < rt.NumField(); i++ {
			tag := rt.Field(i).Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			if name == "" || name == "-" {
				t.Fatalf("%s.%s has no json name", rt.Name(), rt.Field(i).Name)
			}
			names = append(names, name)
		}
		if !sort.StringsAreSorted(names) {
			t.Errorf("%s fields not in key order: %v", rt.Name(), names)
		}
	}
}

// TestRecordsAreCanonical checks the stored lines are their own canonical form, including strings
// that need escaping.
func TestRecordsAreCanonical(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	evs := sessionEvents("s<&>\u2028\"\\\x01")
	evs[1].Statement.Text = "SELECT '<script>&\u2028', E'\\x00\t\n', 'ünïcödé ✓', '\xff'"
	appendAll(t, r, evs, Async)
	r.Close()
	lines, _, err := readLines(filepath.Join(dir, segmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range lines {
		c, err := canonicalize(l)
		if err != nil || !bytes.Equal(c, l) {
			t.Fatalf("line %d not canonical (%v):\n%s\n%s", i+1, err, l, c)
		}
		if _, ok := parseFast(l); !ok {
			t.Fatalf("line %d not taken by the fast path: %s", i+1, l)
		}
	}
	recs, _ := LoadSession(dir, evs[0].Session)
	ev, err := recs[1].Event()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ToValidUTF8(evs[1].Statement.Text, "\uFFFD"); ev.Statement.Text != want {
		t.Fatalf("text round trip: %q, want %q", ev.Statement.Text, want)
	}
}

func TestCanonicalRejects(t *testing.T) {
	cases := []struct{ in, kind string }{
		{`{"a":1.5}`, KindMalformed},
		{`{"a":1e3}`, KindMalformed},
		{`{"a":01}`, KindMalformed},
		{`{"b":1,"a":2}`, KindNotCanonical},
		{`{"a": 1}`, KindNotCanonical},
		{`{"a":"\u0041"}`, KindNotCanonical},
		{`{"a":1} {}`, KindMalformed},
	}
	for _, c := range cases {
		_, kind, err := parseLine([]byte(c.in))
		if err == nil || kind != c.kind {
			t.Errorf("%s: kind %q err %v, want %s", c.in, kind, err, c.kind)
		}
	}
}

// logLines is a log read into memory as segment → lines, for mutation.
type logLines struct {
	dir   string
	names []string
	lines [][][]byte
}

func readLog(t *testing.T, dir string) *logLines {
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := &logLines{dir: dir}
	for _, s := range segs {
		lines, torn, err := readLines(s.Path)
		if err != nil || torn != nil {
			t.Fatalf("read %s: %v torn %q", s.Path, err, torn)
		}
		l.names = append(l.names, s.Path)
		l.lines = append(l.lines, lines)
	}
	return l
}

func (l *logLines) write(t *testing.T, dir string) {
	for i, name := range l.names {
		var b []byte
		for _, ln := range l.lines[i] {
			b = append(append(b, ln...), '\n')
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(name)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(l.dir, pubFile))
	os.WriteFile(filepath.Join(dir, pubFile), pub, 0o644)
}

// memDir is a temporary directory in memory (/dev/shm) where there is one: the tampering trials
// write hundreds of small logs, which on a busy disk costs seconds and proves nothing more.
func memDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "enforcer-record-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// pos is a line in the log; last reports whether it is the final line of the whole log.
type pos struct{ seg, line int }

func (l *logLines) all() []pos {
	var ps []pos
	for s := range l.lines {
		for i := range l.lines[s] {
			ps = append(ps, pos{s, i})
		}
	}
	return ps
}

func (l *logLines) get(p pos) []byte { return l.lines[p.seg][p.line] }

func (l *logLines) clone() *logLines {
	c := &logLines{dir: l.dir, names: l.names}
	for _, s := range l.lines {
		c.lines = append(c.lines, append([][]byte(nil), s...))
	}
	return c
}

// TestChainDetectsTampering applies random edits, deletions, insertions and reorderings anywhere in a
// multi-segment log and requires Verify to report each one. Removing lines only from the end is
// truncation, which is tested separately.
func TestChainDetectsTampering(t *testing.T) {
	src := memDir(t)
	r := openT(t, Options{Dir: src, SegmentBytes: 3000, CheckpointEvery: 7})
	for i := 0; i < 8; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), WriteAhead)
	}
	r.Close()
	orig := readLog(t, src)
	if len(orig.lines) < 3 {
		t.Fatalf("want several segments, got %d", len(orig.lines))
	}
	all := orig.all()
	rng := rand.New(rand.NewPCG(1, 2))
	mutations := []struct {
		name  string
		apply func(l *logLines) bool // false: mutation was a no-op, skip
	}{
		{"edit byte", func(l *logLines) bool {
			p := all[rng.IntN(len(all))]
			ln := append([]byte(nil), l.get(p)...)
			i := rng.IntN(len(ln))
			c := byte(0x20 + rng.IntN(0x5f))
			if ln[i] == c {
				return false
			}
			ln[i] = c
			l.lines[p.seg][p.line] = ln
			return true
		}},
		{"edit value", func(l *logLines) bool {
			p := all[rng.IntN(len(all))]
			ln := l.get(p)
			for _, sub := range [][2]string{{`"allow"`, `"block"`}, {`"block"`, `"allow"`}, {`SELECT`, `DELETE`}, {`"row_count":2`, `"row_count":3`}, {`"seq":`, `"seq":1`}} {
				if bytes.Contains(ln, []byte(sub[0])) {
					l.lines[p.seg][p.line] = bytes.Replace(ln, []byte(sub[0]), []byte(sub[1]), 1)
					return true
				}
			}
			return false
		}},
		{"delete line", func(l *logLines) bool {
			p := all[rng.IntN(len(all)-1)] // not the very last line: that is truncation
			s := l.lines[p.seg]
			if p.seg == len(l.lines)-1 && p.line == len(s)-1 {
				return false
			}
			l.lines[p.seg] = append(s[:p.line:p.line], s[p.line+1:]...)
			return true
		}},
		{"delete range", func(l *logLines) bool {
			p := all[rng.IntN(len(all)-2)]
			s := l.lines[p.seg]
			n := 1 + rng.IntN(len(s)-p.line)
			if p.seg == len(l.lines)-1 && p.line+n >= len(s) {
				return false
			}
			l.lines[p.seg] = append(s[:p.line:p.line], s[p.line+n:]...)
			return true
		}},
		{"insert copy", func(l *logLines) bool {
			from, to := all[rng.IntN(len(all))], all[rng.IntN(len(all))]
			s := l.lines[to.seg]
			at := to.line + rng.IntN(2)
			ns := append(append(append([][]byte(nil), s[:at]...), l.get(from)), s[at:]...)
			l.lines[to.seg] = ns
			return true
		}},
		{"swap lines", func(l *logLines) bool {
			a, b := all[rng.IntN(len(all))], all[rng.IntN(len(all))]
			if a == b {
				return false
			}
			x, y := l.get(a), l.get(b)
			l.lines[a.seg][a.line], l.lines[b.seg][b.line] = y, x
			return true
		}},
		{"delete first segment", func(l *logLines) bool {
			os.Remove(filepath.Join(l.dir, "unused"))
			l.lines[0] = nil
			return true
		}},
		{"swap segments", func(l *logLines) bool {
			i := rng.IntN(len(l.lines) - 1)
			l.lines[i], l.lines[i+1] = l.lines[i+1], l.lines[i]
			return true
		}},
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			for trial := 0; trial < 25; trial++ {
				l := orig.clone()
				if !m.apply(l) {
					continue
				}
				dir := memDir(t)
				l.write(t, dir)
				if m.name == "delete first segment" {
					os.Remove(filepath.Join(dir, filepath.Base(l.names[0])))
				}
				rep, err := Verify(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				if rep.OK() {
					t.Fatalf("trial %d: tampering not detected", trial)
				}
				if trial == 0 {
					t.Logf("detected: %v", rep.Problem)
				}
			}
		})
	}
}

// TestTruncationNeedsCheckpoint shows what a bare chain cannot do and what a checkpoint adds:
// removing the tail verifies without a checkpoint (nothing false is claimed), and fails against a
// checkpoint exported before the removal.
func TestTruncationNeedsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 3000})
	for i := 0; i < 4; i++ {
		appendAll(t, r, sessionEvents(fmt.Sprintf("s%d", i)), Async)
	}
	cp, err := r.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	var exported bytes.Buffer
	if err := ExportCheckpoint(&exported, cp); err != nil {
		t.Fatal(err)
	}
	cpFile := filepath.Join(t.TempDir(), "cp.json")
	os.WriteFile(cpFile, exported.Bytes(), 0o600)
	appendAll(t, r, sessionEvents("late"), Async)
	r.Close()
	cpRead, err := ReadCheckpoint(cpFile)
	if err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, cpRead)
	if rep.Checkpoint == nil || !rep.Checkpoint.Matched {
		t.Fatalf("checkpoint not matched: %+v", rep.Checkpoint)
	}

	orig := readLog(t, dir)
	total := len(orig.all())
	for _, cut := range []int{1, 5, total - int(cp.Seq) + 1, total - int(cp.Seq) + 3} {
		l := orig.clone()
		for n := 0; n < cut; n++ {
			last := len(l.lines) - 1
			l.lines[last] = l.lines[last][:len(l.lines[last])-1]
			if len(l.lines[last]) == 0 {
				l.lines, l.names = l.lines[:last], l.names[:last]
			}
		}
		d := t.TempDir()
		l.write(t, d)
		rep, err := Verify(d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() {
			t.Fatalf("cut %d: without checkpoint, a shorter log must verify (it cannot be told from an older one): %v", cut, rep.Problem)
		}
		rep, err = Verify(d, cpRead)
		if err != nil {
			t.Fatal(err)
		}
		removedCovered := rep.LastSeq < cp.Seq
		if removedCovered && (rep.OK() || rep.Problem.Kind != KindTruncated) {
			t.Fatalf("cut %d (log ends at %d, checkpoint %d): %v", cut, rep.LastSeq, cp.Seq, rep.Problem)
		}
		if !removedCovered && !rep.OK() {
			t.Fatalf("cut %d leaves checkpointed records intact but verify failed: %v", cut, rep.Problem)
		}
	}

	// A checkpoint with a forged signature or key is rejected.
	bad := *cpRead
	bad.Seq++
	rep, _ = Verify(dir, &bad)
	if rep.OK() || rep.Problem.Kind != KindBadSignature {
		t.Fatalf("forged checkpoint: %+v", rep.Problem)
	}
	var m map[string]any
	json.Unmarshal(exported.Bytes(), &m)
	if _, ok := m["sig"]; !ok {
		t.Fatal("exported checkpoint lacks sig")
	}
}

// FuzzParseLine: parseLine must never panic and must accept only lines that re-encode to themselves.
func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`{"data":{},"hash":"00","prev":"00","seq":1,"time":"2026-01-01T00:00:00.000000Z","type":"x"}`))
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, _, err := parseLine(b)
		if err != nil {
			return
		}
		c, err := canonicalize(b)
		if err != nil || !bytes.Equal(c, b) {
			t.Fatalf("accepted non-canonical line %q", b)
		}
		if !isHash(rec.Hash) {
			t.Fatal("accepted bad hash")
		}
	})
}

// TestHostKeyChange: a regenerated host key starts a new segment whose header declares it; the log
// verifies (with a note) against a checkpoint made after the change, not against one exported
// before it (after which a header declaring another key cannot be told from a rewritten tail
// carrying checkpoints of its own), and a checkpoint signed by a key the log never declared is
// refused.
func TestHostKeyChange(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	appendAll(t, r, sessionEvents("a"), WriteAhead)
	cpOld, err := r.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	os.Remove(filepath.Join(dir, keyFile))
	os.Remove(filepath.Join(dir, pubFile))
	r = openT(t, Options{Dir: dir})
	if r.PublicKey() == cpOld.Key {
		t.Fatal("key not regenerated")
	}
	appendAll(t, r, sessionEvents("b"), WriteAhead)
	cpNew, _ := r.Checkpoint()
	r.Close()
	rep, err := Verify(dir, &cpOld)
	if err != nil || rep.Problem == nil || rep.Problem.Kind != KindBadSignature || !strings.Contains(rep.Problem.Detail, "host key was replaced") {
		t.Fatalf("against the checkpoint exported before the key changed: %v %+v", err, rep.Problem)
	}
	rep = mustVerify(t, dir, &cpNew)
	if rep.Segments != 2 || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "signing key changed") {
		t.Fatalf("segments %d notes %v", rep.Segments, rep.Notes)
	}

	// A checkpoint from another host's key, correctly signed, does not vouch for this log.
	other := t.TempDir()
	r2 := openT(t, Options{Dir: other})
	appendAll(t, r2, sessionEvents("x"), WriteAhead)
	cpOther, _ := r2.Checkpoint()
	r2.Close()
	rep, err = Verify(dir, &cpOther)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problem.Kind != KindBadSignature {
		t.Fatalf("foreign checkpoint: %+v", rep.Problem)
	}
}

// FuzzParseFast: the fast path never accepts a line the step-by-step check rejects.
func FuzzParseFast(f *testing.F) {
	dir := f.TempDir()
	r, err := Open(Options{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	for _, ev := range sessionEvents("s<1>") {
		r.Append(ev, Async)
	}
	r.Close()
	lines, _, _ := readLines(filepath.Join(dir, segmentName(1)))
	for _, l := range lines {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, ok := parseFast(b); ok {
			if _, kind, err := parseSlow(b); err != nil {
				t.Fatalf("fast path accepted %q, slow path says %s: %v", b, kind, err)
			}
		}
	})
}

// FuzzValidCanonical: the scanner agrees with the definition (decode, re-encode, compare).
func FuzzValidCanonical(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[true,false,null,"x"]}`, `{"b":1,"a":2}`, `"\u003c\b\f\u0001\u2028"`,
		`"<"`, `"\u00e9"`, `"é"`, `-0`, `01`, `1.5`, `18446744073709551616`, `-9223372036854775808`, `{"a":1,"a":2}`,
		`{"\u003c":1,"a":2}`, `{"a":1,"\u003c":2}`, `[1 ,2]`, "\"\x7f\"", "\"\xff\"", `"\ud800"`, `"\uFFFD"`, "\"\ufffd\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := canonicalize(b)
		want := err == nil && bytes.Equal(c, b)
		if got := validCanonical(b); got != want {
			t.Fatalf("validCanonical(%q) = %v, canonicalize says %v (%q, %v)", b, got, want, c, err)
		}
	})
}
