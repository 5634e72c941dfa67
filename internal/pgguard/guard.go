// Package pgguard is the policy side of a Postgres session: it implements the proxy's hook by
// judging each statement with the policy's rules, holding statements that need a reviewer,
// masking results and recording the session. The wire protocol is internal/proto/postgres's job;
// the decisions are internal/policy's; this package applies them to one connection.
package pgguard

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// Shared is what every guarded connection uses; one per daemon.
type Shared struct {
	Policy     func() *policy.Policy
	Classifier *sqlclass.Classifier
	// Approvals holds statements whose verdict is approve; nil refuses them (fail closed).
	Approvals *approval.Broker
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	// Catalogs resolves result columns to their tables for column masking rules.
	Catalogs Catalogs
	// Recorder, if set, records every session; if it cannot write, statements are refused.
	Recorder *record.Recorder

	// lastStatement is the connection that recorded the latest statement; late lists those
	// whose last read may wait for their next statement (see late.go).
	lastStatement atomic.Pointer[Guard]
	late          lateReads
}

// ConnInfo describes the connection a guard serves.
type ConnInfo struct {
	ID       string
	Target   *policy.Target
	Identity identity.Session
	Origin   redirect.Origin
	Cmdline  string   // the process's arguments joined by spaces, for reviewers
	Argv     []string // the process's arguments as it was started, for the record
	Exe      string   // the process's executable
	Cgroup   string   // the process's cgroup (v2 path)
	Database string   // upstream database (the client's unless the target overrides it)
	DBUser   string   // upstream user
	// Connect opens a separate connection with the target's credentials, for catalog lookups.
	Connect Connector
	// Upstream is the server address, for the record.
	Upstream string
}

// Guard is the hook of one connection.
type Guard struct {
	sh   *Shared
	info ConnInfo
	conn *rules.Conn
	log  *slog.Logger

	mu       sync.Mutex
	counters [3]prometheus.Counter // statements by verdict (verdictIndex), this connection's target
	// prepared are SQL-level PREPAREs this connection ran, for judging EXECUTE.
	prepared map[string]*sqlclass.Statement
	// parsed are protocol-level statements the guard let through Parse, by name.
	parsed map[string]*parsedStatement
	// preparedGen counts changes to prepared; lastParse is the last Parse's decision.
	preparedGen uint64
	lastParse   parseMemo
	// mask is nil when this identity sees the target's values in clear.
	mask *masker
	// schemaChanged is set, under column rules, once the connection ran a statement that may
	// change the schema (see mayChangeSchema), until a later statement finds it settled (see
	// noteSchemaChange): meanwhile the catalog, which looks on a connection of its own, may not
	// see what changed.
	schemaChanged atomic.Bool
	db            atomic.Value // string
	// rec records the session; recErr is set when its start could not be written.
	rec    *recorder
	recErr error
	// Storage for the classification and decision of the running simple-protocol query.
	queryClass    sqlclass.Scratch
	queryDecision rules.Decision
	execDecision  rules.Decision // an Execute's, when its portal runs another text than its name's last Parse
	// lookup is lookupPrepared bound once (a method value allocates each time it is made).
	lookup rules.Prepared
}

type parsedStatement struct {
	decision rules.Decision
	sql      string         // the text decision is for
	pol      *policy.Policy // the policy decision is by: an Execute after a reload is judged anew
	// deallocated: an SQL DEALLOCATE (or DISCARD ALL) may have dropped the statement since its
	// Parse (surely, if gone). Parse'd and PREPAREd statements share one namespace at the
	// server, so the name may now be a PREPARE's, which the proxy's record of the Parse does not
	// show.
	deallocated, gone bool
}

// parseMemo is a Parse decision with everything it depends on: the text, the policy, the
// connection's rule inputs and its SQL-level prepared statements.
type parseMemo struct {
	sql         string
	pol         *policy.Policy
	conn        *rules.Conn
	preparedGen uint64
	decision    rules.Decision
}

