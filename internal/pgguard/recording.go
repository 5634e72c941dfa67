package pgguard

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// recorder writes one connection's session to the log. Statements are recorded from the
// client-side goroutine, results from the server-side one, and either side may write what waits
// (see pendingMu). Record.Append encodes before it returns, so each side reuses its record structs
// and their storage from one record to the next.
type recorder struct {
	log     *record.Recorder
	strict  bool
	maxRows int
	id      string
	started time.Time
	// The log's caps (Recorder.ValueCaps): values are kept cut to valueCap as they are
	// captured, and a result's rows only while their values fit in valuesCap.
	valueCap, valuesCap int
	// startDone is set once the session's start record was attempted (under the guard's mu).
	startDone bool

	// Client goroutine only, while no statement is pending.
	stmt   record.Statement
	params cells

	// Server goroutine only, while no result is pending: the result being collected, and the
	// statement it belongs to (curOf, when curHasOf).
	cur        record.Result
	curTime    time.Time
	collecting bool
	curOf      uint64
	curHasOf   bool
	colNames   []string // names of the last RowDescription, reused while they repeat
	lastTag    string
	rows       cells
	full       bool // the result's rows took the log's budget for values (valuesCap)

	// Records that wait, written once the client has the result (Delivered) or before any other
	// record of this connection, whichever comes first, so they are off the client's round trip
	// and keep their order: a statement that cannot change state waits for its first result and
	// is written with it, as one record; a finished result waits for delivery. A statement and a
	// result are written as one record only when the result is the statement's own (resOf).
	pendingMu sync.Mutex
	stmtWaits bool   // stmt holds a statement not written yet
	stmtOf    uint64 // the ID of the proxy's statement that stmt records
	stmtTime  time.Time
	resWaits  bool   // cur holds a finished result not written yet
	resOf     uint64 // the ID of the statement cur is a result of, when resHasOf
	resHasOf  bool
	hasStmt   atomic.Bool
	hasResult atomic.Bool
	// starts are the statements sent whose results may still come, oldest first, for measuring
	// each result from its own statement's start.
	starts starts

	lateState
}

// maxAwaited bounds the statements starts remembers: how deep a client may pipeline before the
// results of its oldest statements are recorded without a duration.
const maxAwaited = 64

// starts is a ring of the forwarded statements whose results may still come, in the order they
// were sent (the proxy numbers statements in that order, and results come in that order too).
type starts struct {
	ring       [maxAwaited]stmtStart
	head, size int
}

type stmtStart struct {
	id uint64
	at time.Time
}

// push remembers when statement id was sent. Statements not numbered in order (a caller that is
// not the proxy) keep only the latest; a full ring forgets its oldest.
func (q *starts) push(id uint64, at time.Time) {
	if q.size > 0 && id <= q.ring[(q.head+q.size-1)%maxAwaited].id {
		q.size = 0
	}
	if q.size == maxAwaited {
		q.head = (q.head + 1) % maxAwaited
		q.size--
	}
	q.ring[(q.head+q.size)%maxAwaited] = stmtStart{id: id, at: at}
	q.size++
}

// of returns when statement id was sent, forgetting the statements before it: their results are
// over once a later statement's come.
func (q *starts) of(id uint64) (time.Time, bool) {
	for q.size > 0 && q.ring[q.head].id < id {
		q.head = (q.head + 1) % maxAwaited
		q.size--
	}
	if q.size > 0 && q.ring[q.head].id == id {
		return q.ring[q.head].at, true
	}
	return time.Time{}, false
}

// idOf is the proxy's identity of the statement a result belongs to (false for none).
func idOf(s *postgres.Statement) (uint64, bool) {
	if s == nil {
		return 0, false
	}
	return s.ID, true
}

