package postgres

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
)

// frontendTypes are the message types a client may send after startup.
var frontendTypes = func() *[256]bool {
	var k [256]bool
	for _, t := range []byte("QPBEDCSHFdcfX") {
		k[t] = true
	}
	return &k
}()

// clientLoop reads the client's messages, asks the hook about statements and forwards to the server.
func (c *conn) clientLoop() error {
	for {
		typ, msg, err := c.cr.next()
		if err != nil {
			switch {
			case errors.Is(err, errTooLarge):
				return c.protocolError("08P01", err.Error())
			case errors.Is(err, errBufferBudget):
				return c.overBudget(fmt.Errorf("read client: %w", err))
			case errors.Is(err, errMalformed):
				return c.protocolError("08P01", "invalid frontend message: "+err.Error())
			case errors.Is(err, errUnknownType):
				return c.protocolError("08P01", "invalid frontend message type "+strconv.Itoa(int(typ)))
			}
			return fmt.Errorf("read client: %w", err)
		}
		if err := c.onClientMessage(typ, msg); err != nil {
			if errors.Is(err, errMalformed) {
				return c.protocolError("08P01", fmt.Sprintf("invalid frontend message %q: malformed", typ))
			}
			return err
		}
	}
}

// onClientMessage handles one message from the client.
func (c *conn) onClientMessage(typ byte, msg []byte) error {
	if c.ops.mayCopy.Load() != 0 && typ != 'd' && typ != 'H' && typ != 'X' {
		// Only the client side queues such ops: with none queued, the server cannot be in a
		// COPY FROM STDIN, nor start one before it reads this message.
		if handled, err := c.duringCopy(typ, msg); handled || err != nil {
			return err
		}
	}
	if c.skipping && typ != 'S' && typ != 'X' {
		// After a refusal in the extended protocol the server would discard everything up to
		// Sync; so does the proxy, so the hook is not asked about statements that never run.
		return nil
	}
	body := msg[headerLength:]
	if typ == 'Q' || typ == 'P' || typ == 'F' {
		c.statements++
	}
	var err error
	switch typ {
	case 'Q':
		return c.onQuery(msg, body)
	case 'P':
		err = c.onParse(msg, body)
	case 'B':
		err = c.onBind(msg, body)
	case 'E':
		err = c.onExecute(msg, body)
	case 'D':
		err = c.onDescribe(msg, body)
	case 'C':
		err = c.onClose(msg, body)
	case 'S':
		c.unsynced = false
		c.skipping = false
		c.syncs++
		c.ops.push(op{kind: opSync})
		return c.uw.forward(msg)
	case 'H', 'd', 'c', 'f':
		// Flush, and COPY FROM STDIN data: the server ignores COPY messages outside a COPY,
		// so they pass as they are (during one, see duringCopy).
		return c.uw.forward(msg)
	case 'F':
		return c.onFunctionCall(msg, body)
	case 'X':
		c.uw.forward(msg)
		c.flushUpstream()
		return errTerminate
	default:
		return c.protocolError("08P01", fmt.Sprintf("invalid frontend message type %d", typ))
	}
	// An extended-protocol message: until a Sync, what it does is not committed (see Settled).
	c.unsynced = true
	return err
}

// duringCopy handles a message other than CopyData, Flush or Terminate while a statement that may
// run COPY FROM STDIN is queued. During such a COPY the server reads the client's messages as its
// data: it ignores Sync (and Flush), and ends the COPY with an error at any other message, which
// it swallows; outside one, it answers them. A message the server could read either way waits
// until the server side knows which, so the op queue keeps in step with what the server answers:
//   - CopyDone, CopyFail: the end of the COPY's data. Sent before the server started the COPY
//     (as pgx does), it is queued as an opCopyEnd for the COPY to take (opQueue.startCopyIn).
//   - Sync during the COPY: not sent. The server would ignore it, unless it ended the COPY with
//     an error the client has not heard of yet; then it would answer one the client does not
//     expect.
//   - any other message during the COPY: refused, not judged; the COPY is failed in its place
//     with a CopyFail saying why, as the server would have failed it.
//
// It reports whether it handled msg; if not, msg goes the usual way.
func (c *conn) duringCopy(typ byte, msg []byte) (bool, error) {
	q := &c.ops
	if typ == 'c' || typ == 'f' {
		q.pushCopyEnd()
		return true, c.uw.forward(msg)
	}
	for {
		q.mu.Lock()
		switch {
		case q.copyIn.Load() && typ == 'S':
			q.mu.Unlock()
			return true, nil
		case q.copyIn.Load():
			q.copyIn.Store(false)
			q.wakeLocked()
			q.mu.Unlock()
			out, _ := (&pgproto3.CopyFail{Message: fmt.Sprintf("enforcer: the client sent a message of type %q during COPY FROM STDIN; "+
				"end the COPY with CopyDone or CopyFail before sending anything else", typ)}).Encode(c.uw.buffer())
			return true, c.uw.queued(out)
		case q.mayCopy.Load() == 0 || q.discarding.Load() && !q.syncQueued:
			// No COPY can start before the server reads msg: no statement that could start one
			// is queued, or the server discards what was queued since an error, up to a Sync
			// the client has yet to send.
			q.mu.Unlock()
			return false, nil
		}
		wake := make(chan struct{})
		q.copyWake = wake
		q.mu.Unlock()
		if err := c.awaitServer(wake); err != nil {
			return true, err
		}
	}
}

