package pgguard

import (
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// A view's column reports the view as its table, so a rule on the table it shows would not
// hold: SELECT phone FROM customer_contacts. derive follows a view column through the view's
// definition (the table columns that position of its target list is computed from) and through
// the views that definition reads, down to tables.

// derive returns the table columns column attnum (0: the whole row) of relation oid comes from.
// unknown is set when that cannot be told.
func (c *catalog) derive(oid uint32, attnum, depth int) (from []Source, unknown bool) {
	rel := c.rels[oid]
	switch {
	case rel == nil || attnum > len(rel.cols):
		return nil, true
	case !rel.view:
		col := ""
		if attnum > 0 {
			col = rel.cols[attnum-1]
		}
		from = []Source{{Schema: rel.schema, Table: rel.name, Column: col}}
		for _, a := range rel.ancestors {
			from = append(from, Source{Schema: a.Schema, Table: a.Table, Column: col})
		}
		return from, false
	case depth >= maxViewDepth:
		return nil, true
	case attnum == 0:
		for a := 1; a <= len(rel.cols); a++ {
			f, u := c.derive(oid, a, depth)
			from, unknown = append(from, f...), unknown || u
		}
		return from, unknown
	}
	outs := rel.outputs()
	if outs == nil || outs.Opaque || rel.calls {
		// A definition that does not parse, reads a table by name (table_to_xml) or calls
		// code (a function may read any table).
		return nil, true
	}
	refs := outs.All
	if len(outs.ByPosition) == len(rel.cols) {
		refs = outs.ByPosition[attnum-1]
	}
	for _, r := range refs {
		used := c.usedBy(rel, r)
		if used == nil {
			// Not a relation the view reads (a CTE's or function's name in its definition): as
			// named, which a rule on that name covers.
			from = append(from, Source{Schema: r.Schema, Table: r.Table, Column: r.Column})
			continue
		}
		a := 0
		if r.Column != "" {
			if a = attnumOf(c.rels[*used], r.Column); a == 0 {
				from = append(from, Source{Schema: r.Schema, Table: r.Table, Column: r.Column})
				continue
			}
		}
		f, u := c.derive(*used, a, depth+1)
		from, unknown = append(from, f...), unknown || u
	}
	return from, unknown
}

// usedBy finds, among the relations view reads, the one a column source names.
func (c *catalog) usedBy(view *relation, r sqlclass.ColumnSource) *uint32 {
	for i, u := range view.uses {
		rel := c.rels[u]
		if rel != nil && rel.name == r.Table && (r.Schema == "" || r.Schema == rel.schema) {
			return &view.uses[i]
		}
	}
	return nil
}

func attnumOf(rel *relation, column string) int {
	for i, n := range rel.cols {
		if n == column {
			return i + 1
		}
	}
	return 0
}

// outputs returns what the view's definition says of its columns (nil if it does not parse),
// parsed once.
func (rel *relation) outputs() *sqlclass.Outputs {
	if !rel.parsed {
		rel.parsed = true
		if res := sqlclass.Classify(rel.def); len(res.Statements) == 1 {
			st := &res.Statements[0]
			rel.outs, rel.calls = st.Outputs, st.Procedural || st.Unknown
		}
	}
	return rel.outs
}
