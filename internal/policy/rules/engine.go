// Package rules evaluates policy rules, written as CEL expressions
// (cel.dev/cel-go), against a request: who (identity), which process, which
// target, and what statement (a sqlclass classification) or HTTP request.
//
// A rule judges what it reads: one that reads sql judges statements only, one
// that reads http HTTP requests only, one that reads neither (identity,
// process, target) both. Every applicable rule that matches is collected; the
// strictest action wins (block > approve > allow). When no rule matches, a
// configurable default decides. A string with several statements is judged
// statement by statement and the strictest verdict wins for the whole string.
//
// Rules are compiled and type-checked once (Compile); evaluation reuses the
// compiled programs and converts per-connection values once (NewConn).
package rules

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// Action is what a rule does when it matches, and the verdict of a
// decision.
type Action string

// Actions, from least to most strict.
const (
	Allow   Action = "allow"
	Approve Action = "approve"
	Block   Action = "block"
)

// strictness orders actions: a higher number wins.
func (a Action) strictness() int {
	switch a {
	case Allow:
		return 0
	case Approve:
		return 1
	}
	return 2 // Block, and anything unexpected
}

// Stricter reports whether a wins over b.
func (a Action) Stricter(b Action) bool { return a.strictness() > b.strictness() }

// ParseAction reads an action name.
func ParseAction(s string) (Action, error) {
	switch Action(s) {
	case Allow, Approve, Block:
		return Action(s), nil
	}
	return "", fmt.Errorf("unknown action %q (want allow, approve or block)", s)
}

// Default decides statements and HTTP requests that no rule matches.
type Default string

// Default modes.
const (
	// DefaultAllowReads allows statements that change nothing (reads, and
	// plain transaction control such as BEGIN/COMMIT) and GET, HEAD and
	// OPTIONS requests, and blocks the rest. It is the shipped default for
	// agents.
	DefaultAllowReads Default = "allow_reads"
	DefaultAllow      Default = "allow"
	DefaultBlock      Default = "block"
)

// ParseDefault reads a default mode; "" means DefaultAllowReads.
func ParseDefault(s string) (Default, error) {
	switch Default(s) {
	case "":
		return DefaultAllowReads, nil
	case DefaultAllowReads, DefaultAllow, DefaultBlock:
		return Default(s), nil
	}
	return "", fmt.Errorf("unknown default %q (want allow_reads, allow or block)", s)
}

// Rule is one policy rule as written in the policy file.
type Rule struct {
	Name      string
	When      string // CEL expression of type bool
	Action    string // "allow", "approve" or "block"
	Message   string // shown to the agent when the rule decides
	Approvers []string
	Line      int // line of the rule in the policy file, for errors
}

// RuleError is a problem with one rule.
type RuleError struct {
	Rule string
	Line int
	Err  string
}

func (e *RuleError) Error() string {
	name := e.Rule
	if name == "" {
		name = "(unnamed)"
	}
	if e.Line > 0 {
		return fmt.Sprintf("line %d: rule %q: %s", e.Line, name, e.Err)
	}
	return fmt.Sprintf("rule %q: %s", name, e.Err)
}

// CompileError lists every rule that failed to compile.
type CompileError struct {
	Errors []*RuleError
}

func (e *CompileError) Error() string {
	msgs := make([]string, len(e.Errors))
	for i, r := range e.Errors {
		msgs[i] = r.Error()
	}
	return strings.Join(msgs, "\n")
}

type compiled struct {
	Rule
	action Action
	scope  Scope
	prg    cel.Program
}

// Scope says which requests a rule judges, from the request variables its
// condition reads.
type Scope uint8

// Scopes.
const (
	// ScopeBoth: the rule reads neither sql nor http (only identity, process
	// or target), so it judges statements and HTTP requests.
	ScopeBoth Scope = iota + 1
	// ScopeSQL: the rule reads sql and judges statements only.
	ScopeSQL
	// ScopeHTTP: the rule reads http and judges HTTP requests only.
	ScopeHTTP
)

func (s Scope) String() string {
	switch s {
	case ScopeBoth:
		return "statements and HTTP requests"
	case ScopeSQL:
		return "statements"
	case ScopeHTTP:
		return "HTTP requests"
	}
	return "nothing"
}

// Engine holds compiled rules. It is immutable and safe for concurrent use.
type Engine struct {
	rules []compiled // in file order
	// forStatements and forHTTP are the rules each kind of request is judged
	// by, in file order, so that neither path tests scopes rule by rule.
	forStatements, forHTTP []compiled
	def                    Default
}

var (
	envOnce sync.Once
	baseEnv *cel.Env
	envErr  error
)

// env returns the CEL environment with the request variables declared.
func env() (*cel.Env, error) {
	envOnce.Do(func() {
		p, err := newProvider()
		if err != nil {
			envErr = err
			return
		}
		baseEnv, envErr = cel.NewEnv(
			cel.CustomTypeProvider(p),
			cel.Variable("identity", identityType.typ),
			cel.Variable("process", processType.typ),
			cel.Variable("target", targetType.typ),
			cel.Variable("sql", sqlType.typ),
			cel.Variable("http", httpType.typ),
			ext.Strings(),
			ext.Sets(),
		)
	})
	return baseEnv, envErr
}