// parseDecision classifies and decides the text of a Parse, or returns the last decision when
// nothing it depends on changed: drivers parse the same unnamed statement again for every query
// (the proxy hands the same string back, so the comparison is a pointer check).
func (g *Guard) parseDecision(pol *policy.Policy, sql string) rules.Decision {
	m := &g.lastParse
	if m.pol == pol && m.conn == g.conn && m.preparedGen == g.preparedGen && m.sql == sql && m.pol != nil {
		return m.decision
	}
	d := pol.Rules.Decide(g.conn, g.sh.Classifier.Classify(sql), g.lookup)
	*m = parseMemo{sql: sql, pol: pol, conn: g.conn, preparedGen: g.preparedGen, decision: d}
	return d
}

// NewGuard returns the hook for one connection.
func (sh *Shared) NewGuard(ci ConnInfo) *Guard {
	s := ci.Identity
	g := &Guard{
		sh:       sh,
		info:     ci,
		log:      sh.Log.With("conn", ci.ID, "target", ci.Target.Name, "subject", s.Subject),
		prepared: map[string]*sqlclass.Statement{},
		parsed:   map[string]*parsedStatement{},
	}
	g.lookup = g.lookupPrepared
	g.conn = rules.NewConn(g.ruleIdentity(), g.ruleProcess(),
		rules.Target{Name: ci.Target.Name, Protocol: ci.Target.Protocol, Database: ci.Database, User: ci.DBUser})
	pol := sh.Policy()
	plan := pol.MaskFor(ci.Target.Name, s.Groups)
	// A statement on the command line (psql -c "ALTER ROLE … PASSWORD '…'") is shown as the
	// same statement sent would be: without its credentials, masking or not.
	if argv := credentialsInArgs(ci.Exe, ci.Argv, plan.CredentialLabel()); argv != nil {
		ci.Argv, ci.Cmdline = argv, strings.Join(argv, " ")
		g.info.Argv, g.info.Cmdline = ci.Argv, ci.Cmdline
	}
	if plan != nil {
		g.mask = &masker{plan: plan, g: g}
		// Arguments carry secrets too (psql postgres://app:secret@…, curl -H "Authorization: …"),
		// and statements (psql -c "…").
		if argv := g.sqlInArgs(ci.Exe, ci.Argv); argv != nil {
			ci.Argv, ci.Cmdline = argv, strings.Join(argv, " ")
		}
		g.info.Cmdline = plan.MaskString(ci.Cmdline)
		g.info.Argv = plan.MaskStrings(ci.Argv)
	}
	if sh.Recorder != nil && !pol.Recording.Disabled {
		g.startRecording(sh.Recorder, pol.Recording.Strict(), pol.Recording.MaxRows)
	}
	return g
}

// database is the upstream database this connection uses, as the proxy reported it at the
// start or with the first statement.
func (g *Guard) database() string {
	if db, _ := g.db.Load().(string); db != "" {
		return db
	}
	return g.info.Database
}

// setDatabase makes db (when known) the database this connection's rules, approvals and
// record name. Under g.mu.
func (g *Guard) setDatabase(db string) {
	if db == "" || g.database() == db {
		return
	}
	g.db.Store(db)
	g.conn = rules.NewConn(g.ruleIdentity(), g.ruleProcess(), rules.Target{Name: g.info.Target.Name, Protocol: g.info.Target.Protocol, Database: db, User: g.info.DBUser})
}

// observe says whether rows and COPY data of allowed statements must reach Result.
func (g *Guard) observe() bool { return g.mask != nil || g.rec != nil }

func (g *Guard) ruleIdentity() rules.Identity {
	s := g.info.Identity
	return rules.Identity{Subject: s.Subject, Email: s.Email, Groups: s.Groups, Provider: s.Provider}
}

func (g *Guard) ruleProcess() rules.Process {
	o := g.info.Origin
	return rules.Process{Comm: o.Comm, Exe: g.info.Exe, PID: int64(o.PID), UID: int64(o.UID)}
}

func (g *Guard) lookupPrepared(name string) *sqlclass.Statement {
	return g.prepared[name]
}

