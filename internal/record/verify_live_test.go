package record

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// TestVerifyWhileRetentionRemovesSegments: verifying the log of a running daemon whose retention
// removes the oldest segments meanwhile (a long verify of a large log meets it) reads the log
// again rather than failing with a segment it listed and could not open.
func TestVerifyWhileRetentionRemovesSegments(t *testing.T) {
	dir := memDir(t)
	r := openT(t, Options{Dir: dir, SegmentBytes: 4000, MaxBytes: 40000})
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			for _, ev := range sessionEvents(fmt.Sprintf("s%d", i)) {
				if err := r.Append(ev, WriteAhead); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	defer func() {
		stop.Store(true)
		<-done
		r.Close()
	}()
	for i := 0; i < 150; i++ {
		rep, err := Verify(dir, nil)
		if err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if !rep.OK() {
			t.Fatalf("verify %d: %v", i, rep.Problem)
		}
	}
}