// Compile type-checks and compiles rules. All problems are reported at once
// in a *CompileError, each naming the rule and its line.
func Compile(rules []Rule, def Default) (*Engine, error) {
	if def == "" {
		def = DefaultAllowReads
	}
	if _, err := ParseDefault(string(def)); err != nil {
		return nil, err
	}
	e, err := env()
	if err != nil {
		return nil, fmt.Errorf("rules: CEL environment: %w", err)
	}
	eng := &Engine{def: def, rules: make([]compiled, 0, len(rules))}
	var errs []*RuleError
	seen := map[string]bool{}
	for _, r := range rules {
		fail := func(format string, args ...any) {
			errs = append(errs, &RuleError{Rule: r.Name, Line: r.Line, Err: fmt.Sprintf(format, args...)})
		}
		if r.Name == "" {
			fail("rule has no name")
		} else if seen[r.Name] {
			fail("duplicate rule name")
		}
		seen[r.Name] = true
		act, err := ParseAction(r.Action)
		if err != nil {
			fail("%v", err)
		}
		if strings.TrimSpace(r.When) == "" {
			fail("empty condition (when)")
			continue
		}
		ast, iss := e.Compile(r.When)
		if iss.Err() != nil {
			fail("invalid condition: %s", strings.TrimSpace(iss.Err().Error()))
			continue
		}
		if !ast.OutputType().IsExactType(types.BoolType) {
			fail("condition must be a bool expression, got %s", ast.OutputType())
			continue
		}
		if len(celast.MatchDescendants(celast.NavigateAST(ast.NativeRep()), celast.KindMatcher(celast.StructKind))) > 0 {
			fail("condition constructs an object; rules may only read the request")
			continue
		}
		if msg := neverEqual(ast); msg != "" {
			fail("%s", msg)
			continue
		}
		scope, msg := scopeOf(ast)
		if msg != "" {
			fail("%s", msg)
			continue
		}
		prg, err := e.Program(ast, cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			fail("condition: %v", err)
			continue
		}
		eng.rules = append(eng.rules, compiled{Rule: r, action: act, scope: scope, prg: prg})
	}
	if len(errs) > 0 {
		return nil, &CompileError{Errors: errs}
	}
	for _, r := range eng.rules {
		if r.scope != ScopeHTTP {
			eng.forStatements = append(eng.forStatements, r)
		}
		if r.scope != ScopeSQL {
			eng.forHTTP = append(eng.forHTTP, r)
		}
	}
	return eng, nil
}

// scopeOf finds which of the variables sql and http a checked condition reads, and so which
// requests its rule judges; or says why it cannot judge any. A rule reading both could never
// hold as written (no request is a statement and an HTTP request), and a comprehension variable
// named sql or http would read as the request variable here while hiding it in the condition.
func scopeOf(checked *cel.Ast) (Scope, string) {
	var readsSQL, readsHTTP bool
	nodes := celast.MatchDescendants(celast.NavigateAST(checked.NativeRep()), func(e celast.NavigableExpr) bool {
		return e.Kind() == celast.IdentKind || e.Kind() == celast.ComprehensionKind
	})
	for _, n := range nodes {
		if n.Kind() == celast.ComprehensionKind {
			c := n.AsComprehension()
			for _, v := range []string{c.IterVar(), c.IterVar2()} {
				if v == "sql" || v == "http" {
					return 0, fmt.Sprintf("the comprehension variable %q hides the request variable %s; rename it", v, v)
				}
			}
			continue
		}
		// ".sql" names the variable from the root.
		name, _, _ := strings.Cut(strings.TrimPrefix(n.AsIdent(), "."), ".")
		switch name {
		case "sql":
			readsSQL = true
		case "http":
			readsHTTP = true
		}
	}
	switch {
	case readsSQL && readsHTTP:
		return 0, "a rule reads sql or http, not both: split it (a request is a statement or an HTTP request, never both)"
	case readsSQL:
		return ScopeSQL, ""
	case readsHTTP:
		return ScopeHTTP, ""
	}
	return ScopeBoth, ""
}

// spelling says how the values of the request fields with a fixed spelling are written: statement
// kinds, objects and wrappers upper case ("DROP", "TABLE"), setting names lower case
// ("datestyle", whatever the statement's spelling); HTTP methods upper case (DecideHTTP refuses
// a method with lower-case letters), hosts and header names lower case (DecideHTTP lowers them).
var spelling = map[string]func(string) string{
	"sql.kind": strings.ToUpper, "sql.kinds": strings.ToUpper, "sql.object": strings.ToUpper,
	"sql.wrapper": strings.ToUpper, "sql.setting": strings.ToLower,
	"http.method": strings.ToUpper, "http.host": strings.ToLower, "http.headers": strings.ToLower,
}