// Statement implements postgres.Hook.
func (g *Guard) Statement(ctx context.Context, s *postgres.Statement) postgres.Verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.setDatabase(s.Database)
	g.ensureStarted(nil)
	if g.recErr != nil {
		return g.refuse("recording", "enforcer: the session log cannot be written, so no statement may run", "", "an administrator must fix the daemon's record directory; see its log")
	}
	if g.schemaChanged.Load() && s.Settled() {
		g.sh.Catalogs.Forget(g.info.Target.Name, g.database())
		g.schemaChanged.Store(false)
	}
	pol := g.sh.Policy()
	switch s.Kind {
	case postgres.KindQuery:
		// Every simple-protocol query with new literal values gets a result of its own: it and
		// the decision are built in the guard's storage, used only under mu and only until this
		// call returns.
		res := g.sh.Classifier.ClassifyIn(s.SQL, &g.queryClass)
		if v, refused := g.cursorOfPortal(s, res); refused {
			return g.recorded(s, nil, v, "", nil)
		}
		d := &g.queryDecision
		pol.Rules.DecideInto(d, g.conn, res, g.lookup)
		if v, refused := g.codeBesideHeldPortal(pol, s, d); refused {
			d.Result = nil
			return g.recorded(s, nil, v, "", nil)
		}
		v, approvalID := g.enforce(ctx, pol, s, d, nil)
		g.noteSchemaChange(v, res, false)
		v = g.recorded(s, d, v, approvalID, nil)
		g.noteSchemaChange(v, res, true)
		if v.Action == postgres.Allow {
			g.notePrepares(res, s.TxStatus == 'E')
			g.noteOrigins(s.ID, res, true)
		}
		d.Result = nil
		return v
	case postgres.KindParse:
		if _, sql := g.prepared[s.StatementName]; sql && s.StatementName != "" {
			// The server refuses it (42P05), and a Bind of the name would then bind the PREPAREd
			// statement, not this text.
			v := g.refuse("statement-name-in-use", fmt.Sprintf("enforcer: prepared statement %q exists: it was made with PREPARE on this connection", s.StatementName),
				s.SQL, "use another name, or DEALLOCATE it first")
			return g.recorded(s, nil, v, "", nil)
		}
		d := g.parseDecision(pol, s.SQL)
		if d.Verdict == rules.Block {
			v, _ := g.enforce(ctx, pol, s, &d, nil)
			return g.recorded(s, &d, v, "", nil)
		}
		// Allowed and approve verdicts pass Parse, which runs nothing; an approve is held at
		// Execute, when the parameter values it is bound to are known. The Execute is recorded.
		g.count(&d)
		g.noteOrigins(s.ID, d.Result, false) // for the row description a Describe gets
		if p := g.parsed[s.StatementName]; p != nil {
			p.decision, p.sql, p.pol, p.deallocated, p.gone = d, s.SQL, pol, false, false // the unnamed statement is re-parsed for every query: reuse its entry
		} else {
			g.parsed[s.StatementName] = &parsedStatement{decision: d, sql: s.SQL, pol: pol}
		}
		return postgres.Verdict{}
	case postgres.KindExecute:
		if !s.Known {
			v := g.refuse("statement-not-parsed-here", fmt.Sprintf("enforcer: prepared statement %q was not prepared through the enforcer on this connection", s.StatementName),
				s.SQL, "prepare statements with the extended protocol (Parse) or PREPARE on the same connection, so the enforcer can judge them")
			return g.recorded(s, nil, v, "", s.Params)
		}
		p := g.parsed[s.StatementName]
		if p != nil && p.deallocated {
			v := g.refuse("statement-deallocated", fmt.Sprintf("enforcer: prepared statement %q was deallocated with SQL since it was parsed, so what it runs now is not known", s.StatementName),
				s.SQL, "parse the statement again")
			v.Error.Code = "26000" // invalid_sql_statement_name: drivers prepare it again
			return g.recorded(s, nil, v, "", s.Params)
		}
		// s.SQL is what the portal runs: the statement it was bound to, as the server holds it.
		// The last Parse of the name may be another (the unnamed statement parsed again after the
		// Bind, or a Parse the server refused because the name existed): then that is judged.
		d := &g.execDecision
		switch {
		case p != nil && p.sql == s.SQL:
			if p.pol != pol {
				// Parsed before a policy reload (a driver's statement cache keeps it for the
				// connection's life): what the policy in force says of it now decides.
				p.decision, p.pol = g.parseDecision(pol, s.SQL), pol
			}
			d = &p.decision
		case p != nil && s.StatementName != "":
			// The proxy and the guard disagree on what the name holds: a Parse the server
			// refused (the name existed), or accepted where the proxy expected a refusal (an
			// SQL DEALLOCATE had dropped the name).
			v := g.refuse("statement-unknown", fmt.Sprintf("enforcer: prepared statement %q was parsed again since the portal was bound, and what it runs is not known", s.StatementName),
				s.SQL, "bind and execute the statement again")
			v.Error.Code = "26000"
			return g.recorded(s, nil, v, "", s.Params)
		default:
			*d = g.parseDecision(pol, s.SQL)
		}
		if v, refused := g.cursorOfPortal(s, d.Result); refused {
			return g.recorded(s, d, v, "", s.Params)
		}
		if v, refused := g.codeBesideHeldPortal(pol, s, d); refused {
			return g.recorded(s, d, v, "", s.Params)
		}
		v, approvalID := postgres.Verdict{Observe: g.observe()}, ""
		switch d.Verdict {
		case rules.Approve:
			v, approvalID = g.enforce(ctx, pol, s, d, s.Params)
		case rules.Block:
			v, _ = g.enforce(ctx, pol, s, d, nil)
		}
		if v.Action == postgres.Allow {
			g.noteOrigins(s.ID, d.Result, true)
		}
		g.noteSchemaChange(v, d.Result, false)
		v = g.recorded(s, d, v, approvalID, s.Params)
		g.noteSchemaChange(v, d.Result, true)
		return v
	case postgres.KindFunctionCall:
		v := g.refuse("function-call", fmt.Sprintf("enforcer: fast-path function calls (function OID %d) are not allowed: their effects cannot be judged", s.FunctionOID),
			"", "call the function in a SELECT statement instead")
		return g.recorded(s, nil, v, "", s.Params)
	}
	return g.refuse("unknown-message", "enforcer: unsupported statement message", "", "")
}

