package sqlclass

// Literal is where a literal token of a statement's text is, as [Start, End) byte offsets.
type Literal struct {
	Start, End int
	// Code says the literal is SQL or PL/pgSQL code, not a value: the body of a DO block (after
	// DO or DO LANGUAGE name) or of a function (after AS in CREATE … FUNCTION or PROCEDURE), in
	// a text whose every LANGUAGE clause names sql or plpgsql.
	Code bool
}

// Literals returns the literal tokens of sql in order; ok is false when the text uses a form
// the lexer is not certain of.
func Literals(sql string) (lits []Literal, ok bool) {
	var found []literal
	var notes lexNotes
	if _, _, ok = shapeLex(nil, sql, &found, &notes); !ok {
		return nil, false
	}
	lits = make([]Literal, len(found))
	for i, l := range found {
		lits[i] = Literal{Start: l.start, End: l.end, Code: l.body && !notes.otherLanguage}
	}
	return lits, true
}