// awaitServer waits until the server side closes wake, having asked the server for its answers
// so far: in the extended protocol it holds them until a Sync or Flush.
func (c *conn) awaitServer(wake <-chan struct{}) error {
	if c.serverTurn != nil {
		return c.serverTurn(wake)
	}
	if err := c.uw.queued(append(c.uw.buffer(), 'H', 0, 0, 0, 4)); err != nil {
		return err
	}
	if err := c.cr.flush(); err != nil {
		return err
	}
	select {
	case <-wake:
		return nil
	case <-c.ctx.Done():
		return fmt.Errorf("waiting for the server to start or end a COPY: %w", c.ctx.Err())
	}
}

// newStatement returns a Statement of its own, for an op that owns it (op.ownSt).
func (c *conn) newStatement(k Kind) *Statement {
	st := c.spareStatement.Swap(nil)
	if st == nil {
		st = new(Statement)
	}
	c.initStatement(st, k)
	return st
}

// initStatement fills a Statement from newStatement or inside a stmtInfo or portalInfo.
func (c *conn) initStatement(st *Statement, k Kind) {
	c.stmtSeq++
	*st = Statement{ID: c.stmtSeq, Kind: k, ConnID: c.sess.ID, Database: c.database, ClientUser: c.clientUser, TxStatus: byte(c.txStatus.Load()), c: c}
}

// newStmtInfo returns an empty stmtInfo, the spare one if there is one.
func (c *conn) newStmtInfo() *stmtInfo {
	if s := c.spareStmt.Swap(nil); s != nil {
		rowDesc := s.rowDesc[:0]
		*s = stmtInfo{rowDesc: rowDesc}
		return s
	}
	return new(stmtInfo)
}

// dropStmt releases one reference to s (nil is none). The last makes it the spare: no queued op,
// portal or table entry refers to it, and the server side is through with the message that
// popped its last op, so nothing reads it any more.
func (c *conn) dropStmt(s *stmtInfo) {
	if s != nil && s.refs.Add(-1) == 0 {
		c.spareStmt.Store(s)
	}
}

// newPortal returns an empty portalInfo, the spare one if there is one.
func (c *conn) newPortal() *portalInfo {
	if p := c.sparePortal.Swap(nil); p != nil {
		*p = portalInfo{}
		return p
	}
	return new(portalInfo)
}

// dropPortal releases one reference to p (nil is none), as dropStmt does; the last also releases
// the portal's reference to its statement.
func (c *conn) dropPortal(p *portalInfo) {
	if p != nil && p.refs.Add(-1) == 0 {
		c.dropStmt(p.stmt)
		c.sparePortal.Store(p)
	}
}

// releaseDone drops the references of the ops popped while the server side handled a message.
func (c *conn) releaseDone() {
	for i, r := range c.ops.done {
		c.dropStmt(r.stmt)
		c.dropPortal(r.portal)
		if r.st != nil {
			c.spareStatement.Store(r.st)
		}
		c.ops.done[i] = opRefs{}
	}
	c.ops.done = c.ops.done[:0]
}

// sqlString returns b as a string, reusing the last one when the client sent the same text again
// (drivers and pools repeat the same statements; the hook's caches are keyed by the text anyway).
func (c *conn) sqlString(b []byte) string {
	if c.lastSQL != string(b) {
		c.lastSQL = string(b)
		c.lastCopy = mayCopyIn(c.lastSQL)
	}
	return c.lastSQL
}

// judge calls the hook and normalises its verdict.
func (c *conn) judge(st *Statement) Verdict {
	ctx := c.statementContext()
	c.startJudging()
	v := c.hook.Statement(ctx, st)
	c.endJudging()
	st.c = nil // Notice is only valid during the call
	if v.Action == Refuse {
		e := pgproto3.ErrorResponse{}
		if v.Error != nil {
			e = *v.Error
		}
		if e.Severity == "" {
			e.Severity = "ERROR"
		}
		if e.SeverityUnlocalized == "" {
			e.SeverityUnlocalized = e.Severity
		}
		if e.Code == "" {
			e.Code = "42501"
		}
		if e.Message == "" {
			e.Message = "statement refused by the enforcer"
		}
		v.Error = &e
	}
	if v.Action == Rewrite && st.Kind != KindQuery && st.Kind != KindParse {
		v = Verdict{Action: Refuse, Error: &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR",
			Code: "XX000", Message: "enforcer: a hook rewrote a " + st.Kind.String() + ", which only Query and Parse support"}}
	}
	return v
}

