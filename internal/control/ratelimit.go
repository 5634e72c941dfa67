package control

import (
	"fmt"
	"net/http"
	"sync"
	"time"
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

	now   func() time.Time
	mu    sync.Mutex
	byKey map[peerKey]*bucket
}

// bucket holds tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

// forgetFullBuckets is how many buckets a RateLimit holds before it drops the full ones, which
// are as good as absent.
const forgetFullBuckets = 1024

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
	if l.byKey == nil {
		l.byKey = map[peerKey]*bucket{}
	}
	if len(l.byKey) >= forgetFullBuckets {
		for k, b := range l.byKey {
			if l.refill(b, now) >= float64(l.Burst) {
				delete(l.byKey, k)
			}
		}
	}
	b, ok := l.byKey[key]
	if !ok {
		b = &bucket{tokens: float64(l.Burst), at: now}
		l.byKey[key] = b
	}
	b.tokens, b.at = l.refill(b, now), now
	if b.tokens >= 1 {
		b.tokens--
		return nil
	}
	wait := time.Duration((1 - b.tokens) * float64(l.Every)).Round(time.Second)
	wait = max(wait, time.Second)
	return &Error{Status: http.StatusTooManyRequests, RetryAfter: wait,
		Message: fmt.Sprintf("too many %s from uid %d (at most %d at once, then one every %v): try again in %v", l.What, c.UID, l.Burst, l.Every, wait)}
}

// refill is b's tokens at now.
func (l *RateLimit) refill(b *bucket, now time.Time) float64 {
	elapsed := now.Sub(b.at)
	if elapsed <= 0 {
		return b.tokens
	}
	return min(float64(l.Burst), b.tokens+float64(elapsed)/float64(l.Every))
}
