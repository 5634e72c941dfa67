// Package httpguard is the policy side of HTTP targets: it judges each request an agent sends
// with the policy's rules, holds requests a rule sends for approval until a reviewer decides that
// exact request, chooses how responses are masked, and records every request and what the agent
// received. It is to internal/proto/http what internal/pgguard is to internal/proto/postgres.
package httpguard

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/record"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// Shared is what every HTTP connection's guard uses.
type Shared struct {
	Policy func() *policy.Policy
	// Approvals holds requests whose verdict is approve; nil refuses them (fail closed).
	Approvals *approval.Broker
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	// Recorder, if set, records every session; if it cannot write, requests are refused.
	Recorder *record.Recorder
}

// ConnInfo describes the connection a guard serves.
type ConnInfo struct {
	ID       string
	Target   *policy.Target
	Identity identity.Session
	Origin   redirect.Origin
	Argv     []string // the process's arguments, for the record and reviewers
	Exe      string
	Cgroup   string
	// Upstream is the server's address, for the record; it is also the Host a request without
	// one (HTTP/1.0) reaches the server with when Host is "" (net/http's Transport sends it).
	Upstream string
	// User is the upstream account the credential logs in as (HTTP Basic), for the approval's
	// binding and the record; "" when the credential names none.
	User string
	// Host is the Host header the proxy sends upstream in place of the client's (a pinned host,
	// or the upstream's own name with a credential); "" when the client's is forwarded.
	Host string
	// ClientParams is what the agent's connection said of itself, for the record: with HTTPS,
	// "tls" (the version) and "server_name" (the name it asked for, if any).
	ClientParams map[string]string
}

// Guard is the hook of one HTTP connection. The proxy calls it for one request at a time.
type Guard struct {
	sh   *Shared
	info ConnInfo
	conn *rules.Conn
	log  *slog.Logger
	// plan masks responses, recorded requests and what reviewers see; nil when this identity's
	// values pass in clear. Fixed for the connection: a reload that changes masking ends it.
	plan *mask.Plan

	mu sync.Mutex
	// cur is the request Request last judged, until Exchanged reports it.
	cur *pending
	// rec is nil when recording is off.
	rec     *recording
	recErr  error // the log could not take the session's start: every request is refused
	started time.Time
}

// pending is what Exchanged needs of a judged request.
type pending struct {
	req        *httpproto.Request
	verdict    string
	rule       string
	approvalID string
	// statementID is set when the request was written ahead: its result is recorded apart.
	statementID uint64
}

type recording struct {
	log    *record.Recorder
	strict bool
	id     string
	nextID uint64
}

// NewGuard returns the hook for one connection and records the session's start.
func (sh *Shared) NewGuard(ci ConnInfo) *Guard {
	s := ci.Identity
	g := &Guard{
		sh:      sh,
		info:    ci,
		log:     sh.Log.With("conn", ci.ID, "target", ci.Target.Name, "subject", s.Subject),
		started: time.Now(),
	}
	g.conn = rules.NewConn(
		rules.Identity{Subject: s.Subject, Email: s.Email, Groups: s.Groups, Provider: s.Provider},
		rules.Process{Comm: ci.Origin.Comm, Exe: ci.Exe, PID: int64(ci.Origin.PID), UID: int64(ci.Origin.UID)},
		rules.Target{Name: ci.Target.Name, Protocol: ci.Target.Protocol, User: ci.User})
	pol := sh.Policy()
	g.plan = pol.MaskFor(ci.Target.Name, s.Groups)
	if g.plan != nil {
		// Arguments carry secrets too (curl -H "Authorization: …", URLs with passwords).
		g.info.Argv = g.plan.MaskStrings(ci.Argv)
		g.info.ClientParams = g.plan.MaskStringMap(ci.ClientParams) // the server name the agent asked for
	}
	if sh.Recorder != nil && !pol.Recording.Disabled {
		g.rec = &recording{log: sh.Recorder, strict: pol.Recording.Strict(), id: record.NewSessionID(g.started)}
		g.recordStart()
	}
	return g
}

