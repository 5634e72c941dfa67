package sqlclass

// LiteralSpans returns where the literal tokens of sql are, as [start, end) byte offsets in
// order; ok is false when the text uses a form the lexer is not certain of.
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
