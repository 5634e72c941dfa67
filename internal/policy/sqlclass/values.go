package sqlclass

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ValueColumn ties a parameter or literal of a statement to the table columns it is stored in
// or compared with: INSERT INTO customers (tel) VALUES ($1), UPDATE … SET tel = '…',
// WHERE tel = $2. Where the statement's values are shown (the session log, reviewers), the
// rules of those columns then mask them as they mask the columns' values in results.
type ValueColumn struct {
	// Param is the parameter number ($1 is 1); 0 for a literal.
	Param int
	// Literal is the literal's index among the literal tokens of the text (see LiteralSpans);
	// -1 for a parameter, or a literal whose token could not be told.
	Literal int
	// ExecuteParam, for a literal argument of EXECUTE name(…), is the parameter of the prepared
	// statement it binds (1-based); Columns is then empty and the prepared statement's own
	// Values say the columns.
	ExecuteParam int
	Columns      []ColumnSource
}

// LiteralSpans returns where the literal tokens of sql are, as [start, end) byte offsets, in
// the order ValueColumn.Literal counts them; ok is false when the text uses a form the lexer is
// not certain of.
func LiteralSpans(sql string) (spans [][2]int, ok bool) {
	var lits []literal
	if _, _, ok = shapeLex(nil, sql, &lits); !ok {
		return nil, false
	}
	spans = make([][2]int, len(lits))
	for i, l := range lits {
		spans[i] = [2]int{l.start, l.end}
	}
	return spans, true
}

// valueWalker finds values next to column references. It rides along the outputWalker's walk
// (note), which also collects the relations the column references are resolved against once
// the walk is done (valuesOf).
type valueWalker struct {
	sql     string
	lits    []literal
	litOK   bool
	pending []pendingValue
	// exprs counts the operator expressions the walk is inside, in the current query (saved
	// in outer while it is inside a nested one).
	exprs int
	outer []int
}

// pendingValue is a value found, with the columns it goes to: known ones, and references to
// resolve against the statement's relations.
type pendingValue struct {
	ValueColumn
	refs [][]string
}

// valuesOf resolves what v found, once rels has every relation of the statement.
func (v *valueWalker) valuesOf(rels *outputWalker) []ValueColumn {
	if len(v.pending) == 0 {
		return nil
	}
	out := make([]ValueColumn, len(v.pending))
	var last *pendingValue // values of one expression share its references: resolved once
	for i := range v.pending {
		p := &v.pending[i]
		out[i] = p.ValueColumn
		if len(p.refs) == 0 {
			continue
		}
		if last != nil && &last.refs[0] == &p.refs[0] && len(last.Columns) == len(p.Columns) {
			out[i].Columns = out[i-1].Columns
			continue
		}
		cols := slices.Clone(p.Columns)
		for _, r := range p.refs {
			cols = rels.appendSources(cols, r)
		}
		out[i].Columns = dedup(cols, nil)
		last = p
	}
	return out
}

// note looks at one node of the walk for values next to columns; leave must follow once the
// walk is done with the node's children when it returns true.
func (v *valueWalker) note(x any) (entered bool) {
	switch x := x.(type) {
	case *pg.SelectStmt:
		v.outer = append(v.outer, v.exprs)
		v.exprs = 0
		return true
	case *pg.A_Expr:
		// col = $1, lower(col) LIKE 'x%', col IN (…), col BETWEEN a AND b, tel || '' = '…':
		// in a tree of operators, the values go with the columns anywhere in it. Only the
		// tree's root looks at it, once: a chain of a + a + … + 1 is looked at in linear time.
		if v.exprs == 0 {
			var refs [][]string
			collectRefs(x.Lexpr, &refs)
			collectRefs(x.Rexpr, &refs)
			if len(refs) > 0 {
				v.tie(x.Lexpr, nil, refs)
				v.tie(x.Rexpr, nil, refs)
			}
		}
		v.exprs++
		return true
	case *pg.InsertStmt:
		v.insert(x)
	case *pg.UpdateStmt:
		for _, t := range x.TargetList {
			v.assign(x.Relation, t.GetResTarget())
		}
	case *pg.MergeStmt:
		for _, wc := range x.MergeWhenClauses {
			c := wc.GetMergeWhenClause()
			for _, t := range c.GetTargetList() {
				v.assign(x.Relation, t.GetResTarget())
			}
			for j, val := range c.GetValues() {
				col := ""
				if j < len(c.GetTargetList()) {
					col = c.GetTargetList()[j].GetResTarget().GetName()
				}
				v.tie(val, []ColumnSource{column(x.Relation, col)}, nil)
			}
		}
	case *pg.ExecuteStmt:
		for j, p := range x.Params {
			v.eachValue(p, func(param, lit int) {
				if param == 0 {
					v.pending = append(v.pending, pendingValue{ValueColumn: ValueColumn{Literal: lit, ExecuteParam: j + 1}})
				}
			})
		}
	}
	return false
}