// noteSchemaChange notes, under column rules, that a statement allowed to run may change the
// schema (see mayChangeSchema; an SQL EXECUTE, by what it runs). Until the connection is
// settled, the names of its statements are not looked up in the catalog but may be any column,
// and view columns and values computed from relations in its results may come from any column
// (see viewSources, masker.describe). So a view created or replaced in a transaction cannot
// show a ruled column under a name the catalog thinks harmless.
//
// Writes (whose triggers and rules may run anything) count only with writes set: the guard asks
// again once the statement is recorded, so that a write's own values are shown as its names
// say.
func (g *Guard) noteSchemaChange(v postgres.Verdict, res *sqlclass.Result, writes bool) {
	if v.Action != postgres.Allow || g.mask == nil || !g.mask.plan.HasColumnRules() || res == nil {
		return
	}
	for i := range res.Statements {
		st := &res.Statements[i]
		if st.Kind == sqlclass.KindExecute && st.Execute != "" {
			if p := g.executedBy(res, i); p == nil || mayChangeSchema(p, writes) {
				g.schemaChanged.Store(true)
				return
			}
		}
		if st.Unknown || st.Executes && mayChangeSchema(st, writes) {
			g.schemaChanged.Store(true)
			return
		}
	}
	if len(res.Statements) == 0 {
		g.schemaChanged.Store(true) // nothing parsed
	}
}

// mayChangeSchema reports whether st may change what the catalog holds, itself or through code
// it runs: DDL, code, a call of a function not known to be free of effects, and, if writes is
// set, a write (a trigger or a rule may run anything).
func mayChangeSchema(st *sqlclass.Statement, writes bool) bool {
	return st.DDL || st.Procedural || st.Unknown || writes && st.Writes
}

