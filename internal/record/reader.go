package record

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// scan calls fn for every complete, well-formed record of the log in dir, in order, with the raw
// line (without newline). It stops at the first error fn returns. Reading does not verify the
// chain (Verify does); a malformed line is an error.
func scan(dir string, fn func(rec Record, line []byte) error) error {
	segs, err := listSegments(dir)
	if err != nil {
		return err
	}
	for _, s := range segs {
		if err := scanSegment(s.Path, 0, func(rec Record, line []byte, _ int64) error { return fn(rec, line) }); err != nil {
			return err
		}
	}
	return nil
}

// scanSegment reads complete lines of one segment from offset off; fn also gets the offset after
// the line. A torn final line is left for later.
func scanSegment(path string, off int64, fn func(rec Record, line []byte, end int64) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	lr := lineReader{br: bufio.NewReaderSize(f, 1<<16)}
	for n := 1; ; n++ {
		line, torn, err := lr.next()
		if err == io.EOF || torn {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", filepath.Base(path), err)
		}
		off += int64(len(line)) + 1
		rec, _, err := parseLine(line)
		if err != nil {
			return fmt.Errorf("%s: record after offset %d: %w", filepath.Base(path), off-int64(len(line))-1, err)
		}
		if err := fn(rec, line, off); err != nil {
			return err
		}
	}
}

// LoadAll returns every record of the log in dir.
func LoadAll(dir string) ([]Record, error) {
	var recs []Record
	err := scan(dir, func(rec Record, _ []byte) error {
		recs = append(recs, rec)
		return nil
	})
	return recs, err
}