// SessionID is the id of this connection's recorded session ("" when recording is off).
func (g *Guard) SessionID() string {
	if g.rec == nil {
		return ""
	}
	return g.rec.id
}

func (g *Guard) recordStart() {
	id, o, t := g.info.Identity, g.info.Origin, g.info.Target
	err := g.append(record.Event{Type: record.TypeSessionStart, Time: g.started,
		Start: &record.SessionStart{
			CgroupID:     o.CgroupID,
			CgroupPath:   g.info.Cgroup,
			ClientParams: g.info.ClientParams,
			Identity:     record.Identity{Subject: id.Subject, Email: id.Email, Groups: id.Groups, Provider: id.Provider},
			Origin:       o.Dst.String(),
			Process:      record.Process{Comm: o.Comm, Exe: g.info.Exe, PID: int(o.PID), UID: int(o.UID), Cmdline: g.info.Argv},
			Protocol:     policy.ProtoHTTP,
			Target:       record.Target{Name: t.Name, Address: g.info.Upstream, User: g.info.User},
		}}, record.Async)
	if err != nil {
		g.recErr = err
		g.log.Error("session log unavailable; refusing requests", "err", err)
	}
}

func (g *Guard) append(ev record.Event, d record.Durability) error {
	ev.Session = g.rec.id
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if g.rec.strict {
		d = record.WriteAhead
	}
	return g.rec.log.Append(ev, d)
}

// safeMethod reports whether a request with method m cannot change state on a server that follows
// HTTP's semantics (RFC 9110 9.2.1): such requests join the log's group commit without waiting
// for it, like SQL reads; every other request is durably recorded before it is forwarded.
func safeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// Request implements httpproto.Hook.
func (g *Guard) Request(ctx context.Context, r *httpproto.Request) httpproto.Verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cur = &pending{req: r}
	if g.recErr != nil {
		g.cur.verdict = record.VerdictBlock
		return unavailable(g.recErr)
	}
	pol := g.sh.Policy()
	d := pol.Rules.DecideHTTP(g.conn, RuleRequest(r, g.sentHost(r)))
	g.count(d)
	rule := ""
	if d.Rule != nil {
		rule = d.Rule.Rule
	}
	g.cur.rule = rule
	switch d.Action {
	case rules.Allow:
		g.cur.verdict = record.VerdictAllow
		if err := g.writeAhead(r, false); err != nil {
			g.cur.verdict = record.VerdictBlock
			return unavailable(err)
		}
		return httpproto.Verdict{Allow: true}
	case rules.Approve:
		g.cur.verdict = record.VerdictApprove
		return g.hold(ctx, pol, r, d)
	default:
		g.cur.verdict = record.VerdictBlock
		msg := "enforcer: request blocked"
		if rule != "" {
			msg += " by rule " + rule
		}
		if d.Rule != nil && d.Rule.Message != "" {
			msg += ": " + d.Rule.Message
		} else if d.Reason != "" {
			msg += ": " + d.Reason
		}
		g.log.Info("request blocked", "rule", rule, "method", r.Method, "path", g.shown(r.Path))
		return httpproto.Verdict{Status: http.StatusForbidden, Message: msg, Header: ruleHeader(rule)}
	}
}

// unavailable is the refusal of a request the log could not take.
func unavailable(err error) httpproto.Verdict {
	return httpproto.Verdict{Status: http.StatusServiceUnavailable,
		Message: "enforcer: the session log cannot be written, so nothing is forwarded: " + err.Error(),
		Hint:    "an administrator must look at the enforcer daemon's log"}
}

func ruleHeader(rule string) http.Header {
	if rule == "" {
		return nil
	}
	return http.Header{"X-Enforcer-Rule": {rule}}
}

