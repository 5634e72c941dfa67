package pgguard

import (
	"strings"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// What the detectors find in a statement (a card number in a literal, a private key in a
// comment) is masked within the token it lies in, never across tokens: a finding that runs from
// one token into another (a key's BEGIN line in one comment, its END line in a later one) would
// hide the code between them from the reviewer who approves the statement and from the record,
// while the server runs it. The body of a DO block or a function is code: it is split into tokens
// in turn. Texts with no finding, nearly all, are not split at all.

// maskDetected is the last step of shownSQL: sql with what the detectors find in it masked,
// each finding within one token.
func (g *Guard) maskDetected(sql string) string {
	shown, _ := g.maskWithinTokens(sql, 0)
	return shown
}

// reviewable reports whether sql, masked for a reviewer, still shows all of its code: false
// when something in it would be masked but the text, or a body in it, cannot be split into
// tokens.
func (g *Guard) reviewable(sql string) bool {
	if g.mask == nil {
		return true
	}
	_, whole := g.maskWithinTokens(sql, 0)
	return whole
}

// maskWithinTokens masks what the detectors find in sql within the tokens it lies in; whole is
// false when what it returns may hide code.
func (g *Guard) maskWithinTokens(sql string, depth int) (shown string, whole bool) {
	plan := g.mask.plan
	if !plan.Finds(sql) {
		return sql, true
	}
	toks, err := sqlclass.Tokens(sql)
	if err != nil {
		// The server's lexer refuses this text before running any of it (the scanner is the
		// server's), so masking it as one text hides nothing that runs, and keeps its secrets
		// out of the record. A reviewer is not shown it (see reviewable).
		return plan.MaskString(sql), false
	}
	fields := make([]mask.Field, len(toks))
	for i, t := range toks {
		fields[i] = mask.Field{Start: t.InnerStart, End: t.InnerEnd}
	}
	masked, _, err := plan.MaskFields([]byte(sql), fields)
	if err != nil {
		return string(plan.Redacted()), false
	}
	whole = true
	changed := make([]string, len(toks)) // each changed token as shown, "" for one shown as sent
	for i, t := range toks {
		switch {
		case masked[i] == nil:
		case t.Body:
			var bodyWhole bool
			changed[i], bodyWhole = g.maskBody(sql, t, masked[i], depth)
			whole = whole && bodyWhole
		default:
			changed[i] = sql[t.Start:t.InnerStart] + string(masked[i]) + sql[t.InnerEnd:t.End]
		}
	}
	if out, ok := spliceTokens(sql, toks, changed); ok {
		return out, whole
	}
	// A style's output can read as SQL that ends its token or starts another (a '*' mask
	// character after a '/' starts a comment): the changed tokens are shown with a plain word.
	for i, c := range changed {
		if c != "" {
			changed[i] = redactedToken(sql, toks[i])
			whole = whole && !toks[i].Body
		}
	}
	if out, ok := spliceTokens(sql, toks, changed); ok {
		return out, whole
	}
	return string(plan.Redacted()), false
}

// maskBody is t, the body of a DO block or a function in sql, masked token by token as code;
// masked is its content masked as a value, shown (whole false) when the body cannot be split:
// quoted in a form splitBody does not read, or nested deeper than maxBodyDepth.
func (g *Guard) maskBody(sql string, t sqlclass.Token, masked []byte, depth int) (string, bool) {
	quote, body, ok := splitBody(sql[t.Start:t.End])
	if !ok || depth >= maxBodyDepth {
		return sql[t.Start:t.InnerStart] + string(masked) + sql[t.InnerEnd:t.End], false
	}
	inner, whole := g.maskWithinTokens(body, depth+1)
	if quote == "'" {
		inner = strings.ReplaceAll(inner, "'", "''")
	}
	return quote + inner + quote, whole
}

// redactedToken is t with what it holds replaced by a word that neither ends a token nor starts
// one.
func redactedToken(sql string, t sqlclass.Token) string {
	const word = "REDACTED"
	switch t.Kind {
	case sqlclass.TokenString, sqlclass.TokenName, sqlclass.TokenComment:
		return sql[t.Start:t.InnerStart] + word + sql[t.InnerEnd:t.End]
	}
	return word
}

// spliceTokens returns sql with the tokens toks of it replaced by changed (where not ""), and
// whether the result reads as the same tokens: each string, name and comment, and each token
// shown as sent, still one token of its kind in its place, the text of a changed number or name
// split into tokens of its own at most, and nothing between them.
func spliceTokens(sql string, toks []sqlclass.Token, changed []string) (string, bool) {
	var b strings.Builder
	b.Grow(len(sql) + 64)
	places := make([][2]int, len(toks))
	last := 0
	for i, t := range toks {
		b.WriteString(sql[last:t.Start])
		start := b.Len()
		if changed[i] == "" {
			b.WriteString(sql[t.Start:t.End])
		} else {
			b.WriteString(changed[i])
		}
		places[i] = [2]int{start, b.Len()}
		last = t.End
	}
	b.WriteString(sql[last:])
	out := b.String()
	got, err := sqlclass.Tokens(out)
	if err != nil {
		return "", false
	}
	j := 0
	for i, t := range toks {
		start, end := places[i][0], places[i][1]
		if j < len(got) && got[j].Start < start {
			return "", false // a token across the one before, or between them
		}
		if changed[i] == "" || t.Kind == sqlclass.TokenString || t.Kind == sqlclass.TokenName || t.Kind == sqlclass.TokenComment {
			if j >= len(got) || got[j].Start != start || got[j].End != end || got[j].Kind != t.Kind {
				return "", false
			}
			j++
			continue
		}
		for ; j < len(got) && got[j].Start < end; j++ {
			if got[j].End > end {
				return "", false
			}
		}
	}
	return out, j == len(got)
}
