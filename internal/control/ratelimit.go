package control

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/enforcer-dev/enforcer/internal/ratelimit"
)

// RateLimit is a token bucket per user, for requests that cost the daemon a write to disk or a
// kernel object (a login, a run): each user may make Burst at once, then one every Every. Like
// the connection limit it counts a user's enforced processes apart from its others, so an agent
// that spends its bucket does not hold its developer back, and it does not count root, which
// owns the daemon anyway.
type RateLimit struct {
	What  string        // what is counted, plural, for the refusal: "logins"
	Every time.Duration // one more allowed per Every
	Burst int

	now     func() time.Time
	mu      sync.Mutex
	buckets ratelimit.Buckets[peerKey]
}

// Allow takes one token from c's bucket (confined: c runs under enforcement) or, when it is
// empty, returns an Error with status 429 that says when to try again.
func (l *RateLimit) Allow(c Caller, confined bool) error {
	if c.IsRoot() {
		return nil
	}
	key := peerKey{uid: c.UID, confined: confined}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	l.buckets.Burst, l.buckets.Every = l.Burst, l.Every
	wait, ok := l.buckets.Take(key, now)
	if ok {
		return nil
	}
	return &Error{Status: http.StatusTooManyRequests, RetryAfter: wait,
		Message: fmt.Sprintf("too many %s from uid %d (at most %d at once, then one every %v): try again in %v", l.What, c.UID, l.Burst, l.Every, wait)}
}
