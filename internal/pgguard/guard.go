// Package pgguard is the policy side of a Postgres session: it implements the proxy's hook by
// judging each statement with the policy's rules, holding statements that need a reviewer,
// masking results and recording the session. The wire protocol is internal/proto/postgres's job;
// the decisions are internal/policy's; this package applies them to one connection.
package pgguard

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
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
}

// ConnInfo describes the connection a guard serves.
type ConnInfo struct {
	ID       string
	Target   *policy.Target
	Identity identity.Session
	Origin   redirect.Origin
	Cmdline  string
	Database string // upstream database (the client's unless the target overrides it)
	DBUser   string // upstream user
	// Connect opens a separate connection with the target's credentials, for catalog lookups.
	Connect Connector
}

// Guard is the hook of one connection.
type Guard struct {
	sh   *Shared
	info ConnInfo
	conn *rules.Conn
	log  *slog.Logger

	mu sync.Mutex
	// prepared are SQL-level PREPAREs this connection ran, for judging EXECUTE.
	prepared map[string]*sqlclass.Statement
	// parsed are protocol-level statements the guard let through Parse, by name.
	parsed map[string]*parsedStatement
	// mask is nil when this identity sees the target's values in clear.
	mask *masker
	db   atomic.Value // string
}

type parsedStatement struct {
	decision rules.Decision
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
	g.conn = rules.NewConn(g.ruleIdentity(), g.ruleProcess(),
		rules.Target{Name: ci.Target.Name, Protocol: ci.Target.Protocol, Database: ci.Database, User: ci.DBUser})
	if plan := sh.Policy().MaskFor(ci.Target.Name, s.Groups); plan != nil {
		g.mask = &masker{plan: plan, g: g}
	}
	return g
}

// database is the upstream database this connection uses, as the proxy reported it with the
// first statement.
func (g *Guard) database() string {
	if db, _ := g.db.Load().(string); db != "" {
		return db
	}
	return g.info.Database
}

// observe says whether rows and COPY data of allowed statements must reach Result.
func (g *Guard) observe() bool { return g.mask != nil }

func (g *Guard) ruleIdentity() rules.Identity {
	s := g.info.Identity
	return rules.Identity{Subject: s.Subject, Email: s.Email, Groups: s.Groups, Provider: s.Provider}
}

func (g *Guard) ruleProcess() rules.Process {
	o := g.info.Origin
	return rules.Process{Comm: o.Comm, PID: int64(o.PID), UID: int64(o.UID)}
}

func (g *Guard) lookupPrepared(name string) *sqlclass.Statement {
	return g.prepared[name]
}

// Statement implements postgres.Hook.
func (g *Guard) Statement(ctx context.Context, s *postgres.Statement) postgres.Verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.Database != "" && g.database() != s.Database {
		g.db.Store(s.Database)
		g.conn = rules.NewConn(g.ruleIdentity(), g.ruleProcess(), rules.Target{Name: g.info.Target.Name, Protocol: g.info.Target.Protocol, Database: s.Database, User: g.info.DBUser})
	}
	pol := g.sh.Policy()
	switch s.Kind {
	case postgres.KindQuery:
		res := g.sh.Classifier.Classify(s.SQL)
		d := pol.Rules.Decide(g.conn, res, g.lookupPrepared)
		v := g.enforce(ctx, pol, s, &d, nil)
		if v.Action == postgres.Allow {
			g.notePrepares(res)
		}
		return v
	case postgres.KindParse:
		res := g.sh.Classifier.Classify(s.SQL)
		d := pol.Rules.Decide(g.conn, res, g.lookupPrepared)
		if d.Verdict == rules.Block {
			return g.enforce(ctx, pol, s, &d, nil)
		}
		// Allowed and approve verdicts pass Parse, which runs nothing; an approve is held at
		// Execute, when the parameter values it is bound to are known.
		g.count(&d)
		g.parsed[s.StatementName] = &parsedStatement{decision: d}
		return postgres.Verdict{}
	case postgres.KindExecute:
		p := g.parsed[s.StatementName]
		if !s.Known || p == nil {
			return g.refuse("statement-not-parsed-here", fmt.Sprintf("enforcer: prepared statement %q was not prepared through the enforcer on this connection", s.StatementName),
				s.SQL, "prepare statements with the extended protocol (Parse) or PREPARE on the same connection, so the enforcer can judge them")
		}
		if p.decision.Verdict == rules.Approve {
			return g.enforce(ctx, pol, s, &p.decision, s.Params)
		}
		return postgres.Verdict{Observe: g.observe()}
	case postgres.KindFunctionCall:
		return g.refuse("function-call", fmt.Sprintf("enforcer: fast-path function calls (function OID %d) are not allowed: their effects cannot be judged", s.FunctionOID),
			"", "call the function in a SELECT statement instead")
	}
	return g.refuse("unknown-message", "enforcer: unsupported statement message", "", "")
}

