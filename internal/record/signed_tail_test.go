package record

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnsignedTailReported: verify says how many records only the hash chain holds (after the
// last signed checkpoint), which whoever can write the files can recompute without the host key:
// none for a log the recorder closed, and every record after the last checkpoint once the closing
// checkpoints are cut off and the chain ends where they were. Cut under the saved head
// (chain.state), the same log fails as truncated.
func TestUnsignedTailReported(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	appendAll(t, r, sessionEvents("a"), WriteAhead)
	if _, err := r.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	appendAll(t, r, sessionEvents("b"), WriteAhead)
	r.Close()
	rep := mustVerify(t, dir, nil)
	if rep.SignedThrough != rep.LastSeq {
		t.Fatalf("closed log signed through %d of %d", rep.SignedThrough, rep.LastSeq)
	}
	var out bytes.Buffer
	RenderVerify(&out, rep)
	if strings.Contains(out.String(), "hash chain alone") {
		t.Errorf("closed log reported with an unsigned tail:\n%s", out.String())
	}

	// Cut the last segment after session b's records: its closing checkpoint goes.
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
	last := segs[len(segs)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	keep := len(lines)
	for keep > 0 && (len(lines[keep-1]) == 0 || bytes.Contains(lines[keep-1], []byte(`"type":"checkpoint"`))) {
		keep--
	}
	if err := os.WriteFile(last, bytes.Join(lines[:keep], nil), 0o600); err != nil {
		t.Fatal(err)
	}
	// The saved head still names the cut checkpoint: a tail cut off is caught without an
	// exported checkpoint. A copy of the log without its state is judged by the chain alone.
	if rep, err := Verify(dir, nil); err != nil || rep.Problem == nil || rep.Problem.Kind != KindTruncated {
		t.Fatalf("tail cut under the saved head: %v %+v", err, rep.Problem)
	}
	if err := os.Remove(filepath.Join(dir, stateFile)); err != nil {
		t.Fatal(err)
	}
	rep = mustVerify(t, dir, nil)
	if rep.SignedThrough == 0 || rep.SignedThrough >= rep.LastSeq {
		t.Fatalf("after the closing checkpoint was cut: signed through %d of %d", rep.SignedThrough, rep.LastSeq)
	}
	out.Reset()
	RenderVerify(&out, rep)
	if !strings.Contains(out.String(), "hash chain alone") {
		t.Errorf("unsigned tail not reported:\n%s", out.String())
	}
}