// refuse sends the server a message that fails where the refused one would have, so the server's
// transaction state follows; the server's error is swapped for the hook's on the way back. The
// stand-in is a Parse of text that is not SQL: it fails whatever the client has created (an
// Execute of a portal the proxy took to be missing once ran a cursor the client had DECLAREd
// under that name), and a named Parse that fails leaves the client's statements as they were.
//
// After an error earlier in the batch, with the client's Sync not sent yet, the server discards
// every message up to that Sync, a stand-in too: nothing is sent then, and the client hears of
// the batch's first error only, as it would from the server.
func (c *conn) refuse(e *pgproto3.ErrorResponse, withSync bool) error {
	if !c.ops.pushProbe(op{kind: opProbe, refusal: e}) {
		c.skipping = !withSync
		return nil
	}
	out := appendParse(c.uw.buffer(), probeName, probeSQL)
	if withSync {
		c.ops.push(op{kind: opSync})
		out = append(out, 'S', 0, 0, 0, 4)
	} else {
		c.skipping = true
	}
	return c.uw.queued(out)
}

func (c *conn) onQuery(msg, body []byte) error {
	cur := cursor{b: body}
	sql := cur.cstring()
	if err := cur.done(); err != nil {
		return err
	}
	st := c.newStatement(KindQuery)
	st.SQL = c.sqlString(sql)
	v := c.judge(st)
	switch v.Action {
	case Refuse:
		return c.refuse(v.Error, true)
	case Rewrite:
		st.SQL = v.SQL
		c.ops.push(op{kind: opQuery, st: st, ownSt: true, observe: v.Observe, mayCopy: mayCopyIn(v.SQL)})
		out, _ := (&pgproto3.Query{String: v.SQL}).Encode(c.uw.buffer())
		return c.uw.queued(out)
	}
	c.ops.push(op{kind: opQuery, st: st, ownSt: true, observe: v.Observe, mayCopy: c.lastCopy})
	return c.uw.forward(msg)
}

func (c *conn) onParse(msg, body []byte) error {
	cur := cursor{b: body}
	name := cur.cstring()
	sql := cur.cstring()
	n := int(cur.u16())
	if n*4 > len(cur.b) {
		return errMalformed
	}
	// The stmtInfo this Parse makes is allocated first: it carries the Statement and the
	// parameter types. If the Parse is refused or names a statement that exists, it is dropped.
	info := c.newStmtInfo()
	oids := info.oidBuf[:0:len(info.oidBuf)]
	if n > len(info.oidBuf) {
		oids = make([]uint32, 0, n)
	}
	for range n {
		oids = append(oids, cur.u32())
	}
	if n == 0 {
		oids = nil
	}
	if err := cur.done(); err != nil {
		return err
	}
	if e := badName(name); e != nil {
		return c.refuse(e, false)
	}
	st := &info.parse
	c.initStatement(st, KindParse)
	st.SQL = c.sqlString(sql)
	st.StatementName = string(name)
	st.ParamOIDs = oids
	v := c.judge(st)
	if v.Action == Refuse {
		if len(name) == 0 {
			// PostgreSQL drops the unnamed statement before it parses; a refused Parse must too,
			// or a later Bind of "" would run the previous statement.
			c.ops.push(op{kind: opClose, swallow: true})
			out := append(c.uw.buffer(), 'C', 0, 0, 0, 6, 'S', 0)
			if err := c.uw.queued(out); err != nil {
				return err
			}
			c.stmtMu.Lock()
			c.dropStmt(c.stmts.put("", nil))
			c.stmtMu.Unlock()
		}
		return c.refuse(v.Error, false)
	}
	sqlText, mayCopy := st.SQL, c.lastCopy
	if v.Action == Rewrite {
		sqlText, mayCopy = v.SQL, mayCopyIn(v.SQL)
	}
	info.sql, info.mayCopy = sqlText, mayCopy
	c.stmtMu.Lock()
	replaces := st.StatementName != "" && c.stmts.get(st.StatementName) != nil
	if !replaces {
		info.refs.Add(1)
		c.dropStmt(c.stmts.put(st.StatementName, info))
	}
	c.stmtMu.Unlock()
	// A named statement that exists already makes the server fail the Parse (42P05) and keep the
	// old one, unless an SQL DEALLOCATE dropped it: the new one replaces it in the proxy's table
	// only at its ParseComplete.
	c.ops.push(op{kind: opParse, name: st.StatementName, stmt: info, replaces: replaces})
	if v.Action == Rewrite {
		out, _ := (&pgproto3.Parse{Name: st.StatementName, Query: v.SQL, ParameterOIDs: oids}).Encode(c.uw.buffer())
		return c.uw.queued(out)
	}
	return c.uw.forward(msg)
}

