package approval

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// FileStore keeps requests in memory and, when it has a path, in a JSON file rewritten atomically
// after every change. It serves one daemon.
type FileStore struct {
	path   string
	retain time.Duration
	lock   *os.File // flock held while open: one daemon per file

	mu       sync.Mutex
	closed   bool
	requests map[string]*Request
	grants   []*Grant
	hook     func(Change)
}

// fileVersion is the layout version of the state file.
const fileVersion = 1

type fileState struct {
	Version  int        `json:"version"`
	Requests []*Request `json:"requests"`
	Grants   []*Grant   `json:"grants"`
}

// DefaultRetain is how long finished requests and used or expired grants stay in a FileStore.
const DefaultRetain = 7 * 24 * time.Hour

// NewMemoryStore returns a FileStore that keeps nothing across restarts (for tests and
// `--approval-store=memory`).
func NewMemoryStore() *FileStore {
	return &FileStore{retain: DefaultRetain, requests: map[string]*Request{}}
}

// OpenFileStore loads the store from path (created 0600 if missing). Requests still pending in the
// file belonged to clients of a previous daemon process that are gone: they are failed. Decisions
// and grants are kept. retain (0 means DefaultRetain) bounds how long finished entries stay.
func OpenFileStore(path string, retain time.Duration) (*FileStore, error) {
	s := NewMemoryStore()
	s.path = path
	if retain > 0 {
		s.retain = retain
	}
	// Two daemons writing one file would overwrite each other's decisions and grants.
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
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read approval store: %w", err)
	default:
		var st fileState
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("approval store %s: %w", path, err)
		}
		if st.Version != fileVersion {
			return nil, fmt.Errorf("approval store %s: version %d, this build reads %d", path, st.Version, fileVersion)
		}
		now := time.Now()
		for _, r := range st.Requests {
			if r == nil || r.ID == "" || !r.State.valid() {
				return nil, fmt.Errorf("approval store %s: malformed request entry", path)
			}
			finish(r, StateFailed, "the daemon restarted while the request was pending", now)
			s.requests[r.ID] = r
		}
		for _, g := range st.Grants {
			if g == nil || g.Hash == "" {
				return nil, fmt.Errorf("approval store %s: malformed grant entry", path)
			}
			s.grants = append(s.grants, g)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.saveLocked(time.Now()); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// ErrClosed is returned by a store used after Close.
var ErrClosed = errors.New("approval store is closed")

// saveLocked prunes old entries and writes the file: temp file, fsync, rename, fsync directory, so
// a crash leaves either the old or the new state, never a torn one.
func (s *FileStore) saveLocked(now time.Time) error {
	for id, r := range s.requests {
		if r.State != StatePending && now.Sub(r.Closed) > s.retain && now.After(r.GrantExpires) {
			delete(s.requests, id)
		}
	}
	s.grants = slices.DeleteFunc(s.grants, func(g *Grant) bool {
		return now.Sub(g.Expires) > s.retain || (!g.Consumed.IsZero() && now.Sub(g.Consumed) > s.retain)
	})
	if s.closed {
		return ErrClosed
	}
	if s.path == "" {
		return nil
	}
	st := fileState{Version: fileVersion, Grants: s.grants, Requests: make([]*Request, 0, len(s.requests))}
	for _, r := range s.requests {
		st.Requests = append(st.Requests, r)
	}
	slices.SortFunc(st.Requests, func(a, b *Request) int { return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID)) })
	b, err := json.MarshalIndent(st, "", "\t")
	if err != nil {
		return fmt.Errorf("encode approval store: %w", err)
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, ".approvals-*.tmp")
	if err != nil {
		return fmt.Errorf("write approval store: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write approval store: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write approval store: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync approval store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write approval store: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("replace approval store: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
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
	s.requests[r.ID] = r.Clone()
	err := s.saveLocked(time.Now())
	if err != nil {
		delete(s.requests, r.ID)
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
		out = out[:f.Limit]
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
	s.requests[id] = next
	if g != nil {
		s.grants = append(s.grants, g)
	}
	if err := s.saveLocked(d.Time); err != nil {
		s.requests[id] = cur
		if g != nil {
			s.grants = s.grants[:len(s.grants)-1]
		}
		s.mu.Unlock()
		return nil, nil, err
	}
	out := next.Clone()
	var gc *Grant
	if g != nil {
		c := *g
		gc = &c
	}
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
	s.requests[id] = next
	if err := s.saveLocked(now); err != nil {
		s.requests[id] = cur
		s.mu.Unlock()
		return nil, false, err
	}
	out := next.Clone()
	s.mu.Unlock()
	s.notify(Change{ID: id, Event: eventFor(st)})
	return out, true, nil
}

// ConsumeGrant implements Store.
func (s *FileStore) ConsumeGrant(_ context.Context, hash string, now time.Time) (*Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.grants {
		if g.Hash != hash || !g.Consumed.IsZero() || !now.Before(g.Expires) {
			continue
		}
		g.Consumed = now
		if err := s.saveLocked(now); err != nil {
			g.Consumed = time.Time{}
			return nil, err
		}
		c := *g
		return &c, nil
	}
	return nil, nil
}

// Close implements Store: later changes fail with ErrClosed and the file lock is released.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.lock != nil {
		return s.lock.Close() // closing the descriptor drops the flock
	}
	return nil
}
