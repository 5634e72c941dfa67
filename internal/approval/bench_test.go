package approval

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func BenchmarkBindingHash(b *testing.B) {
	bind := baseBinding()
	b.ReportAllocs()
	for b.Loop() {
		bind.Hash()
	}
}

// BenchmarkRoundTrip measures the approval machinery alone: hold a statement, approve it from
// another goroutine, return to the waiter. The human's reaction time dwarfs it; the number shows
// the overhead each store adds (the file store fsyncs on every change).
func BenchmarkRoundTrip(b *testing.B) {
	stores := map[string]func(b *testing.B) Store{
		"memory": func(*testing.B) Store { return NewMemoryStore() },
		"file": func(b *testing.B) Store {
			s, err := OpenFileStore(filepath.Join(b.TempDir(), "a.json"), 0)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		},
	}
	for name, open := range stores {
		b.Run(name, func(b *testing.B) {
			br := NewBroker(open(b), Config{RequestEvery: time.Nanosecond}) // a token for every round trip
			ctx := context.Background()
			spec := updateSpec("1")
			ids := make(chan string, 1)
			for b.Loop() {
				go func() {
					id := <-ids
					if _, err := br.Approve(ctx, id, bob, ""); err != nil {
						b.Error(err)
					}
				}()
				out, err := br.Request(ctx, spec, func(r *Request) error { ids <- r.ID; return nil })
				if err != nil || !out.Approved() {
					b.Fatalf("%+v, %v", out, err)
				}
			}
		})
	}
}