// neverEqual finds a comparison of such a field with a literal spelt otherwise (sql.kind ==
// "drop", sql.setting in ["DateStyle"], "truncate" in sql.kinds, http.method == "get",
// http.headers["Content-Type"]): it can never hold, so a block rule written that way would
// silently block nothing. It returns what to fix, or "".
func neverEqual(checked *cel.Ast) string {
	nodes := celast.MatchDescendants(celast.NavigateAST(checked.NativeRep()), func(e celast.NavigableExpr) bool {
		k := e.Kind()
		return k == celast.CallKind || k == celast.SelectKind || k == celast.ComprehensionKind
	})
	for _, n := range nodes {
		if n.Kind() == celast.ComprehensionKind {
			// http.headers.exists(k, k == "X-Force"): the keys a macro iterates are lower case.
			if msg := headerKeyComprehension(n.AsComprehension()); msg != "" {
				return msg
			}
			continue
		}
		if n.Kind() == celast.SelectKind {
			// http.headers.X, has(http.headers.X): a map key read as a field.
			sel := n.AsSelect()
			if fieldName(sel.Operand()) == "http.headers" {
				if msg := headerKeyProblem(sel.FieldName()); msg != "" {
					return msg
				}
			}
			continue
		}
		call := n.AsCall()
		args := call.Args()
		if call.IsMemberFunction() && len(args) == 1 {
			// http.host.endsWith(".Internal"), sql.kind.startsWith("drop").
			switch call.FunctionName() {
			case "startsWith", "endsWith", "contains":
				name := fieldName(call.Target())
				if norm := spelling[name]; norm != nil && name != "http.headers" {
					for _, lit := range stringLiterals(args[0]) {
						if norm(lit) != lit {
							return fmt.Sprintf("%s never %s %q: its values are spelt %q", name, call.FunctionName(), lit, norm(lit))
						}
					}
				}
				if name == "http.path" {
					for _, lit := range stringLiterals(args[0]) {
						if msg := pathLiteralProblem("never "+call.FunctionName(), lit); msg != "" {
							return msg
						}
					}
				}
			}
			continue
		}
		if len(args) != 2 {
			continue
		}
		switch call.FunctionName() {
		case operators.Equals, operators.NotEquals, operators.In:
		case operators.Index:
			// http.headers["Content-Type"]
			if fieldName(args[0]) != "http.headers" {
				continue
			}
			for _, key := range stringLiterals(args[1]) {
				if msg := headerKeyProblem(key); msg != "" {
					return msg
				}
			}
			continue
		default:
			continue
		}
		// Either side may be the field: sql.kind == "X", "X" == sql.kind, sql.kind in ["X"],
		// "X" in sql.kinds, "X" in http.headers.
		for _, p := range [][2]celast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
			name := fieldName(p[0])
			if name == "http.path" {
				for _, lit := range stringLiterals(p[1]) {
					if msg := pathLiteralProblem("is never", lit); msg != "" {
						return msg
					}
				}
				continue
			}
			if name == "http.headers" {
				// "x-force" in http.headers
				for _, lit := range stringLiterals(p[1]) {
					if msg := headerKeyProblem(lit); msg != "" {
						return msg
					}
				}
				continue
			}
			norm := spelling[name]
			if norm == nil {
				continue
			}
			for _, lit := range stringLiterals(p[1]) {
				if norm(lit) != lit {
					return fmt.Sprintf("%s is never %q: its values are spelt %q", name, lit, norm(lit))
				}
			}
		}
	}
	return ""
}

// headerKeyComprehension finds a macro over http.headers (its keys) that compares the key with
// a literal not in lower case, and returns what to fix, or "".
func headerKeyComprehension(c celast.ComprehensionExpr) string {
	if fieldName(c.IterRange()) != "http.headers" {
		return ""
	}
	v := c.IterVar()
	eqs := celast.MatchDescendants(celast.NavigateExpr(nil, c.LoopStep()), func(e celast.NavigableExpr) bool {
		return e.Kind() == celast.CallKind
	})
	for _, n := range eqs {
		call := n.AsCall()
		args := call.Args()
		switch call.FunctionName() {
		case operators.Equals, operators.NotEquals, operators.In:
		default:
			continue
		}
		if len(args) != 2 {
			continue
		}
		for _, p := range [][2]celast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
			if p[0].Kind() != celast.IdentKind || p[0].AsIdent() != v {
				continue
			}
			for _, key := range stringLiterals(p[1]) {
				if msg := headerKeyProblem(key); msg != "" {
					return msg
				}
			}
		}
	}
	return ""
}

// headerKeyProblem says why a rule cannot name a header key so, or "": names are lower case,
// and a name with '_' is judged as spelt with '-' too (see DecideHTTP), so a rule naming it with
// '_' could block it but never allow it.
func headerKeyProblem(key string) string {
	switch {
	case strings.ToLower(key) != key:
		return fmt.Sprintf("http.headers has no key %q: header names are lower case (%q)", key, strings.ToLower(key))
	case strings.Contains(key, "_"):
		return fmt.Sprintf("http.headers key %q: write it %q (servers differ on '_' in header names, so a name with '_' is judged both as sent and with '-', and the stricter verdict wins)",
			key, strings.ReplaceAll(key, "_", "-"))
	}
	return ""
}