// cells builds rows of nullable strings for a record without allocating once warm: cell text,
// string headers and pointers are carved from buffers reused from one record to the next.
// Strings point into buf, which is only appended to until reset; so reset may be called only
// once the record built from them is written (Record.Append encodes before it returns).
type cells struct {
	buf  []byte
	ends []int
	strs []string
	ptrs []*string
	used int // what the rows since reset take of a record's budget for values (see row)
}

// Past these capacities reset lets the buffers go: a connection that once read a wide result
// does not hold that memory for the rest of its life.
const (
	keepCellBytes = 256 << 10
	keepCells     = 4 << 10
)

func (c *cells) reset() {
	c.buf, c.strs, c.ptrs, c.used = c.buf[:0], c.strs[:0], c.ptrs[:0], 0
	c.release()
}

// release lets go of buffers past the capacities kept, once their record is written.
func (c *cells) release() {
	if cap(c.buf) > keepCellBytes {
		c.buf = nil
	}
	if cap(c.strs) > keepCells {
		c.strs, c.ptrs, c.ends = nil, nil, nil
	}
}

// row returns vals as one record row; nil values are NULL. display, if it returns true, has
// appended to dst the text recorded instead of a value (binary cells by size, masked values).
//
// Each value longer than limit is kept cut (record.CutValue), as the log would record it, so a
// row of huge values costs the recorder no more than limit bytes a value; cut says whether one
// was. Each value takes its length, at most limit, of budget, as the log counts them
// (Recorder's MaxValuesBytes); a row that would take the rows since reset past budget is not
// kept (fits is false).
func (c *cells) row(vals [][]byte, display func(dst []byte, i int, v []byte) ([]byte, bool), limit, budget int) (row []*string, cut, fits bool) {
	first, used := len(c.buf), c.used
	c.ends = c.ends[:0]
	for i, v := range vals {
		if v != nil {
			at := len(c.buf)
			if d, ok := display(c.buf, i, v); ok {
				c.buf = d
				n := len(c.buf) - at
				if n > limit {
					shown := unsafe.String(unsafe.SliceData(c.buf[at:]), n)
					c.buf = append(c.buf[:at], record.CutValue(shown, limit)...)
					cut = true
				}
				used += min(n, limit)
			} else {
				if len(v) > limit {
					c.buf = append(c.buf, record.CutValue(unsafe.String(unsafe.SliceData(v), len(v)), limit)...)
					cut = true
				} else {
					c.buf = append(c.buf, v...)
				}
				used += min(len(v), limit)
			}
			if used > budget {
				c.buf = c.buf[:first]
				return nil, cut, false
			}
		}
		c.ends = append(c.ends, len(c.buf))
	}
	c.used = used
	// The row's bytes are not written again before reset: if buf grew, earlier rows keep the
	// array they point into.
	all := unsafe.String(unsafe.SliceData(c.buf[first:]), len(c.buf)-first)
	base, start := len(c.strs), 0
	for _, end := range c.ends {
		c.strs = append(c.strs, all[start:end-first])
		start = end - first
	}
	// Pointers are taken after this row's appends; earlier rows keep pointing into the backing
	// array they were built in, which stays valid.
	pbase := len(c.ptrs)
	for i, v := range vals {
		var p *string
		if v != nil {
			p = &c.strs[base+i]
		}
		c.ptrs = append(c.ptrs, p)
	}
	return c.ptrs[pbase:len(c.ptrs):len(c.ptrs)], cut, true
}

func (r *recorder) append(ev record.Event, d record.Durability) error {
	ev.Session = r.id
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if r.strict {
		d = record.WriteAhead
	}
	return r.log.Append(ev, d)
}

// start records the session start; a log that cannot be written refuses the session.
func (g *Guard) startRecording(rec *record.Recorder, strict bool, maxRows int) {
	g.rec = &recorder{log: rec, strict: strict, maxRows: maxRows, id: record.NewSessionID(time.Now()), started: time.Now()}
	g.rec.valueCap, g.rec.valuesCap = rec.ValueCaps()
}