func (c *conn) onBind(msg, body []byte) error {
	cur := cursor{b: body}
	portal := cur.cstring()
	stmtName := cur.cstring()
	p := c.newPortal()
	p.paramFormats = cur.int16s(p.fmtBuf[:0:len(p.fmtBuf)])
	c.scratch = cur.values(c.scratch)
	params := c.scratch
	if cur.err == nil {
		p.resultFormats = cur.int16s(p.resFmtBuf[:0:len(p.resFmtBuf)])
	}
	if err := cur.done(); err != nil {
		return err
	}
	if e := cmp.Or(badName(portal), badName(stmtName)); e != nil {
		return c.refuse(e, false)
	}
	if len(p.paramFormats) == 0 {
		p.paramFormats = nil
	}
	if len(p.resultFormats) == 0 {
		p.resultFormats = nil
	}
	p.stmtName = string(stmtName)
	// Copy the parameters once, into the portal's arena or one allocation: the Execute that uses
	// them may come after the read buffer has moved on.
	total := 0
	for _, v := range params {
		total += len(v)
	}
	if len(params) <= len(p.paramBuf) {
		p.params = p.paramBuf[:len(params):len(params)]
	} else {
		p.params = make([][]byte, len(params))
	}
	arena := p.arena[:0:len(p.arena)]
	if total > len(p.arena) {
		arena = make([]byte, 0, total)
	}
	for i, v := range params {
		if v == nil {
			continue
		}
		arena = append(arena, v...)
		p.params[i] = arena[len(arena)-len(v) : len(arena) : len(arena)]
	}
	c.stmtMu.Lock()
	if p.stmt = c.stmts.get(p.stmtName); p.stmt != nil {
		p.stmt.refs.Add(1)
	}
	c.stmtMu.Unlock()
	p.refs.Add(1)
	p.bindSyncs, p.bindStatements = c.syncs, c.statements
	c.dropPortal(c.portals.put(string(portal), p))
	c.ops.push(op{kind: opBind, portal: p})
	return c.uw.forward(msg)
}

func (c *conn) onExecute(msg, body []byte) error {
	cur := cursor{b: body}
	portal := cur.cstring()
	maxRows := cur.u32()
	if err := cur.done(); err != nil {
		return err
	}
	if e := badName(portal); e != nil {
		return c.refuse(e, false)
	}
	p := c.portals.get(string(portal))
	if p != nil && c.portalUncertain(p) {
		return c.refuse(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "34000",
			Message: fmt.Sprintf("enforcer: portal %q may no longer be the one bound through the enforcer: its Bind failed, or its transaction ended", portal),
			Hint:    "bind the portal again before executing it"}, false)
	}
	var st *Statement
	ownSt := false
	if p != nil && !p.execUsed {
		p.execUsed = true
		st = &p.exec
		c.initStatement(st, KindExecute)
	} else {
		st, ownSt = c.newStatement(KindExecute), true
	}
	st.PortalName = string(portal)
	st.MaxRows = maxRows
	if p != nil {
		st.StatementName = p.stmtName
		st.ParamFormats = p.paramFormats
		st.Params = p.params
		st.ResultFormats = p.resultFormats
		if p.stmt != nil {
			st.SQL = p.stmt.sql
			st.Known = true
		}
	}
	v := c.judge(st)
	if v.Action == Refuse {
		return c.refuse(v.Error, false)
	}
	// Described: answered, or asked in this batch (a Describe the server skips after an error
	// skips this Execute too).
	described := func(batch uint64, answered *atomic.Bool) bool { return batch == c.syncs+1 || answered.Load() }
	if v.Observe && p != nil && !described(p.describeBatch, &p.described) && (p.stmt == nil || !described(p.stmt.describeBatch, &p.stmt.described)) {
		if err := c.describePortal(p, portal, st); err != nil {
			return err
		}
	}
	// A statement the proxy did not see parsed cannot run a COPY: SQL PREPARE and DECLARE take
	// none. Were it to, the server side would find the COPY unexpected and end the session.
	mayCopy := p != nil && p.stmt != nil && p.stmt.mayCopy
	c.ops.push(op{kind: opExecute, portal: p, st: st, ownSt: ownSt, observe: v.Observe, mayCopy: mayCopy})
	return c.uw.forward(msg)
}

// describePortal asks the server to describe a portal whose rows the hook is to see when the
// client described neither it nor its statement: without a description, the hook could not
// tell one column from another (a masking rule would withhold every cell). The answer goes to
// the portal, not to the client; an error, to the Execute's statement st, which the server then
// skips.
func (c *conn) describePortal(p *portalInfo, name []byte, st *Statement) error {
	p.describeBatch = c.syncs + 1
	c.ops.push(op{kind: opDescribe, portal: p, st: st, swallow: true})
	return c.uw.queued(appendDescribePortal(c.uw.buffer(), name))
}

// HasPortal reports whether the client bound a portal named name with the extended protocol,
// which the server may still hold: an SQL FETCH or MOVE of that name would run it. The name is
// cut to 63 bytes, as the server looks it up. Valid only during the hook's Statement call.
func (s *Statement) HasPortal(name string) bool {
	if len(name) >= maxNameLen {
		name = name[:maxNameLen-1]
	}
	return s.c != nil && s.c.portals.get(name) != nil
}

// maxNameLen is the server's NAMEDATALEN: statement and portal names are cut to one byte less.
const maxNameLen = 64

// BoundPortal is a portal the client bound with the extended protocol (see Statement.Portals).
type BoundPortal struct {
	Name string
	// StatementName and SQL are the statement the portal was bound from and its text. SQL is ""
	// when the proxy cannot tell what the server holds under Name: the statement was not parsed
	// through the proxy, or the Bind failed and the server kept what the name had before.
	StatementName string
	SQL           string
}

// Portals returns the portals the client bound with the extended protocol that the server may
// still hold: none once the session is settled (see Settled), nor those whose transaction ended
// after their Bind. Code running at the server can fetch from any of them by name. Valid only
// during the hook's Statement call.
func (s *Statement) Portals() iter.Seq[BoundPortal] {
	return func(yield func(BoundPortal) bool) {
		c := s.c
		if c == nil || s.Settled() {
			return
		}
		for name, p := range c.portals.all() {
			if p.bound.Load() && !p.failed.Load() && c.idleEnds.Load() != p.boundEnds.Load() {
				continue
			}
			bp := BoundPortal{Name: name, StatementName: p.stmtName}
			if p.stmt != nil && !p.failed.Load() {
				bp.SQL = p.stmt.sql
			}
			if !yield(bp) {
				return
			}
		}
	}
}

