package pgguard

import (
	"slices"
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
		sql = g.maskLiterals(sql, ruled, 0)
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
// parse, whose names could not all be worked out, or that runs code the guard does not parse (a
// DO block, a function's body, SQL text given to a function).
func appendNames(dst []mask.Source, st *sqlclass.Statement) []mask.Source {
	if st.Unknown || st.Names.Any || st.Procedural {
		dst = append(dst, mask.Source{Any: true})
	}
	return appendSources(dst, st.Names.Columns)
}

// maxBodyDepth bounds how deep maskLiterals follows code inside code (a DO block that creates a
// function): deeper bodies are masked whole.
const maxBodyDepth = 4

// maskLiterals replaces every literal of sql with its value masked as a value of cols (quoted).
// The body of a DO block or a function is code, not a value: its own literals are masked, so that
// a reader still sees what it does. A text the lexer cannot split into tokens is replaced whole by
// the redaction marker.
func (g *Guard) maskLiterals(sql string, cols []mask.Source, depth int) string {
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
		b.WriteString(sql[last:sp[0]])
		last = sp[1]
		tok := sql[sp[0]:sp[1]]
		if depth < maxBodyDepth && opensBody(sql[:sp[0]]) {
			if open, body, ok := splitBody(tok); ok {
				b.WriteString(open)
				inner := g.maskLiterals(body, cols, depth+1)
				if open == "'" {
					inner = strings.ReplaceAll(inner, "'", "''")
				}
				b.WriteString(inner)
				b.WriteString(open)
				continue
			}
		}
		if len(tok) >= 2 && tok[0] == '\'' && tok[len(tok)-1] == '\'' {
			tok = strings.ReplaceAll(tok[1:len(tok)-1], "''", "'")
		}
		out, _, err := plan.MaskValueOf([]byte(tok), nil, cols)
		if err != nil {
			return string(plan.Redacted())
		}
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(string(out), "'", "''"))
		b.WriteByte('\'')
	}
	b.WriteString(sql[last:])
	return b.String()
}

// opensBody reports whether a literal that follows before is a block of code: DO's (also after
// DO LANGUAGE name) or a function's, after AS. Anything between (a comment) makes it a value,
// masked whole.
func opensBody(before string) bool {
	w1, before := lastWord(before)
	if strings.EqualFold(w1, "do") || strings.EqualFold(w1, "as") {
		return true
	}
	w2, before := lastWord(before)
	w3, _ := lastWord(before)
	return w1 != "" && strings.EqualFold(w2, "language") && strings.EqualFold(w3, "do")
}

// lastWord returns the identifier that s ends with (after trailing spaces), and s before it.
func lastWord(s string) (word, before string) {
	s = strings.TrimRight(s, " \t\r\n\f\v")
	i := len(s)
	for i > 0 {
		c := s[i-1]
		if c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			break
		}
		i--
	}
	return s[i:], s[:i]
}

// splitBody splits a string literal into its quote (' or a dollar quote such as $fn$) and its
// content, unescaped; ok is false for other literals (numbers, E'…' and U&'…' strings).
func splitBody(tok string) (quote, body string, ok bool) {
	switch {
	case len(tok) >= 2 && tok[0] == '\'' && tok[len(tok)-1] == '\'':
		return "'", strings.ReplaceAll(tok[1:len(tok)-1], "''", "'"), true
	case len(tok) >= 2 && tok[0] == '$':
		end := strings.IndexByte(tok[1:], '$')
		if end < 0 {
			return "", "", false
		}
		quote = tok[:end+2]
		if len(tok) < 2*len(quote) || !strings.HasSuffix(tok, quote) {
			return "", "", false
		}
		return quote, tok[len(quote) : len(tok)-len(quote)], true
	}
	return "", "", false
}

// sqlInArgs returns argv with each argument that is a statement naming a ruled column (psql -c
// "…", --command=…) masked as shownSQL masks its text; nil when none is. An argument
// that does not parse is not taken for SQL: the detectors are all it gets.
func (g *Guard) sqlInArgs(argv []string) []string {
	if g.mask == nil || !g.mask.plan.HasColumnRules() {
		return nil
	}
	var out []string
	for i, a := range argv {
		prefix, sql := "", a
		if strings.HasPrefix(a, "-") {
			eq := strings.IndexByte(a, '=')
			if eq < 0 {
				continue
			}
			prefix, sql = a[:eq+1], a[eq+1:]
		}
		res := g.sh.Classifier.Classify(sql)
		if res == nil || slices.ContainsFunc(res.Statements, func(st sqlclass.Statement) bool { return st.Unknown }) {
			continue
		}
		ruled := g.ruledColumns(res)
		if ruled == nil {
			continue
		}
		if out == nil {
			out = slices.Clone(argv)
		}
		out[i] = prefix + g.maskLiterals(sql, ruled, 0)
	}
	return out
}