// ClientStarted implements postgres.Starter: the session's start is recorded with the
// parameters the client sent and the database it uses. A start that cannot be written refuses
// every statement.
func (g *Guard) ClientStarted(database string, params map[string]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.setDatabase(database)
	g.ensureStarted(params)
}

// ensureStarted writes the session's start record once (with no client parameters when the
// proxy never reported them: a startup that failed, or a caller that is not the proxy).
func (g *Guard) ensureStarted(params map[string]string) {
	r := g.rec
	if r == nil || r.startDone {
		return
	}
	r.startDone = true
	if g.mask != nil {
		// The agent chose them: application_name can carry a URL with its password as well as
		// anything else.
		params = g.mask.plan.MaskStringMap(params)
	}
	id, o, t := g.info.Identity, g.info.Origin, g.info.Target
	err := r.append(record.Event{Type: record.TypeSessionStart, Time: r.started,
		Start: &record.SessionStart{
			CgroupID:     o.CgroupID,
			CgroupPath:   g.info.Cgroup,
			ClientParams: params,
			Identity:     record.Identity{Subject: id.Subject, Email: id.Email, Groups: id.Groups, Provider: id.Provider},
			Origin:       o.Dst.String(),
			Process:      record.Process{Comm: o.Comm, Exe: g.info.Exe, PID: int(o.PID), UID: int(o.UID), Cmdline: g.info.Argv},
			Protocol:     "postgres",
			Target:       record.Target{Name: t.Name, Address: g.info.Upstream, Database: g.database(), User: g.info.DBUser},
		}}, record.Async)
	if err != nil {
		g.recErr = err
		g.log.Error("session log unavailable; refusing statements", "err", err)
	}
}

// SessionID is the id of this connection's recorded session ("" when recording is off).
func (g *Guard) SessionID() string {
	if g.rec == nil {
		return ""
	}
	return g.rec.id
}

// recordStatement records the statement with its verdict. Anything that can change state is
// written ahead: it returns only once the record is durable. An allowed statement that cannot
// waits for its first result (see pendingMu). An error means the statement must not be forwarded.
func (g *Guard) recordStatement(s *postgres.Statement, d *rules.Decision, verdict, approvalID string, params [][]byte) error {
	r := g.rec
	if r == nil {
		return nil
	}
	rule := ""
	if d != nil && d.Rule != nil {
		rule = d.Rule.Rule
	}
	inert := d != nil && d.Result != nil && allInert(d.Result)
	durability := record.DurabilityFor(inert, verdict)
	waits := durability == record.Async && verdict == record.VerdictAllow && !r.strict
	// Whatever waits is written first: its storage is reused below, and records keep their order.
	// A late read may go on waiting for a statement that waits too: it is written first all the
	// same.
	flush := r.flushAll
	if waits {
		flush = r.flushPending
	}
	if err := flush(); err != nil {
		return err
	}
	g.noteStatement()
	var res *sqlclass.Result
	if d != nil {
		res = d.Result
	}
	ruled := g.ruledColumns(res)
	st := &r.stmt
	*st = record.Statement{
		Text: g.shownSQL(s.SQL, res, ruled), Protocol: s.Kind.Protocol(), Verdict: verdict, Rule: rule, ApprovalID: approvalID,
		Class: classOf(d), Params: g.recordParams(s, ruled, params),
	}
	if s.Kind == postgres.KindFunctionCall {
		st.Text = fmt.Sprintf("<function call, oid %d>", s.FunctionOID)
	}
	now := time.Now()
	if waits {
		// Held back until its result; but a log that cannot take it now refuses the statement
		// now, as writing it would.
		if err := r.log.Check(); err != nil {
			*st = record.Statement{}
			return err
		}
		r.pendingMu.Lock()
		defer r.pendingMu.Unlock()
		// A result that finished since flushAll is an earlier statement's: it goes first, alone.
		if r.resWaits {
			if err := r.flushLocked(); err != nil {
				*st = record.Statement{}
				return err
			}
		}
		r.starts.push(s.ID, now)
		r.stmtWaits, r.stmtOf, r.stmtTime = true, s.ID, now
		r.hasStmt.Store(true)
		return nil
	}
	if verdict != record.VerdictBlock { // a refused statement has no results from the server
		r.pendingMu.Lock()
		r.starts.push(s.ID, now)
		r.pendingMu.Unlock()
		st.ID = s.ID // its results are records of their own
	}
	err := r.append(record.Event{Type: record.TypeStatement, Time: now, Statement: st}, durability)
	*st = record.Statement{}
	return err
}

