package sqlclass

import (
	"fmt"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// The parser turns a chain of binary operators or casts (1+1+1+…,
// x::int::int…) into a tree as deep as the chain without growing its own
// stack, and libpg_query then serialises that tree recursively in C: a
// chain of ~30,000 operators (60 KB of text) overflows the thread stack and
// kills the process (SIGSEGV during cgo execution; measured with pg_query_go
// v6.2.5). Parenthesised nesting is stopped by the grammar ("memory
// exhausted") and is harmless. Before parsing large texts we therefore bound
// the tree depth from the token stream (the lexer is iterative) and refuse
// texts that could be too deep.
const (
	// depthCheckLen: below this length no chain can come near the crash
	// (2 bytes per level at best, and 5,000 levels are still parsed safely).
	depthCheckLen = 8 << 10
	// maxChainDepth is the largest accepted depth bound. Deeper trees also
	// exceed the Go protobuf decoder's recursion limit (~5,000 operators).
	maxChainDepth = 4000
)

// checkDepth returns an error when sql could parse into a tree too deep to
// handle safely.
func checkDepth(sql string) error {
	if len(sql) < depthCheckLen {
		return nil
	}
	scan, err := pg.Scan(sql)
	if err != nil {
		return fmt.Errorf("cannot tokenise statement text: %w", err)
	}
	if d := chainDepth(scan.Tokens); d > maxChainDepth {
		return fmt.Errorf("statement nests too deeply to classify safely (depth bound %d, limit %d)", d, maxChainDepth)
	}
	return nil
}

// chainDepth bounds the expression depth of a token stream: every token
// that is not a name, literal, parameter, comment or punctuation may add a
// level (operators, casts, keywords); a comma ends a chain at its level, a
// parenthesis opens a new level on top of the enclosing chain, a semicolon
// starts over. The bound is loose on purpose: it only has to never be lower
// than the real depth.
func chainDepth(tokens []*pg.ScanToken) int {
	stack := []int{0} // operator count in the current list item, per paren level
	sum, maxDepth := 0, 0
	for _, t := range tokens {
		switch t.Token {
		case pg.Token_ASCII_40, pg.Token_ASCII_91: // ( [
			stack = append(stack, 1)
			sum++
		case pg.Token_ASCII_41, pg.Token_ASCII_93: // ) ]
			if len(stack) > 1 {
				sum -= stack[len(stack)-1]
				stack = stack[:len(stack)-1]
			}
			continue
		case pg.Token_ASCII_44: // ,
			top := len(stack) - 1
			if top > 0 {
				sum -= stack[top] - 1
				stack[top] = 1
			} else {
				sum -= stack[top]
				stack[top] = 0
			}
			continue
		case pg.Token_ASCII_59: // ;
			stack, sum = stack[:1], 0
			stack[0] = 0
			continue
		case pg.Token_IDENT, pg.Token_UIDENT, pg.Token_FCONST, pg.Token_SCONST, pg.Token_USCONST,
			pg.Token_BCONST, pg.Token_XCONST, pg.Token_ICONST, pg.Token_PARAM,
			pg.Token_SQL_COMMENT, pg.Token_C_COMMENT, pg.Token_ASCII_46:
			continue
		default:
			stack[len(stack)-1]++
			sum++
		}
		if sum > maxDepth {
			maxDepth = sum
		}
	}
	return maxDepth
}
