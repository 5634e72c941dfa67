package approval

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// FileStore keeps requests in memory and, when it has a path, in a journal file in the daemon's
// state directory: every change appends the changed request or grant as one JSON line and syncs it,
// so a change costs one small write whatever the history size. The journal is compacted (rewritten
// atomically with only live entries) on open and when it has grown well past the live state, in
// lines or in bytes.
// It serves one daemon; a lock file keeps a second process out.
type FileStore struct {
	path   string
	retain time.Duration
	lock   *os.File // flock held while open

	mu      sync.Mutex
	closed  bool
	journal *os.File // append-only handle; nil for a memory store
	size    int64    // journal bytes acknowledged: where a failed append is cut back to
	live    int64    // journal bytes right after the last compaction
	broken  error    // set when a failed append could not be cut back; later changes fail
	lines   int      // lines in the journal since the last compaction
	compact int      // least number of lines before a compaction (compactAfter)
	// compactBytes is the least number of appended bytes before a compaction (compactAfterBytes).
	compactBytes int64
	requests     map[string]*Request
	grants       map[string]*Grant // by request id
	hook         func(Change)
}

// fileVersion is the layout version of the journal, written in its first line.
const fileVersion = 1

// fileLine is one journal line: the header, or the latest version of a request or a grant.
type fileLine struct {
	Version int      `json:"version,omitempty"`
	Request *Request `json:"request,omitempty"`
	Grant   *Grant   `json:"grant,omitempty"`
}

// DefaultRetain is how long finished requests and used or expired grants stay in a store.
const DefaultRetain = 7 * 24 * time.Hour

// compactAfter is the least number of appended lines before a compaction is considered.
const compactAfter = 1000

// compactAfterBytes is the least number of appended bytes before a compaction is considered: a
// few hundred requests with long statements weigh more than thousands of short ones.
const compactAfterBytes = 64 << 20

// ErrClosed is returned by a store used after Close.
var ErrClosed = errors.New("approval store is closed")

// NewMemoryStore returns a FileStore that keeps nothing across restarts (for tests and
// `--approval-store=memory`).
func NewMemoryStore() *FileStore {
	return &FileStore{retain: DefaultRetain, compact: compactAfter, compactBytes: compactAfterBytes, requests: map[string]*Request{}, grants: map[string]*Grant{}}
}

// OpenFileStore loads the journal at path (created 0600 if missing). Requests still pending in it
// belonged to clients of a previous daemon process that are gone: they are failed. Decisions and
// grants are kept. retain (0 means DefaultRetain) bounds how long finished entries stay.
func OpenFileStore(path string, retain time.Duration) (*FileStore, error) {
	s := NewMemoryStore()
	s.path = path
	if retain > 0 {
		s.retain = retain
	}
	// Two daemons appending to one journal would each miss the other's changes.
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock approval store: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("lock approval store %s: another process uses it: %w", path, err)
	}
	s.lock = lock
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("approval store %s: %w", path, err)
	}
	now := time.Now()
	for _, r := range s.requests {
		finish(r, StateFailed, "the daemon restarted while the request was pending", now)
		// A journal written before the caps kept statements whole. Expired requests are the
		// broker's to shrink, by its late window (ShrinkExpired).
		r.cutShown(createdCaps)
		r.endUndecided(time.Time{})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.compactLocked(now); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// load replays the journal, a line at a time. A last line without its newline is an append cut
// short by a crash and is dropped (it was never acknowledged); any other bad line is an error.
func (s *FileStore) load() error {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 64<<10)
	for i := 0; ; i++ {
		n := i + 1
		line, err := rd.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("line %d: %w", n, err)
		}
		last := err != nil // io.EOF: no newline after this one
		if last && len(line) == 0 {
			return nil
		}
		var l fileLine
		if err := json.Unmarshal(line, &l); err != nil {
			if last && i > 0 {
				return nil // torn tail: an append cut short by a crash, never acknowledged
			}
			return fmt.Errorf("line %d: %w", n, err)
		}
		switch {
		case i == 0:
			if l.Version != fileVersion {
				return fmt.Errorf("line 1: journal version %d, this build reads %d", l.Version, fileVersion)
			}
		case l.Request != nil:
			r := l.Request
			if r.ID == "" || !r.State.valid() {
				return fmt.Errorf("line %d: malformed request", n)
			}
			s.requests[r.ID] = r
		case l.Grant != nil:
			g := l.Grant
			if g.Hash == "" || g.RequestID == "" {
				return fmt.Errorf("line %d: malformed grant", n)
			}
			s.grants[g.RequestID] = g
		default:
			return fmt.Errorf("line %d: neither a request nor a grant", n)
		}
		if last {
			return nil
		}
	}
}