func allInert(res *sqlclass.Result) bool {
	if len(res.Statements) == 0 {
		return false
	}
	for i := range res.Statements {
		if !res.Statements[i].Inert() {
			return false
		}
	}
	return true
}

// classFlags lists the statement classes in the order a record names them.
func classFlags(st *sqlclass.Statement) [12]bool {
	return [12]bool{st.Unknown, st.Privilege, st.UnsafeIO, st.DDL, st.Procedural, st.Writes, st.Session, st.Transaction, st.Maintenance, st.Reads, st.Locks, st.SearchPath}
}

var classFlagNames = [12]string{"unknown", "privilege", "unsafe_io", "ddl", "procedural", "write", "session", "transaction", "maintenance", "read", "locks", "search_path"}

// classNames caches the class string of each combination of flags, built on first use.
var classNames [1 << len(classFlagNames)]atomic.Pointer[string]

// classOf names the statement class for the record: the effects of the deciding statement.
func classOf(d *rules.Decision) string {
	if d == nil || d.Result == nil || len(d.Result.Statements) == 0 {
		return ""
	}
	i := max(d.Statement, 0)
	flags := classFlags(&d.Result.Statements[i])
	key := 0
	for b, on := range flags {
		if on {
			key |= 1 << b
		}
	}
	if p := classNames[key].Load(); p != nil {
		return *p
	}
	var cls []string
	for b, on := range flags {
		if on {
			cls = append(cls, classFlagNames[b])
		}
	}
	name := strings.Join(cls, ",")
	classNames[key].Store(&name)
	return name
}

// recordParams are the statement's parameters as recorded (see displayParams), built in the
// recorder's reused storage.
func (g *Guard) recordParams(s *postgres.Statement, ruled []mask.Source, params [][]byte) []*string {
	if params == nil {
		return nil
	}
	c := &g.rec.params
	c.reset()
	// Parameters are not dropped for room: past MaxValuesBytes the log keeps each as its cut
	// marker, which needs them all.
	row, _, _ := c.row(params, func(dst []byte, i int, v []byte) ([]byte, bool) { return g.appendParam(dst, s, ruled, i, v) }, g.rec.valueCap, math.MaxInt)
	return row
}

// appendParam appends to dst how parameter i is shown when it is not recorded as sent (and
// returns true): binary values by size, text masked like results: by a column rule when the
// statement names ruled columns (ruledColumns), else by the detectors.
func (g *Guard) appendParam(dst []byte, s *postgres.Statement, ruled []mask.Source, i int, p []byte) ([]byte, bool) {
	format := int16(0)
	if len(s.ParamFormats) == 1 {
		format = s.ParamFormats[0]
	} else if i < len(s.ParamFormats) {
		format = s.ParamFormats[i]
	}
	switch {
	case format == 1:
		return appendBinarySize(dst, len(p)), true
	case g.mask != nil:
		out, changed, err := g.mask.plan.MaskValueOf(p, dst, ruled)
		switch {
		case err != nil:
			return append(dst, g.mask.plan.Redacted()...), true
		case !changed:
			return append(dst, p...), true
		}
		return out, true
	}
	return dst, false
}