// badName refuses a statement or portal name the server would not keep as it is: it cuts names
// to 63 bytes after converting them to its encoding, so two names the proxy tells apart could
// be one there.
func badName(name []byte) *pgproto3.ErrorResponse {
	// Control characters are refused too: the proxy's own names start with one (see refuse), so
	// a client cannot bind or prepare under them.
	if len(name) < maxNameLen && !slices.ContainsFunc(name, func(b byte) bool { return b >= 0x80 || b < 0x20 || b == 0x7f }) {
		return nil
	}
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42602",
		Message: fmt.Sprintf("enforcer: statement and portal names must be printable ASCII and shorter than 64 bytes; %q is not", name),
		Hint:    "use shorter names of printable ASCII characters for prepared statements and portals"}
}

// portalUncertain reports whether the server may hold something other than p under p's name,
// or nothing:
//   - a Bind that failed (after an error, in a transaction a savepoint then saved, the server
//     kept the portal the name had before);
//   - a Bind whose outcome the server side has not seen yet, with a Sync (which ends the
//     skipping after an error) and SQL (ROLLBACK TO SAVEPOINT, say) sent since;
//   - a portal whose transaction ended (the name may since be a cursor an SQL DECLARE opened).
func (c *conn) portalUncertain(p *portalInfo) bool {
	switch {
	case p.failed.Load():
		return true
	case !p.bound.Load():
		return p.bindSyncs != c.syncs && p.bindStatements != c.statements
	}
	return c.idleEnds.Load() != p.boundEnds.Load()
}

func (c *conn) onDescribe(msg, body []byte) error {
	cur := cursor{b: body}
	kind := cur.byte1()
	name := cur.cstring()
	if err := cur.done(); err != nil {
		return err
	}
	if e := badName(name); e != nil {
		return c.refuse(e, false)
	}
	o := op{kind: opDescribe}
	switch kind {
	case 'S':
		// Queued under stmtMu, so the op holds the statement before the server side can drop
		// the table's reference (skipExtended).
		c.stmtMu.Lock()
		o.stmt, o.name = c.stmts.get(string(name)), string(name)
		if o.stmt != nil {
			o.stmt.describeBatch = c.syncs + 1
		}
		c.ops.push(o)
		c.stmtMu.Unlock()
	case 'P':
		if o.portal = c.portals.get(string(name)); o.portal != nil {
			o.portal.describeBatch = c.syncs + 1
		}
		c.ops.push(o)
	default:
		return errMalformed
	}
	return c.uw.forward(msg)
}

func (c *conn) onClose(msg, body []byte) error {
	cur := cursor{b: body}
	kind := cur.byte1()
	name := cur.cstring()
	if err := cur.done(); err != nil {
		return err
	}
	if e := badName(name); e != nil {
		return c.refuse(e, false)
	}
	switch kind {
	case 'S':
		c.stmtMu.Lock()
		c.dropStmt(c.stmts.put(string(name), nil))
		c.stmtMu.Unlock()
	case 'P':
		c.dropPortal(c.portals.put(string(name), nil))
	default:
		return errMalformed
	}
	c.ops.push(op{kind: opClose})
	return c.uw.forward(msg)
}

func (c *conn) onFunctionCall(msg, body []byte) error {
	var fc pgproto3.FunctionCall
	if err := fc.Decode(body); err != nil {
		return errMalformed
	}
	st := c.newStatement(KindFunctionCall)
	st.FunctionOID = fc.Function
	st.ParamFormats = make([]int16, len(fc.ArgFormatCodes))
	for i, f := range fc.ArgFormatCodes {
		st.ParamFormats[i] = int16(f)
	}
	st.Params = fc.Arguments
	st.ResultFormats = []int16{int16(fc.ResultFormatCode)}
	v := c.judge(st)
	if v.Action == Refuse {
		return c.refuse(v.Error, true)
	}
	c.ops.push(op{kind: opFunction, st: st, ownSt: true, observe: v.Observe})
	return c.uw.forward(msg)
}

// serverLoop reads the server's messages, matches them to the client's requests, shows results to the
// hook and forwards to the client.
func (c *conn) serverLoop() error {
	for {
		typ, msg, err := c.sr.next()
		if err != nil {
			switch {
			case errors.Is(err, errTooLarge) || errors.Is(err, errMalformed):
				c.flushClientLocked()
				c.protocolError("08P01", "enforcer: invalid message from the upstream server")
			case errors.Is(err, errBufferBudget):
				c.flushClientLocked()
				c.overBudget(err)
			}
			c.flushClientLocked()
			return fmt.Errorf("read upstream: %w", err)
		}
		if err := c.onServerMessage(typ, msg); err != nil {
			if errors.Is(err, errMalformed) {
				c.flushClientLocked()
				c.protocolError("08P01", "enforcer: invalid message from the upstream server")
			}
			c.flushClientLocked()
			return err
		}
	}
}

