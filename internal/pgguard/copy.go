package pgguard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/enforcer-dev/enforcer/internal/mask"
)

// copyPlan is how the data of one COPY … TO STDOUT is masked: per column (resolved like a result
// set, so column rules apply) in text or CSV format. Binary COPY is refused: its fields cannot be
// masked without knowing every type's binary layout.
type copyPlan struct {
	csv        bool
	csvFormat  mask.CSVFormat
	header     bool // CSV HEADER: the first row is column names
	headerSeen bool
	rp         *mask.ResultPlan
}

var errCopyUnreadable = errors.New("cannot tell what this COPY outputs, so it cannot be masked; use one COPY … TO STDOUT per query")

// planCopy reads the COPY statement (the text already passed the classifier, whose depth checks
// keep the parser safe), describes its output columns on the catalog connection and plans them.
func (m *masker) planCopy(ctx context.Context, sql string) (*copyPlan, error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return nil, errCopyUnreadable
	}
	var cs *pg_query.CopyStmt
	for _, raw := range tree.Stmts {
		if c := raw.GetStmt().GetCopyStmt(); c != nil && !c.IsFrom {
			if cs != nil {
				return nil, errCopyUnreadable
			}
			cs = c
		}
	}
	if cs == nil {
		return nil, errCopyUnreadable
	}
	cp := &copyPlan{}
	for _, o := range cs.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		val := defString(d.Arg)
		switch d.Defname {
		case "format":
			switch strings.ToLower(val) {
			case "csv":
				cp.csv = true
			case "binary":
				return nil, errBinaryCopy
			}
		case "delimiter":
			if val != "" {
				cp.csvFormat.Delimiter = val[0]
			}
		case "quote":
			if val != "" {
				cp.csvFormat.Quote = val[0]
			}
		case "escape":
			if val != "" {
				cp.csvFormat.Escape = val[0]
			}
		case "header":
			cp.header = val == "" || !strings.EqualFold(val, "false") && val != "0" && !strings.EqualFold(val, "off")
		}
	}
	if !cp.csv && cp.csvFormat.Delimiter != 0 && cp.csvFormat.Delimiter != '\t' {
		// Text format with another delimiter: fields cannot be split by MaskCopyLine.
		return nil, fmt.Errorf("COPY in text format with a custom delimiter cannot be masked; use the default delimiter or CSV")
	}
	describe, err := copyQuery(cs, tree.Version)
	if err != nil {
		return nil, err
	}
	if m.g.info.Connect == nil {
		cp.rp = m.plan.ForColumns(nil)
		return cp, nil
	}
	fields, err := m.g.sh.Catalogs.Describe(ctx, m.g.info.Target.Name, m.g.database(), m.g.info.Connect, describe)
	if err != nil {
		return nil, fmt.Errorf("describe COPY output: %w", err)
	}
	formats := make([]int16, len(fields))
	org := &origin{}
	if res := m.g.sh.Classifier.Classify(describe); len(res.Statements) == 1 && !res.Statements[0].Unknown {
		org.outs = append(org.outs, res.Statements[0].Outputs)
	} else {
		org.unknown = true
	}
	if err := m.describe(ctx, &pgproto3.RowDescription{Fields: fields}, formats, nil, org); err != nil {
		return nil, err
	}
	cp.rp = m.rp
	m.desc, m.rp = nil, nil
	return cp, nil
}

func defString(n *pg_query.Node) string {
	if n == nil {
		return ""
	}
	if s := n.GetString_(); s != nil {
		return s.Sval
	}
	if b := n.GetBoolean(); b != nil {
		if b.Boolval {
			return "true"
		}
		return "false"
	}
	if i := n.GetInteger(); i != nil {
		return fmt.Sprint(i.Ival)
	}
	return ""
}

// copyQuery is a SELECT producing the same columns as the COPY.
func copyQuery(cs *pg_query.CopyStmt, version int32) (string, error) {
	if cs.Query != nil {
		return pg_query.Deparse(&pg_query.ParseResult{Version: version, Stmts: []*pg_query.RawStmt{{Stmt: cs.Query}}})
	}
	rel := cs.Relation
	if rel == nil {
		return "", errCopyUnreadable
	}
	name := quoteIdent(rel.Relname)
	if rel.Schemaname != "" {
		name = quoteIdent(rel.Schemaname) + "." + name
	}
	cols := "*"
	if len(cs.Attlist) > 0 {
		var parts []string
		for _, a := range cs.Attlist {
			parts = append(parts, quoteIdent(defString(a)))
		}
		cols = strings.Join(parts, ", ")
	}
	return "SELECT " + cols + " FROM " + name, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
