package record

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Problem is the first thing Verify found wrong.
type Problem struct {
	Segment string `json:"segment"`        // file name
	Line    int    `json:"line,omitempty"` // 1-based
	Seq     uint64 `json:"seq,omitempty"`
	Kind    string `json:"kind"` // one of the Kind constants
	Detail  string `json:"detail"`
}

func (p *Problem) Error() string {
	loc := p.Segment
	if p.Line > 0 {
		loc = fmt.Sprintf("%s line %d", p.Segment, p.Line)
	}
	if p.Seq > 0 {
		loc += fmt.Sprintf(" (seq %d)", p.Seq)
	}
	return fmt.Sprintf("%s: %s: %s", loc, p.Kind, p.Detail)
}

// Report is the outcome of Verify. The log is intact when Problem is nil; Breaks lists chain breaks
// that were accepted at start (--accept-chain-break) and Notes other facts an auditor should see.
type Report struct {
	Dir         string `json:"dir"`
	Segments    int    `json:"segments"`
	Records     uint64 `json:"records"`
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	LastHash    string `json:"last_hash"`
	Checkpoints int    `json:"checkpoints"` // signed checkpoint records verified in the log
	// SignedThrough is the seq of the log's last signed checkpoint (with the exported
	// checkpoint's key, when one is given), which covers every record before it: the records
	// after it are held by the hash chain alone, which whoever can write the files can
	// recompute. The recorder signs one a minute while records come, and when it closes.
	SignedThrough uint64            `json:"signed_through"`
	Epochs        int               `json:"epochs"` // 1 + accepted chain breaks
	Breaks        []ChainBreakData  `json:"breaks,omitempty"`
	Retentions    []RetentionData   `json:"retentions,omitempty"`
	Checkpoint    *CheckpointResult `json:"checkpoint,omitempty"`
	Notes         []string          `json:"notes,omitempty"`
	Problem       *Problem          `json:"problem,omitempty"`
}

// CheckpointResult says how the log compared with an exported checkpoint.
type CheckpointResult struct {
	Seq     uint64 `json:"seq"`
	Hash    string `json:"hash"`
	Matched bool   `json:"matched"`
}

// OK reports whether the log verified.
func (r *Report) OK() bool { return r.Problem == nil }

// Verify checks every record of the log in dir: canonical form, hash, link to the previous record,
// consecutive seqs, segment headers, signed checkpoints (with the key the segment header declares),
// and
// that the first remaining record is the genesis or is anchored by a retention or chain_break
// record. With cp (an exported checkpoint), it also checks that the log still holds record cp.Seq
// with cp.Hash, which detects removal of the tail; without one, a shorter log cannot be told from
// an older one and Verify does not claim otherwise. An error means the log could not be read.
func Verify(dir string, cp *Checkpoint) (*Report, error) {
	for attempt := 1; ; attempt++ {
		rep, segs, err := verifyOnce(dir, cp)
		// Retention removes the oldest segments, and rotation adds segments, while the daemon
		// runs: a listed segment gone before it was opened was removed meanwhile, and a listing
		// taken while files came and went may hold the removal and not the newer segment whose
		// retention record accounts for it. A fresh read of the log judges what is left; a log
		// nobody changes reads the same every time.
		changed := errors.Is(err, errSegmentGone) || err == nil && rep.Problem != nil && !sameSegments(dir, segs)
		if !changed || attempt == verifyAttempts {
			return rep, err
		}
	}
}

// sameSegments says whether dir still holds exactly the segments segs.
func sameSegments(dir string, segs []segmentFile) bool {
	now, err := listSegments(dir)
	return err == nil && slices.EqualFunc(now, segs, func(a, b segmentFile) bool { return a.Num == b.Num })
}

// verifyAttempts is how many times Verify reads the log when segments go while it reads.
const verifyAttempts = 10

// errSegmentGone marks a listed segment that was removed before Verify opened it.
var errSegmentGone = errors.New("segment removed while the log was read")