// onServerMessage handles one server message, then releases what the ops it completed held.
func (c *conn) onServerMessage(typ byte, msg []byte) error {
	err := c.handleServerMessage(typ, msg)
	if len(c.ops.done) > 0 {
		c.releaseDone()
	}
	return err
}

func (c *conn) handleServerMessage(typ byte, msg []byte) error {
	if typ == 'Z' && c.ops.endDiscarding() {
		// The end of a batch the server discarded after an error: every op queued since was
		// for a message it ignored (a stand-in, a Query, a Parse), answered by nothing. Left
		// queued, they would take the answers of the messages after.
		for o := c.ops.front(); o != nil; o = c.ops.front() {
			k := o.kind
			if err := c.undoSkipped(o); err != nil {
				return err
			}
			c.ops.pop()
			if k == opSync {
				break
			}
		}
		if len(msg) == 6 {
			c.txStatus.Store(uint32(msg[5]))
			if msg[5] == 'I' {
				c.idleEnds.Add(1)
			}
		}
		return c.cw.forward(msg)
	}
	o := c.ops.front()
	if o != nil && o.kind == opProbe && typ != 'E' && typ != 'N' && typ != 'A' && typ != 'S' {
		// The stand-in of a refused message can only fail; anything else means the server is not
		// where the proxy thinks, and nothing it sends can be trusted to be observed.
		return fmt.Errorf("upstream answered a refusal's stand-in with %q: %w", typ, errMalformed)
	}
	switch typ {
	case 'D': // DataRow
		if o != nil && o.observe {
			return c.observeRow(o, msg)
		}
	case 'd': // CopyData
		if o != nil && o.observe {
			return c.observeCopy(o, msg)
		}
	case 'T': // RowDescription
		if o != nil {
			switch o.kind {
			case opDescribe:
				if st := o.stmt; st != nil {
					if o.name != "" {
						// A Parse that replaced the statement (after an SQL DEALLOCATE) has
						// completed since the Describe was queued: this describes the new one.
						c.stmtMu.Lock()
						st = cmp.Or(c.stmts.get(o.name), st)
						c.stmtMu.Unlock()
					}
					st.rowDesc = append(st.rowDesc[:0], msg...)
					st.described.Store(true)
				}
				if o.portal != nil {
					o.portal.rowDesc = append(o.portal.rowDescBuf[:0:len(o.portal.rowDescBuf)], msg...)
					o.portal.described.Store(true)
				}
				swallow := o.swallow
				c.ops.pop()
				if swallow {
					return nil
				}
			case opQuery, opFunction:
				// Only the front op's rows follow this description, and the next one arrives after
				// they end: one buffer per connection serves every Query.
				c.queryDesc = append(c.queryDesc[:0], msg...)
				o.rowDesc = c.queryDesc
				o.columns, o.formats = nil, nil
				if o.observe {
					if err := c.observeRowDescription(o); err != nil {
						return err
					}
				}
			}
		}
	case 'n': // NoData
		if o != nil && o.kind == opDescribe {
			if o.stmt != nil {
				o.stmt.described.Store(true)
			}
			if o.portal != nil {
				o.portal.described.Store(true)
			}
			swallow := o.swallow
			c.ops.pop()
			if swallow {
				return nil
			}
		}
	case '1', '2', '3': // ParseComplete, BindComplete, CloseComplete
		if o != nil && o.kind == opParse && typ == '1' && o.replaces && o.stmt != nil {
			c.stmtMu.Lock()
			o.stmt.refs.Add(1)
			c.dropStmt(c.stmts.put(o.name, o.stmt))
			c.stmtMu.Unlock()
		}
		if o != nil && o.kind == opBind && typ == '2' && o.portal != nil {
			o.portal.boundEnds.Store(c.idleEnds.Load())
			o.portal.bound.Store(true)
		}
		if o != nil {
			swallow := o.swallow
			c.ops.pop()
			if swallow {
				return nil
			}
		}
	case 'C', 'I', 's': // CommandComplete, EmptyQueryResponse, PortalSuspended
		switch typ {
		case 'C':
			if err := c.observeTag(o, msg); err != nil {
				return err
			}
		case 's':
			if err := c.observeEnd(o, Result{Kind: ResultPortalSuspended}); err != nil {
				return err
			}
		}
		if o != nil && o.kind == opExecute {
			c.ops.pop()
		}
	case 'G', 'W': // CopyInResponse, CopyBothResponse: the server reads the client's messages as COPY data
		if !c.ops.startCopyIn() {
			c.flushClientLocked()
			c.protocolError("08P01", "enforcer: the server started a COPY FROM STDIN that the enforcer did not expect; the session is closed")
			return fmt.Errorf("upstream started a COPY FROM STDIN out of step with the client's messages (%q)", typ)
		}
	case 'E': // ErrorResponse
		c.ops.endCopyIn() // an error ends a COPY FROM STDIN that runs
		return c.onServerError(o, msg)
	case 'N': // NoticeResponse
		return c.observeNotice(o, msg)
	case 'A': // NotificationResponse
		return c.observeNotification(o, msg)
	case 'S': // ParameterStatus: a setting changed during the session
		return c.observeParameterStatus(o, msg)
	case 'Z': // ReadyForQuery
		if len(msg) == 6 {
			c.txStatus.Store(uint32(msg[5]))
			if msg[5] == 'I' {
				c.idleEnds.Add(1)
			}
		}
		for o != nil {
			k := o.kind
			c.ops.pop()
			if k == opSync || k == opQuery || k == opFunction {
				break
			}
			o = c.ops.front()
		}
	}
	return c.cw.forward(msg)
}