// compactLocked drops entries past retention and rewrites the journal: temp file, fsync, rename,
// fsync directory, so a crash leaves either the old or the new journal, never a torn one.
func (s *FileStore) compactLocked(now time.Time) error {
	for id, r := range s.requests {
		if r.State != StatePending && now.Sub(r.Closed) > s.retain && now.After(r.GrantExpires) {
			delete(s.requests, id)
		}
	}
	for id, g := range s.grants {
		if now.Sub(g.Expires) > s.retain || (!g.Consumed.IsZero() && now.Sub(g.Consumed) > s.retain) {
			delete(s.grants, id)
		}
	}
	if s.path == "" {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.Encode(fileLine{Version: fileVersion})
	reqs := make([]*Request, 0, len(s.requests))
	for _, r := range s.requests {
		reqs = append(reqs, r)
	}
	slices.SortFunc(reqs, func(a, b *Request) int { return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID)) })
	for _, r := range reqs {
		if err := enc.Encode(fileLine{Request: r}); err != nil {
			return fmt.Errorf("encode approval store: %w", err)
		}
	}
	for _, g := range s.grants {
		if err := enc.Encode(fileLine{Grant: g}); err != nil {
			return fmt.Errorf("encode approval store: %w", err)
		}
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, ".approvals-*.tmp")
	if err != nil {
		return fmt.Errorf("compact approval store: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("compact approval store: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("compact approval store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("compact approval store: %w", err)
	}
	// The append handle is opened before the rename: opened after it, a failure (no descriptor
	// left) would leave later changes appended to the replaced journal's unlinked file,
	// acknowledged and gone at the next start.
	j, err := os.OpenFile(tmp, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open approval store: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		j.Close()
		return fmt.Errorf("compact approval store: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	if s.journal != nil {
		s.journal.Close()
	}
	s.journal, s.lines, s.size, s.live, s.broken = j, 0, int64(buf.Len()), int64(buf.Len()), nil
	return nil
}

// appendLocked writes lines to the journal in one write and syncs it before the change is
// acknowledged. If the write fails the caller rolls back its in-memory change; if it succeeds the
// caller applies the change and then calls appliedLocked.
func (s *FileStore) appendLocked(now time.Time, lines ...fileLine) error {
	if s.closed {
		return ErrClosed
	}
	if s.journal == nil {
		return nil
	}
	if s.broken != nil {
		return s.broken
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			return fmt.Errorf("encode approval store: %w", err)
		}
	}
	if _, err := s.journal.Write(buf.Bytes()); err != nil {
		return s.cutBackLocked(fmt.Errorf("append to approval store: %w", err))
	}
	if err := s.journal.Sync(); err != nil {
		return s.cutBackLocked(fmt.Errorf("sync approval store: %w", err))
	}
	s.size += int64(buf.Len())
	s.lines += len(lines)
	return nil
}

// appliedLocked is called once a change that appendLocked stored is applied in memory: it
// compacts the journal when it has grown well past the live state. Not before: a compaction
// rewrites the journal from memory, and one made between the append and the change it stored
// would drop that change at the next start (a consumed grant usable again, a decision gone).
func (s *FileStore) appliedLocked(now time.Time) {
	if s.journal == nil {
		return
	}
	manyLines := s.lines > s.compact && s.lines >= 2*(len(s.requests)+len(s.grants))
	manyBytes := s.size-s.live > max(s.live, s.compactBytes)
	if manyLines || manyBytes {
		// The change is already durable; a failed compaction only leaves a longer journal.
		s.compactLocked(now)
	}
}

// cutBackLocked undoes a failed append: a write cut short (disk full) leaves part of a line, and
// the next append would follow it mid-line, making the journal unreadable at the next start; a
// failed sync leaves a change the caller rolls back in memory. The journal is truncated to what was
// acknowledged. If even that fails, the store refuses every later change (fail closed) rather than
// write after the fragment.
func (s *FileStore) cutBackLocked(err error) error {
	if terr := s.journal.Truncate(s.size); terr != nil {
		s.broken = fmt.Errorf("approval store %s is unusable until the daemon restarts: a failed append could not be undone: %w", s.path, terr)
		return fmt.Errorf("%w (%v)", err, s.broken)
	}
	return err
}

func (s *FileStore) notify(c Change) {
	s.mu.Lock()
	fn := s.hook
	s.mu.Unlock()
	if fn != nil {
		fn(c)
	}
}

// OnChange implements Store.
func (s *FileStore) OnChange(fn func(Change)) {
	s.mu.Lock()
	s.hook = fn
	s.mu.Unlock()
}

// Create implements Store.
func (s *FileStore) Create(_ context.Context, r *Request) error {
	s.mu.Lock()
	if _, dup := s.requests[r.ID]; dup {
		s.mu.Unlock()
		return fmt.Errorf("create approval request %s: id already exists", r.ID)
	}
	c := r.Clone()
	now := time.Now()
	err := s.appendLocked(now, fileLine{Request: c})
	if err == nil {
		s.requests[r.ID] = c
		s.appliedLocked(now)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.notify(Change{ID: r.ID, Event: EventCreated})
	return nil
}

// Get implements Store.
func (s *FileStore) Get(_ context.Context, id string) (*Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return r.Clone(), nil
}

// List implements Store.
func (s *FileStore) List(_ context.Context, f Filter) ([]*Request, error) {
	s.mu.Lock()
	var out []*Request
	for _, r := range s.requests {
		if f.match(r) {
			out = append(out, r.Clone())
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *Request) int { return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID)) })
	if f.Limit > 0 && len(out) > f.Limit {
		if f.Newest {
			out = out[len(out)-f.Limit:]
		} else {
			out = out[:f.Limit]
		}
	}
	return out, nil
}

