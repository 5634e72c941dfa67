package pgguard

import (
	"sync"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// Column rules follow a computed result column (upper(email), phone || '', row_to_json(c))
// to the table columns it is computed from. PostgreSQL names a result column's table and
// column only for a plain column reference; for the rest the statement's parse tree says
// which columns they may come from (sqlclass.Outputs). The client side, which judges each
// statement, notes that per statement id; the server side, which masks its rows, reads it.

// origin is where the result columns of one statement may come from.
type origin struct {
	id   uint64
	outs []*sqlclass.Outputs // one per statement in the text; nil for one without rows of its own
	// unknown: the statement runs something the guard cannot see into (a FETCH from a cursor
	// not declared here, text it could not parse), so every column rule covers its computed
	// columns.
	unknown bool
}

// unknownCursor marks a cursor name whose query cannot be told (any opaque Outputs do).
var unknownCursor = &sqlclass.Outputs{Opaque: true}

// origins keeps the origins of a connection's last statements.
type origins struct {
	mu   sync.Mutex
	ring [64]origin // more than a client pipelines
	next int
}

func (o *origins) put(id uint64, unknown bool, outs ...*sqlclass.Outputs) {
	o.mu.Lock()
	defer o.mu.Unlock()
	slot := &o.ring[o.next]
	o.next = (o.next + 1) % len(o.ring)
	*slot = origin{id: id, outs: append(slot.outs[:0], outs...), unknown: unknown}
}

// get copies the origin of statement id into dst; a statement not found is unknown.
func (o *origins) get(id uint64, dst *origin) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.ring {
		if s := &o.ring[i]; s.id == id && id != 0 {
			*dst = origin{id: id, outs: append(dst.outs[:0], s.outs...), unknown: s.unknown}
			return
		}
	}
	*dst = origin{id: id, outs: dst.outs[:0], unknown: true}
}

// noteOrigins notes where the result columns of statement id, classified as res, come from.
// It runs on the client side, under g.mu, once the statement is allowed; it follows EXECUTE to
// what was prepared and FETCH to what was declared. runs is false for a Parse, which runs
// nothing: the cursors are then left as they are.
//
// The cursors are only ever forgotten when that is certain: a statement after the first of a
// query may not run (an error stops the rest), and a WITH HOLD cursor outlives its
// transaction. A name whose cursor cannot be told is kept as unknownCursor.
func (g *Guard) noteOrigins(id uint64, res *sqlclass.Result, runs bool) {
	m := g.mask
	if m == nil || !m.plan.HasColumnRules() || res == nil {
		return
	}
	unknown := false
	outs := m.noteScratch[:0]
	for i := range res.Statements {
		st := &res.Statements[i]
		switch {
		case st.Unknown:
			unknown = true
		case st.Kind == sqlclass.KindExecute && st.Execute != "":
			p := g.prepared[st.Execute]
			if p == nil || (p.Outputs != nil && p.Outputs.Opaque) {
				unknown = true
				continue
			}
			outs = append(outs, p.Outputs)
		case st.Kind == "FETCH":
			o, ok := m.cursors[st.Cursor]
			if !ok || (o != nil && o.Opaque) {
				unknown = true // a cursor opened by a function, or before the guard saw the session
				continue
			}
			outs = append(outs, o)
		case !runs:
			outs = append(outs, st.Outputs)
		case st.Kind == "DECLARE":
			if m.cursors == nil {
				m.cursors = map[string]*sqlclass.Outputs{}
			}
			if _, used := m.cursors[st.Cursor]; used {
				// The server refuses a second cursor of the name and keeps the first, unless
				// that one has been closed in a way the guard did not see: which one a FETCH
				// reads cannot be told.
				m.cursors[st.Cursor] = unknownCursor
				continue
			}
			m.cursors[st.Cursor] = st.Outputs
		case st.Kind == "CLOSE" && st.Cursor != "" && i == 0:
			delete(m.cursors, st.Cursor)
		case st.Kind == "CLOSE" && st.Cursor != "":
			if _, ok := m.cursors[st.Cursor]; ok {
				m.cursors[st.Cursor] = unknownCursor
			}
		case (st.Kind == "CLOSE" || st.Kind == sqlclass.KindDiscard) && i == 0:
			clear(m.cursors) // CLOSE ALL, DISCARD ALL
		case st.Kind == "CLOSE", st.Kind == sqlclass.KindDiscard, st.Kind == sqlclass.KindCommit,
			st.Kind == sqlclass.KindRollback, st.Kind == "PREPARE TRANSACTION":
			// Cursors that end here may not have (WITH HOLD ones outlive a COMMIT), and the
			// server refuses a DECLARE of a name still open.
			for name := range m.cursors {
				m.cursors[name] = unknownCursor
			}
		default:
			if st.Outputs != nil && st.Outputs.Opaque {
				unknown = true
			}
			outs = append(outs, st.Outputs)
		}
		if st.Procedural && runs {
			// A DO block or a function may close a cursor and open another under its name.
			for name := range m.cursors {
				m.cursors[name] = unknownCursor
			}
		}
	}
	m.noteScratch = outs
	m.origins.put(id, unknown, outs...)
}

// sources returns the table columns result column i of n may come from, or any=true when
// they cannot be told.
func (o *origin) sources(i, n int, dst []mask.Source) (srcs []mask.Source, any bool) {
	if o.unknown {
		return dst, true
	}
	if len(o.outs) == 1 && o.outs[0] != nil && len(o.outs[0].ByPosition) == n {
		return appendSources(dst, o.outs[0].ByPosition[i]), false
	}
	for _, out := range o.outs {
		if out != nil {
			dst = appendSources(dst, out.All)
		}
	}
	return dst, false
}

func appendSources(dst []mask.Source, cs []sqlclass.ColumnSource) []mask.Source {
	for _, c := range cs {
		dst = append(dst, mask.Source{Schema: c.Schema, Table: c.Table, Name: c.Column})
	}
	return dst
}
