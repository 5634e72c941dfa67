package sqlclass

import (
	"slices"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ColumnSource is a table column a statement's result may show.
type ColumnSource struct {
	Schema, Table string // the relation as the statement names it
	// Column is the column's name, or "" for the whole row (row_to_json(c), c::text).
	Column string
}

// Outputs says which table columns a statement's result columns may be computed from.
// PostgreSQL names the source table and column of a result column only when it is a plain
// column reference (RowDescription's table OID and attribute number); for a computed one,
// upper(email), phone || '-' or a subquery's expression, it says nothing, and masking by
// column needs these instead.
//
// A reference whose table is not certain (an unqualified column in a join, a qualifier
// naming a subquery) is listed once per relation the statement names: masking may then cover
// more than it must, never less.
type Outputs struct {
	// ByPosition[i] are the sources of result column i, when the target list maps one to one
	// onto the result: a single SELECT (or RETURNING) without *, set operations or nested
	// queries. Otherwise nil.
	ByPosition [][]ColumnSource
	// All are the sources of every target list in the statement, at any depth.
	All []ColumnSource
	// Opaque is set when a function reads rows the statement does not name (table_to_xml,
	// cursor_to_xml): its result columns may show any table's.
	Opaque bool
}

// relation is a table a statement names, and the alias it is known by there.
type relation struct {
	schema, name, alias string
	renamed             bool // the alias renames columns: t AS c(i, n, x)
}

// outputWalker collects column references in target lists, and the statement's relations.
type outputWalker struct {
	rels    []relation
	refs    [][]string // fields of each column reference in a target list; "*" for A_Star
	nested  bool       // a query inside the statement (subquery, CTE, set operation, VALUES)
	selects int
	in      bool // inside a target list
	// joinRenamed: a join's alias renames its columns; opaque: a function reads rows the
	// statement does not name (see opaqueFuncs).
	joinRenamed, opaque bool
	// sources counts what appendSources has produced; past maxSources it produces nothing
	// more and the statement's outputs are opaque (a statement naming a thousand tables and
	// comparing a column four thousand times would otherwise pair every reference with every
	// table).
	sources int
	// all are the fields of every column reference, in a target list or not.
	all [][]string
	// rows are whole rows the statement names without a column reference: an INSERT's target
	// without a column list, a type name (null::customers is a row of customers). namesAny: a
	// NATURAL join compares columns no reference names.
	rows     []ColumnSource
	namesAny bool
}

// columnsOf computes the Outputs and Names of one statement, from one walk for its relations
// and column references.
func columnsOf(n *pg.Node) (*Outputs, Names) {
	w := &outputWalker{}
	w.visit(n.ProtoReflect())
	outs := w.outputs(n)
	var names Names
	for _, ref := range w.all {
		names.Columns = w.appendSources(names.Columns, ref)
	}
	names.Columns = dedup(append(names.Columns, w.rows...))
	names.Any = w.opaque || w.namesAny
	return outs, names
}

// Names are the table columns a statement names anywhere (a target list, WHERE, SET, an
// INSERT's column list), resolved as Outputs are. Where the statement is shown (the session
// log, reviewers), a statement naming a column under a masking rule has its values masked.
type Names struct {
	Columns []ColumnSource
	// Any is set when they could not all be worked out (a statement too large to pair every
	// reference with every table, a function reading a table by name): the statement may
	// name any column.
	Any bool
}

// outputs computes the Outputs of statement n, walked by w. Statements that return no rows of
// their own (DDL, SET, …) have none.
func (w *outputWalker) outputs(n *pg.Node) *Outputs {
	var top []*pg.Node // the target list that makes the result's columns
	switch s := n.GetNode().(type) {
	case *pg.Node_SelectStmt:
		top = s.SelectStmt.TargetList
	case *pg.Node_InsertStmt:
		top = s.InsertStmt.ReturningList
	case *pg.Node_UpdateStmt:
		top = s.UpdateStmt.ReturningList
	case *pg.Node_DeleteStmt:
		top = s.DeleteStmt.ReturningList
	case *pg.Node_MergeStmt:
		top = s.MergeStmt.ReturningList
	case *pg.Node_DeclareCursorStmt:
		return w.outputs(s.DeclareCursorStmt.Query) // what FETCH returns
	case *pg.Node_PrepareStmt:
		return w.outputs(s.PrepareStmt.Query) // what EXECUTE returns
	case *pg.Node_CallStmt:
		// A procedure's OUT parameters: every reference in its arguments counts.
	default:
		// No rows, or none whose values the statement's text shows the origin of: EXPLAIN's
		// plan, EXECUTE (the caller knows what was prepared), COPY (masked by its own plan).
		return nil
	}
	if top == nil && n.GetSelectStmt() == nil && n.GetCallStmt() == nil {
		return nil // INSERT, UPDATE, DELETE or MERGE without RETURNING: no rows
	}
	out := &Outputs{}
	for _, ref := range w.refs {
		out.All = w.appendSources(out.All, ref)
	}
	out.All = dedup(out.All)
	if top != nil && !w.nested && w.selects <= 1 {
		out.ByPosition = make([][]ColumnSource, len(top))
		for i, t := range top {
			tw := &outputWalker{in: true}
			tw.visit(t.ProtoReflect())
			if isStar(t.GetResTarget().GetVal()) {
				out.ByPosition = nil // one entry, many columns
				break
			}
			var srcs []ColumnSource
			for _, ref := range tw.refs {
				srcs = w.appendSources(srcs, ref)
			}
			out.ByPosition[i] = dedup(srcs)
		}
	}
	out.Opaque = w.opaque // a function reading by name, or past maxSources
	return out
}

func (w *outputWalker) visit(m protoreflect.Message) {
	switch x := m.Interface().(type) {
	case *pg.RangeVar:
		r := relation{schema: x.Schemaname, name: x.Relname}
		if x.Alias != nil {
			r.alias, r.renamed = x.Alias.Aliasname, len(x.Alias.Colnames) > 0
		}
		w.rels = append(w.rels, r)
		return
	case *pg.JoinExpr:
		if x.Alias != nil && len(x.Alias.Colnames) > 0 {
			w.joinRenamed = true // (a JOIN b) AS j(x, y): j.x may be any column of either
		}
		w.namesAny = w.namesAny || x.IsNatural
		for _, u := range x.UsingClause {
			w.all = append(w.all, []string{u.GetString_().GetSval()}) // JOIN … USING (tel) compares tel
		}
	case *pg.TypeName:
		// Any type may be a table's row type: customers in json_populate_record(null::customers, …).
		if n := len(x.Names); n > 0 {
			src := ColumnSource{Table: x.Names[n-1].GetString_().GetSval()}
			if n > 1 {
				src.Schema = x.Names[n-2].GetString_().GetSval()
			}
			w.rows = append(w.rows, src)
		}
		return
	case *pg.FuncCall:
		if opaqueFuncs[lastName(x.Funcname)] {
			w.opaque = true
		}
	case *pg.ResTarget:
		if x.Name != "" {
			// A column INSERT or UPDATE names as its target (or an alias: more names do no harm).
			w.all = append(w.all, []string{x.Name})
		}
		if w.in && isStar(x.Val) {
			// SELECT *, RETURNING t.*: plain columns, each with its origin in the result.
			return
		}
	case *pg.ColumnRef:
		if ref := refFields(x); len(ref) > 0 {
			w.all = append(w.all, ref)
			if w.in {
				w.refs = append(w.refs, ref)
			}
		}
		return
	case *pg.SelectStmt:
		w.selects++
		if w.selects > 1 || x.Op != pg.SetOperation_SETOP_NONE || len(x.ValuesLists) > 0 || x.WithClause != nil {
			w.nested = true
		}
		saved := w.in
		w.in = false
		eachChild(m, w, "target_list", "values_lists")
		w.in = true
		for _, t := range x.TargetList {
			w.visit(t.ProtoReflect())
		}
		for _, v := range x.ValuesLists {
			w.visit(v.ProtoReflect())
		}
		w.in = saved
		return
	case *pg.InsertStmt, *pg.UpdateStmt, *pg.DeleteStmt, *pg.MergeStmt:
		if ins, ok := x.(*pg.InsertStmt); ok && len(ins.Cols) == 0 && ins.Relation != nil {
			// INSERT INTO t VALUES (…) writes every column of t.
			w.rows = append(w.rows, ColumnSource{Schema: ins.Relation.Schemaname, Table: ins.Relation.Relname})
		}
		saved := w.in
		// RETURNING of an INSERT, UPDATE or MERGE shows values the statement wrote: what
		// its VALUES, SELECT and SET lists read counts, and where is not told by position.
		_, deletes := x.(*pg.DeleteStmt)
		w.in = !deletes
		w.nested = w.nested || !deletes
		eachChild(m, w, "returning_list")
		w.in = true
		fd := m.Descriptor().Fields().ByName("returning_list")
		l := m.Get(fd).List()
		for i := 0; i < l.Len(); i++ {
			w.visit(l.Get(i).Message())
		}
		w.in = saved
		return
	case *pg.RangeSubselect, *pg.SubLink, *pg.CommonTableExpr:
		w.nested = true
	case *pg.RangeFunction, *pg.RangeTableFunc, *pg.JsonTable:
		// FROM upper(tel) x, unnest(array[tel]), XMLTABLE(… PASSING tel …): their
		// arguments are output.
		w.nested = true
		saved := w.in
		w.in = true
		eachChild(m, w)
		w.in = saved
		return
	}
	eachChild(m, w)
}

// opaqueFuncs read rows the statement does not name: a table, schema or database by name, or
// a cursor; what they return has no origin the parse tree can tell.
var opaqueFuncs = map[string]bool{
	"table_to_xml": true, "table_to_xml_and_xmlschema": true,
	"schema_to_xml": true, "schema_to_xml_and_xmlschema": true,
	"database_to_xml": true, "database_to_xml_and_xmlschema": true,
	"cursor_to_xml": true,
}

// lastName returns the last part of a qualified name.
func lastName(name []*pg.Node) string {
	if len(name) == 0 {
		return ""
	}
	return name[len(name)-1].GetString_().GetSval()
}

// eachChild calls fn with each message m holds, list elements in order, fields in declaration
// order (which follows the statement's text: FROM before WHERE). m.Range would not do: protobuf-go
// shuffles its order by a hash of the binary, so table lists came out in another order from one
// build to the next. Fields named in skip are left out.
func eachChild(m protoreflect.Message, v visitor, skip ...protoreflect.Name) {
	if _, ok := m.Interface().(*pg.Node); ok {
		// Most messages of a tree are Nodes, a oneof of some 250 fields: go to the one set.
		if fd := m.WhichOneof(nodeKind); fd != nil {
			v.visit(m.Get(fd).Message())
		}
		return
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			// Which field of a oneof is set, asked once, where its first field stands.
			if o.Fields().Get(0) != fd {
				continue
			}
			if fd = m.WhichOneof(o); fd == nil {
				continue
			}
		}
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() || !m.Has(fd) || slices.Contains(skip, fd.Name()) {
			continue
		}
		if fd.IsList() {
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				v.visit(l.Get(j).Message())
			}
			continue
		}
		v.visit(m.Get(fd).Message())
	}
}