// RuleRequest is r as the rules see it: the path percent-decoded (the proxy has refused every
// encoding a server could read as a separator, a dot or another character, so what is left
// decodes to what the server routes by: "/users/a%40b" is "/users/a@b"), header names lower
// case, list headers' values joined, and Host the one sent upstream: sentHost when the proxy
// sets it, the client's otherwise.
func RuleRequest(r *httpproto.Request, sentHost string) rules.HTTP {
	h := make(map[string]string, len(r.Header))
	for k, vs := range r.Header {
		h[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	p := r.Path
	if d, err := url.PathUnescape(p); err == nil {
		p = d
	}
	return rules.HTTP{Method: r.Method, Path: p, Query: r.RawQuery, Host: cmp.Or(sentHost, r.Host), Headers: h}
}

// sentHost is the Host the server gets for r in place of r's own, for RuleRequest: the one the
// proxy pins, or for a request without Host whose own would be forwarded, the upstream's
// address, which the Transport sends then; "" when r's own Host is sent.
func (g *Guard) sentHost(r *httpproto.Request) string {
	if g.info.Host == "" && r.Host == "" {
		return g.info.Upstream
	}
	return g.info.Host
}

func (g *Guard) count(d rules.HTTPDecision) {
	m := g.sh.Metrics
	if m == nil {
		return
	}
	m.Statements.WithLabelValues(g.info.Target.Name, string(d.Action)).Inc()
	for _, match := range d.Matches {
		m.RuleDecisions.WithLabelValues(match.Rule, string(match.Action)).Inc()
	}
}

// writeAhead records a request that can change state before it is forwarded, and an approved
// one (every request in strict mode): its record must be durable first. Other requests are
// recorded with their response.
func (g *Guard) writeAhead(r *httpproto.Request, approved bool) error {
	if g.rec == nil || (safeMethod(r.Method) && !approved && !g.rec.strict) {
		return nil
	}
	g.rec.nextID++
	st := g.statement(r)
	st.ID = g.rec.nextID
	if err := g.append(record.Event{Type: record.TypeStatement, Statement: st}, record.WriteAhead); err != nil {
		g.log.Error("session log: request not recorded, refusing it", "err", err)
		return err
	}
	g.cur.statementID = st.ID
	return nil
}

// statement is the record of the current request, as the policy judged it.
func (g *Guard) statement(r *httpproto.Request) *record.Statement {
	st := &record.Statement{
		Protocol:   policy.ProtoHTTP,
		Text:       g.recordedText(r),
		Verdict:    g.cur.verdict,
		Rule:       g.cur.rule,
		ApprovalID: g.cur.approvalID,
		Class:      "read",
	}
	if !safeMethod(r.Method) {
		st.Class = "write"
	}
	if len(r.Body) > 0 {
		b := g.shownBody(r.Header, r.Body)
		st.Params = []*string{&b}
	}
	return st
}

// requestLine is the request as a reviewer and the approval binding see it.
func requestLine(r *httpproto.Request) string {
	s := r.Method + " " + r.Path
	if r.RawQuery != "" {
		s += "?" + r.RawQuery
	}
	return s
}

// hiddenHeaders are request headers whose values are credentials of the agent's own: recorded
// and shown by name only.
var hiddenHeaders = map[string]bool{"Authorization": true, "Proxy-Authorization": true, "Cookie": true}

// requestText is r's request line, its Host (when withHost) and every header field it is forwarded
// with, sorted, one a line. Bound, it is r as sent, the approval's binding: whatever field the
// service reads (X-HTTP-Method-Override, a second Content-Type, a tenant, Content-Encoding) can
// make the same line and body another request. Shown (records, reviewers), the agent's
// credentials are redacted and the whole is masked at once, so a field's name is the detectors'
// context for its value (X-Api-Key: …).
func (g *Guard) requestText(r *httpproto.Request, withHost, bound bool) string {
	var b strings.Builder
	b.WriteString(requestLine(r))
	if withHost && r.Host != "" {
		b.WriteString("\nHost: ")
		b.WriteString(r.Host)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Header)) {
		for _, v := range r.Header[k] {
			b.WriteString("\n")
			b.WriteString(k)
			b.WriteString(": ")
			if hiddenHeaders[k] && !bound {
				b.WriteString("[REDACTED]")
			} else {
				b.WriteString(v)
			}
		}
	}
	if bound {
		return b.String()
	}
	return g.shownHead(b.String())
}

// recordedText is the request line, its Host and its headers, masked, as the record keeps them.
func (g *Guard) recordedText(r *httpproto.Request) string {
	return g.requestText(r, true, false)
}

// shown is s with sensitive values masked when this connection masks.
func (g *Guard) shown(s string) string {
	if g.plan == nil {
		return s
	}
	return g.plan.MaskString(s)
}

// maxShownBody bounds what a compressed request body is decoded to for the record and reviewers.
const maxShownBody = 8 << 20

// shownBody is a request body as the record and reviewers see it: decoded when gzip, masked as
// responses are (JSON keys and values, text); a body that cannot be masked (another coding, a
// charset that hides ASCII, binary data) is shown by its size only, never as bytes a reviewer
// cannot read or a detector could not see into.
func (g *Guard) shownBody(h http.Header, body []byte) string {
	shown, _ := g.displayBody(h, body)
	return shown
}

// displayBody is shownBody, and whether it shows all of the body's parts (see maskBody).
func (g *Guard) displayBody(h http.Header, body []byte) (shown string, exact bool) {
	if g.plan == nil {
		return string(body), true
	}
	data, note := body, ""
	switch codings := bodyCodings(h); {
	case len(codings) == 0:
	case len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip"):
		decoded, err := gunzipBounded(body, maxShownBody)
		if err != nil {
			return fmt.Sprintf("[%d bytes, gzip, not shown: %v]", len(body), err), true
		}
		data, note = decoded, fmt.Sprintf("[gzip, %d bytes; decoded:]\n", len(body))
	default:
		return fmt.Sprintf("[%d bytes, Content-Encoding %s, not shown: they could not be masked]", len(body), strings.Join(codings, ", ")), true
	}
	out, exact, err := g.maskBody(h.Get("Content-Type"), data)
	if err != nil {
		return fmt.Sprintf("[%d bytes, not shown: they could not be masked: %v]", len(body), err), true
	}
	return note + string(out), exact
}

// bodyCodings lists the content codings of a request body, lower case, without identity.
func bodyCodings(h http.Header) []string {
	var codings []string
	for _, v := range h["Content-Encoding"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.ToLower(strings.TrimSpace(tok)); tok != "" && tok != "identity" {
				codings = append(codings, tok)
			}
		}
	}
	return codings
}