// pathLiteralProblem says why http.path compared with lit ("is never", "never startsWith"…)
// cannot hold, or "": the path rules read is percent-decoded, and the proxy refuses an encoded
// '%', so it never holds a '%' (a block rule on "/a%20b" would block nothing, one on != all).
func pathLiteralProblem(never, lit string) string {
	if !strings.Contains(lit, "%") {
		return ""
	}
	if dec, err := url.PathUnescape(lit); err == nil && dec != lit {
		return fmt.Sprintf("http.path %s %q: it is percent-decoded (write %q)", never, lit, dec)
	}
	return fmt.Sprintf("http.path %s %q: it is percent-decoded, and never holds '%%'", never, lit)
}

// fieldName returns "sql.FIELD" or "http.FIELD" for an expression reading that field, or "".
func fieldName(e celast.Expr) string {
	if e.Kind() != celast.SelectKind {
		return ""
	}
	sel := e.AsSelect()
	op := sel.Operand()
	if op.Kind() != celast.IdentKind {
		return ""
	}
	switch v := strings.TrimPrefix(op.AsIdent(), "."); v {
	case "sql", "http":
		return v + "." + sel.FieldName()
	}
	return ""
}

// stringLiterals returns the string constants of a literal or a list literal.
func stringLiterals(e celast.Expr) []string {
	switch e.Kind() {
	case celast.LiteralKind:
		if s, ok := e.AsLiteral().(types.String); ok {
			return []string{string(s)}
		}
	case celast.ListKind:
		var out []string
		for _, el := range e.AsList().Elements() {
			out = append(out, stringLiterals(el)...)
		}
		return out
	}
	return nil
}

// Default returns the engine's default mode.
func (e *Engine) Default() Default { return e.def }

// Rules returns the number of compiled rules.
func (e *Engine) Rules() int { return len(e.rules) }

// RuleNames returns the rules' names in file order.
func (e *Engine) RuleNames() []string {
	names := make([]string, len(e.rules))
	for i := range e.rules {
		names[i] = e.rules[i].Name
	}
	return names
}

// Scope returns which requests the named rule judges; false when the engine has no such rule.
func (e *Engine) Scope(rule string) (Scope, bool) {
	for i := range e.rules {
		if e.rules[i].Name == rule {
			return e.rules[i].scope, true
		}
	}
	return 0, false
}

// Identity is who is behind a connection.
type Identity struct {
	Subject  string
	Email    string
	Groups   []string
	Provider string
}

// Process is the local process that opened a connection.
type Process struct {
	Comm string
	Exe  string
	PID  int64
	UID  int64
}

// Target is the destination of a connection as named in the policy.
type Target struct {
	Name     string
	Protocol string // "postgres", "http", …
	Database string
	User     string
}

// HTTP is one request to an HTTP target, as rules read it (http.*).
type HTTP struct {
	// Method is the method as the client sent it. Methods are case-sensitive and rules compare
	// them upper case ("DELETE"), so DecideHTTP refuses one with lower-case letters: a server that
	// upper-cases methods would run "delete" as what a rule on "DELETE" never saw.
	Method string
	// Path is the request target's path, percent-decoded (Go's url.URL.Path): "/v1/refunds".
	// DecideHTTP refuses a path a server could route otherwise than the rules read it (see
	// ambiguousRequest).
	Path string
	// Host is the Host header the client sent; DecideHTTP reads it as a host name (lower case,
	// without port or root dot: see hostName).
	Host string
	// Query is the raw query string, without "?", as sent (not decoded): "a=1&b=%20".
	Query string
	// Headers holds the header fields by lower-case name (DecideHTTP lowers any other); a field
	// sent more than once is its values joined with ", ". A name with '_' is judged as sent and
	// as spelt with '-' (servers differ), the stricter verdict winning.
	Headers map[string]string
}

// Conn holds the per-connection part of a request, converted to CEL values
// once. It is immutable and may be shared.
type Conn struct {
	identity, process, target ref.Val
}

// NewConn converts the per-connection part of requests.
func NewConn(id Identity, p Process, t Target) *Conn {
	return &Conn{
		identity: newObject(identityType, types.String(id.Subject), types.String(id.Email),
			refList(id.Groups), types.String(id.Provider)),
		process: newObject(processType, types.String(p.Comm), types.String(p.Exe),
			types.Int(p.PID), types.Int(p.UID)),
		target: newObject(targetType, types.String(t.Name), str(t.Protocol),
			types.String(t.Database), types.String(t.User)),
	}
}

