package pgguard

import (
	"slices"
	"strings"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// A statement's values are shown where the statement is (the session log, reviewers, the
// daemon's log) masked as the columns they go to are in results: INSERT … VALUES ('4155550100')
// into a column under a rule is recorded with the literal masked by that rule, and so is $1 of
// WHERE tel = $1. Values with no such column get the detectors.

// shownSQL is sql (classified as res, which may be nil) as the session log, reviewers and the
// daemon's log show it; the server always gets it as sent.
func (g *Guard) shownSQL(sql string, res *sqlclass.Result) string {
	if g.mask == nil {
		return sql
	}
	if res != nil && g.mask.plan.HasColumnRules() {
		sql = g.maskLiterals(sql, res)
	}
	return g.mask.plan.MaskString(sql)
}

// literalMask is one literal token to replace.
type literalMask struct {
	start, end int
	cols       []mask.Source
}

// maskLiterals replaces the literals of sql that go to a column under a rule with their masked
// value (quoted). A literal the lexer cannot place makes the whole text the redaction marker.
func (g *Guard) maskLiterals(sql string, res *sqlclass.Result) string {
	plan := g.mask.plan
	var spans [][2]int
	var todo []literalMask
	for i := range res.Statements {
		st := &res.Statements[i]
		for _, v := range st.Values {
			if v.Param != 0 {
				continue
			}
			cols := appendSources(nil, v.Columns)
			if v.ExecuteParam > 0 {
				cols = g.preparedParamColumns(st.Execute, v.ExecuteParam)
			}
			if !plan.RuleCovers(cols) {
				continue
			}
			if spans == nil {
				var ok bool
				if spans, ok = sqlclass.LiteralSpans(sql); !ok {
					spans = [][2]int{}
				}
			}
			if v.Literal < 0 || v.Literal >= len(spans) {
				return string(plan.Redacted())
			}
			todo = append(todo, literalMask{spans[v.Literal][0], spans[v.Literal][1], cols})
		}
	}
	if len(todo) == 0 {
		return sql
	}
	slices.SortFunc(todo, func(a, b literalMask) int { return a.start - b.start })
	var b strings.Builder
	last := 0
	for _, t := range todo {
		if t.start < last {
			continue // the same literal tied to two columns
		}
		tok := sql[t.start:t.end]
		if len(tok) >= 2 && tok[0] == '\'' && tok[len(tok)-1] == '\'' {
			tok = tok[1 : len(tok)-1]
		}
		out, _, err := plan.MaskValueOf([]byte(tok), nil, t.cols)
		if err != nil {
			return string(plan.Redacted())
		}
		b.WriteString(sql[last:t.start])
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(string(out), "'", "''"))
		b.WriteByte('\'')
		last = t.end
	}
	b.WriteString(sql[last:])
	return b.String()
}

// paramColumns returns the columns parameter n ($n) of a statement classified as res goes to.
func (g *Guard) paramColumns(res *sqlclass.Result, n int) []mask.Source {
	if res == nil || g.mask == nil || !g.mask.plan.HasColumnRules() {
		return nil
	}
	var cols []mask.Source
	for i := range res.Statements {
		for _, v := range res.Statements[i].Values {
			if v.Param == n {
				cols = appendSources(cols, v.Columns)
			}
		}
	}
	return cols
}

// preparedParamColumns returns the columns parameter n of the statement prepared (SQL
// PREPARE) under name goes to.
func (g *Guard) preparedParamColumns(name string, n int) []mask.Source {
	p := g.prepared[name]
	if p == nil {
		return nil
	}
	var cols []mask.Source
	for _, v := range p.Values {
		if v.Param == n {
			cols = appendSources(cols, v.Columns)
		}
	}
	return cols
}