// gunzipBounded decodes a gzip body of at most limit decoded bytes.
func gunzipBounded(body []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("not gzip: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("corrupt gzip: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("more than %d bytes once decoded", limit)
	}
	return out, nil
}

// clientHostForwarded says whether the agent's Host is the one sent upstream, so that it picks the
// virtual host the request reaches (and is bound and shown with an approval): only when the target
// pins no host and has no credential (the daemon sends a credential with the upstream's own name:
// ConnInfo.Host).
func (g *Guard) clientHostForwarded() bool { return g.info.Host == "" }

// hold waits for reviewers to approve exactly this request: its method, path, query, header fields
// (Host when it is forwarded) and body, for this identity on this target.
func (g *Guard) hold(ctx context.Context, pol *policy.Policy, r *httpproto.Request, d rules.HTTPDecision) httpproto.Verdict {
	if g.sh.Approvals == nil || d.Rule == nil {
		return httpproto.Verdict{Status: http.StatusForbidden, Message: "enforcer: this request needs approval, but no approval service is configured"}
	}
	if _, exact := g.displayBody(r.Header, r.Body); !exact {
		g.log.Warn("request needing approval refused: masked, its body would hide more than a secret from the reviewer", "rule", d.Rule.Rule)
		return httpproto.Verdict{Status: http.StatusForbidden, Header: ruleHeader(d.Rule.Rule),
			Message: "enforcer: this request needs approval, but its body cannot be shown safely to a reviewer: what looks like a secret in it runs across lines, and masking it could hide other parts of the body",
			Hint:    "send the body as JSON or as a form, or take the secret-looking text (a private key) out of it"}
	}
	def := pol.RuleDefs[d.Rule.Rule]
	id := g.info.Identity
	withHost := g.clientHostForwarded()
	spec := approval.Spec{
		Identity:   approval.Identity{Subject: id.Subject, Email: id.Email, Groups: id.Groups, SessionID: id.ID, UID: id.UID},
		Process:    approval.Process{Comm: g.info.Origin.Comm, PID: int(g.info.Origin.PID), Cmdline: strings.Join(g.info.Argv, " ")},
		Target:     g.info.Target.Name,
		DBUser:     g.info.User,
		SQL:        approval.HTTPPrefix + g.requestText(r, withHost, true),
		DisplaySQL: approval.HTTPPrefix + g.requestText(r, withHost, false),
		Rule:       d.Rule.Rule,
		RuleDigest: def.Digest(),
		Approvers:  def.Approvers,
		Quorum:     def.Quorum,
		Timeout:    time.Duration(pol.Approvals.Timeout),
	}
	if len(r.Body) > 0 {
		spec.Params = []approval.Param{{Value: r.Body}}
		// Cut here, with the marker that gives the whole shown body's length and SHA-256.
		shown := g.shownBody(r.Header, r.Body)
		cut := record.CutValue(shown, approval.MaxShownParam)
		spec.Display = []approval.DisplayParam{{Value: cut, Cut: cut != shown}}
	}
	g.log.Info("request held for approval", "rule", d.Rule.Rule, "request", oneLine(g.shown(requestLine(r)), 200))
	out, err := g.sh.Approvals.Request(ctx, spec, func(req *approval.Request) error {
		g.recordApproval(req.ID, record.ApprovalRequested, "", "", req.Approvers)
		return nil
	})
	if err != nil {
		if approval.IsLimit(err) {
			g.log.Debug("approval refused for its person's limits", "err", err)
		} else {
			g.log.Error("approval failed", "err", err)
		}
		return httpproto.Verdict{Status: http.StatusForbidden, Message: "enforcer: approval could not be requested: " + err.Error(), Header: ruleHeader(d.Rule.Rule)}
	}
	g.cur.approvalID = out.ID()
	by, reason := out.Decided()
	g.recordApproval(out.ID(), record.ApprovalOutcome(string(out.State)), by, reason, nil)
	hdr := ruleHeader(d.Rule.Rule)
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("X-Enforcer-Approval", out.ID())
	if !out.Approved() {
		g.log.Info("request not approved", "request", out.ID(), "state", string(out.State))
		msg := strings.Replace(out.Message(), "statement denied", "request denied", 1)
		hint := strings.Replace(out.Hint(), "identical statement", "identical request", 1)
		return httpproto.Verdict{Status: http.StatusForbidden, Message: "enforcer: " + msg, Hint: hint, Header: hdr}
	}
	if err := g.rejudge(out, r); err != nil {
		g.log.Warn("approved request not forwarded: the policy changed while it waited", "request", out.ID(), "err", err)
		g.recordApproval(out.ID(), record.ApprovalVoided, "", err.Error(), nil)
		g.cur.verdict = record.VerdictBlock
		return httpproto.Verdict{Status: http.StatusForbidden, Message: fmt.Sprintf("enforcer: approved (request %s) but not forwarded: %v", out.ID(), err),
			Hint: "send the request again: it is judged under the current policy, and held for review if that asks for it", Header: hdr}
	}
	g.log.Info("request approved", "request", out.ID(), "rule", d.Rule.Rule)
	if err := g.writeAhead(r, true); err != nil {
		g.cur.verdict = record.VerdictBlock
		return unavailable(err)
	}
	return httpproto.Verdict{Allow: true}
}

