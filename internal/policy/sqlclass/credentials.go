package sqlclass

import (
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// A statement can give a credential as a string literal, where no detector would know it for
// one: ALTER ROLE app PASSWORD 'Tr0ub4dor&3horse' (or the SCRAM verifier psql's \password
// sends, as good as the password for cracking offline), CREATE USER MAPPING … OPTIONS (user
// 'rep', password '…'). The parse tree says which literal that is, and the statement's tokens
// where it ends. A text that does not parse is searched by its tokens alone.

// MayHoldCredentials reports whether a statement of r gives a credential as a literal
// (Statement.Credentials), or may (an Unknown statement): whether its text must go through
// RedactCredentials before it is shown.
func (r *Result) MayHoldCredentials() bool {
	for i := range r.Statements {
		if st := &r.Statements[i]; st.Credentials || st.Unknown {
			return true
		}
	}
	return false
}

// RedactCredentials returns sql with each string literal that gives a credential replaced by
// label, quoted: the value of a role's PASSWORD (CREATE/ALTER ROLE, USER, GROUP), and of an
// option naming a password or other secret in CREATE/ALTER USER MAPPING, SERVER and FOREIGN DATA
// WRAPPER (see credentialOption). A text that does not parse gets the same for every string
// literal right after a word naming a credential (PASSWORD, password, "sslpassword"). It
// returns sql itself when there is none. ok is false when sql may hold a credential that cannot
// be found: a text the lexer cannot split into tokens that has a word naming one in it, or a
// tree whose credential is not at a string token; the caller must then show none of the text.
func RedactCredentials(sql, label string) (shown string, ok bool) {
	var args []int32
	if len(sql) <= DefaultMaxLen && checkDepth(sql) == nil {
		if tree, err := pg.Parse(sql); err == nil {
			for _, raw := range tree.Stmts {
				opts, role := credentialOptions(raw.Stmt)
				for _, o := range opts {
					if d := o.GetDefElem(); d != nil && isCredential(d, role) {
						args = append(args, d.ArgLocation)
					}
				}
			}
			if len(args) == 0 {
				return sql, true
			}
			return redactArgs(sql, label, args)
		}
	}
	return redactAfterWords(sql, label)
}

// redactArgs replaces the string literals of sql that start at the byte offsets args.
func redactArgs(sql, label string, args []int32) (string, bool) {
	scan, err := pg.Scan(sql)
	if err != nil {
		return "", false
	}
	toks := scan.Tokens
	slices.Sort(args)
	var spans []tokenSpan
	i := 0
	for _, at := range args {
		for i < len(toks) && toks[i].Start < at {
			i++
		}
		if i == len(toks) || toks[i].Start != at || !isString(toks[i].Token) {
			return "", false
		}
		spans = append(spans, stringSpan(toks, i))
	}
	return replaceSpans(sql, label, spans), true
}

// redactAfterWords replaces each string literal of sql right after a word naming a credential
// (comments between them count for nothing), and each string literal right after one so
// replaced.
func redactAfterWords(sql, label string) (string, bool) {
	scan, err := pg.Scan(sql)
	if err != nil {
		if namesCredential(sql) {
			return "", false
		}
		return sql, true
	}
	var toks []*pg.ScanToken
	for _, t := range scan.Tokens {
		if t.Token != pg.Token_SQL_COMMENT && t.Token != pg.Token_C_COMMENT {
			toks = append(toks, t)
		}
	}
	var spans []tokenSpan
	redacted := false // the last token was a literal replaced
	for i := 0; i < len(toks); i++ {
		if !isString(toks[i].Token) {
			redacted = false
			continue
		}
		prev := i - 1
		nchar := prev >= 0 && toks[prev].Token == pg.Token_NCHAR && toks[prev].End == toks[i].Start
		if nchar {
			prev-- // N'…': a string all the same
		}
		if redacted || prev >= 0 && isWord(toks[prev]) && credentialWord(sql[toks[prev].Start:toks[prev].End]) {
			s := stringSpan(toks, i)
			if nchar {
				s.start = int(toks[i-1].Start)
			}
			spans = append(spans, s)
			i = s.last
			redacted = true
			continue
		}
		redacted = false
	}
	return replaceSpans(sql, label, spans), true
}

// tokenSpan is where a string literal's tokens are: bytes [start, end) of the text, tokens up
// to last.
type tokenSpan struct {
	start, end int
	last       int
}

// stringSpan is the string literal whose first token is toks[i]: with its UESCAPE clause, for a
// U&'…' string.
func stringSpan(toks []*pg.ScanToken, i int) tokenSpan {
	s := tokenSpan{start: int(toks[i].Start), end: int(toks[i].End), last: i}
	if toks[i].Token != pg.Token_USCONST {
		return s
	}
	j := i + 1
	for j < len(toks) && (toks[j].Token == pg.Token_SQL_COMMENT || toks[j].Token == pg.Token_C_COMMENT) {
		j++
	}
	if j+1 < len(toks) && toks[j].Token == pg.Token_UESCAPE && toks[j+1].Token == pg.Token_SCONST {
		s.end, s.last = int(toks[j+1].End), j+1
	}
	return s
}

// replaceSpans replaces each span of sql (in order, not overlapping) with label, quoted.
func replaceSpans(sql, label string, spans []tokenSpan) string {
	if len(spans) == 0 {
		return sql
	}
	quoted := "'" + strings.ReplaceAll(label, "'", "''") + "'"
	var b strings.Builder
	last := 0
	for _, s := range spans {
		if s.start < last {
			continue
		}
		b.WriteString(sql[last:s.start])
		b.WriteString(quoted)
		last = s.end
	}
	b.WriteString(sql[last:])
	return b.String()
}

// isString reports whether a token is a string literal: '…', E'…', $$…$$ (a string continued
// on the next line is one token) or U&'…'.
func isString(t pg.Token) bool { return t == pg.Token_SCONST || t == pg.Token_USCONST }

// isWord reports whether a token is a keyword or an identifier, quoted or not.
func isWord(t *pg.ScanToken) bool {
	return t.Token == pg.Token_IDENT || t.KeywordKind != pg.KeywordKind_NO_KEYWORD
}

// credentialWord reports whether a keyword or identifier as written names a credential.
func credentialWord(w string) bool {
	if len(w) >= 2 && w[0] == '"' && w[len(w)-1] == '"' {
		w = strings.ReplaceAll(w[1:len(w)-1], `""`, `"`)
	}
	return credentialOption(strings.ToLower(w))
}

// namesCredential reports whether a word naming a credential may be somewhere in sql.
func namesCredential(sql string) bool {
	lower := strings.ToLower(sql)
	for _, w := range credentialWords {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

// credentialWords are the parts of an option's name that make it a credential's.
var credentialWords = []string{"password", "passwd", "passphrase", "secret", "token", "api_key", "apikey", "access_key", "credential"}

// credentialOption reports whether a foreign server's, wrapper's or user mapping's option of
// this name (lower case) holds a credential: postgres_fdw's password and sslpassword, and the
// like of other wrappers (a secret, a token, an API or access key). Options that only point at
// one (passfile, a token's file or URL) or say whether one is needed (password_required) are
// shown: reviewers need to see them.
func credentialOption(name string) bool {
	found := false
	for _, w := range credentialWords {
		if strings.Contains(name, w) {
			found = true
			break
		}
	}
	if !found {
		return false
	}
	for _, suffix := range []string{"_required", "file", "_path", "_url", "_uri"} {
		if strings.HasSuffix(name, suffix) {
			return false
		}
	}
	return true
}

// credentialOptions returns the options of a statement that may give credentials, and whether
// they are a role's (whose credential is its password) rather than foreign-data options.
func credentialOptions(n *pg.Node) (opts []*pg.Node, role bool) {
	switch s := n.GetNode().(type) {
	case *pg.Node_CreateRoleStmt:
		return s.CreateRoleStmt.Options, true
	case *pg.Node_AlterRoleStmt:
		return s.AlterRoleStmt.Options, true
	case *pg.Node_CreateUserMappingStmt:
		return s.CreateUserMappingStmt.Options, false
	case *pg.Node_AlterUserMappingStmt:
		return s.AlterUserMappingStmt.Options, false
	case *pg.Node_CreateForeignServerStmt:
		return s.CreateForeignServerStmt.Options, false
	case *pg.Node_AlterForeignServerStmt:
		return s.AlterForeignServerStmt.Options, false
	case *pg.Node_CreateFdwStmt:
		return s.CreateFdwStmt.Options, false
	case *pg.Node_AlterFdwStmt:
		return s.AlterFdwStmt.Options, false
	}
	return nil, false
}

// isCredential reports whether an option gives a credential as a string: PASSWORD '…' of a
// role (not PASSWORD NULL), or a foreign-data option naming one, set or added.
func isCredential(d *pg.DefElem, role bool) bool {
	if d.Arg.GetString_() == nil {
		return false
	}
	if role {
		return d.Defname == "password"
	}
	return credentialOption(strings.ToLower(d.Defname))
}

// givesCredentials reports whether statement n gives a credential as a literal.
func givesCredentials(n *pg.Node) bool {
	opts, role := credentialOptions(n)
	for _, o := range opts {
		if d := o.GetDefElem(); d != nil && isCredential(d, role) {
			return true
		}
	}
	return false
}