// appendBinarySize appends what a record shows for a binary value of n bytes.
func appendBinarySize(dst []byte, n int) []byte {
	dst = append(dst, "[binary, "...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, " bytes]"...)
}

// displayParam is appendParam as a string, for reviewers.
func (g *Guard) displayParam(s *postgres.Statement, ruled []mask.Source, i int, p []byte) (string, bool) {
	b, ok := g.appendParam(nil, s, ruled, i, p)
	return string(b), ok
}

// displayParams are the statement's parameters as recorded and shown to reviewers: masked like
// results; binary values only by size.
func (g *Guard) displayParams(s *postgres.Statement, ruled []mask.Source, params [][]byte) []*string {
	if params == nil {
		return nil
	}
	out := make([]*string, len(params))
	for i, p := range params {
		if p == nil {
			continue
		}
		v, ok := g.displayParam(s, ruled, i, p)
		if !ok {
			v = string(p)
		}
		out[i] = &v
	}
	return out
}

// displayApprovalParams converts recorded parameters for reviewers.
func displayApprovalParams(ps []*string) []approval.DisplayParam {
	if ps == nil {
		return nil
	}
	out := make([]approval.DisplayParam, len(ps))
	for i, p := range ps {
		if p == nil {
			out[i] = approval.DisplayParam{Null: true}
		} else {
			out[i] = approval.DisplayParam{Value: *p}
		}
	}
	return out
}

func (g *Guard) recordApproval(id, state, by, reason string, approvers []string) {
	if g.rec == nil {
		return
	}
	if err := g.rec.flushAll(); err != nil {
		g.log.Error("recording result", "err", err)
	}
	err := g.rec.append(record.Event{Type: record.TypeApproval,
		Approval: &record.Approval{ID: id, State: state, By: by, Reason: reason, Approvers: approvers}}, record.Async)
	if err != nil {
		g.log.Error("recording approval", "err", err)
	}
}

// flushAll writes whatever waits, a late read included. Safe from any goroutine.
func (r *recorder) flushAll() error {
	if !r.hasStmt.Load() && !r.hasResult.Load() && !r.hasLate.Load() {
		return nil
	}
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	return r.flushLocked()
}

// flushPending writes a waiting statement or result (a late read before them), so that stmt and
// cur can be reused. Safe from either goroutine.
func (r *recorder) flushPending() error {
	if !r.hasStmt.Load() && !r.hasResult.Load() {
		return nil
	}
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	return r.flushLocked()
}

// flushResult writes a waiting result (with its statement, if that waits too), so cur can be
// reused. Server goroutine.
func (r *recorder) flushResult() error {
	if !r.hasResult.Load() {
		return nil
	}
	return r.flushPending()
}

func (r *recorder) flushLocked() error {
	// A late read came first. If it cannot be written (the writer is behind, say), what waits
	// behind it is tried all the same: it may already be at the server.
	lateErr := r.writeLateLocked()
	var err error
	switch {
	case r.stmtWaits && r.resWaits && r.resHasOf && r.resOf == r.stmtOf:
		r.stmt.Result = &r.cur
		err = r.writeStmt()
	case r.stmtWaits && r.resWaits:
		// Not each other's (neither side lets this happen: each writes the other's first); both
		// are written, in the order they happened.
		var err2 error
		if r.curTime.Before(r.stmtTime) {
			err, err2 = r.writeResult(), r.writeStmt()
		} else {
			err, err2 = r.writeStmt(), r.writeResult()
		}
		if err == nil {
			err = err2
		}
	case r.stmtWaits:
		err = r.writeStmt()
	case r.resWaits:
		err = r.writeResult()
	}
	if r.stmtWaits {
		r.stmt, r.stmtOf = record.Statement{}, 0
		r.params.release()
	}
	if r.resWaits {
		// The written rows point into rows' buffers: neither may stay reachable for them (past
		// len, begin left Rows cleared).
		clear(r.cur.Rows)
		r.cur.Rows = r.cur.Rows[:0]
		r.rows.release()
	}
	// Cleared only now: each side reuses its storage once it sees nothing of its own waiting.
	r.stmtWaits, r.resWaits = false, false
	r.hasStmt.Store(false)
	r.hasResult.Store(false)
	return cmp.Or(lateErr, err)
}