// rejudge judges an approved request again with the policy in force, just before it is
// forwarded: a reload while it waited may block it, or send it to a rule that asks other
// approvers or more of them. The approval stands only for the rule it was given under, with
// approvers and a quorum the recorded decisions meet (approval.Outcome.Confirm). A request that
// policy allows outright is forwarded: it would have gone unreviewed had it been sent now.
func (g *Guard) rejudge(out approval.Outcome, r *httpproto.Request) error {
	pol := g.sh.Policy()
	d := pol.Rules.DecideHTTP(g.conn, RuleRequest(r, g.sentHost(r)))
	switch {
	case d.Action == rules.Allow:
		return nil
	case d.Action != rules.Approve || d.Rule == nil:
		by := "the policy default"
		if d.Rule != nil {
			by = fmt.Sprintf("rule %q", d.Rule.Rule)
		}
		return fmt.Errorf("%w: %s now blocks the request", approval.ErrPolicyChanged, by)
	}
	def := pol.RuleDefs[d.Rule.Rule]
	return out.Confirm(approval.Rule{Name: d.Rule.Rule, Digest: def.Digest(), Approvers: def.Approvers, Quorum: def.Quorum})
}

func (g *Guard) recordApproval(id, state, by, reason string, approvers []string) {
	if g.rec == nil {
		return
	}
	err := g.append(record.Event{Type: record.TypeApproval,
		Approval: &record.Approval{ID: id, State: state, By: by, Reason: reason, Approvers: approvers}}, record.Async)
	if err != nil {
		g.log.Error("recording approval", "err", err)
	}
}