// activation resolves the variables of a statement without allocating. It has no http: no rule
// that reads it judges statements, and a read would fail (closed).
type activation struct {
	conn *Conn
	sql  sqlObject
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "sql":
		return &a.sql, true
	case "identity":
		return a.conn.identity, true
	case "process":
		return a.conn.process, true
	case "target":
		return a.conn.target, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// httpActivation resolves the variables of an HTTP request; it has no sql, as activation has
// no http.
type httpActivation struct {
	conn *Conn
	req  ref.Val
}

func (a *httpActivation) ResolveName(name string) (any, bool) {
	switch name {
	case "http":
		return a.req, true
	case "identity":
		return a.conn.identity, true
	case "process":
		return a.conn.process, true
	case "target":
		return a.conn.target, true
	}
	return nil, false
}

func (a *httpActivation) Parent() interpreter.Activation { return nil }

var activations = sync.Pool{New: func() any { return new(activation) }}

// Match is a rule that matched a statement or an HTTP request.
type Match struct {
	Rule      string
	Action    Action
	Message   string
	Approvers []string
	Line      int
	Statement int    // index in the classified string (0 for an HTTP request)
	Err       string // evaluation error: the rule counts as matched unless it allows
	// Prepared is set when the rule matched the prepared statement an
	// EXECUTE runs, rather than the EXECUTE itself.
	Prepared bool
}

// StatementDecision is the verdict for one statement.
type StatementDecision struct {
	Index     int
	Statement *sqlclass.Statement
	// Prepared is the statement judged in place of an EXECUTE (nil when not
	// an EXECUTE or when the name was unknown).
	Prepared *sqlclass.Statement
	Verdict  Action
	// Rule is the winning rule, nil when the default decided.
	Rule    *Match
	Matches []Match
	// Default is set when the default mode decided (no rule matched).
	Default bool
	// Reason explains a verdict no rule decided.
	Reason string
}

// Decision is the verdict for a whole SQL string.
type Decision struct {
	Verdict Action
	// Rule is the rule that decided, nil when the default decided.
	Rule *Match
	// Message is what to tell the agent: the rule's message, or the
	// default's reason.
	Message string
	// Statement is the index of the statement that decided (-1 if none).
	Statement  int
	Statements []StatementDecision
	Result     *sqlclass.Result
	Default    Default
}

// Matches returns every rule that matched any statement.
func (d *Decision) Matches() []Match {
	var out []Match
	for i := range d.Statements {
		out = append(out, d.Statements[i].Matches...)
	}
	return out
}

// localPrepared tracks PREPARE and DEALLOCATE within one string, in front
// of the caller's lookup.
type localPrepared struct {
	names map[string]*sqlclass.Statement // nil value: deallocated
	outer Prepared
}

func (l *localPrepared) lookup(name string) *sqlclass.Statement {
	if p, ok := l.names[name]; ok {
		return p
	}
	if l.outer == nil {
		return nil
	}
	return l.outer(name)
}

// Prepared looks up what was prepared under a name by SQL PREPARE or a
// protocol-level Parse; nil when the name is unknown.
type Prepared func(name string) *sqlclass.Statement

// Decide judges each statement of a classified string for a connection.
// Names PREPAREd by earlier statements of the same string are known to later
// EXECUTEs in it; the caller records PREPARE/DEALLOCATE for later strings. An
// EXECUTE of a prepared name is judged as what was prepared (found through
// prepared) and as itself, the stricter verdict winning; a name prepared
// lookup does not know (or a nil prepared) is blocked whatever the rules say.
func (e *Engine) Decide(c *Conn, res *sqlclass.Result, prepared Prepared) Decision {
	var d Decision
	e.DecideInto(&d, c, res, prepared)
	return d
}

// DecideInto is Decide writing the decision to d, reusing the storage of the
// decision d held before (its per-statement decisions): a caller deciding
// statement after statement allocates nothing for them once warm.
func (e *Engine) DecideInto(d *Decision, c *Conn, res *sqlclass.Result, prepared Prepared) {
	sds := d.Statements[:0]
	if cap(sds) < len(res.Statements) {
		sds = make([]StatementDecision, len(res.Statements))
	}
	sds = sds[:len(res.Statements)]
	*d = Decision{Verdict: Allow, Statement: -1, Result: res, Default: e.def, Statements: sds}
	if len(res.Statements) == 0 {
		d.Message = "empty query"
		return
	}
	a := activations.Get().(*activation)
	a.conn = c
	a.sql.count = len(res.Statements)
	lookup := prepared
	var local *localPrepared
	for i := range res.Statements {
		st := &res.Statements[i]
		sd := &d.Statements[i]
		*sd = e.decideStatement(a, i, st, lookup)
		if st.Prepare != "" || st.Deallocate != "" || st.DeallocateAll {
			if local == nil {
				local = &localPrepared{names: map[string]*sqlclass.Statement{}, outer: prepared}
				lookup = local.lookup
			}
			switch {
			case st.Prepare != "":
				local.names[st.Prepare] = st
			case st.DeallocateAll:
				clear(local.names)
				local.outer = nil
			default:
				local.names[st.Deallocate] = nil
			}
		}
		if d.Statement < 0 || sd.Verdict.Stricter(d.Verdict) {
			d.Verdict, d.Rule, d.Statement = sd.Verdict, sd.Rule, i
			if sd.Rule != nil {
				d.Message = sd.Rule.Message
			} else {
				d.Message = sd.Reason
			}
		}
	}
	a.conn, a.sql.st = nil, nil
	activations.Put(a)
}

// DecideStatement judges a single statement (an extended-protocol Parse)
// as statement 0 of a one-statement string.
func (e *Engine) DecideStatement(c *Conn, st *sqlclass.Statement, prepared Prepared) StatementDecision {
	a := activations.Get().(*activation)
	a.conn = c
	a.sql.count = 1
	sd := e.decideStatement(a, 0, st, prepared)
	a.conn, a.sql.st = nil, nil
	activations.Put(a)
	return sd
}

func (e *Engine) decideStatement(a *activation, idx int, st *sqlclass.Statement, prepared Prepared) StatementDecision {
	sd := StatementDecision{Index: idx, Statement: st}
	sd.Verdict, sd.Rule, sd.Matches = e.evalRules(a, idx, st, sd.Matches)
	if st.Execute == "" {
		if sd.Rule == nil {
			sd.Verdict, sd.Reason = e.defaultVerdict(st)
			sd.Default = true
		}
		return sd
	}
	// EXECUTE name: judge what was prepared too; the stricter verdict wins.
	var body *sqlclass.Statement
	if prepared != nil {
		body = prepared(st.Execute)
	}
	if body == nil {
		// Nothing the proxy saw defined this name (it was prepared inside a
		// function, a DO block, or before tracking began): refuse, whatever
		// the rules say, since its effects are unknowable.
		sd.Verdict, sd.Rule = Block, nil
		sd.Reason = fmt.Sprintf("EXECUTE of prepared statement %q, which was not prepared through the proxy; its effects are unknown", st.Execute)
		return sd
	}
	sd.Prepared = body
	execVerdict, execRule := sd.Verdict, sd.Rule
	var bmatches []Match
	sd.Verdict, sd.Rule, bmatches = e.evalRules(a, idx, body, nil)
	for i := range bmatches {
		bmatches[i].Prepared = true
	}
	sd.Matches = append(sd.Matches, bmatches...)
	if sd.Rule != nil {
		sd.Rule.Prepared = true
	} else {
		sd.Verdict, sd.Reason = e.defaultVerdict(body)
		sd.Default = true
	}
	// A rule matching the EXECUTE itself (its arguments, its name) counts
	// too.
	if execRule != nil && execVerdict.Stricter(sd.Verdict) {
		sd.Verdict, sd.Rule = execVerdict, execRule
	}
	if sd.Rule != nil {
		sd.Reason, sd.Default = "", false
	}
	// A statement that only runs the name (EXECUTE) has no default of its own. One that does more
	// with it (CREATE TABLE … AS EXECUTE creates a table) keeps its own when no rule judged it:
	// a rule allowing what the name runs (a read) does not allow the table.
	if st.Kind != sqlclass.KindExecute && execRule == nil {
		// Judged without the name, which the body's verdict covers: EXPLAIN EXECUTE of a read
		// only plans it.
		own := *st
		own.Execute = ""
		if v, reason := e.defaultVerdict(&own); v.Stricter(sd.Verdict) {
			sd.Verdict, sd.Rule, sd.Reason, sd.Default = v, nil, reason, true
		}
	}
	return sd
}

// evalRules runs every rule that judges statements on st and returns the strictest match.
func (e *Engine) evalRules(a *activation, idx int, st *sqlclass.Statement, matches []Match) (Action, *Match, []Match) {
	a.sql.st = st
	return evalEach(e.forStatements, a, idx, matches)
}

// evalEach runs rules on the request act resolves and returns the strictest match, appending
// every match to matches.
func evalEach(rules []compiled, act interpreter.Activation, idx int, matches []Match) (Action, *Match, []Match) {
	verdict := Allow
	best := -1
	for i := range rules {
		r := &rules[i]
		out, _, err := r.prg.Eval(act)
		var errText string
		if err != nil {
			errText = err.Error()
		} else if types.IsError(out) {
			errText = fmt.Sprint(out.Value())
		}
		if errText != "" {
			// Fail closed: an allow rule that cannot be evaluated does not
			// allow; a block or approve rule that cannot be evaluated applies.
			if r.action == Allow {
				continue
			}
		} else if out != types.True {
			continue
		}
		matches = append(matches, Match{Rule: r.Name, Action: r.action, Message: r.Message,
			Approvers: r.Approvers, Line: r.Line, Statement: idx, Err: errText})
		if best < 0 || r.action.Stricter(verdict) {
			verdict, best = r.action, len(matches)-1
		}
	}
	if best < 0 {
		return Allow, nil, matches
	}
	m := matches[best]
	return verdict, &m, matches
}

// defaultVerdict decides a statement no rule matched.
func (e *Engine) defaultVerdict(st *sqlclass.Statement) (Action, string) {
	switch e.def {
	case DefaultAllow:
		if st.Unknown {
			return Block, "statement could not be classified (unknown) and no rule allows it"
		}
		return Allow, "no rule matched; default allow"
	case DefaultBlock:
		return Block, "no rule allows this statement (default: block)"
	}
	if st.Inert() {
		return Allow, "no rule matched; default allow_reads allows statements that only read"
	}
	return Block, fmt.Sprintf("no rule allows this statement and it does not only read (%s); default allow_reads blocks it", effects(st))
}

// effects names a statement's effect classes, for messages.
func effects(st *sqlclass.Statement) string {
	var out []string
	add := func(ok bool, name string) {
		if ok {
			out = append(out, name)
		}
	}
	add(st.Unknown, "unknown")
	add(st.Reads, "reads")
	add(st.Writes, "writes")
	add(st.DDL, "ddl")
	add(st.Privilege, "privilege")
	add(st.UnsafeIO, "unsafe_io")
	add(st.Procedural, "procedural")
	add(st.Session, "session")
	add(st.Transaction, "transaction")
	add(st.Maintenance, "maintenance")
	add(st.SideEffects, "side_effects")
	add(st.Locks, "locks")
	add(st.SearchPath, "search_path")
	if st.Execute != "" {
		out = append(out, "executes prepared "+st.Execute)
	}
	if len(out) == 0 {
		return "no effects"
	}
	return strings.Join(out, ", ")
}

// HTTPDecision is the verdict for one HTTP request.
type HTTPDecision struct {
	// Request is the request as judged: host and header names lower case.
	Request HTTP
	Action  Action
	// Rule is the rule that decided; nil when the default decided or the request was refused
	// before any rule (Reason says why).
	Rule    *Match
	Matches []Match
	// Default is set when the default mode (Mode) decided: no rule matched.
	Default bool
	Mode    Default
	// Reason explains a verdict no rule decided.
	Reason string
}

// DecideHTTP judges one HTTP request for a connection, as Decide judges a statement: every rule
// that judges HTTP requests (it reads http, or neither http nor sql) is evaluated, the strictest
// match wins, a rule that fails to evaluate counts as matched unless it allows, and with no
// match the default decides (allow_reads allows GET, HEAD and OPTIONS). A request whose method
// or path a server could read otherwise than the rules do is blocked whatever they say. One with
// a header name holding '_' is judged twice, with the names as sent and with '-' for '_' (Puma,
// PHP and CGI read X_Tenant as X-Tenant, Go and Node do not), and the stricter verdict wins: a
// block rule on x-tenant applies to X_Tenant, an allow rule on x-dry-run is not met by it.
func (e *Engine) DecideHTTP(c *Conn, req HTTP) HTTPDecision {
	req.Host = hostName(req.Host)
	req.Headers = lowerHeaderNames(req.Headers)
	d := HTTPDecision{Request: req, Mode: e.def}
	if why := ambiguousRequest(req.Method, req.Path); why != "" {
		d.Action, d.Reason = Block, why
		return d
	}
	if why := methodOverride(req); why != "" {
		d.Action, d.Reason = Block, why
		return d
	}
	e.judgeHTTP(&d, c, req.Headers)
	if dashed := dashedHeaderNames(req.Headers); dashed != nil {
		// Puma, PHP and CGI read "X_Tenant" as X-Tenant, Go and Node as a field of its own: a
		// block rule on x-tenant must see it, an allow rule on x-dry-run must not be met by
		// X_Dry_Run. Judged both ways, the stricter verdict wins.
		alt := HTTPDecision{Request: req, Mode: e.def}
		e.judgeHTTP(&alt, c, dashed)
		if alt.Action.Stricter(d.Action) {
			d.Action, d.Rule, d.Default, d.Reason = alt.Action, alt.Rule, alt.Default, alt.Reason
		}
		for _, m := range alt.Matches {
			if !slices.ContainsFunc(d.Matches, func(have Match) bool { return have.Rule == m.Rule }) {
				d.Matches = append(d.Matches, m)
			}
		}
	}
	return d
}

// judgeHTTP evaluates the HTTP rules on d.Request with headers in place of its headers, and
// the default when none matches.
func (e *Engine) judgeHTTP(d *HTTPDecision, c *Conn, headers map[string]string) {
	req := &d.Request
	a := &httpActivation{conn: c, req: newObject(httpType, str(req.Method), str(req.Path),
		types.String(req.Host), types.String(req.Query), types.NewStringStringMap(types.DefaultTypeAdapter, headers))}
	d.Action, d.Rule, d.Matches = evalEach(e.forHTTP, a, 0, nil)
	if d.Rule == nil {
		d.Action, d.Reason = e.defaultHTTPVerdict(req.Method)
		d.Default = true
	}
}

// dashedHeaderNames returns h (lower-case names) with '-' for every '_' in its names, values
// of names that become one joined as lowerHeaderNames joins them; nil when no name has '_'.
func dashedHeaderNames(h map[string]string) map[string]string {
	found := false
	for k := range h {
		if strings.Contains(k, "_") {
			found = true
			break
		}
	}
	if !found {
		return nil
	}
	out := make(map[string]string, len(h))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		dk := strings.ReplaceAll(k, "_", "-")
		if prev, ok := out[dk]; ok {
			out[dk] = prev + ", " + h[k]
		} else {
			out[dk] = h[k]
		}
	}
	return out
}