// cursorOfPortal refuses SQL cursor statements of res that name a portal the client bound with
// the extended protocol. At the server a cursor and a portal are one thing: a FETCH or MOVE runs
// the portal's statement (an UPDATE … RETURNING, say), judged as a read, and so does
// cursor_to_xml given its name; a DECLARE, once the portal is gone, puts under its name a query
// an Execute of the portal would run unjudged.
func (g *Guard) cursorOfPortal(s *postgres.Statement, res *sqlclass.Result) (postgres.Verdict, bool) {
	if res == nil {
		return postgres.Verdict{}, false
	}
	refuse := func(name, what string) (postgres.Verdict, bool) {
		return g.refuse("cursor-of-protocol-portal", fmt.Sprintf("enforcer: %q is a portal bound with the extended protocol; %s cannot use its name", name, what),
			s.SQL, "read a protocol portal with Execute, and give SQL cursors other names"), true
	}
	for i := range res.Statements {
		st := &res.Statements[i]
		switch st.Kind {
		case "FETCH", "MOVE", "DECLARE":
			if st.Cursor != "" && s.HasPortal(st.Cursor) {
				return refuse(st.Cursor, string(st.Kind))
			}
		}
		reads := st.CursorsRead // an EXECUTE's arguments' too: the server evaluates them
		if p := g.executedBy(res, i); p != nil && len(p.CursorsRead) > 0 {
			// EXECUTE of a PREPAREd cursor_to_xml('p', …)
			reads = append(slices.Clip(reads), p.CursorsRead...)
		}
		for _, name := range reads {
			if s.HasPortal(name) {
				return refuse(name, "cursor_to_xml")
			}
		}
	}
	return postgres.Verdict{}, false
}

// executedBy returns the statement that statement i of res, an EXECUTE, runs: the one PREPAREd
// under its name earlier in the same query, else the one this connection prepared before. It
// returns nil when st is no EXECUTE or what it runs is not known.
func (g *Guard) executedBy(res *sqlclass.Result, i int) *sqlclass.Statement {
	name := res.Statements[i].Execute
	if name == "" {
		return nil
	}
	for j := i - 1; j >= 0; j-- {
		if res.Statements[j].Prepare == name {
			return &res.Statements[j]
		}
	}
	return g.prepared[name]
}

// codeBesideHeldPortal refuses code (a statement of d that is Procedural or Unknown: a DO block,
// a function, cursor_to_xml of a computed name) that d would let run while the client has a
// portal open that the policy does not allow outright, other than the one an Execute runs. Code
// can fetch from a portal by a name it computes as it runs, and so run a write held for approval
// at its Execute, or one the policy blocks now, without either.
func (g *Guard) codeBesideHeldPortal(pol *policy.Policy, s *postgres.Statement, d *rules.Decision) (postgres.Verdict, bool) {
	if d.Verdict == rules.Block || !g.runsCode(d.Result) {
		return postgres.Verdict{}, false
	}
	for p := range s.Portals() {
		if s.Kind == postgres.KindExecute && p.Name == s.PortalName || p.SQL != "" && g.allowedOutright(pol, p.StatementName, p.SQL) {
			continue
		}
		return g.refuse("code-beside-held-portal", fmt.Sprintf("enforcer: portal %q is open and the policy does not allow what it runs outright (it needs approval, is blocked, or is not known); "+
			"code such as this statement could run it by name, so it is refused while the portal is open", p.Name),
			s.SQL, "close the portal (a Close message) or end the transaction, then send the statement again"), true
	}
	return postgres.Verdict{}, false
}

// runsCode reports whether a statement of res is, or EXECUTEs, code whose effects are not known.
func (g *Guard) runsCode(res *sqlclass.Result) bool {
	if res == nil {
		return false
	}
	for i := range res.Statements {
		st := &res.Statements[i]
		if st.Procedural || st.Unknown {
			return true
		}
		if p := g.executedBy(res, i); p != nil && (p.Procedural || p.Unknown) {
			return true
		}
	}
	return false
}

// allowedOutright reports whether the policy allows the statement sql, parsed as stmtName,
// without a review.
func (g *Guard) allowedOutright(pol *policy.Policy, stmtName, sql string) bool {
	if p := g.parsed[stmtName]; p != nil && p.sql == sql && p.pol == pol {
		return p.decision.Verdict == rules.Allow
	}
	return pol.Rules.Decide(g.conn, g.sh.Classifier.Classify(sql), g.lookup).Verdict == rules.Allow
}

// recorded writes the statement and its verdict to the session log. A statement the log cannot
// take is refused (fail closed); for state-changing statements the record is durable before the
// statement is forwarded.
func (g *Guard) recorded(s *postgres.Statement, d *rules.Decision, v postgres.Verdict, approvalID string, params [][]byte) postgres.Verdict {
	verdict := record.VerdictAllow
	switch {
	case v.Action == postgres.Refuse:
		verdict = record.VerdictBlock
	case approvalID != "":
		verdict = record.VerdictApprove
	}
	if err := g.recordStatement(s, d, verdict, approvalID, params); err != nil {
		g.log.Error("session log write failed; statement refused", "err", err)
		if v.Action == postgres.Refuse {
			return v
		}
		return g.refuse("recording", "enforcer: the session log cannot be written, so the statement was not run", s.SQL, "an administrator must fix the daemon's record directory; see its log")
	}
	return v
}