// visitor is a walk over a parse tree (an interface, not a func: a method value passed down
// every level would be allocated at each).
type visitor interface{ visit(protoreflect.Message) }

// nodeKind is the oneof that makes up all of pg.Node.
var nodeKind = (&pg.Node{}).ProtoReflect().Descriptor().Oneofs().ByName("node")

// refFields returns the names of a column reference, "*" for a star: [c tel], [c *].
func refFields(x *pg.ColumnRef) []string {
	ref := make([]string, 0, len(x.Fields))
	for _, f := range x.Fields {
		switch {
		case f.GetString_() != nil:
			ref = append(ref, f.GetString_().Sval)
		case f.GetAStar() != nil:
			ref = append(ref, "*")
		}
	}
	return ref
}

// isStar reports whether a target expands to columns: *, t.* or (expr).*.
func isStar(n *pg.Node) bool {
	if f := n.GetColumnRef().GetFields(); len(f) > 0 {
		return f[len(f)-1].GetAStar() != nil
	}
	ind := n.GetAIndirection().GetIndirection()
	return len(ind) > 0 && ind[len(ind)-1].GetAStar() != nil
}

// maxSources bounds the column sources worked out for one statement.
const maxSources = 1 << 14

// appendSources appends the sources a column reference (its name fields) may read.
func (w *outputWalker) appendSources(dst []ColumnSource, ref []string) []ColumnSource {
	if w.sources += len(w.rels) + 1; w.sources > maxSources {
		w.opaque = true
		return dst
	}
	col := ref[len(ref)-1]
	if col == "*" {
		col = "" // t.*, or * inside an expression: whole rows
	}
	qual := ref[:len(ref)-1]
	matched := false
	for _, r := range w.rels {
		if !r.named(qual) {
			continue
		}
		matched = true
		dst = append(dst, ColumnSource{Schema: r.schema, Table: r.name, Column: col})
		if r.renamed && col != "" {
			// c(i, n, x).x is the table's third column, whatever it is called.
			dst = append(dst, ColumnSource{Schema: r.schema, Table: r.name})
		}
	}
	if w.joinRenamed && col != "" {
		for _, r := range w.rels {
			dst = append(dst, ColumnSource{Schema: r.schema, Table: r.name})
		}
	}
	if len(ref) == 1 && col != "" {
		// A lone name may also be a table or alias used as a whole row: row_to_json(c).
		for _, r := range w.rels {
			if r.named([]string{col}) {
				dst = append(dst, ColumnSource{Schema: r.schema, Table: r.name})
			}
		}
	}
	if !matched {
		// No relation by that name (a subquery's or function's alias) or none at all: the
		// column of any relation the statement names, and of none in particular.
		for _, r := range w.rels {
			dst = append(dst, ColumnSource{Schema: r.schema, Table: r.name, Column: col})
		}
		dst = append(dst, ColumnSource{Column: col})
	}
	return dst
}

// named reports whether a column reference's qualifier (none, alias or table, schema.table,
// db.schema.table) can mean r. An unqualified reference can mean any relation.
func (r relation) named(qual []string) bool {
	switch len(qual) {
	case 0:
		return true
	case 1:
		if r.alias != "" {
			return qual[0] == r.alias
		}
		return qual[0] == r.name
	default:
		n := len(qual)
		return r.alias == "" && qual[n-1] == r.name && (r.schema == "" || qual[n-2] == r.schema)
	}
}