// Decide implements Store.
func (s *FileStore) Decide(_ context.Context, id string, d Decision, w Windows) (*Request, *Grant, error) {
	s.mu.Lock()
	cur, ok := s.requests[id]
	if !ok {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	next := cur.Clone()
	g, err := decide(next, d, w)
	if err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	lines := []fileLine{{Request: next}}
	if g != nil {
		lines = append(lines, fileLine{Grant: g})
	}
	if err := s.appendLocked(d.Time, lines...); err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	s.requests[id] = next
	var gc *Grant
	if g != nil {
		s.grants[id] = g
		c := *g
		gc = &c
	}
	s.appliedLocked(d.Time)
	out := next.Clone()
	s.mu.Unlock()
	s.notify(Change{ID: id, Event: EventDecided})
	return out, gc, nil
}

// Finish implements Store.
func (s *FileStore) Finish(_ context.Context, id string, st State, reason string, now time.Time) (*Request, bool, error) {
	s.mu.Lock()
	cur, ok := s.requests[id]
	if !ok {
		s.mu.Unlock()
		return nil, false, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	next := cur.Clone()
	if !finish(next, st, reason, now) {
		s.mu.Unlock()
		return next, false, nil
	}
	if err := s.appendLocked(now, fileLine{Request: next}); err != nil {
		s.mu.Unlock()
		return nil, false, err
	}
	s.requests[id] = next
	s.appliedLocked(now)
	out := next.Clone()
	s.mu.Unlock()
	s.notify(Change{ID: id, Event: eventFor(st)})
	return out, true, nil
}

// ConsumeGrant implements Store. With several usable grants for one hash the oldest goes first.
func (s *FileStore) ConsumeGrant(_ context.Context, hash, rule, ruleDigest string, now time.Time) (*Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *Grant
	for _, g := range s.grants {
		if g.Hash == hash && g.Rule == rule && g.RuleDigest != "" && g.RuleDigest == ruleDigest &&
			g.Consumed.IsZero() && now.Before(g.Expires) && (best == nil || g.Created.Before(best.Created)) {
			best = g
		}
	}
	if best == nil {
		return nil, nil
	}
	used := *best
	used.Consumed = now
	if err := s.appendLocked(now, fileLine{Grant: &used}); err != nil {
		return nil, err
	}
	s.grants[used.RequestID] = &used
	s.appliedLocked(now)
	c := used
	return &c, nil
}

// RevokeGrants implements Store.
func (s *FileStore) RevokeGrants(_ context.Context, owner string, rules map[string]string, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []fileLine
	for _, g := range s.grants {
		// A grant whose request is gone from the store is revoked too: its owner is unknown.
		if r, ok := s.requests[g.RequestID]; ok && r.Owner != owner {
			continue
		}
		if g.Consumed.IsZero() && now.Before(g.Expires) && ruleChange(rules, g.Rule, g.RuleDigest) != "" {
			revoked := *g
			revoked.Expires = now
			lines = append(lines, fileLine{Grant: &revoked})
		}
	}
	if len(lines) == 0 {
		return 0, nil
	}
	if err := s.appendLocked(now, lines...); err != nil {
		return 0, err
	}
	for _, l := range lines {
		s.grants[l.Grant.RequestID] = l.Grant
	}
	s.appliedLocked(now)
	return len(lines), nil
}

// ShrinkExpired implements Store. Each shrunk request is journaled like any change, so a restart
// does not bring back what was cut.
func (s *FileStore) ShrinkExpired(_ context.Context, owner string, cutoff time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []fileLine
	for _, r := range s.requests {
		if r.Owner != owner || r.State != StateExpired || !r.shrinkable(cutoff) {
			continue
		}
		shrunk := r.Clone()
		shrunk.endUndecided(cutoff)
		lines = append(lines, fileLine{Request: shrunk})
	}
	if len(lines) == 0 {
		return 0, nil
	}
	now := time.Now()
	if err := s.appendLocked(now, lines...); err != nil {
		return 0, err
	}
	for _, l := range lines {
		s.requests[l.Request.ID] = l.Request
	}
	s.appliedLocked(now)
	return len(lines), nil
}

// Close implements Store: later changes fail with ErrClosed and the file lock is released.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.journal != nil {
		err = s.journal.Close()
	}
	if s.lock != nil {
		s.lock.Close() // closing the descriptor drops the flock
	}
	return err
}
