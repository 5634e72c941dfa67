package pgguard

import (
	"strings"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// A statement that names a column under a masking rule is shown (in the session log, to
// reviewers, in the daemon's log) with every literal and parameter masked by that rule: it may
// write such values to the column or compare them with it, and working out which value goes
// where (through subqueries, VALUES lists, CTEs, function arguments) is easy to get wrong. A
// statement the guard cannot parse may name any column. Values of other statements get the
// detectors.

// shownSQL is sql as the session log, reviewers and the daemon's log show it, given the ruled
// columns it names (ruledColumns); the server always gets it as sent.
func (g *Guard) shownSQL(sql string, ruled []mask.Source) string {
	if g.mask == nil {
		return sql
	}
	if ruled != nil {
		sql = g.maskLiterals(sql, ruled)
	}
	return g.mask.plan.MaskString(sql)
}

// ruledColumns returns the columns the statements of res name, following an EXECUTE to what
// was prepared (in the same query or before), if a column rule covers one of them; else nil.
func (g *Guard) ruledColumns(res *sqlclass.Result) []mask.Source {
	if res == nil || g.mask == nil || !g.mask.plan.HasColumnRules() {
		return nil
	}
	var cols []mask.Source
	var prepared map[string]*sqlclass.Statement // by PREPAREs earlier in the same query
	for i := range res.Statements {
		st := &res.Statements[i]
		cols = appendNames(cols, st)
		if st.Kind == sqlclass.KindExecute && st.Execute != "" {
			p, ok := prepared[st.Execute]
			if !ok {
				p = g.prepared[st.Execute]
			}
			if p == nil {
				cols = append(cols, mask.Source{Any: true})
			} else {
				cols = appendNames(cols, p)
			}
		}
		if st.Prepare != "" {
			if prepared == nil {
				prepared = map[string]*sqlclass.Statement{}
			}
			prepared[st.Prepare] = st
		}
	}
	if !g.mask.plan.RuleCovers(cols) {
		return nil
	}
	return cols
}

// appendNames appends the columns st names; any column for a statement the guard could not
// parse, or whose names could not all be worked out.
func appendNames(dst []mask.Source, st *sqlclass.Statement) []mask.Source {
	if st.Unknown || st.Names.Any {
		dst = append(dst, mask.Source{Any: true})
	}
	return appendSources(dst, st.Names.Columns)
}

// maskLiterals replaces every literal of sql with its value masked as a value of cols (quoted).
// A text the lexer cannot split into tokens is replaced whole by the redaction marker.
func (g *Guard) maskLiterals(sql string, cols []mask.Source) string {
	plan := g.mask.plan
	spans, ok := sqlclass.LiteralSpans(sql)
	if !ok {
		return string(plan.Redacted())
	}
	if len(spans) == 0 {
		return sql
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		tok := sql[sp[0]:sp[1]]
		if len(tok) >= 2 && tok[0] == '\'' && tok[len(tok)-1] == '\'' {
			tok = strings.ReplaceAll(tok[1:len(tok)-1], "''", "'")
		}
		out, _, err := plan.MaskValueOf([]byte(tok), nil, cols)
		if err != nil {
			return string(plan.Redacted())
		}
		b.WriteString(sql[last:sp[0]])
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(string(out), "'", "''"))
		b.WriteByte('\'')
		last = sp[1]
	}
	b.WriteString(sql[last:])
	return b.String()
}
