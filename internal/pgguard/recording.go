package pgguard

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// recorder writes one connection's session to the log. Statement records are written from the
// client-side goroutine, results from the server-side one.
type recorder struct {
	log     *record.Recorder
	strict  bool
	maxRows int
	id      string
	started time.Time
	// stmtStart is when the statement whose results flow was sent (unix ns).
	stmtStart atomic.Int64
	// result being collected (server goroutine only)
	cur *record.Result
}

func (r *recorder) append(typ record.Type, fill func(*record.Event), d record.Durability) error {
	ev := record.Event{Type: typ, Session: r.id, Time: time.Now()}
	fill(&ev)
	if r.strict {
		d = record.WriteAhead
	}
	return r.log.Append(ev, d)
}

// start records the session start; a log that cannot be written refuses the session.
func (g *Guard) startRecording(rec *record.Recorder, strict bool, maxRows int) error {
	r := &recorder{log: rec, strict: strict, maxRows: maxRows, id: record.NewSessionID(time.Now()), started: time.Now()}
	g.rec = r
	id, o, t := g.info.Identity, g.info.Origin, g.info.Target
	return r.append(record.TypeSessionStart, func(ev *record.Event) {
		ev.Start = &record.SessionStart{
			CgroupID: o.CgroupID,
			Identity: record.Identity{Subject: id.Subject, Email: id.Email, Groups: id.Groups, Provider: id.Provider},
			Origin:   o.Dst.String(),
			Process:  record.Process{Comm: o.Comm, PID: int(o.PID), UID: int(o.UID), Cmdline: strings.Fields(g.info.Cmdline)},
			Protocol: "postgres",
			Target:   record.Target{Name: t.Name, Address: g.info.Upstream, Database: g.info.Database, User: g.info.DBUser},
		}
	}, record.Async)
}

// SessionID is the id of this connection's recorded session ("" when recording is off).
func (g *Guard) SessionID() string {
	if g.rec == nil {
		return ""
	}
	return g.rec.id
}

// recordStatement writes the statement with its verdict. Anything that can change state is
// written ahead: it returns only once the record is durable, and an error means the statement
// must not be forwarded.
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
	st := &record.Statement{
		Text: s.SQL, Protocol: s.Kind.Protocol(), Verdict: verdict, Rule: rule, ApprovalID: approvalID,
		Class: classOf(d), Params: g.displayParams(s, params),
	}
	if s.Kind == postgres.KindFunctionCall {
		st.Text = fmt.Sprintf("<function call, oid %d>", s.FunctionOID)
	}
	r.stmtStart.Store(time.Now().UnixNano())
	return r.append(record.TypeStatement, func(ev *record.Event) { ev.Statement = st }, record.DurabilityFor(inert, verdict))
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

// classOf names the statement class for the record: the effects of the deciding statement.
func classOf(d *rules.Decision) string {
	if d == nil || d.Result == nil || len(d.Result.Statements) == 0 {
		return ""
	}
	i := max(d.Statement, 0)
	st := &d.Result.Statements[i]
	var cls []string
	for _, c := range []struct {
		on   bool
		name string
	}{{st.Unknown, "unknown"}, {st.Privilege, "privilege"}, {st.UnsafeIO, "unsafe_io"}, {st.DDL, "ddl"}, {st.Procedural, "procedural"},
		{st.Writes, "write"}, {st.Session, "session"}, {st.Transaction, "transaction"}, {st.Maintenance, "maintenance"}, {st.Reads, "read"}} {
		if c.on {
			cls = append(cls, c.name)
		}
	}
	return strings.Join(cls, ",")
}

// displayParams are the statement's parameters as recorded: masked like results; binary values
// only by size.
func (g *Guard) displayParams(s *postgres.Statement, params [][]byte) []*string {
	if params == nil {
		return nil
	}
	out := make([]*string, len(params))
	for i, p := range params {
		if p == nil {
			continue
		}
		var v string
		format := int16(0)
		if len(s.ParamFormats) == 1 {
			format = s.ParamFormats[0]
		} else if i < len(s.ParamFormats) {
			format = s.ParamFormats[i]
		}
		switch {
		case format == 1:
			v = fmt.Sprintf("[binary, %d bytes]", len(p))
		case g.mask != nil:
			m, _, err := g.mask.plan.MaskText(p, nil)
			if err != nil {
				m = g.mask.plan.Redacted()
			}
			v = string(m)
		default:
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
	err := g.rec.append(record.TypeApproval, func(ev *record.Event) {
		ev.Approval = &record.Approval{ID: id, State: state, By: by, Reason: reason, Approvers: approvers}
	}, record.Async)
	if err != nil {
		g.log.Error("recording approval", "err", err)
	}
}

// recordResult follows the (already masked) results of the running statement.
func (g *Guard) recordResult(res *postgres.Result) error {
	r := g.rec
	switch res.Kind {
	case postgres.ResultRowDescription:
		r.cur = &record.Result{}
		if res.Columns != nil {
			for _, f := range res.Columns.Fields {
				r.cur.Columns = append(r.cur.Columns, string(f.Name))
				r.cur.ColumnTypes = append(r.cur.ColumnTypes, f.DataTypeOID)
			}
		}
	case postgres.ResultRow:
		if r.cur == nil {
			r.cur = &record.Result{}
		}
		r.cur.RowCount++
		if r.maxRows >= 0 && len(r.cur.Rows) >= r.maxRows {
			r.cur.Truncated = true
			return nil
		}
		row := make([]*string, len(res.Values))
		for i, v := range res.Values {
			if v == nil {
				continue
			}
			s := string(v)
			if i < len(res.Formats) && res.Formats[i] == 1 {
				s = fmt.Sprintf("[binary, %d bytes]", len(v))
			}
			row[i] = &s
		}
		r.cur.Rows = append(r.cur.Rows, row)
	case postgres.ResultCopyData:
		if r.cur == nil {
			r.cur = &record.Result{}
		}
		r.cur.RowCount++
	case postgres.ResultCommandComplete, postgres.ResultError:
		cur := r.cur
		if cur == nil {
			cur = &record.Result{}
		}
		r.cur = nil
		if res.Kind == postgres.ResultCommandComplete {
			cur.CommandTag = string(res.Tag)
		} else if res.Error != nil {
			cur.Error, cur.ErrorCode = res.Error.Message, res.Error.Code
		}
		if t := r.stmtStart.Load(); t != 0 {
			cur.DurationUS = time.Since(time.Unix(0, t)).Microseconds()
		}
		return r.append(record.TypeResult, func(ev *record.Event) { ev.Result = cur }, record.Async)
	case postgres.ResultNotice:
		if res.Error == nil {
			return nil
		}
		return r.append(record.TypeNotice, func(ev *record.Event) {
			ev.Notice = &record.Notice{Code: res.Error.Code, Message: res.Error.Message, Severity: res.Error.Severity}
		}, record.Async)
	}
	return nil
}

// End records the end of the session.
func (g *Guard) End(reason string, bytesIn, bytesOut int64) {
	r := g.rec
	if r == nil {
		return
	}
	err := r.append(record.TypeSessionEnd, func(ev *record.Event) {
		ev.End = &record.SessionEnd{DurationUS: time.Since(r.started).Microseconds(), Reason: reason, BytesIn: bytesIn, BytesOut: bytesOut}
	}, record.Async)
	if err != nil {
		g.log.Error("recording session end", "err", err)
	}
}