// hostName is the host a Host header names as servers route by it: lower case, without its
// port or a root dot ("Admin.Internal.:8080" is "admin.internal"), so that a rule on http.host
// cannot be passed by spelling the same host another way. An IPv6 literal keeps its brackets.
func hostName(h string) string {
	h = strings.ToLower(h)
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[:i+1]
		}
		return h
	}
	// A port follows the only colon; several colons are no host:port (an unbracketed IPv6
	// address), kept whole rather than cut into another name.
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h[:i], ':') < 0 {
		h = h[:i]
	}
	return strings.TrimRight(h, ".")
}

// lowerHeaderNames returns h with its names lower case, h itself when they are already (the
// handler's usual case). Names that differ only in case become one, their values joined in
// the order of the names' sorting, as a repeated field's are.
func lowerHeaderNames(h map[string]string) map[string]string {
	if h == nil {
		return map[string]string{}
	}
	lower := true
	for k := range h {
		if strings.ToLower(k) != k {
			lower = false
			break
		}
	}
	if lower {
		return h
	}
	out := make(map[string]string, len(h))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		lk := strings.ToLower(k)
		if prev, ok := out[lk]; ok {
			out[lk] = prev + ", " + h[k]
		} else {
			out[lk] = h[k]
		}
	}
	return out
}

