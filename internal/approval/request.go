// Package approval holds risky statements until a human reviewer approves them.
//
// A Broker creates a Request for a held statement, tells the caller the request id right away (so
// the client can be sent a notice), and blocks until reviewers reach the rule's quorum, someone
// denies, the timeout passes or the caller gives up. Requests and one-time grants live in a Store:
// a JSON file in the daemon's state directory by default, or PostgreSQL for a fleet of daemons that
// share reviewers.
//
// An approval is bound to exactly the statement that was reviewed: the binding hash covers the SQL
// text, every parameter value and type, the target, database, database user and the requester, so
// approving `id = 1` never lets `id = 2` through. It also counts only under the rule it was asked
// under, as the policy defined that rule (Spec.RuleDigest): a reload that changes the rule ends
// the requests pending under it and revokes its grants (Broker.ApplyRules), a grant passes only a
// retry the policy sends to the same definition, and the caller judges an approved statement again
// before it runs (Outcome.Confirm).
package approval

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// State is where a request is in its life.
type State string

// States of a request. Only StatePending can change, with one exception: an expired request can
// still be approved within the late window, which stores a one-time grant for a retry.
const (
	StatePending   State = "pending"
	StateApproved  State = "approved"
	StateDenied    State = "denied"
	StateExpired   State = "expired"
	StateWithdrawn State = "withdrawn"
	StateFailed    State = "failed"
)

func (s State) valid() bool {
	switch s {
	case StatePending, StateApproved, StateDenied, StateExpired, StateWithdrawn, StateFailed:
		return true
	}
	return false
}

// Verdict is a reviewer's answer.
type Verdict string

// Verdicts a reviewer can give.
const (
	Approve Verdict = "approve"
	Deny    Verdict = "deny"
)