// LoadSession returns the records of one session in log order, or an error if there are none.
func LoadSession(dir, id string) ([]Record, error) {
	var recs []Record
	err := scan(dir, func(rec Record, _ []byte) error {
		if rec.Session == id {
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("no session %q in %s", id, dir)
	}
	return recs, nil
}

// SessionSummary is one line of `enforcer sessions`.
type SessionSummary struct {
	ID         string    `json:"id"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end,omitzero"` // zero while live (or if the daemon died)
	Open       bool      `json:"open"`
	Subject    string    `json:"subject,omitempty"`
	Email      string    `json:"email,omitempty"`
	Target     string    `json:"target,omitempty"`
	Protocol   string    `json:"protocol,omitempty"`
	Process    string    `json:"process,omitempty"` // comm
	PID        int       `json:"pid,omitempty"`
	Statements int       `json:"statements"`
	Blocked    int       `json:"blocked"`
	Held       int       `json:"held"` // statements held for approval
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
	EndReason  string    `json:"end_reason,omitempty"`
	FirstSeq   uint64    `json:"first_seq"`
}

// SessionFilter selects sessions; empty fields match everything. User matches the subject or the
// email; Since keeps sessions that started at or after it, or are still open.
type SessionFilter struct {
	User   string
	Target string
	Since  time.Time
}

func (f SessionFilter) match(s *SessionSummary) bool {
	if f.User != "" && !strings.EqualFold(f.User, s.Email) && f.User != s.Subject {
		return false
	}
	if f.Target != "" && f.Target != s.Target {
		return false
	}
	if !f.Since.IsZero() && s.Start.Before(f.Since) && !s.Open {
		return false
	}
	return true
}

// Sessions lists the sessions in the log in dir, oldest first.
func Sessions(dir string, filter SessionFilter) ([]SessionSummary, error) {
	byID := map[string]*SessionSummary{}
	var order []string
	err := scan(dir, func(rec Record, _ []byte) error {
		if rec.Session == "" || !isSessionType(rec.Type) {
			return nil
		}
		s := byID[rec.Session]
		if s == nil {
			s = &SessionSummary{ID: rec.Session, Start: rec.Timestamp(), Open: true, FirstSeq: rec.Seq}
			byID[rec.Session] = s
			order = append(order, rec.Session)
		}
		ev, err := rec.Event()
		if err != nil {
			return err
		}
		switch ev.Type {
		case TypeSessionStart:
			st := ev.Start
			s.Start = ev.Time
			s.Subject, s.Email = st.Identity.Subject, st.Identity.Email
			s.Target, s.Protocol = st.Target.Name, st.Protocol
			s.Process, s.PID = st.Process.Comm, st.Process.PID
		case TypeStatement:
			s.Statements++
			switch ev.Statement.Verdict {
			case VerdictBlock:
				s.Blocked++
			case VerdictApprove:
				s.Held++
			}
		case TypeSessionEnd:
			s.Open = false
			s.End = ev.Time
			s.BytesIn, s.BytesOut, s.EndReason = ev.End.BytesIn, ev.End.BytesOut, ev.End.Reason
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]SessionSummary, 0, len(order))
	for _, id := range order {
		if s := byID[id]; filter.match(s) {
			out = append(out, *s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, nil
}

// Follower reads records as they are appended, across segment rotation, starting at a given seq.
// It polls; records are returned once their line is complete (written, not necessarily fsynced).
type Follower struct {
	dir    string
	seg    uint64
	off    int64
	next   uint64 // lowest seq still wanted
	poll   time.Duration
	queued []followed
	// queuedBytes is the size of the lines in queued: fill stops reading ahead at followBytes,
	// or a reader behind on a log of large records (6 MiB of escapes for one statement's text)
	// would hold thousands of them in memory, inside the daemon.
	queuedBytes int
	logID       string // of the last segment header read
}

// followBytes is how many bytes of lines a Follower reads ahead (at least one segment's rest).
const followBytes = 32 << 20

type followed struct {
	rec   Record
	line  []byte
	logID string
}

// NewFollower starts reading the log in dir at record fromSeq (1 for everything).
func NewFollower(dir string, fromSeq uint64) (*Follower, error) {
	if fromSeq == 0 {
		fromSeq = 1
	}
	f := &Follower{dir: dir, next: fromSeq, poll: 100 * time.Millisecond}
	segs, err := SegmentStarts(dir)
	if err != nil {
		return nil, err
	}
	// Start in the last segment whose header seq is at most fromSeq.
	for _, s := range segs {
		if s.Seq > fromSeq && f.seg != 0 {
			break
		}
		f.seg = s.Num
	}
	return f, nil
}

// Next returns the next record and its stored line, waiting for it until ctx is done.
func (f *Follower) Next(ctx context.Context) (Record, []byte, error) {
	for {
		if len(f.queued) > 0 {
			q := f.queued[0]
			f.queued = f.queued[1:]
			f.queuedBytes -= len(q.line)
			return q.rec, q.line, nil
		}
		if err := f.fill(); err != nil {
			return Record{}, nil, err
		}
		if len(f.queued) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return Record{}, nil, ctx.Err()
		case <-time.After(f.poll):
		}
	}
}

// fill reads what is new in the current segment, moving on to the next one when it exists.
func (f *Follower) fill() error {
	if f.seg == 0 {
		segs, err := listSegments(f.dir)
		if err != nil || len(segs) == 0 {
			return err
		}
		f.seg = segs[0].Num
	}
	for len(f.queued) < 4096 && f.queuedBytes < followBytes {
		path := filepath.Join(f.dir, segmentName(f.seg))
		err := scanSegment(path, f.off, f.take)
		if errors.Is(err, os.ErrNotExist) {
			// Removed by retention while we were behind: continue with the oldest remaining one.
			segs, lerr := listSegments(f.dir)
			if lerr != nil {
				return lerr
			}
			if len(segs) == 0 || segs[0].Num <= f.seg {
				return fmt.Errorf("follow: segment %d vanished", f.seg)
			}
			f.seg, f.off = segs[0].Num, 0
			continue
		}
		if err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(f.dir, segmentName(f.seg+1))); err != nil {
			return nil // no newer segment yet
		}
		// A newer segment exists, so this one is complete: read its rest once more, then move on.
		if err := scanSegment(path, f.off, f.take); err != nil {
			return err
		}
		f.seg, f.off = f.seg+1, 0
	}
	return nil
}

// take queues a record read from the current segment, noting the log id of segment headers
// (also of those before the start seq).
func (f *Follower) take(rec Record, line []byte, end int64) error {
	f.off = end
	if rec.Type == TypeSegment {
		ev, err := rec.Event()
		if err != nil {
			return err
		}
		f.logID = ev.Segment.Log
	}
	if rec.Seq >= f.next {
		f.next = rec.Seq + 1
		f.queued = append(f.queued, followed{rec, append([]byte(nil), line...), f.logID})
		f.queuedBytes += len(line)
	}
	return nil
}

// Line is a record with its stored line (without newline) and the id of the log it belongs to.
type Line struct {
	Record
	Raw   []byte
	LogID string
}

// ReadAvailable returns up to max records that are already complete in the log, without waiting
// (none if nothing new was written).
func (f *Follower) ReadAvailable(max int) ([]Line, error) {
	if len(f.queued) == 0 {
		if err := f.fill(); err != nil {
			return nil, err
		}
	}
	n := min(max, len(f.queued))
	out := make([]Line, n)
	for i := 0; i < n; i++ {
		out[i] = Line{f.queued[i].rec, f.queued[i].line, f.queued[i].logID}
		f.queuedBytes -= len(f.queued[i].line)
	}
	f.queued = f.queued[n:]
	return out, nil
}

// FollowSession calls fn for every record of session id, the existing ones first and then new ones
// as they are written, until the session ends (returns nil) or ctx is done. A session with no
// record in the log when it is called is an error, not one to wait for: session ids reach users
// only from records already written (`enforcer sessions`, a replay, the fleet sink), so such an
// id is mistyped, removed by retention or of another log, and waiting would poll forever.
func FollowSession(ctx context.Context, dir, id string, fn func(Record) error) error {
	// Where the log ends now: catching up to here decides whether the session exists, even while
	// a busy log keeps growing.
	segs, err := listSegments(dir)
	if err != nil {
		return fmt.Errorf("follow session %q: %w", id, err)
	}
	var endSeg uint64
	var endOff int64
	if n := len(segs); n > 0 {
		endSeg, endOff = segs[n-1].Num, segs[n-1].Size
	}
	fl, err := NewFollower(dir, 1)
	if err != nil {
		return fmt.Errorf("follow session %q: %w", id, err)
	}
	found := false
	// deliver passes on a record of the session and says whether it was the last.
	deliver := func(rec Record) (bool, error) {
		if rec.Session != id {
			return false, nil
		}
		found = true
		if err := fn(rec); err != nil {
			return false, err
		}
		return rec.Type == TypeSessionEnd, nil
	}
	for !found {
		if err := ctx.Err(); err != nil {
			return err
		}
		lines, err := fl.ReadAvailable(4096)
		if err != nil {
			return err
		}
		for _, l := range lines {
			if end, err := deliver(l.Record); end || err != nil {
				return err
			}
		}
		caughtUp := fl.seg > endSeg || fl.seg == endSeg && fl.off >= endOff
		if len(lines) == 0 || caughtUp {
			break
		}
	}
	if !found {
		return fmt.Errorf("no session %q in the log at %s (list sessions with `enforcer sessions`)", id, dir)
	}
	for {
		rec, _, err := fl.Next(ctx)
		if err != nil {
			return err
		}
		if end, err := deliver(rec); end || err != nil {
			return err
		}
	}
}