// ambiguousRequest says why a request must be refused before any rule reads it, or "": its
// method or path is one servers may read otherwise than the rules do. Some upper-case methods;
// some resolve dot segments ("/api/../admin"), merge empty segments ("//admin"), read a
// backslash as "/", decode "%2f" into a separator, or drop ";params" ("/admin;x", "..;/").
// A rule on http.path ("/admin" blocked) would miss each of those.
func ambiguousRequest(method, path string) string {
	if method == "" {
		return "the request has no method"
	}
	for i := 0; i < len(method); i++ {
		switch c := method[i]; {
		case 'a' <= c && c <= 'z':
			return fmt.Sprintf("method %q has lower-case letters: servers that upper-case methods would run it as %q, which rules compare as written; send it upper case", clip(method), clip(strings.ToUpper(method)))
		case !isTokenChar(c):
			return fmt.Sprintf("method %q is not an HTTP method (a token)", clip(method))
		}
	}
	if path == "*" && method == "OPTIONS" {
		return ""
	}
	if !strings.HasPrefix(path, "/") {
		return fmt.Sprintf("path %q does not start with /: only origin-form requests are forwarded", clip(path))
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "the path holds a control character"
		case c == '\\':
			return fmt.Sprintf("path %q holds a backslash, which some servers read as /", clip(path))
		case c == '%' && i+2 < len(path):
			// A path given undecoded: an encoded separator, dot or control byte is read as one by
			// some servers and as data by others.
			if b, ok := unhex(path[i+1], path[i+2]); ok && (b == '/' || b == '\\' || b == '.' || b == ';' || b == '%' || b < 0x20 || b == 0x7f) {
				return fmt.Sprintf("path %q encodes a separator, dot or control byte (%s), which servers decode differently", clip(path), path[i:i+3])
			} else if ok && isUnreserved(b) {
				// "/%61dmin" is "/admin" to every server (RFC 3986 6.2.2.2), but not to a rule.
				return fmt.Sprintf("path %q encodes a letter, digit or one of -._~ (%s), which servers decode before routing; send it as %q", clip(path), path[i:i+3], string(b))
			}
		}
	}
	segs := strings.Split(path[1:], "/")
	for i, seg := range segs {
		name, _, _ := strings.Cut(seg, ";")
		switch {
		case name == "." || name == "..":
			return fmt.Sprintf("path %q has a dot segment (%q), which servers resolve before routing", clip(path), seg)
		case seg == "" && i < len(segs)-1:
			return fmt.Sprintf("path %q has an empty segment (//), which some servers merge", clip(path))
		}
	}
	return ""
}

