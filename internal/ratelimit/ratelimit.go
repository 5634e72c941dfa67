// Package ratelimit keeps a token bucket per key: each key may take Burst tokens at once, then
// one every Every.
package ratelimit

import "time"

// Buckets is a token bucket per key. The zero value with Burst and Every set is ready to use. It
// is not safe for concurrent use: callers take it under the lock that guards what it limits.
type Buckets[K comparable] struct {
	Burst int
	Every time.Duration

	byKey map[K]*bucket
}

// bucket holds tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

// forgetFull is how many buckets Buckets holds before it drops the full ones, which are as good
// as absent.
const forgetFull = 1024

// Take takes one of key's tokens at now, or returns how long until there is one: whole seconds,
// rounded up, so that a retry at the time said is not refused again.
func (l *Buckets[K]) Take(key K, now time.Time) (wait time.Duration, ok bool) {
	if l.byKey == nil {
		l.byKey = map[K]*bucket{}
	}
	if len(l.byKey) >= forgetFull {
		for k, b := range l.byKey {
			if l.refill(b, now) >= float64(l.Burst) {
				delete(l.byKey, k)
			}
		}
	}
	b, found := l.byKey[key]
	if !found {
		b = &bucket{tokens: float64(l.Burst), at: now}
		l.byKey[key] = b
	}
	b.tokens, b.at = l.refill(b, now), now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	wait = (time.Duration((1-b.tokens)*float64(l.Every)) + time.Second - 1).Truncate(time.Second)
	return max(wait, time.Second), false
}

// refill is b's tokens at now.
func (l *Buckets[K]) refill(b *bucket, now time.Time) float64 {
	elapsed := now.Sub(b.at)
	if elapsed <= 0 {
		return b.tokens
	}
	return min(float64(l.Burst), b.tokens+float64(elapsed)/float64(l.Every))
}