// notePrepares tracks SQL-level PREPARE and DEALLOCATE so an EXECUTE is judged as its body. The
// server keeps them in one namespace with the extended protocol's named statements: a PREPARE
// of a Parse'd name fails there, and a DEALLOCATE drops a Parse'd statement too. A statement
// after a query's first, or any in a failed transaction (aborted), may not run.
func (g *Guard) notePrepares(res *sqlclass.Result, aborted bool) {
	for i := range res.Statements {
		st := &res.Statements[i]
		certain := i == 0 && !aborted
		switch {
		case st.DeallocateAll:
			for name, p := range g.parsed {
				if name != "" {
					p.deallocated, p.gone = true, p.gone || certain
				}
			}
		case st.Deallocate != "":
			if p := g.parsed[st.Deallocate]; p != nil {
				p.deallocated, p.gone = true, p.gone || certain
			}
		}
		switch {
		case st.Prepare != "":
			if p := g.parsed[st.Prepare]; p != nil && !p.gone {
				// The server fails this PREPARE and keeps the Parse'd statement, unless it was
				// closed or deallocated since: an EXECUTE of the name could run either.
				g.prepared[st.Prepare] = nil
				g.log.Warn("statement prepared under a name a Parse used; EXECUTE of it is refused until it is deallocated", "name", st.Prepare)
				break
			}
			if _, used := g.prepared[st.Prepare]; used {
				// The server keeps the statement it has under this name and fails this PREPARE,
				// unless the earlier PREPARE failed: the guard cannot tell which statement an
				// EXECUTE of the name runs, so it judges none (nil: an EXECUTE of it is refused)
				// until the name is deallocated.
				g.prepared[st.Prepare] = nil
				g.log.Warn("statement prepared again under a name in use; EXECUTE of it is refused until it is deallocated", "name", st.Prepare)
				break
			}
			kept := *st // st may live in storage the next query reuses
			g.prepared[st.Prepare] = &kept
		case st.DeallocateAll && !certain:
			// After the first statement of a query, one that fails stops the rest: this one
			// may not have run, so no name is known to be free, nor known to be what it was.
			for name := range g.prepared {
				g.prepared[name] = nil
			}
		case st.DeallocateAll:
			clear(g.prepared)
		case st.Deallocate != "" && !certain:
			if _, used := g.prepared[st.Deallocate]; used {
				g.prepared[st.Deallocate] = nil
			}
		case st.Deallocate != "":
			delete(g.prepared, st.Deallocate)
		default:
			continue
		}
		g.preparedGen++
	}
}

// verdictIndex numbers the verdicts for Guard.counters, -1 for anything else.
func verdictIndex(a rules.Action) int {
	switch a {
	case rules.Allow:
		return 0
	case rules.Block:
		return 1
	case rules.Approve:
		return 2
	}
	return -1
}

func (g *Guard) count(d *rules.Decision) {
	m := g.sh.Metrics
	if m == nil {
		return
	}
	// The target is fixed per connection, so each verdict's counter is looked up once: the label
	// hashing of WithLabelValues was 2 % of the daemon's CPU on a select-only load.
	if i := verdictIndex(d.Verdict); i < 0 {
		m.Statements.WithLabelValues(g.info.Target.Name, string(d.Verdict)).Inc()
	} else {
		if g.counters[i] == nil {
			g.counters[i] = m.Statements.WithLabelValues(g.info.Target.Name, string(d.Verdict))
		}
		g.counters[i].Inc()
	}
	for _, match := range d.Matches() {
		m.RuleDecisions.WithLabelValues(match.Rule, string(match.Action)).Inc()
	}
}

