// Package rules evaluates policy rules, written as CEL expressions
// (cel.dev/cel-go), against a request: who (identity), which process, which
// target, and what statement (a sqlclass classification).
//
// Every rule that matches a statement is collected; the strictest action
// wins (block > approve > allow). When no rule matches, a configurable
// default decides. A string with several statements is judged statement by
// statement and the strictest verdict wins for the whole string.
//
// Rules are compiled and type-checked once (Compile); evaluation reuses the
// compiled programs and converts per-connection values once (NewConn).
package rules

import (
	"fmt"
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

// Default decides statements that no rule matches.
type Default string

// Default modes.
const (
	// DefaultAllowReads allows statements that change nothing (reads, and
	// plain transaction control such as BEGIN/COMMIT) and blocks the rest.
	// It is the shipped default for agents.
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
	prg    cel.Program
}

// Engine holds compiled rules. It is immutable and safe for concurrent use.
type Engine struct {
	rules []compiled
	def   Default
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
		prg, err := e.Program(ast, cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			fail("condition: %v", err)
			continue
		}
		eng.rules = append(eng.rules, compiled{Rule: r, action: act, prg: prg})
	}
	if len(errs) > 0 {
		return nil, &CompileError{Errors: errs}
	}
	return eng, nil
}

// spelling says how the values of the sql fields with a fixed spelling are written: statement
// kinds, objects and wrappers upper case ("DROP", "TABLE"), setting names lower case
// ("datestyle", whatever the statement's spelling).
var spelling = map[string]func(string) string{
	"kind": strings.ToUpper, "kinds": strings.ToUpper, "object": strings.ToUpper,
	"wrapper": strings.ToUpper, "setting": strings.ToLower,
}

// neverEqual finds a comparison of such a field with a literal spelt otherwise (sql.kind ==
// "drop", sql.setting in ["DateStyle"], "truncate" in sql.kinds): it can never hold, so a block
// rule written that way would silently block nothing. It returns what to fix, or "".
func neverEqual(checked *cel.Ast) string {
	calls := celast.MatchDescendants(celast.NavigateAST(checked.NativeRep()), celast.KindMatcher(celast.CallKind))
	for _, c := range calls {
		call := c.AsCall()
		args := call.Args()
		if len(args) != 2 {
			continue
		}
		switch call.FunctionName() {
		case operators.Equals, operators.NotEquals, operators.In:
		default:
			continue
		}
		// Either side may be the field: sql.kind == "X", "X" == sql.kind, sql.kind in ["X"],
		// "X" in sql.kinds.
		for _, p := range [][2]celast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
			name := sqlFieldName(p[0])
			norm := spelling[name]
			if norm == nil {
				continue
			}
			for _, lit := range stringLiterals(p[1]) {
				if norm(lit) != lit {
					return fmt.Sprintf("sql.%s is never %q: its values are spelt %q", name, lit, norm(lit))
				}
			}
		}
	}
	return ""
}

// sqlFieldName returns the field name of an expression sql.FIELD, or "".
func sqlFieldName(e celast.Expr) string {
	if e.Kind() != celast.SelectKind {
		return ""
	}
	sel := e.AsSelect()
	if op := sel.Operand(); op.Kind() != celast.IdentKind || op.AsIdent() != "sql" {
		return ""
	}
	return sel.FieldName()
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

// HTTP is the request part for HTTP targets. Header names are lower case;
// repeated headers are joined with ", ".
type HTTP struct {
	Method  string
	Path    string
	Host    string
	Headers map[string]string
}

// Conn holds the per-connection part of a request, converted to CEL values
// once. It is immutable and may be shared.
type Conn struct {
	identity, process, target, http ref.Val
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
		http: emptyHTTP,
	}
}

// WithHTTP returns a copy of c carrying an HTTP request.
func (c *Conn) WithHTTP(h HTTP) *Conn {
	hdr := make(map[string]string, len(h.Headers))
	for k, v := range h.Headers {
		hdr[strings.ToLower(k)] = v
	}
	n := *c
	n.http = newObject(httpType, types.String(h.Method), types.String(h.Path), types.String(h.Host),
		types.NewStringStringMap(types.DefaultTypeAdapter, hdr))
	return &n
}

var emptyHTTP = newObject(httpType, types.String(""), types.String(""), types.String(""),
	types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{}))

// activation resolves the request variables without allocating.
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
	case "http":
		return a.conn.http, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

var activations = sync.Pool{New: func() any { return new(activation) }}

// Match is a rule that matched a statement.
type Match struct {
	Rule      string
	Action    Action
	Message   string
	Approvers []string
	Line      int
	Statement int    // index in the classified string
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

// evalRules runs every rule on st and returns the strictest match.
func (e *Engine) evalRules(a *activation, idx int, st *sqlclass.Statement, matches []Match) (Action, *Match, []Match) {
	a.sql.st = st
	verdict := Allow
	best := -1
	for i := range e.rules {
		r := &e.rules[i]
		out, _, err := r.prg.Eval(a)
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