// writeStmt writes the waiting statement alone: its results will be records of their own, which
// name it.
func (r *recorder) writeStmt() error {
	r.stmt.ID = r.stmtOf
	return r.append(record.Event{Type: record.TypeStatement, Time: r.stmtTime, Statement: &r.stmt}, record.Async)
}

// writeResult writes the finished result alone, naming its statement.
func (r *recorder) writeResult() error {
	if r.resHasOf {
		r.cur.StatementID = r.resOf
	}
	return r.append(record.Event{Type: record.TypeResult, Time: r.curTime, Result: &r.cur}, record.Async)
}

// resultDone makes the finished result in cur, of the statement id (if known), wait: with its
// statement, if that is the one waiting, else after it. Its duration is measured from when its
// own statement was sent.
func (r *recorder) resultDone(id uint64, known bool, now time.Time) error {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	var err error
	if r.stmtWaits && (!known || r.stmtOf != id) {
		// A result of an earlier statement (pipelining): the waiting statement goes first, alone.
		err = r.flushLocked()
	}
	r.curTime = now
	if known {
		// A skipped statement's time since it was sent says nothing of it.
		if at, ok := r.starts.of(id); ok && !r.cur.Skipped {
			r.cur.DurationUS = now.Sub(at).Microseconds()
		}
	}
	r.resWaits, r.resOf, r.resHasOf = true, id, known
	r.hasResult.Store(true)
	return err
}

// Delivered implements postgres.Deliverer: the client has every result so far, so what waits is
// written now; or, a read with its own result when no other connection recorded a statement
// since, once the client's next statement is at the server (see late.go).
func (g *Guard) Delivered() {
	r := g.rec
	if r == nil {
		return
	}
	if !r.hasStmt.Load() && !r.hasResult.Load() {
		return
	}
	r.pendingMu.Lock()
	if r.isLateRead() && g.mayDefer() {
		r.deferLocked()
		r.pendingMu.Unlock()
		g.sh.late.add(g)
		return
	}
	err := r.flushLocked()
	r.pendingMu.Unlock()
	if err != nil {
		g.log.Error("recording result", "err", err)
	}
}

