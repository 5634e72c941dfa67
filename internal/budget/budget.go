// Package budget bounds the memory the sessions of a server take together, in all and by owner
// (the uid of the agent behind a session), so that no session can exhaust the daemon's memory
// and no owner can take the whole bound from the others.
package budget

import "sync"

// Shared counts the bytes its sessions have taken, in all and by owner. Its zero value has
// nothing taken; a nil *Shared bounds nothing.
type Shared struct {
	mu      sync.Mutex
	used    int64
	byOwner map[string]int64
}

// OwnerShare is the most of limit one owner may take: three quarters, so the other owners always
// have a quarter, and one owner can still take a message or body as large as most of limit.
func OwnerShare(limit int64) int64 { return limit - limit/4 }

// Take reserves n bytes for owner unless that would take the total past limit, or owner's bytes
// past OwnerShare(limit); a negative n gives back and always succeeds. Callers take when a buffer
// grows, not per message, so the lock is off their common path.
func (s *Shared) Take(owner string, n, limit int64) bool {
	if s == nil || n == 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := s.byOwner[owner]
	if n > 0 && (s.used+n > limit || mine+n > OwnerShare(limit)) {
		return false
	}
	s.used += n
	if mine += n; mine > 0 {
		if s.byOwner == nil {
			s.byOwner = map[string]int64{}
		}
		s.byOwner[owner] = mine
	} else {
		delete(s.byOwner, owner)
	}
	return true
}

// Give gives back n bytes owner took.
func (s *Shared) Give(owner string, n int64) { s.Take(owner, -n, 0) }

// InUse returns the bytes taken, in all and by owner.
func (s *Shared) InUse(owner string) (all, owners int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.byOwner[owner]
}