// leave follows note's true: the walk is done with x's children.
func (v *valueWalker) leave(x any) {
	if _, ok := x.(*pg.SelectStmt); ok {
		v.exprs = v.outer[len(v.outer)-1]
		v.outer = v.outer[:len(v.outer)-1]
		return
	}
	v.exprs--
}

// insert ties VALUES rows, or an INSERT … SELECT's target list, to the columns listed (or, with
// none listed, to the whole row), and ON CONFLICT DO UPDATE SET to its columns.
func (v *valueWalker) insert(x *pg.InsertStmt) {
	cols := make([]string, len(x.Cols))
	for i, c := range x.Cols {
		cols[i] = c.GetResTarget().GetName()
	}
	colAt := func(j int) []ColumnSource {
		if j < len(cols) {
			return []ColumnSource{column(x.Relation, cols[j])}
		}
		return []ColumnSource{column(x.Relation, "")}
	}
	if sel := x.SelectStmt.GetSelectStmt(); sel != nil {
		for _, row := range sel.ValuesLists {
			for j, val := range row.GetList().GetItems() {
				v.tie(val, colAt(j), nil)
			}
		}
		for j, t := range sel.TargetList {
			v.tie(t.GetResTarget().GetVal(), colAt(j), nil)
		}
	}
	if oc := x.OnConflictClause; oc != nil {
		for _, t := range oc.TargetList {
			v.assign(x.Relation, t.GetResTarget())
		}
	}
}

// assign ties SET col = expr.
func (v *valueWalker) assign(rel *pg.RangeVar, t *pg.ResTarget) {
	if t != nil {
		v.tie(t.Val, []ColumnSource{column(rel, t.Name)}, nil)
	}
}

// column names a column of the statement's target table.
func column(rel *pg.RangeVar, name string) ColumnSource {
	if rel == nil {
		return ColumnSource{Column: name}
	}
	return ColumnSource{Schema: rel.Schemaname, Table: rel.Relname, Column: name}
}

// tie records the values in expression n (not inside a nested query) as going with cols and
// the columns refs name.
func (v *valueWalker) tie(n *pg.Node, cols []ColumnSource, refs [][]string) {
	if n == nil {
		return
	}
	v.eachValue(n, func(param, lit int) {
		v.pending = append(v.pending, pendingValue{ValueColumn: ValueColumn{Param: param, Literal: lit, Columns: cols}, refs: refs})
	})
}

// eachValue calls fn for each parameter ($n: param n, lit -1) and literal (param 0, lit its
// token index or -1) in expression n, not inside a nested query.
func (v *valueWalker) eachValue(n *pg.Node, fn func(param, lit int)) {
	(&valueFinder{w: v, fn: fn}).visit(n.ProtoReflect())
}

type valueFinder struct {
	w  *valueWalker
	fn func(param, lit int)
}

func (f *valueFinder) visit(m protoreflect.Message) {
	switch x := m.Interface().(type) {
	case *pg.ParamRef:
		f.fn(int(x.Number), -1)
		return
	case *pg.A_Const:
		if _, isBool := x.Val.(*pg.A_Const_Boolval); !x.Isnull && x.Val != nil && !isBool {
			f.fn(0, f.w.literalAt(int(x.Location)))
		}
		return
	case *pg.SelectStmt:
		return
	}
	eachChild(m, f)
}

// literalAt returns the index of the literal token at byte offset loc (where the parser puts a
// constant: its first byte, or the minus sign of a negative number), or -1.
func (w *valueWalker) literalAt(loc int) int {
	if !w.litOK || loc < 0 {
		return -1
	}
	i, _ := slices.BinarySearchFunc(w.lits, loc, func(l literal, loc int) int { return l.start - loc })
	if i < len(w.lits) && strings.Trim(w.sql[loc:w.lits[i].start], "-+ \t\r\n") == "" {
		return i
	}
	return -1
}

// collectRefs appends the column references in n, not inside a nested query.
func collectRefs(n *pg.Node, refs *[][]string) {
	if n != nil {
		(*refFinder)(refs).visit(n.ProtoReflect())
	}
}

type refFinder [][]string

func (f *refFinder) visit(m protoreflect.Message) {
	switch x := m.Interface().(type) {
	case *pg.ColumnRef:
		if ref := refFields(x); len(ref) > 0 {
			*f = append(*f, ref)
		}
		return
	case *pg.SelectStmt:
		return
	}
	eachChild(m, f)
}