// Identity is the person (OIDC session) behind the held statement.
type Identity struct {
	Subject   string   `json:"subject"`
	Email     string   `json:"email,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	SessionID string   `json:"session_id,omitempty"`
	UID       uint32   `json:"uid"`
}

// Process is the local process that sent the statement.
type Process struct {
	Comm    string `json:"comm,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// DisplayParam is one bind parameter as reviewers see it: the value is already masked by the caller.
type DisplayParam struct {
	TypeOID uint32 `json:"type_oid,omitempty"`
	Value   string `json:"value"`
	Null    bool   `json:"null,omitempty"`
	// Cut is set when Value is the parameter's first bytes, cut at MaxShownParam or
	// MaxShownParams and marked with the whole value's length and SHA-256.
	Cut bool `json:"cut,omitempty"`
}

// Reviewer is the person deciding, from their own OIDC session.
type Reviewer struct {
	Subject string   `json:"subject"`
	Email   string   `json:"email,omitempty"`
	Groups  []string `json:"groups,omitempty"`
}

// Decision is one reviewer's vote.
type Decision struct {
	Reviewer Reviewer  `json:"reviewer"`
	Verdict  Verdict   `json:"verdict"`
	Reason   string    `json:"reason,omitempty"`
	Time     time.Time `json:"time"`
}

// Request is a held statement waiting for (or done with) review.
type Request struct {
	ID       string    `json:"id"`
	Created  time.Time `json:"created"`
	Deadline time.Time `json:"deadline"`
	// Owner names the daemon whose client waits for this request; after that daemon restarts, its
	// pending requests are failed because nobody waits for them any more.
	Owner string `json:"owner,omitempty"`

	Identity Identity       `json:"identity"`
	Process  Process        `json:"process"`
	Target   string         `json:"target"`
	Database string         `json:"database"`
	DBUser   string         `json:"db_user"`
	SQL      string         `json:"sql"`
	Params   []DisplayParam `json:"params,omitempty"`
	// SQLCut is set when SQL is the statement's first bytes, cut at MaxShownText and marked with
	// the whole text's length and SHA-256; ParamsOmitted counts parameters past MaxShownParams,
	// not shown. Hash covers the whole statement either way.
	SQLCut        bool `json:"sql_cut,omitempty"`
	ParamsOmitted int  `json:"params_omitted,omitempty"`
	// Hash is the hex SHA-256 binding of the exact statement (see Binding).
	Hash string `json:"hash"`

	Rule string `json:"rule"`
	// RuleDigest identifies the rule's definition when the request was made (Spec.RuleDigest):
	// a reload that changes the rule ends the request (Broker.ApplyRules).
	RuleDigest string        `json:"rule_digest,omitempty"`
	Approvers  []string      `json:"approvers"`
	Quorum     int           `json:"quorum"`
	Timeout    time.Duration `json:"timeout"`

	State     State      `json:"state"`
	Decisions []Decision `json:"decisions,omitempty"`
	// Closed is when the request left StatePending.
	Closed time.Time `json:"closed,omitzero"`
	// Reason says why a request failed, was withdrawn or denied (the denying reviewer's reason).
	Reason string `json:"reason,omitempty"`
	// Late is set when the approval came after the request expired: the waiting client already got
	// an error, and a one-time grant lets the identical statement through on retry.
	Late bool `json:"late,omitempty"`
	// GrantExpires is when the late grant stops being usable.
	GrantExpires time.Time `json:"grant_expires,omitzero"`
	// Shrunk is set once the request keeps only the start of what reviewers were shown (the
	// ended caps): it ended before anyone decided it, and nobody can decide it any more
	// (withdrawn, failed, or expired past the late window). It is never approved late.
	Shrunk bool `json:"shrunk,omitempty"`
}

// Clone returns a deep copy, so snapshots handed to callers and events never alias store state.
// HTTPPrefix starts the text of a held HTTP request ("HTTP POST /v1/refunds"), which no SQL
// statement starts with: listings and webhooks then speak of a request, not a statement.
const HTTPPrefix = "HTTP "

// IsHTTP reports whether r holds an HTTP request rather than a statement.
func (r *Request) IsHTTP() bool { return strings.HasPrefix(r.SQL, HTTPPrefix) }

func (r *Request) Clone() *Request {
	c := *r
	c.Identity.Groups = slices.Clone(r.Identity.Groups)
	c.Params = slices.Clone(r.Params)
	c.Approvers = slices.Clone(r.Approvers)
	c.Decisions = slices.Clone(r.Decisions)
	for i := range c.Decisions {
		c.Decisions[i].Reviewer.Groups = slices.Clone(r.Decisions[i].Reviewer.Groups)
	}
	return &c
}

// Approvals counts approving votes.
func (r *Request) Approvals() int {
	n := 0
	for _, d := range r.Decisions {
		if d.Verdict == Approve {
			n++
		}
	}
	return n
}

// Grant lets the identity that sent a request run the identical statement once, after a reviewer
// approved the request too late for the original client.
type Grant struct {
	Hash      string `json:"hash"`
	RequestID string `json:"request_id"`
	Subject   string `json:"subject"`
	// Rule and RuleDigest are the rule the approval was given under, as the policy then defined
	// it: the grant passes a retry only while the policy sends it to the same definition.
	Rule       string    `json:"rule,omitempty"`
	RuleDigest string    `json:"rule_digest,omitempty"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	Consumed   time.Time `json:"consumed,omitzero"`
}

// Errors returned when a decision is refused. They are wrapped with the request id and details.
var (
	ErrNotFound        = errors.New("no such approval request")
	ErrSelfApproval    = errors.New("nobody may decide their own request")
	ErrNotApprover     = errors.New("reviewer is not in the rule's approver groups")
	ErrAlreadyDecided  = errors.New("reviewer already decided this request")
	ErrNotPending      = errors.New("request is no longer pending")
	ErrReasonRequired  = errors.New("a reason is required to deny")
	ErrInvalidReviewer = errors.New("reviewer has no subject")
)

// decide applies d to r, the single state machine every store runs under its own lock or
// transaction. It returns a grant when a late approval reached the quorum.
func decide(r *Request, d Decision, w Windows) (*Grant, error) {
	if d.Reviewer.Subject == "" {
		return nil, ErrInvalidReviewer
	}
	if d.Reviewer.Subject == r.Identity.Subject {
		return nil, fmt.Errorf("%s: %w", r.ID, ErrSelfApproval)
	}
	if !slices.ContainsFunc(d.Reviewer.Groups, func(g string) bool { return slices.Contains(r.Approvers, g) }) {
		return nil, fmt.Errorf("%s: %w (%s needs one of %v)", r.ID, ErrNotApprover, d.Reviewer.Subject, r.Approvers)
	}
	if d.Verdict != Approve && d.Verdict != Deny {
		return nil, fmt.Errorf("%s: unknown verdict %q", r.ID, d.Verdict)
	}
	// A pending request past its deadline is expired even if its waiter has not noticed yet (or its
	// daemon died): an approval now cannot reach the original client, only a retry.
	if r.State == StatePending && d.Time.After(r.Deadline) {
		r.State, r.Closed = StateExpired, r.Deadline
	}
	for _, prev := range r.Decisions {
		if prev.Reviewer.Subject == d.Reviewer.Subject {
			return nil, fmt.Errorf("%s: %w (%s)", r.ID, ErrAlreadyDecided, d.Reviewer.Subject)
		}
	}
	late := false
	switch r.State {
	case StatePending:
	case StateExpired:
		if d.Verdict != Approve {
			return nil, fmt.Errorf("%s: %w: it expired at %s, there is nothing left to deny", r.ID, ErrNotPending, r.Closed.UTC().Format(time.RFC3339))
		}
		if w.Late <= 0 || d.Time.After(r.Closed.Add(w.Late)) {
			return nil, fmt.Errorf("%s: %w: it expired at %s and the late-approval window (%s) has passed", r.ID, ErrNotPending, r.Closed.UTC().Format(time.RFC3339), w.Late)
		}
		// Its daemon shrank it once its own late window passed (Broker's sweep): what reviewers
		// would now see is no longer what they were asked about.
		if r.Shrunk {
			return nil, fmt.Errorf("%s: %w: it expired at %s and the late-approval window of the daemon that held it has passed", r.ID, ErrNotPending, r.Closed.UTC().Format(time.RFC3339))
		}
		late = true
	default:
		return nil, fmt.Errorf("%s: %w (it is %s)", r.ID, ErrNotPending, r.State)
	}
	r.Decisions = append(r.Decisions, d)
	if d.Verdict == Deny {
		r.State, r.Closed, r.Reason = StateDenied, d.Time, d.Reason
		return nil, nil
	}
	if r.Approvals() < max(r.Quorum, 1) {
		return nil, nil
	}
	if !late {
		r.State, r.Closed = StateApproved, d.Time
		return nil, nil
	}
	r.State, r.Late, r.GrantExpires = StateApproved, true, d.Time.Add(w.Grant)
	return &Grant{Hash: r.Hash, RequestID: r.ID, Subject: r.Identity.Subject, Rule: r.Rule, RuleDigest: r.RuleDigest, Created: d.Time, Expires: r.GrantExpires}, nil
}

// finish moves a pending request to a final state; it reports false when the request had already
// left pending (a decision won the race). A request withdrawn or failed before any decision keeps
// only the start of its statement (endUndecided); an expired one keeps it until its late window
// has passed (Store.ShrinkExpired).
func finish(r *Request, s State, reason string, now time.Time) bool {
	if r.State != StatePending {
		return false
	}
	r.State, r.Closed, r.Reason = s, now, reason
	r.endUndecided(time.Time{})
	return true
}