func verifyOnce(dir string, cp *Checkpoint) (*Report, []segmentFile, error) {
	rep := &Report{Dir: dir, Epochs: 1}
	if cp != nil {
		if err := verifyCheckpoint(cp, nil); err != nil {
			rep.Problem = &Problem{Kind: KindBadSignature, Detail: "exported checkpoint: " + err.Error()}
			return rep, nil, nil
		}
	}
	// The saved head is read before the segments, so that a recorder writing meanwhile only
	// adds records after it.
	state, err := readState(dir)
	if err != nil {
		rep.Notes = append(rep.Notes, err.Error())
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("verify: %w", err)
	}
	// Every segment is opened before any is read: retention removes the oldest while the daemon
	// runs, and an open segment stays readable. Those gone already can only be the oldest; the
	// retention record that removed them is in a newer one (a listing too old to hold it makes a
	// problem, and Verify reads the log again).
	files := make([]*os.File, 0, len(segs))
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for i, sg := range segs {
		f, err := os.Open(sg.Path)
		switch {
		case errors.Is(err, os.ErrNotExist) && len(files) == 0:
			continue
		case errors.Is(err, os.ErrNotExist):
			return nil, segs, fmt.Errorf("verify: %w: %w", errSegmentGone, err)
		case err != nil:
			return nil, segs, fmt.Errorf("verify: %w", err)
		}
		if len(files) == 0 {
			segs = segs[i:]
		}
		files = append(files, f)
	}
	if len(files) == 0 && len(segs) > 0 {
		return nil, segs, fmt.Errorf("verify: %w: every listed segment", errSegmentGone)
	}
	rep.Segments = len(segs)
	if len(segs) == 0 {
		if cp != nil {
			rep.Problem = &Problem{Kind: KindTruncated, Seq: cp.Seq, Detail: fmt.Sprintf("the log is empty but the checkpoint covers seq %d", cp.Seq)}
		}
		return rep, segs, nil
	}
	v := verifier{rep: rep, cp: cp, state: state, keys: map[string]bool{}}
	for i, s := range segs {
		if i > 0 && s.Num != segs[i-1].Num+1 {
			rep.Problem = &Problem{Segment: segmentName(segs[i-1].Num + 1), Kind: KindBadSegment,
				Detail: fmt.Sprintf("segment missing between %s and %s", filepath.Base(segs[i-1].Path), filepath.Base(s.Path))}
			return rep, segs, nil
		}
		if err := v.segment(s, files[i], i == len(segs)-1); err != nil {
			return nil, segs, err
		}
		if rep.Problem != nil {
			return rep, segs, nil
		}
	}
	v.finish()
	return rep, segs, nil
}

type verifier struct {
	rep    *Report
	state  *chainState     // the head the recorder saved (chain.state), if the directory has one
	curKey string          // signing key declared by the current segment's header
	keys   map[string]bool // every key the log's headers declared
	cp     *Checkpoint

	started   bool
	first     Record // first record overall
	firstSeg  string
	prev      Record
	anchors   []RetentionData
	anchorAt  []uint64 // the seq of each anchors record
	breakAt   []uint64 // the seq of each rep.Breaks record
	cpMatched bool
	lastSeg   string
}

func (v *verifier) fail(seg string, line int, seq uint64, kind, detail string) {
	if v.rep.Problem == nil {
		v.rep.Problem = &Problem{Segment: seg, Line: line, Seq: seq, Kind: kind, Detail: detail}
	}
}

