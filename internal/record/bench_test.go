package record

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures Append in each durability mode with 1 and 8 appending goroutines and
// reports records/s, fsyncs/s and records per fsync (group commit), plus the ratio of each mode's
// throughput to async at the same concurrency.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 2000x -count=1 ./internal/record/
func BenchmarkAppend(b *testing.B) {
	modes := []struct {
		name   string
		d      Durability
		strict bool
	}{
		{"async", Async, false},
		{"write-ahead", WriteAhead, false},
		{"strict", Async, true},
	}
	ev := Event{Type: TypeStatement, Session: "bench-session-0001", Statement: &Statement{
		Class: "read", Protocol: "extended", Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		Params: []*string{str("48213")}, Verdict: VerdictAllow}}
	asyncRate := map[int]float64{}
	for _, g := range []int{1, 8} {
		for _, m := range modes {
			b.Run(fmt.Sprintf("%s/goroutines=%d", m.name, g), func(b *testing.B) {
				r := openT(b, Options{Dir: b.TempDir(), Strict: m.strict})
				defer r.Close()
				before := r.Stats()
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < g; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if err := r.Append(ev, m.d); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(start).Seconds()
				b.StopTimer()
				st := r.Stats()
				recs := float64(st.Records - before.Records)
				fs := float64(st.Fsyncs - before.Fsyncs)
				rate := float64(b.N) / el
				b.ReportMetric(rate, "records/s")
				b.ReportMetric(fs/el, "fsyncs/s")
				if fs > 0 {
					b.ReportMetric(recs/fs, "records/fsync")
				}
				if m.name == "async" {
					asyncRate[g] = rate
				} else if a := asyncRate[g]; a > 0 {
					b.ReportMetric(rate/a, "x_async")
				}
			})
		}
	}
}

// BenchmarkVerify measures Verify over a 20000-record log (records/s).
//
//	go test -run '^$' -bench BenchmarkVerify -count=1 ./internal/record/
func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	r := openT(b, Options{Dir: dir, SegmentBytes: 1 << 20})
	for i := 0; i < 2000; i++ {
		appendAll(b, r, sessionEvents(fmt.Sprintf("s%d", i)), Async)
	}
	r.Close()
	b.ResetTimer()
	var n uint64
	for i := 0; i < b.N; i++ {
		rep, err := Verify(dir, nil)
		if err != nil || !rep.OK() {
			b.Fatal(err, rep.Problem)
		}
		n += rep.Records
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
