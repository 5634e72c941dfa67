package pgguard

import (
	"context"
	"path/filepath"
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

// shownSQL is sql as the session log, reviewers and the daemon's log show it, given its
// classification res (nil when there is none) and the ruled columns it names (ruledColumns); the
// server always gets it as sent. A credential it gives (ALTER ROLE … PASSWORD '…') is never
// shown, whether masking is on or not.
func (g *Guard) shownSQL(sql string, res *sqlclass.Result, ruled []mask.Source) string {
	if res == nil || res.MayHoldCredentials() {
		sql = g.withoutCredentials(sql)
	}
	if g.mask == nil {
		return sql
	}
	if ruled != nil {
		sql = g.maskLiterals(sql, ruled, 0)
	}
	return g.maskDetected(sql)
}

// withoutCredentials is sql with every credential it gives as a literal replaced by the
// plan's label for them (see sqlclass.RedactCredentials), or that label alone when where they
// are cannot be told.
func (g *Guard) withoutCredentials(sql string) string {
	if sql == "" {
		return sql
	}
	var plan *mask.Plan
	if g.mask != nil {
		plan = g.mask.plan
	}
	label := plan.CredentialLabel()
	shown, ok := sqlclass.RedactCredentials(sql, label)
	if !ok {
		return label
	}
	return shown
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
	if g.mask.plan.RuleCovers(cols) {
		return cols
	}
	if cols = g.viewSources(cols); g.mask.plan.RuleCovers(cols) {
		return cols
	}
	return nil
}

// viewSources adds to cols the table columns that those naming a column of a view (or of a
// table that inherits) show, from the catalog: UPDATE contacts SET num = … writes
// customers.tel when contacts is a view of customers. If the catalog cannot tell, any column
// may be named, and so when there is no catalog to ask yet or the connection changed the
// schema (see noteSchemaChange).
func (g *Guard) viewSources(cols []mask.Source) []mask.Source {
	if g.info.Connect == nil {
		return cols
	}
	var srcs []Source
	for _, c := range cols {
		if !c.Any && c.Table != "" {
			srcs = append(srcs, Source{Schema: c.Schema, Table: c.Table, Column: c.Name})
		}
	}
	if len(srcs) == 0 {
		return cols
	}
	if g.database() == "" || g.schemaChanged.Load() {
		// No catalog to ask yet (the process's arguments, before the connection names its
		// database), or one that may not see the connection's own schema changes.
		return append(cols, mask.Source{Any: true})
	}
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	from, unknown, err := g.sh.Catalogs.ViewColumns(ctx, g.info.Target.Name, g.database(), g.info.Connect, srcs)
	if err != nil {
		g.log.Warn("catalog lookup of views failed; masking every value of the statement", "err", err)
		unknown = true
	}
	if unknown {
		cols = append(cols, mask.Source{Any: true})
	}
	return appendFrom(cols, from)
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
// The body of a DO block or a function in SQL or PL/pgSQL is code, not a value: its own literals
// are masked, so that a reader still sees what it does (a body in another language is masked
// whole). A text the lexer cannot split into tokens is replaced whole by the redaction marker.
func (g *Guard) maskLiterals(sql string, cols []mask.Source, depth int) string {
	plan := g.mask.plan
	lits, ok := sqlclass.Literals(sql)
	if !ok {
		return string(plan.Redacted())
	}
	if len(lits) == 0 {
		return sql
	}
	var b strings.Builder
	last := 0
	for _, l := range lits {
		b.WriteString(sql[last:l.Start])
		last = l.End
		tok := sql[l.Start:l.End]
		open, body, quoted := splitBody(tok)
		if quoted && l.Code && depth < maxBodyDepth {
			b.WriteString(open)
			inner := g.maskLiterals(body, cols, depth+1)
			if open == "'" {
				inner = strings.ReplaceAll(inner, "'", "''")
			}
			b.WriteString(inner)
			b.WriteString(open)
			continue
		}
		if quoted {
			tok = body
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

// splitBody splits a string literal into its quote (' or a dollar quote such as $fn$) and its
// content, unescaped: a value, or a body; ok is false for other literals (numbers, U&'…'
// strings). An E'…' string's quote is ': its content written back in a standard string means
// the same.
func splitBody(tok string) (quote, body string, ok bool) {
	switch {
	case len(tok) >= 2 && tok[0] == '\'' && tok[len(tok)-1] == '\'':
		return "'", strings.ReplaceAll(tok[1:len(tok)-1], "''", "'"), true
	case len(tok) >= 3 && (tok[0] == 'E' || tok[0] == 'e') && tok[1] == '\'' && tok[len(tok)-1] == '\'':
		body, ok := unescapeE(tok[2 : len(tok)-1])
		return "'", body, ok
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

// unescapeE returns the content of an E'…' string with the escapes the lexer accepts (see
// sqlclass's shapeLex: \\ \' \" \b \f \n \r \t, and a doubled quote) replaced; ok is false for
// any other.
func unescapeE(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' && i+1 < len(s) && s[i+1] == '\'':
			i++
		case c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case '\\', '\'', '"':
				c = s[i]
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			default:
				return "", false
			}
		case c == '\\', c == '\'':
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// sqlInArgs returns argv with each argument that may be a statement naming a ruled column
// masked as shownSQL masks a statement's text; nil when none is. Arguments taken for SQL: a
// command (see commandArg), and any argument, or option value after =, with a quoted string in
// it. A command that does not parse is masked as a statement that does not parse is; one the
// lexer cannot split is hidden whole. A command given to a shell (sh -c "psql -c …") is a shell
// command, not SQL: it gets the detectors only.
func (g *Guard) sqlInArgs(exe string, argv []string) []string {
	if g.mask == nil || !g.mask.plan.HasColumnRules() {
		return nil
	}
	var out []string
	prog := programOf(exe, argv)
	for i, a := range argv {
		if prefix, value, ok := variableArg(prog, argv, i); ok {
			if shown := g.shownVariable(value); shown != value {
				if out == nil {
					out = slices.Clone(argv)
				}
				out[i] = prefix + shown
			}
			continue
		}
		prefix, command := commandArg(prog, argv, i)
		if !command && strings.HasPrefix(a, "-") {
			eq := strings.IndexByte(a, '=')
			if eq < 0 {
				continue
			}
			prefix = a[:eq+1]
		}
		sql := a[len(prefix):]
		if command && strings.HasPrefix(strings.TrimLeft(sql, " \t\n\r\f\v"), "\\") {
			if shown := g.shownMetaCommand(sql); shown != sql {
				if out == nil {
					out = slices.Clone(argv)
				}
				out[i] = prefix + shown
			}
			continue
		}
		lits, ok := sqlclass.Literals(sql)
		var shown string
		switch {
		case !ok && command:
			shown = string(g.mask.plan.Redacted())
		case !ok, !command && !slices.ContainsFunc(lits, func(l sqlclass.Literal) bool { return !isNumber(sql[l.Start]) }):
			continue
		default:
			ruled := g.ruledColumns(g.sh.Classifier.Classify(sql))
			if ruled == nil {
				continue
			}
			shown = g.maskLiterals(sql, ruled, 0)
		}
		if out == nil {
			out = slices.Clone(argv)
		}
		out[i] = prefix + shown
	}
	return out
}

// credentialsInArgs returns argv with the credentials that statements given to psql on its
// command line (-c, --command) give in SQL's own syntax replaced by label (see
// sqlclass.RedactCredentials), or nil if there are none.
func credentialsInArgs(exe string, argv []string, label string) []string {
	var out []string
	prog := programOf(exe, argv)
	for i, a := range argv {
		prefix, command := commandArg(prog, argv, i)
		if !command {
			continue
		}
		sql := a[len(prefix):]
		shown, ok := sqlclass.RedactCredentials(sql, label)
		if !ok {
			shown = label
		}
		if shown == sql {
			continue
		}
		if out == nil {
			out = slices.Clone(argv)
		}
		out[i] = prefix + shown
	}
	return out
}

// programOf is the program a process runs, by its executable or its argv[0] (either may be
// renamed: a wrapper, exec -a), for the clients whose options sqlInArgs knows: "psql",
// "pgbench" or "".
func programOf(exe string, argv []string) string {
	names := []string{filepath.Base(exe)}
	if len(argv) > 0 {
		names = append(names, filepath.Base(argv[0]))
	}
	for _, p := range []string{"psql", "pgbench"} {
		for _, n := range names {
			if strings.HasPrefix(n, p) {
				return p
			}
		}
	}
	return ""
}

// variableArg reports whether argv[i] sets a client variable whose value statements may
// interpolate (psql -v NAME=VALUE, --set, --variable; pgbench -D NAME=VALUE, --define), and
// splits it before the value.
func variableArg(prog string, argv []string, i int) (prefix, value string, ok bool) {
	var short byte
	var long []string // the option and every abbreviation getopt takes for it
	switch prog {
	case "psql":
		short, long = 'v', []string{"--se", "--set", "--va", "--var", "--vari", "--varia", "--variab", "--variabl", "--variable"}
	case "pgbench":
		short, long = 'D', []string{"--def", "--defi", "--defin", "--define"}
	default:
		return "", "", false
	}
	a := argv[i]
	separate := false
	if i > 0 {
		opt, rest, ok := shortOption(argv[i-1], prog)
		separate = slices.Contains(long, argv[i-1]) || ok && opt == short && rest == ""
	}
	var setting string
	if separate {
		setting = a
	} else if eq := strings.IndexByte(a, '='); eq > 0 && slices.Contains(long, a[:eq]) {
		setting = a[eq+1:]
	} else if opt, rest, ok := shortOption(a, prog); ok && opt == short && rest != "" {
		setting = rest
	} else {
		return "", "", false
	}
	name, value, ok := strings.Cut(setting, "=")
	if !ok || prog == "psql" && psqlSetting(name, value) {
		return "", "", false
	}
	return a[:len(a)-len(value)], value, true
}

// shownMetaCommand is a psql backslash command given with -c as the session log shows it under
// column rules: its arguments may set a variable a script then interpolates (\set tel …) or name
// a file or a query, so all but the command's name (and \set's variable) are masked by every
// column rule.
func (g *Guard) shownMetaCommand(cmd string) string {
	const space = " \t\n\r\f\v"
	lead := len(cmd) - len(strings.TrimLeft(cmd, space))
	end := lead + 1 // the backslash; then the name's letters
	for end < len(cmd) && ('a' <= cmd[end]|0x20 && cmd[end]|0x20 <= 'z') {
		end++
	}
	rest := strings.TrimLeft(cmd[end:], space)
	if strings.EqualFold(cmd[lead:end], "\\set") {
		// The variable's name, if it is a plain one: \set tel …
		v := 0
		for v < len(rest) && (rest[v] == '_' || 'a' <= rest[v]|0x20 && rest[v]|0x20 <= 'z' || '0' <= rest[v] && rest[v] <= '9') {
			v++
		}
		if v == len(rest) || v > 0 && strings.IndexByte(space, rest[v]) >= 0 {
			rest = strings.TrimLeft(rest[v:], space)
		}
	}
	if rest == "" {
		return cmd
	}
	return cmd[:len(cmd)-len(rest)] + g.shownVariable(rest)
}

// psqlSetting reports whether NAME=VALUE sets one of psql's own settings to a word or a digit
// (-v ON_ERROR_STOP=1): shown as it is. A longer number is masked: FETCH_COUNT and IGNOREEOF
// take any, which a script can interpolate like any variable's value.
func psqlSetting(name, value string) bool {
	switch name {
	case "AUTOCOMMIT", "COMP_KEYWORD_CASE", "ECHO", "ECHO_HIDDEN", "FETCH_COUNT", "HIDE_TABLEAM",
		"HIDE_TOAST_COMPRESSION", "HISTCONTROL", "IGNOREEOF", "ON_ERROR_ROLLBACK", "ON_ERROR_STOP", "QUIET",
		"SHOW_ALL_RESULTS", "SHOW_CONTEXT", "SINGLELINE", "SINGLESTEP", "VERBOSITY":
	default:
		return false
	}
	letters, digits := 0, 0
	for _, c := range []byte(value) {
		switch {
		case 'a' <= c|0x20 && c|0x20 <= 'z' || c == '_':
			letters++
		case '0' <= c && c <= '9':
			digits++
		default:
			return false
		}
	}
	return letters == len(value) || digits == len(value) && digits == 1
}

// shownVariable is a client variable's value as the session log shows it under column rules:
// any statement may interpolate it, into any column, so every rule's masking applies.
func (g *Guard) shownVariable(value string) string {
	if value == "" {
		return value
	}
	out, _, err := g.mask.plan.MaskValueOf([]byte(value), nil, []mask.Source{{Any: true}})
	if err != nil {
		return string(g.mask.plan.Redacted())
	}
	return string(out)
}

// commandArg reports whether argv[i] is a command as psql takes one (in any program but
// pgbench), and the option before it in the same argument: after -c or --command, or a getopt
// abbreviation of it (--comm), or a bundle of flags ending in c (-Atc); or attached to such an
// option (-cSQL, -XcSQL, --co=SQL).
func commandArg(prog string, argv []string, i int) (prefix string, ok bool) {
	if prog == "pgbench" { // its -c is the number of clients
		return "", false
	}
	if i > 0 {
		if rest, ok := shortCommand(argv[i-1]); ok && rest == "" {
			return "", true
		}
		if longCommand(argv[i-1]) {
			return "", true
		}
	}
	a := argv[i]
	if rest, ok := shortCommand(a); ok && rest != "" {
		return a[:len(a)-len(rest)], true
	}
	if eq := strings.IndexByte(a, '='); eq > 0 && longCommand(a[:eq]) {
		return a[:eq+1], true
	}
	return "", false
}

// shortCommand reports whether a is a bundle of psql's short flags whose last option is -c,
// and what follows the c.
func shortCommand(a string) (rest string, ok bool) {
	opt, rest, ok := shortOption(a, "psql")
	return rest, ok && opt == 'c'
}

// valueOptions are the short options of each client that take a value.
var valueOptions = map[string]string{"psql": "cdfFhLopPRTUv", "pgbench": "bcDfFhIjLMpPRstTU"}

// shortOption returns the option of the bundle of prog's short options a (-Atc…) that takes a
// value, and what follows it in a: the value, or "" when the value is the next argument. ok is
// false when a is not such a bundle.
func shortOption(a, prog string) (opt byte, rest string, ok bool) {
	if len(a) < 2 || a[0] != '-' || a[1] == '-' {
		return 0, "", false
	}
	for j := 1; j < len(a); j++ {
		switch c := a[j]; {
		case strings.IndexByte(valueOptions[prog], c) >= 0:
			return c, a[j+1:], true
		case !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '?'):
			return 0, "", false
		}
	}
	return 0, "", false
}

// longCommand reports whether a is --command or an abbreviation getopt takes for it.
func longCommand(a string) bool {
	return len(a) >= len("--co") && strings.HasPrefix("--command", a)
}

// isNumber reports whether a literal token starting with c is a number.
func isNumber(c byte) bool { return c == '.' || c >= '0' && c <= '9' }
