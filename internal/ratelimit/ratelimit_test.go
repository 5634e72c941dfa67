package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestTake(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		name  string
		takes []time.Duration // when each take is made
		want  []time.Duration // 0: taken; else the wait said
	}{
		{"a burst, then one every Every", []time.Duration{0, 0, 0, 5 * time.Second, 5 * time.Second}, []time.Duration{0, 0, 5 * time.Second, 0, 5 * time.Second}},
		{"waits are whole seconds, rounded up", []time.Duration{0, 0, 3750 * time.Millisecond, 4999 * time.Millisecond}, []time.Duration{0, 0, 2 * time.Second, time.Second}},
		{"an idle bucket fills to the burst only", []time.Duration{0, time.Hour, time.Hour, time.Hour}, []time.Duration{0, 0, 0, 5 * time.Second}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := Buckets[string]{Burst: 2, Every: 5 * time.Second}
			for i, at := range c.takes {
				wait, ok := l.Take("alice", start.Add(at))
				if ok != (c.want[i] == 0) || wait != c.want[i] {
					t.Errorf("take %d at %v: wait %v ok %v, want wait %v", i, at, wait, ok, c.want[i])
				}
			}
		})
	}
}

// TestFullBucketsForgotten: past forgetFull keys, buckets that are full again are dropped, and
// one that is not keeps its state.
func TestFullBucketsForgotten(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	l := Buckets[string]{Burst: 1, Every: time.Minute}
	l.Take("busy", start.Add(time.Hour))
	for i := range forgetFull {
		l.Take(fmt.Sprint(i), start)
	}
	if _, ok := l.Take("new", start.Add(time.Hour)); !ok || len(l.byKey) > 3 {
		t.Fatalf("%d buckets kept after the full ones could go", len(l.byKey))
	}
	if _, ok := l.Take("busy", start.Add(time.Hour)); ok {
		t.Error("an empty bucket was forgotten")
	}
}