func (v *verifier) segment(s segmentFile, f *os.File, newest bool) error {
	name := filepath.Base(s.Path)
	v.lastSeg = name
	lr := lineReader{br: bufio.NewReaderSize(f, 1<<16)}
	for n := 1; ; n++ {
		line, torn, err := lr.next()
		if err == io.EOF {
			switch {
			case n == 1 && newest:
				// The recorder creates a segment before it writes the header: a log read then,
				// or left so by a crash (Open removes the file), is not a damaged one.
				v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%s is empty (a segment being created, not part of the chain)", name))
			case n == 1:
				v.fail(name, 0, 0, KindBadSegment, "segment is empty")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("verify: read %s: %w", name, err)
		}
		if torn {
			if newest {
				// A write interrupted by a crash; Open cuts it off and records that.
				v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%s ends with %d bytes of an incomplete line (interrupted write, not part of the chain)", name, len(line)))
				return nil
			}
			v.fail(name, n, 0, KindTornLine, "line without newline in a closed segment")
			return nil
		}
		rec, kind, err := parseLine(line)
		if err != nil {
			v.fail(name, n, rec.Seq, kind, err.Error())
			return nil
		}
		if !v.link(name, n, rec) {
			return nil
		}
		if n == 1 {
			if rec.Type != TypeSegment {
				v.fail(name, n, rec.Seq, KindBadSegment, fmt.Sprintf("segment starts with a %s record, not its header", rec.Type))
				return nil
			}
		} else if rec.Type == TypeSegment {
			v.fail(name, n, rec.Seq, KindBadSegment, "segment header in the middle of a segment")
			return nil
		}
		if !v.check(name, n, s.Num, rec) {
			return nil
		}
		if v.checkState(name, n, rec); v.rep.Problem != nil {
			return nil
		}
		v.prev = rec
		v.rep.Records++
		v.rep.LastSeq, v.rep.LastHash = rec.Seq, rec.Hash
	}
}

// link checks rec against the record before it; for the very first record it remembers the start,
// which finish checks against the anchors.
func (v *verifier) link(seg string, line int, rec Record) bool {
	if !v.started {
		v.started, v.first, v.firstSeg = true, rec, seg
		v.rep.FirstSeq = rec.Seq
		return true
	}
	p := v.prev
	switch {
	case rec.Seq > p.Seq+1:
		v.fail(seg, line, rec.Seq, KindSeqGap, fmt.Sprintf("seq %d follows seq %d: %d records missing", rec.Seq, p.Seq, rec.Seq-p.Seq-1))
	case rec.Seq <= p.Seq:
		v.fail(seg, line, rec.Seq, KindReordered, fmt.Sprintf("seq %d after seq %d (reordered or duplicated)", rec.Seq, p.Seq))
	case rec.Prev != p.Hash:
		v.fail(seg, line, rec.Seq, KindPrevMismatch, fmt.Sprintf("prev %s is not the hash %s of seq %d", short(rec.Prev), short(p.Hash), p.Seq))
	default:
		return true
	}
	return false
}

// check verifies the payload of maintenance records.
func (v *verifier) check(seg string, line int, segNum uint64, rec Record) bool {
	if rec.Type != TypeSegment && rec.Type != TypeCheckpoint && rec.Type != TypeRetention && rec.Type != TypeChainBreak {
		if v.cp != nil && rec.Seq == v.cp.Seq {
			v.checkExported(seg, line, rec)
		}
		return v.rep.Problem == nil
	}
	ev, err := rec.Event()
	if err != nil {
		v.fail(seg, line, rec.Seq, KindMalformed, err.Error())
		return false
	}
	switch rec.Type {
	case TypeSegment:
		if ev.Segment.Segment != segNum {
			v.fail(seg, line, rec.Seq, KindBadSegment, fmt.Sprintf("header names segment %d", ev.Segment.Segment))
			return false
		}
		if v.cpMatched && ev.Segment.Key != v.cp.Key {
			// After the exported checkpoint the log is the host's only if the host's key signs
			// it: a header naming another key is how a rewritten tail would carry checkpoints
			// of its own.
			v.fail(seg, line, rec.Seq, KindBadSignature, fmt.Sprintf("after the exported checkpoint, the header declares key %s, not the checkpoint's %s: the log was rewritten after it, or the host key was replaced (then export a checkpoint made with the new key)", short(ev.Segment.Key), short(v.cp.Key)))
			return false
		}
		if v.curKey != "" && ev.Segment.Key != v.curKey {
			v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%s: the checkpoint signing key changed from %s to %s", seg, short(v.curKey), short(ev.Segment.Key)))
		}
		v.curKey = ev.Segment.Key
		v.keys[v.curKey] = true
	case TypeCheckpoint:
		c := ev.Checkpoint
		if err := verifyCheckpoint(c, nil); err != nil {
			v.fail(seg, line, rec.Seq, KindBadSignature, err.Error())
			return false
		}
		if c.Key != v.curKey {
			v.fail(seg, line, rec.Seq, KindBadSignature, fmt.Sprintf("checkpoint signed by key %s, but the segment header declares %s", short(c.Key), short(v.curKey)))
			return false
		}
		if c.Seq != v.prev.Seq || c.Hash != v.prev.Hash {
			v.fail(seg, line, rec.Seq, KindBadSignature, fmt.Sprintf("checkpoint covers seq %d but follows seq %d", c.Seq, v.prev.Seq))
			return false
		}
		v.rep.Checkpoints++
		if v.cp == nil || c.Key == v.cp.Key {
			v.rep.SignedThrough = rec.Seq // the record it covers, and itself
		}
	case TypeRetention:
		v.anchors = append(v.anchors, *ev.Retention)
		v.anchorAt = append(v.anchorAt, rec.Seq)
		v.rep.Retentions = append(v.rep.Retentions, *ev.Retention)
	case TypeChainBreak:
		v.rep.Breaks = append(v.rep.Breaks, *ev.ChainBreak)
		v.breakAt = append(v.breakAt, rec.Seq)
		v.rep.Epochs++
	}
	if v.cp != nil && rec.Seq == v.cp.Seq {
		v.checkExported(seg, line, rec)
	}
	return v.rep.Problem == nil
}

// checkState compares record rec with the head the recorder saved, which it wrote only once the
// record was durable.
func (v *verifier) checkState(seg string, line int, rec Record) {
	if v.state != nil && rec.Seq == v.state.Seq && rec.Hash != v.state.Hash {
		v.fail(seg, line, rec.Seq, KindHashMismatch, fmt.Sprintf("record has hash %s but the log's saved head (%s) says %s (the log was rewritten)", short(rec.Hash), stateFile, short(v.state.Hash)))
	}
}

func (v *verifier) checkExported(seg string, line int, rec Record) {
	v.rep.Checkpoint = &CheckpointResult{Seq: v.cp.Seq, Hash: v.cp.Hash}
	if !v.keys[v.cp.Key] {
		// A checkpoint is signed with the key of the segment it was made in, declared before it.
		v.fail(seg, line, rec.Seq, KindBadSignature, fmt.Sprintf("the exported checkpoint is signed by key %s, which this log had not declared (the log was replaced, or the checkpoint is another host's)", short(v.cp.Key)))
		return
	}
	if rec.Hash != v.cp.Hash {
		v.fail(seg, line, rec.Seq, KindHashMismatch, fmt.Sprintf("record has hash %s but the exported checkpoint says %s (the log was rewritten)", short(rec.Hash), short(v.cp.Hash)))
		return
	}
	v.rep.Checkpoint.Matched = true
	v.cpMatched = true
}

// finish checks what can only be known after reading everything: the start anchor and the exported
// checkpoint.
func (v *verifier) finish() {
	if v.rep.Problem != nil {
		return
	}
	if !v.started {
		// Nothing but an incomplete line is left. With a checkpoint that is a removed log, not
		// an interrupted first write: however little remains, a log that no longer reaches the
		// checkpoint's seq fails.
		if v.cp != nil {
			v.rep.Checkpoint = &CheckpointResult{Seq: v.cp.Seq, Hash: v.cp.Hash}
			v.fail(v.lastSeg, 0, 0, KindTruncated, fmt.Sprintf("the log holds no complete record but the exported checkpoint covers seq %d: the log was removed", v.cp.Seq))
		}
		return
	}
	f := v.first
	if f.Seq != 1 || f.Prev != zeroHash {
		// The seqs of the records that account for the start: retention that removed the
		// records before it, or a chain break that says they were lost.
		var by []uint64
		for i, a := range v.anchors {
			if a.AnchorSeq+1 == f.Seq && a.AnchorHash == f.Prev {
				by = append(by, v.anchorAt[i])
			}
		}
		if len(by) == 0 {
			num := uint64(0)
			if ev, err := f.Event(); err == nil && ev.Segment != nil {
				num = ev.Segment.Segment
			}
			for i, a := range v.anchors {
				if a.RemovedFrom <= num && num <= a.RemovedTo {
					// A deletion the log announced was interrupted; the rest is intact.
					by = append(by, v.anchorAt[i])
				}
			}
			if len(by) > 0 {
				v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%s was declared removed by retention but is still present", v.firstSeg))
			}
		}
		if len(by) == 0 {
			for i, b := range v.rep.Breaks {
				if b.StateSeq+1 == f.Seq && b.StateHash == f.Prev {
					by = append(by, v.breakAt[i]) // the log was lost before this epoch; the break record says so
				}
			}
		}
		if len(by) == 0 {
			v.fail(v.firstSeg, 1, f.Seq, KindMissingAnchor, fmt.Sprintf("the log starts at seq %d with prev %s, but no retention record accounts for the records before it", f.Seq, short(f.Prev)))
			return
		}
		// Records the exported checkpoint vouches for are gone: its own, or (its record still
		// here) older ones, to which its hash commits as well. A retention or chain_break record
		// is as easy to append as to remove segments, so it counts only once a checkpoint signed
		// with the exported checkpoint's key vouches for it (the recorder signs one right after
		// writing either); otherwise whoever can write the files could delete checkpointed
		// records and say retention did.
		if v.cp != nil && slices.Min(by) > v.rep.SignedThrough {
			gone := fmt.Sprintf("the exported checkpoint's record (seq %d) is gone", v.cp.Seq)
			if v.cp.Seq >= f.Seq {
				gone = fmt.Sprintf("the records before seq %d, which the exported checkpoint (seq %d) covers, are gone", f.Seq, v.cp.Seq)
			} else {
				v.rep.Checkpoint = &CheckpointResult{Seq: v.cp.Seq, Hash: v.cp.Hash}
			}
			v.fail(v.firstSeg, 1, f.Seq, KindMissingAnchor, fmt.Sprintf("%s, and the record that accounts for them (seq %d) is covered by no checkpoint signed with the exported checkpoint's key %s", gone, slices.Min(by), short(v.cp.Key)))
			return
		}
	}
	if v.cp != nil && !v.keys[v.cp.Key] {
		v.fail("", 0, 0, KindBadSignature, fmt.Sprintf("the exported checkpoint is signed by key %s, which this log never declared (the log was replaced)", short(v.cp.Key)))
		return
	}
	if v.cp != nil && !v.cpMatched {
		switch {
		case v.cp.Seq > v.rep.LastSeq:
			v.rep.Checkpoint = &CheckpointResult{Seq: v.cp.Seq, Hash: v.cp.Hash}
			v.fail(v.lastSeg, 0, v.rep.LastSeq, KindTruncated, fmt.Sprintf("the log ends at seq %d but the exported checkpoint covers seq %d: records were removed from the tail", v.rep.LastSeq, v.cp.Seq))
		case v.cp.Seq < v.rep.FirstSeq:
			v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("the exported checkpoint (seq %d) predates the oldest retained record (seq %d)", v.cp.Seq, v.rep.FirstSeq))
		}
	}
	if v.rep.Problem == nil && v.state != nil && v.state.Seq > v.rep.LastSeq {
		// Not proof against whoever also rewrites the state file, but a tail cut off alone is
		// caught without an exported checkpoint.
		v.fail(v.lastSeg, 0, v.rep.LastSeq, KindTruncated, fmt.Sprintf("the log ends at seq %d but its saved head (%s) is seq %d: records were removed from the tail", v.rep.LastSeq, stateFile, v.state.Seq))
	}
}

// ErrNotIntact wraps a verification problem for callers that want an error.
var ErrNotIntact = errors.New("record: log is not intact")

// Err returns nil if the log verified, or an error wrapping ErrNotIntact that describes the problem.
func (r *Report) Err() error {
	if r.Problem == nil {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotIntact, r.Problem.Error())
}

// MarshalJSON keeps Report's JSON stable for `enforcer record verify --json`.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(&struct {
		OK bool `json:"ok"`
		*plain
	}{r.Problem == nil, (*plain)(r)})
}