// recordResult follows the (already masked) results of the running statement.
func (g *Guard) recordResult(res *postgres.Result) error {
	r := g.rec
	if err := r.flushResult(); err != nil {
		return err
	}
	switch res.Kind {
	case postgres.ResultRowDescription:
		r.begin(res.Statement)
		r.setColumns(res.Columns)
	case postgres.ResultRow:
		if !r.collecting {
			r.begin(res.Statement)
		}
		if r.cur.Columns == nil {
			// No description came through here (an Execute's came with Describe): the row's.
			r.setColumns(res.Columns)
		}
		r.cur.RowCount++
		if r.full || r.maxRows >= 0 && len(r.cur.Rows) >= r.maxRows {
			r.cur.Truncated = true
			return nil
		}
		// The log keeps whole rows while their values fit in its budget for a record, and the
		// capture keeps no more: a hostile result of 1 GB cells costs this connection at most
		// the budget, not the rows times the cells.
		row, cut, fits := r.rows.row(res.Values, func(dst []byte, i int, v []byte) ([]byte, bool) {
			if i < len(res.Formats) && res.Formats[i] == 1 {
				return appendBinarySize(dst, len(v)), true
			}
			return dst, false
		}, r.valueCap, r.valuesCap)
		if !fits {
			r.full, r.cur.Truncated = true, true
			return nil
		}
		r.cur.Truncated = r.cur.Truncated || cut
		r.cur.Rows = append(r.cur.Rows, row)
	case postgres.ResultCopyData:
		if !r.collecting {
			r.begin(res.Statement)
		}
		r.cur.RowCount++
	case postgres.ResultCommandComplete, postgres.ResultError, postgres.ResultPortalSuspended, postgres.ResultSkipped:
		if !r.collecting {
			r.begin(res.Statement)
		}
		r.collecting = false
		cur := &r.cur
		switch res.Kind {
		case postgres.ResultCommandComplete:
			if r.lastTag != string(res.Tag) {
				r.lastTag = string(res.Tag) // most tags repeat ("SELECT 1")
			}
			cur.CommandTag = r.lastTag
		case postgres.ResultPortalSuspended:
			cur.Suspended = true
		case postgres.ResultSkipped:
			cur.Skipped = true
		default:
			if res.Error != nil {
				cur.Error, cur.ErrorCode = res.Error.Message, res.Error.Code
			}
		}
		id, known := idOf(res.Statement)
		return r.resultDone(id, known, time.Now())
	case postgres.ResultNotice:
		if res.Error == nil {
			return nil
		}
		if err := r.flushAll(); err != nil { // a waiting statement goes first
			return err
		}
		return r.append(record.Event{Type: record.TypeNotice,
			Notice: &record.Notice{Code: res.Error.Code, Message: res.Error.Message, Severity: res.Error.Severity}}, record.Async)
	}
	return nil
}

// begin starts collecting a result of statement of, reusing the storage of the last one.
func (r *recorder) begin(of *postgres.Statement) {
	r.cur = record.Result{ColumnTypes: r.cur.ColumnTypes[:0], Rows: r.cur.Rows[:0]}
	clear(r.cur.Rows[:cap(r.cur.Rows)])
	r.rows.reset()
	r.collecting, r.full = true, false
	r.curOf, r.curHasOf = idOf(of)
}

// setColumns records the columns of the result being collected from its row description.
func (r *recorder) setColumns(rd *pgproto3.RowDescription) {
	if rd == nil {
		return
	}
	for i, f := range rd.Fields {
		if i == len(r.colNames) {
			r.colNames = append(r.colNames, string(f.Name))
		} else if r.colNames[i] != string(f.Name) {
			r.colNames[i] = string(f.Name)
		}
		r.cur.ColumnTypes = append(r.cur.ColumnTypes, f.DataTypeOID)
	}
	r.cur.Columns = r.colNames[:len(rd.Fields):len(rd.Fields)]
}

// errCutShort is the error recorded for a result the connection ended in the middle of.
const errCutShort = "connection closed before the result completed"

// End records the end of the session.
func (g *Guard) End(reason string, bytesIn, bytesOut int64) {
	r := g.rec
	if r == nil {
		return
	}
	g.mu.Lock()
	g.ensureStarted(nil)
	g.mu.Unlock()
	g.sh.lastStatement.CompareAndSwap(g, nil) // nothing of this connection is kept alive by it
	// The proxy calls End once both of its goroutines are done, so the server side's result
	// is ours: one still being collected had rows the client may have seen, so it is written
	// with what came so far, marked as cut short.
	if r.collecting {
		r.collecting = false
		r.cur.Truncated = true
		r.cur.Error = errCutShort
		if err := r.resultDone(r.curOf, r.curHasOf, time.Now()); err != nil {
			g.log.Error("recording result", "err", err)
		}
	}
	if err := r.flushAll(); err != nil {
		g.log.Error("recording result", "err", err)
	}
	err := r.append(record.Event{Type: record.TypeSessionEnd,
		End: &record.SessionEnd{DurationUS: time.Since(r.started).Microseconds(), Reason: reason, BytesIn: bytesIn, BytesOut: bytesOut}}, record.Async)
	if err != nil {
		g.log.Error("recording session end", "err", err)
	}
}