// onServerError handles an ErrorResponse: a probe's error becomes the hook's refusal, any other is
// shown to the hook; in the extended protocol the server then skips to Sync, and so does the op queue.
func (c *conn) onServerError(o *op, msg []byte) error {
	if o != nil && o.kind == opProbe {
		out, _ := o.refusal.Encode(c.cw.buffer())
		if err := c.cw.queued(out); err != nil {
			return err
		}
		return c.skipExtended(o)
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(msg[headerLength:]); err != nil {
		return fmt.Errorf("upstream sent a malformed ErrorResponse: %w: %w", errMalformed, err)
	}
	c.res = Result{Kind: ResultError, Error: &e}
	if o == nil {
		return c.deliverMessage(msg, &e)
	}
	c.res.Statement = o.st
	// The error first, then what the server skipped because of it: the hook sees them in the
	// order they happened.
	if err := c.deliverMessage(msg, &e); err != nil {
		return err
	}
	return c.skipExtended(o)
}

// skipExtended drops the failed extended-protocol op and every op after it up to Sync, undoing the
// statements those Parses would have created and showing the hook the statements it will never
// see answered.
func (c *conn) skipExtended(failed *op) error {
	switch failed.kind {
	case opQuery, opFunction, opSync:
		return nil
	}
	// The failed message itself ran nothing: only what it would have made is undone.
	if failed.kind == opBind && failed.portal != nil {
		failed.portal.failed.Store(true)
	}
	if failed.kind == opParse {
		c.undoParse(failed)
	}
	c.ops.pop()
	for o := c.ops.frontOrDiscarding(); o != nil && o.kind != opSync; o = c.ops.frontOrDiscarding() {
		if err := c.undoSkipped(o); err != nil {
			return err
		}
		c.ops.pop()
	}
	return nil
}

// undoSkipped undoes what the proxy took o's message to have done, for a message the server
// skipped: a Bind's portal (the server kept what the name had before, if anything), a Parse's
// statement. A statement the message would have run is shown to the hook as skipped: it was
// judged (and perhaps recorded) when it was sent, and nothing else will ever say it did not run.
func (c *conn) undoSkipped(o *op) error {
	switch o.kind {
	case opBind:
		if o.portal != nil {
			o.portal.failed.Store(true)
		}
	case opParse:
		c.undoParse(o)
	case opExecute, opQuery, opFunction:
		if o.st != nil {
			c.res = Result{Kind: ResultSkipped, Statement: o.st}
			if err := c.hook.Result(c.ctx, &c.res); err != nil {
				return c.failResult(err)
			}
		}
	}
	return nil
}

// undoParse forgets the statement of a Parse the server did not complete.
func (c *conn) undoParse(o *op) {
	if o.stmt == nil {
		return
	}
	c.stmtMu.Lock()
	if c.stmts.get(o.name) == o.stmt {
		c.dropStmt(c.stmts.put(o.name, nil))
	}
	c.stmtMu.Unlock()
}

func (c *conn) failResult(err error) error {
	c.flushClientLocked() // what was checked before goes first, in order
	c.protocolError("XX000", "enforcer: result check failed; the session is closed: "+err.Error())
	return fmt.Errorf("result hook: %w", err)
}

// columnsOf returns the decoded row description for an op's rows and their formats, decoding once
// per op.
func (c *conn) columnsOf(o *op) (*pgproto3.RowDescription, []int16) {
	if o.columns != nil {
		return o.columns, o.formats
	}
	raw := o.rowDesc
	var bindFormats []int16
	if o.portal != nil {
		raw = o.portal.rowDesc
		if len(raw) == 0 && o.portal.stmt != nil {
			raw = o.portal.stmt.rowDesc
			bindFormats = o.portal.resultFormats
		}
	}
	if len(raw) <= headerLength {
		return nil, nil
	}
	apply := o.portal != nil && len(o.portal.rowDesc) == 0
	if c.descColumns != nil && apply == c.descApplied && bytes.Equal(raw, c.descRaw) && slices.Equal(bindFormats, c.descFormats) {
		o.columns, o.formats = c.descColumns, c.descOut
		return o.columns, o.formats
	}
	raw = bytes.Clone(raw)
	rd := new(pgproto3.RowDescription)
	if rd.Decode(raw[headerLength:]) != nil {
		return nil, nil
	}
	if apply {
		// A statement's description says text for every column; the Bind's result formats (none =
		// all text, one = all that one, else one per column) say what the rows hold.
		for i := range rd.Fields {
			switch {
			case len(bindFormats) == 0:
				rd.Fields[i].Format = 0
			case len(bindFormats) == 1:
				rd.Fields[i].Format = bindFormats[0]
			case i < len(bindFormats):
				rd.Fields[i].Format = bindFormats[i]
			}
		}
	}
	o.columns = rd
	o.formats = make([]int16, len(rd.Fields))
	for i, f := range rd.Fields {
		o.formats[i] = f.Format
	}
	c.descRaw, c.descFormats, c.descApplied = raw, slices.Clone(bindFormats), apply
	c.descColumns, c.descOut = o.columns, o.formats
	return o.columns, o.formats
}

func (c *conn) observeRowDescription(o *op) error {
	cols, formats := c.columnsOf(o)
	c.res = Result{Kind: ResultRowDescription, Statement: o.st, Columns: cols, Formats: formats}
	if err := c.hook.Result(c.ctx, &c.res); err != nil {
		return c.failResult(err)
	}
	return nil
}

func (c *conn) observeRow(o *op, msg []byte) error {
	cur := cursor{b: msg[headerLength:]}
	c.cells = cur.values(c.cells)
	if err := cur.done(); err != nil {
		return fmt.Errorf("upstream sent a malformed DataRow: %w: %w", errMalformed, err)
	}
	cols, formats := c.columnsOf(o)
	c.res = Result{Kind: ResultRow, Statement: o.st, Columns: cols, Formats: formats, Values: c.cells}
	if err := c.hook.Result(c.ctx, &c.res); err != nil {
		return c.failResult(err)
	}
	if c.res.changed {
		return c.cw.queued(appendDataRow(c.cw.buffer(), c.res.Values))
	}
	return c.cw.forward(msg)
}

func (c *conn) observeCopy(o *op, msg []byte) error {
	c.res = Result{Kind: ResultCopyData, Statement: o.st, Data: msg[headerLength:]}
	if err := c.hook.Result(c.ctx, &c.res); err != nil {
		return c.failResult(err)
	}
	if c.res.changed {
		return c.cw.queued(appendCopyData(c.cw.buffer(), c.res.Data))
	}
	return c.cw.forward(msg)
}

func (c *conn) observeTag(o *op, msg []byte) error {
	if len(msg) <= headerLength || msg[len(msg)-1] != 0 {
		return fmt.Errorf("upstream sent a malformed CommandComplete: %w", errMalformed)
	}
	return c.observeEnd(o, Result{Kind: ResultCommandComplete, Tag: msg[headerLength : len(msg)-1]})
}

// observeEnd shows the hook the end of o's rows: a CommandComplete, or a PortalSuspended when an
// Execute stopped at its row limit.
func (c *conn) observeEnd(o *op, res Result) error {
	if o != nil {
		res.Statement = o.st
	}
	c.res = res
	if err := c.hook.Result(c.ctx, &c.res); err != nil {
		return c.failResult(err)
	}
	return nil
}

func (c *conn) observeNotice(o *op, msg []byte) error {
	var n pgproto3.NoticeResponse
	if err := n.Decode(msg[headerLength:]); err != nil {
		return fmt.Errorf("upstream sent a malformed NoticeResponse: %w: %w", errMalformed, err)
	}
	c.res = Result{Kind: ResultNotice, Error: (*pgproto3.ErrorResponse)(&n)}
	if o != nil {
		c.res.Statement = o.st
	}
	return c.deliverMessage(msg, &n)
}

func (c *conn) observeNotification(o *op, msg []byte) error {
	var n pgproto3.NotificationResponse
	if err := n.Decode(msg[headerLength:]); err != nil {
		return fmt.Errorf("upstream sent a malformed NotificationResponse: %w: %w", errMalformed, err)
	}
	c.res = Result{Kind: ResultNotification, Notification: &n}
	return c.deliverMessage(msg, &n)
}

// observeParameterStatus checks a setting the server reports changed and shows it to the hook:
// a statement can set one to any text (set_config('application_name', …)), which the server
// then sends as it is.
func (c *conn) observeParameterStatus(o *op, msg []byte) error {
	var ps pgproto3.ParameterStatus
	if err := ps.Decode(msg[headerLength:]); err != nil {
		return fmt.Errorf("upstream sent a malformed ParameterStatus: %w: %w", errMalformed, err)
	}
	if p := lexicalProblem(ps.Name, ps.Value); p != "" {
		c.flushClientLocked()
		c.protocolError("0A000", "enforcer: the session changed a setting the enforcer relies on, so it is closed: "+p)
		return fmt.Errorf("upstream parameter change: %s", p)
	}
	c.res = Result{Kind: ResultParameterStatus, Parameter: &ps}
	if o != nil {
		c.res.Statement = o.st
	}
	return c.deliverMessage(msg, &ps)
}

// deliverMessage shows c.res to the hook and forwards the server's message, re-encoded from m if
// the hook changed it. For the less frequent messages (errors, notices, notifications); rows and
// COPY data have their own paths.
func (c *conn) deliverMessage(msg []byte, m interface{ Encode([]byte) ([]byte, error) }) error {
	if err := c.hook.Result(c.ctx, &c.res); err != nil {
		return c.failResult(err)
	}
	if c.res.changed {
		out, err := m.Encode(c.cw.buffer())
		if err != nil {
			return c.failResult(fmt.Errorf("re-encode a changed message: %w", err))
		}
		return c.cw.queued(out)
	}
	return c.cw.forward(msg)
}