// Masker implements httpproto.Hook.
func (g *Guard) Masker(r *httpproto.Request) httpproto.Masker {
	if g.plan == nil {
		return nil
	}
	return g.plan
}

// Exchanged implements httpproto.Hook: it records the request (unless it was written ahead) with
// what the client received.
func (g *Guard) Exchanged(e *httpproto.Exchange) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := g.cur
	g.cur = nil
	if cur == nil || cur.req != e.Request || !e.Judged {
		// Refused by the proxy before the policy saw it (a malformed or oversized request).
		cur = &pending{req: e.Request, verdict: record.VerdictBlock}
		if g.sh.Metrics != nil {
			g.sh.Metrics.Statements.WithLabelValues(g.info.Target.Name, "invalid").Inc()
		}
	}
	if g.rec == nil || g.recErr != nil {
		return
	}
	res := g.result(e)
	if cur.statementID != 0 {
		res.StatementID = cur.statementID
		if err := g.append(record.Event{Type: record.TypeResult, Result: res}, record.Async); err != nil {
			g.log.Error("recording response", "err", err)
		}
		return
	}
	g.cur = cur
	st := g.statement(e.Request)
	g.cur = nil
	st.Result = res
	if err := g.append(record.Event{Type: record.TypeStatement, Time: e.Request.Started, Statement: st}, record.Async); err != nil {
		g.log.Error("recording request", "err", err)
	}
}

// result is the record of what the client received.
func (g *Guard) result(e *httpproto.Exchange) *record.Result {
	res := &record.Result{
		DurationUS:  e.Duration.Microseconds(),
		ContentType: e.ContentType,
		Bytes:       e.BodyBytes,
		Truncated:   e.Truncated,
	}
	if e.Status != 0 {
		res.CommandTag = strconv.Itoa(e.Status) + " " + http.StatusText(e.Status)
	}
	// Errors and refusals can quote what the agent sent (the proxy's 400s name the bad field)
	// or what the service answered.
	switch {
	case e.Err != nil:
		res.Error = g.shown(e.Err.Error())
	case !e.Verdict.Allow && e.Verdict.Message != "":
		res.Error = g.shown(e.Verdict.Message)
	}
	if len(e.Body) > 0 {
		// The body as the client received it: the service's is masked already when this
		// connection masks; a refusal is the proxy's own, and may quote the request.
		b := string(e.Body)
		if !e.Verdict.Allow {
			b = g.shown(b)
		}
		res.Columns = []string{"body"}
		res.Rows = [][]*string{{&b}}
		res.RowCount = 1
	}
	return res
}

// End records the session's end.
func (g *Guard) End(reason string, bytesIn, bytesOut int64) {
	if g.rec == nil || g.recErr != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.append(record.Event{Type: record.TypeSessionEnd,
		End: &record.SessionEnd{DurationUS: time.Since(g.started).Microseconds(), Reason: reason, BytesIn: bytesIn, BytesOut: bytesOut}}, record.Async)
	if err != nil {
		g.log.Error("recording session end", "err", err)
	}
}

// clip cuts s to about n bytes, at a character boundary, saying how long it was.

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
