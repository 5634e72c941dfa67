package pgguard

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/enforcer-dev/enforcer/internal/record"
)

// Why a read's record may wait for the next statement: with one busy connection the daemon's
// thread usually shares a CPU with the client, and the server runs on the other. Appending the
// record when the result reaches the client (Delivered) then holds the client's turn: it cannot
// run until the daemon waits again, so every microsecond of recording is on the round trip
// (measured: 8 µs of spinning there cost 5–7 % of pgbench's select-only TPS at one client, the
// same spin after the next statement was forwarded cost nothing). Once the next statement is at
// the server, the daemon has the time the server takes to answer it.
//
// It waits only if no other connection recorded a statement since this one's: with several busy
// connections the daemon's time is theirs as well, and a record touched again after their work
// comes back cold (measured at 8 clients: 2-3 % of TPS when every read waited, and as much when
// reads waited whenever no other connection had a statement at the server, which is often the
// case when the daemon is what the clients wait for).

// lateRecord is a delivered read with its result, waiting (see recorder.late), with the storage
// its strings and slices point into.
type lateRecord struct {
	stmt     record.Statement
	params   cells
	res      record.Result
	rows     cells
	colNames []string
	id       uint64
	time     time.Time
}

// lateReads writes the late records of connections that send no next statement within the
// log's async window. One per Shared; its timer is armed only while a listed connection may have
// one waiting.
type lateReads struct {
	mu     sync.Mutex
	guards []*Guard
	spare  []*Guard
	timer  *time.Timer
}

// add lists g for the next sweep, unless it is listed already.
func (l *lateReads) add(g *Guard) {
	if !g.rec.listed.CompareAndSwap(false, true) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.guards = append(l.guards, g)
	if len(l.guards) > 1 {
		return
	}
	window := g.rec.log.AsyncWindow()
	if l.timer == nil {
		l.timer = time.AfterFunc(window, l.sweep)
	} else {
		l.timer.Reset(window)
	}
}

// FlushLate writes the late reads of every connection now, for a daemon about to close the log
// while connections may still be open.
func (sh *Shared) FlushLate() {
	sh.late.mu.Lock()
	if sh.late.timer != nil {
		sh.late.timer.Stop()
	}
	sh.late.mu.Unlock()
	sh.late.sweep()
}

// sweep writes every listed connection's late record. A connection is taken off the list before
// its record is written, so one that defers another read meanwhile is listed again.
func (l *lateReads) sweep() {
	l.mu.Lock()
	guards := l.guards
	l.guards, l.spare = l.spare[:0], nil
	l.mu.Unlock()
	for i, g := range guards {
		g.rec.listed.Store(false)
		if err := g.rec.flushLate(); err != nil {
			g.log.Error("recording result", "err", err)
		}
		guards[i] = nil
	}
	l.mu.Lock()
	l.spare = guards[:0]
	l.mu.Unlock()
}

// noteStatement makes g the connection that recorded the latest statement (see late reads).
func (g *Guard) noteStatement() {
	if g.sh.lastStatement.Load() != g {
		g.sh.lastStatement.Store(g)
	}
}

// mayDefer says whether a read delivered now may wait for this connection's next statement: no
// other connection recorded a statement since this one's.
func (g *Guard) mayDefer() bool { return g.sh.lastStatement.Load() == g }

// deferLocked moves the waiting read and its result to late, and late's storage to them, so the
// next statement and result are collected while it waits. Nothing may wait in late.
func (r *recorder) deferLocked() {
	l := &r.late
	l.stmt, r.stmt = r.stmt, l.stmt
	l.params, r.params = r.params, l.params
	l.res, r.cur = r.cur, l.res
	l.rows, r.rows = r.rows, l.rows
	l.colNames, r.colNames = r.colNames, l.colNames
	l.id, l.time = r.stmtOf, r.stmtTime
	r.stmt, r.stmtOf = record.Statement{}, 0
	r.stmtWaits, r.resWaits, r.lateWaits = false, false, true
	r.hasLate.Store(true)
	r.hasStmt.Store(false)
	r.hasResult.Store(false)
}

// writeLateLocked writes the late record, if one waits.
func (r *recorder) writeLateLocked() error {
	if !r.lateWaits {
		return nil
	}
	l := &r.late
	l.stmt.ID, l.stmt.Result = l.id, &l.res
	err := r.append(record.Event{Type: record.TypeStatement, Time: l.time, Statement: &l.stmt}, record.Async)
	l.stmt = record.Statement{}
	clear(l.res.Rows) // past len, begin left them cleared
	l.res.Rows = l.res.Rows[:0]
	l.params.release()
	l.rows.release()
	r.lateWaits = false
	r.hasLate.Store(false)
	return err
}

// flushLate writes the late record, if one waits. Safe from any goroutine.
func (r *recorder) flushLate() error {
	if !r.hasLate.Load() {
		return nil
	}
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	return r.writeLateLocked()
}

// Forwarded implements postgres.Forwarder: the server has the client's next statement, so a
// late record is written while the server works on it.
func (g *Guard) Forwarded() {
	if g.rec == nil {
		return
	}
	if err := g.rec.flushLate(); err != nil {
		g.log.Error("recording result", "err", err)
	}
}

// isLateRead says whether what waits is one read with its own result, the case late is for.
func (r *recorder) isLateRead() bool {
	return r.stmtWaits && r.resWaits && r.resHasOf && r.resOf == r.stmtOf && !r.lateWaits
}

// lateState is the part of recorder that late reads add (embedded in recorder).
type lateState struct {
	// late holds a delivered read and its result until the client's next statement is at the
	// server (Forwarded), the connection records anything else, or Shared's sweep writes it
	// within the log's async window. Under pendingMu; lateWaits says it holds one.
	late      lateRecord
	lateWaits bool
	hasLate   atomic.Bool
	listed    atomic.Bool // on Shared.late
}