// isUnreserved says whether c is an RFC 3986 unreserved character: its percent-encoding means
// the same as the character itself.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// methodOverrideHeaders are the headers frameworks (Rails, Laravel, Symfony, Express's
// method-override, ASP.NET) read as the request's real method.
var methodOverrideHeaders = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// methodOverride says why a request that asks the server to run it as another method than its
// own must be refused, or "": a POST with "X-HTTP-Method-Override: DELETE" or "_method=DELETE"
// is a DELETE to many frameworks, and a POST to the rules.
func methodOverride(req HTTP) string {
	for k := range req.Headers {
		if h := strings.ReplaceAll(k, "_", "-"); slices.Contains(methodOverrideHeaders, h) {
			return fmt.Sprintf("the request carries %s, which frameworks run as another method than %s; send the method itself", h, clip(req.Method))
		}
	}
	for part := range strings.SplitSeq(req.Query, "&") {
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err != nil || strings.EqualFold(k, "_method") {
			return fmt.Sprintf("the query names _method (or cannot be read), which frameworks run as another method than %s; send the method itself", clip(req.Method))
		}
	}
	return ""
}

// isTokenChar says whether c may be part of an HTTP token (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func unhex(a, b byte) (byte, bool) {
	hi, ok1 := hexVal(a)
	lo, ok2 := hexVal(b)
	return hi<<4 | lo, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// clip shortens the agent's text in a message to what tells it apart.
func clip(s string) string { return oneLine(s, 120) }

// defaultHTTPVerdict decides a request no rule matched.
func (e *Engine) defaultHTTPVerdict(method string) (Action, string) {
	switch e.def {
	case DefaultAllow:
		return Allow, "no rule matched; default allow"
	case DefaultBlock:
		return Block, "no rule allows this request (default: block)"
	}
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return Allow, "no rule matched; default allow_reads allows GET, HEAD and OPTIONS requests"
	}
	return Block, fmt.Sprintf("no rule allows this %s request and default allow_reads allows only GET, HEAD and OPTIONS; a rule with action: allow can allow it", clip(method))
}