// enforce turns a decision into the proxy's verdict, holding approve verdicts for a reviewer; it
// returns the approval request id of a held statement.
func (g *Guard) enforce(ctx context.Context, pol *policy.Policy, s *postgres.Statement, d *rules.Decision, params [][]byte) (postgres.Verdict, string) {
	g.count(d)
	switch d.Verdict {
	case rules.Allow:
		return postgres.Verdict{Observe: g.observe()}, ""
	case rules.Block:
		rule := "default"
		if d.Rule != nil {
			rule = d.Rule.Rule
		}
		msg := d.Message
		if msg == "" {
			msg = "not allowed by policy"
		}
		g.log.Info("statement blocked", "rule", rule, "sql", oneLine(g.shownSQL(s.SQL, d.Result, g.ruledColumns(d.Result)), 200))
		text := fmt.Sprintf("enforcer: blocked by rule %q: %s", rule, msg)
		if d.Rule == nil {
			text = fmt.Sprintf("enforcer: blocked by the policy default (%s): %s", d.Default, msg)
		}
		return g.refuse(rule, text, s.SQL,
			"the statement did not reach the database; change it, or ask a policy administrator (`enforcer policy explain` shows why)"), ""
	case rules.Approve:
		return g.hold(ctx, pol, s, d, params)
	}
	return g.refuse("invalid-verdict", "enforcer: internal error: no verdict", "", ""), ""
}

func (g *Guard) hold(ctx context.Context, pol *policy.Policy, s *postgres.Statement, d *rules.Decision, params [][]byte) (postgres.Verdict, string) {
	if g.sh.Approvals == nil || d.Rule == nil {
		return g.refuse("approval-unavailable", "enforcer: this statement needs approval, but no approval service is configured", s.SQL, ""), ""
	}
	if !g.reviewable(s.SQL + g.preparedTexts(d.Result)) {
		g.log.Warn("statement needing approval refused: masked, it would hide code from the reviewer", "rule", d.Rule.Rule)
		return g.refuse(d.Rule.Rule, "enforcer: this statement needs approval, but it cannot be shown safely to a reviewer: "+
			"masking what looks like a secret in it could hide part of its code, and the enforcer cannot split its text into tokens to mask within them", s.SQL,
			"fix the statement's syntax (an unterminated string or comment), or take the secret-looking text (a private key, a token) out of it, and send it again"), ""
	}
	def := pol.RuleDefs[d.Rule.Rule]
	timeout := time.Duration(pol.Approvals.Timeout)
	if s.TxStatus == 'T' || s.TxStatus == 'E' {
		// A held statement inside a transaction keeps its locks; give up sooner.
		timeout = time.Duration(pol.Approvals.TransactionTimeout)
	}
	id := g.info.Identity
	ruled := g.ruledColumns(d.Result)
	prepared := g.preparedTexts(d.Result)
	spec := approval.Spec{
		Identity:   approval.Identity{Subject: id.Subject, Email: id.Email, Groups: id.Groups, SessionID: id.ID, UID: id.UID},
		Process:    approval.Process{Comm: g.info.Origin.Comm, PID: int(g.info.Origin.PID), Cmdline: g.info.Cmdline},
		Target:     g.info.Target.Name,
		Database:   g.database(),
		DBUser:     g.info.DBUser,
		SQL:        s.SQL + prepared,
		DisplaySQL: g.shownSQL(s.SQL, d.Result, ruled) + g.shownSQL(prepared, nil, ruled),
		Rule:       d.Rule.Rule,
		RuleDigest: def.Digest(),
		Approvers:  def.Approvers,
		Quorum:     def.Quorum,
		Timeout:    timeout,
	}
	for i, p := range params {
		ap := approval.Param{Value: p, Null: p == nil}
		if i < len(s.ParamOIDs) {
			ap.TypeOID = s.ParamOIDs[i]
		}
		if i < len(s.ParamFormats) {
			ap.Format = s.ParamFormats[i]
		} else if len(s.ParamFormats) == 1 {
			ap.Format = s.ParamFormats[0]
		}
		spec.Params = append(spec.Params, ap)
	}
	spec.Display = displayApprovalParams(g.displayParams(s, ruled, params))
	g.log.Info("statement held for approval", "rule", d.Rule.Rule, "sql", oneLine(g.shownSQL(s.SQL, d.Result, ruled), 200))
	out, err := g.sh.Approvals.Request(ctx, spec, func(r *approval.Request) error {
		g.recordApproval(r.ID, record.ApprovalRequested, "", "", r.Approvers)
		return s.Notice(&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000", Message: approval.NoticeText(r)})
	})
	if err != nil {
		if approval.IsLimit(err) {
			g.log.Debug("approval refused for its person's limits", "err", err)
		} else {
			g.log.Error("approval failed", "err", err)
		}
		return g.refuse(d.Rule.Rule, "enforcer: approval could not be requested: "+err.Error(), s.SQL, ""), ""
	}
	by, reason := out.Decided()
	g.recordApproval(out.ID(), record.ApprovalOutcome(string(out.State)), by, reason, nil)
	if out.Approved() {
		if err := g.rejudge(out, d); err != nil {
			g.log.Warn("approved statement not run: the policy changed while it waited", "request", out.ID(), "err", err)
			g.recordApproval(out.ID(), record.ApprovalVoided, "", err.Error(), nil)
			return g.refuse(d.Rule.Rule, fmt.Sprintf("enforcer: approved (request %s) but not run: %v", out.ID(), err), s.SQL,
				"send the statement again: it is judged under the current policy, and held for review if that asks for it"), out.ID()
		}
		g.log.Info("statement approved", "request", out.ID(), "rule", d.Rule.Rule)
		return postgres.Verdict{Observe: g.observe()}, out.ID()
	}
	g.log.Info("statement not approved", "request", out.ID(), "state", string(out.State))
	return postgres.Verdict{Action: postgres.Refuse, Error: &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501",
		Message: "enforcer: " + out.Message(), Hint: out.Hint(),
	}}, out.ID()
}