// notePrepares tracks SQL-level PREPARE and DEALLOCATE so an EXECUTE is judged as its body.
func (g *Guard) notePrepares(res *sqlclass.Result) {
	for i := range res.Statements {
		st := &res.Statements[i]
		switch {
		case st.Prepare != "":
			g.prepared[st.Prepare] = st
		case st.DeallocateAll:
			clear(g.prepared)
		case st.Deallocate != "":
			delete(g.prepared, st.Deallocate)
		}
	}
}

func (g *Guard) count(d *rules.Decision) {
	m := g.sh.Metrics
	if m == nil {
		return
	}
	m.Statements.WithLabelValues(g.info.Target.Name, string(d.Verdict)).Inc()
	for _, match := range d.Matches() {
		m.RuleDecisions.WithLabelValues(match.Rule, string(match.Action)).Inc()
	}
}

// enforce turns a decision into the proxy's verdict, holding approve verdicts for a reviewer.
func (g *Guard) enforce(ctx context.Context, pol *policy.Policy, s *postgres.Statement, d *rules.Decision, params [][]byte) postgres.Verdict {
	g.count(d)
	switch d.Verdict {
	case rules.Allow:
		return postgres.Verdict{Observe: g.observe()}
	case rules.Block:
		rule := "default"
		if d.Rule != nil {
			rule = d.Rule.Rule
		}
		msg := d.Message
		if msg == "" {
			msg = "not allowed by policy"
		}
		g.log.Info("statement blocked", "rule", rule, "sql", oneLine(s.SQL, 200))
		return g.refuse(rule, fmt.Sprintf("enforcer: blocked by rule %q: %s", rule, msg), s.SQL,
			"the statement did not reach the database; change it, or ask a policy administrator (`enforcer policy explain` shows why)")
	case rules.Approve:
		return g.hold(ctx, pol, s, d, params)
	}
	return g.refuse("invalid-verdict", "enforcer: internal error: no verdict", "", "")
}

func (g *Guard) hold(ctx context.Context, pol *policy.Policy, s *postgres.Statement, d *rules.Decision, params [][]byte) postgres.Verdict {
	if g.sh.Approvals == nil || d.Rule == nil {
		return g.refuse("approval-unavailable", "enforcer: this statement needs approval, but no approval service is configured", s.SQL, "")
	}
	def := pol.RuleDefs[d.Rule.Rule]
	timeout := time.Duration(pol.Approvals.Timeout)
	if s.TxStatus == 'T' || s.TxStatus == 'E' {
		// A held statement inside a transaction keeps its locks; give up sooner.
		timeout = time.Duration(pol.Approvals.TransactionTimeout)
	}
	id := g.info.Identity
	spec := approval.Spec{
		Identity:  approval.Identity{Subject: id.Subject, Email: id.Email, Groups: id.Groups, SessionID: id.ID, UID: id.UID},
		Process:   approval.Process{Comm: g.info.Origin.Comm, PID: int(g.info.Origin.PID), Cmdline: g.info.Cmdline},
		Target:    g.info.Target.Name,
		Database:  g.info.Database,
		DBUser:    g.info.DBUser,
		SQL:       s.SQL,
		Rule:      d.Rule.Rule,
		Approvers: def.Approvers,
		Quorum:    def.Quorum,
		Timeout:   timeout,
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
	g.log.Info("statement held for approval", "rule", d.Rule.Rule, "sql", oneLine(s.SQL, 200))
	out, err := g.sh.Approvals.Request(ctx, spec, func(r *approval.Request) error {
		return s.Notice(&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000", Message: approval.NoticeText(r)})
	})
	if err != nil {
		g.log.Error("approval failed", "err", err)
		return g.refuse(d.Rule.Rule, "enforcer: approval could not be requested: "+err.Error(), s.SQL, "")
	}
	if out.Approved() {
		g.log.Info("statement approved", "request", out.ID(), "rule", d.Rule.Rule)
		return postgres.Verdict{Observe: g.observe()}
	}
	g.log.Info("statement not approved", "request", out.ID(), "state", string(out.State))
	return postgres.Verdict{Action: postgres.Refuse, Error: &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501",
		Message: "enforcer: " + out.Message(), Hint: out.Hint(),
	}}
}

func (g *Guard) refuse(rule, msg, sql, hint string) postgres.Verdict {
	e := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501", Message: msg, Hint: hint}
	if rule != "" {
		e.Detail = "enforcer rule: " + rule
	}
	return postgres.Verdict{Action: postgres.Refuse, Error: e}
}

// Result implements postgres.Hook: results are masked before the client sees them.
func (g *Guard) Result(ctx context.Context, r *postgres.Result) error {
	if g.mask != nil {
		return g.mask.result(ctx, r)
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