// preparedTexts is what the SQL EXECUTEs of res run that the statement's own text does not show
// (statements PREPAREd earlier in the session), one line each, for reviewers and for the
// approval's binding: approving "EXECUTE p(1)" approves what p is now, and a late grant does
// not pass p prepared anew as something else.
func (g *Guard) preparedTexts(res *sqlclass.Result) string {
	if res == nil {
		return ""
	}
	var b strings.Builder
	here := map[string]bool{}
	for i := range res.Statements {
		st := &res.Statements[i]
		if st.Prepare != "" {
			here[st.Prepare] = true
		}
		if st.Execute == "" || here[st.Execute] { // EXECUTE, and CREATE TABLE … AS EXECUTE
			continue
		}
		if p := g.prepared[st.Execute]; p != nil {
			fmt.Fprintf(&b, "\n-- %s was prepared as:\n%s", st.Execute, p.Text)
		}
	}
	return b.String()
}

// rejudge judges an approved statement again with the policy in force, just before it runs: a
// reload while it waited may block it, or send it to a rule that asks other approvers or more of
// them. The approval stands only for the rule it was given under, with approvers and a quorum
// the recorded decisions meet (approval.Outcome.Confirm). A statement that policy allows
// outright runs: it would have run unreviewed had it been sent now.
func (g *Guard) rejudge(out approval.Outcome, held *rules.Decision) error {
	pol := g.sh.Policy()
	d := pol.Rules.Decide(g.conn, held.Result, g.lookup)
	switch {
	case d.Verdict == rules.Allow:
		return nil
	case d.Verdict != rules.Approve || d.Rule == nil:
		by := "the policy default"
		if d.Rule != nil {
			by = fmt.Sprintf("rule %q", d.Rule.Rule)
		}
		return fmt.Errorf("%w: %s now blocks the statement", approval.ErrPolicyChanged, by)
	}
	def := pol.RuleDefs[d.Rule.Rule]
	return out.Confirm(approval.Rule{Name: d.Rule.Rule, Digest: def.Digest(), Approvers: def.Approvers, Quorum: def.Quorum})
}

func (g *Guard) refuse(rule, msg, sql, hint string) postgres.Verdict {
	e := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501", Message: msg, Hint: hint}
	if rule != "" {
		e.Detail = "enforcer rule: " + rule
	}
	return postgres.Verdict{Action: postgres.Refuse, Error: e}
}

// Result implements postgres.Hook: results are masked before the client sees them, and the
// masked copy is recorded.
func (g *Guard) Result(ctx context.Context, r *postgres.Result) error {
	if g.mask != nil {
		if err := g.mask.result(ctx, r); err != nil {
			return err
		}
	}
	if g.rec != nil {
		if err := g.recordResult(r); err != nil {
			return fmt.Errorf("session log: %w", err)
		}
	}
	return nil
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
