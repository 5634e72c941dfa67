package approval

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enforcer-dev/enforcer/internal/ratelimit"
)

// Defaults for Config.
const (
	DefaultTimeout      = 60 * time.Second
	DefaultLateWindow   = 15 * time.Minute
	DefaultGrantTTL     = 10 * time.Minute
	DefaultPollInterval = 2 * time.Second
)

// Config tunes a Broker. Zero fields take the defaults above.
type Config struct {
	// Timeout is how long a request waits when the caller does not pass a shorter one.
	Timeout time.Duration
	// LateWindow is how long after expiry a reviewer may still approve; the approval then stores a
	// one-time grant for the identical statement. Negative disables late approvals.
	LateWindow time.Duration
	// GrantTTL is how long such a grant stays usable.
	GrantTTL time.Duration
	// Owner names this daemon in a shared store (hostname); see Request.Owner.
	Owner string
	// PollInterval is how often a waiter re-reads its request in case a change notification was
	// lost (a PostgreSQL LISTEN connection that dropped).
	PollInterval time.Duration
	// OnEvent receives every local event synchronously (the session recorder). It must not block.
	OnEvent func(Event)
	// Notifier, if set, gets created, decided, granted and expired events for webhooks.
	Notifier *Notifier
	Logger   *slog.Logger
	// MaxPendingPerPerson bounds the requests of one identity (its subject) pending on this
	// daemon at once (default 16). Each is a statement a reviewer is asked about, and a webhook
	// call: without a bound, an agent could flood the reviewers' queue and channel.
	MaxPendingPerPerson int
	// RequestBurst and RequestEvery bound how fast one identity makes requests on this daemon
	// (defaults DefaultRequestBurst, DefaultRequestEvery): RequestBurst at once, then one more
	// every RequestEvery. MaxPendingPerPerson alone lets an agent that withdraws each request at
	// once make hundreds a second, each a webhook call and a stored request.
	RequestBurst int
	RequestEvery time.Duration
}

// DefaultMaxPendingPerPerson is Config.MaxPendingPerPerson's default.
const DefaultMaxPendingPerPerson = 16

// ErrTooManyPending refuses a request over Config.MaxPendingPerPerson.
var ErrTooManyPending = errors.New("too many requests of this person await review")

// ErrRateLimited refuses a request over Config.RequestBurst and RequestEvery.
var ErrRateLimited = errors.New("too many approval requests from this person")

// IsLimit reports whether err refuses a request for its person's limits (ErrTooManyPending,
// ErrRateLimited): the person's doing, counted in the broker's stats, and not worth a log line
// each, since an agent can send them as fast as it likes.
func IsLimit(err error) bool {
	return errors.Is(err, ErrTooManyPending) || errors.Is(err, ErrRateLimited)
}

// Broker holds statements for review: Request blocks a client, Approve and Deny decide.
type Broker struct {
	store Store
	cfg   Config
	log   *slog.Logger
	stats counters

	// settings are the policy's part of cfg, replaced by Reconfigure when the policy is reloaded.
	settings atomic.Pointer[Settings]

	mu sync.Mutex
	// rules are the policy's approve rules by name, with their digests (see ApplyRules); nil
	// until the first ApplyRules, and then nothing is checked against them.
	rules    map[string]string
	waiters  map[string]*waiter
	watchers map[chan Event]struct{}
	pending  map[string]int // this daemon's pending requests by person (pendingKey)
	limit    requestLimit   // new requests by person (pendingKey)

	shrink shrinkSchedule
}

// Settings are what the policy decides of a Broker, and a reload may change: Config's Timeout,
// LateWindow (with their defaults) and Notifier.
type Settings struct {
	Timeout    time.Duration
	LateWindow time.Duration
	Notifier   *Notifier
}

func (s *Settings) setDefaults() {
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.LateWindow == 0 {
		s.LateWindow = DefaultLateWindow
	}
}

// Reconfigure applies a reloaded policy's settings to the requests and decisions that follow (a
// statement already waiting keeps its deadline), and returns the notifier they replace, which
// the caller closes. The late window applies to the requests already expired too: those past the
// new one are shrunk (see Store.ShrinkExpired) at once, the others as it passes.
func (b *Broker) Reconfigure(s Settings) *Notifier {
	s.setDefaults()
	old := b.settings.Swap(&s)
	now := time.Now()
	b.shrinkExpiredAt(now, now.Add(b.lateWindow()))
	if old != nil {
		return old.Notifier
	}
	return nil
}

// lateWindow is how long after expiry a request may still be approved; 0 when late approvals are
// disabled.
func (b *Broker) lateWindow() time.Duration {
	return max(b.settings.Load().LateWindow, 0)
}

// NewBroker returns a Broker over store. The Broker registers itself for the store's changes.
func NewBroker(store Store, cfg Config) *Broker {
	if cfg.GrantTTL <= 0 {
		cfg.GrantTTL = DefaultGrantTTL
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.MaxPendingPerPerson <= 0 {
		cfg.MaxPendingPerPerson = DefaultMaxPendingPerPerson
	}
	if cfg.RequestBurst <= 0 {
		cfg.RequestBurst = DefaultRequestBurst
	}
	if cfg.RequestEvery <= 0 {
		cfg.RequestEvery = DefaultRequestEvery
	}
	b := &Broker{
		store:    store,
		cfg:      cfg,
		log:      cfg.Logger,
		waiters:  map[string]*waiter{},
		watchers: map[chan Event]struct{}{},
		pending:  map[string]int{},
		limit:    requestLimit{ratelimit.Buckets[string]{Burst: cfg.RequestBurst, Every: cfg.RequestEvery}},
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	// Reconfigure also shrinks what expired before this start, past the late window.
	b.Reconfigure(Settings{Timeout: cfg.Timeout, LateWindow: cfg.LateWindow, Notifier: cfg.Notifier})
	store.OnChange(b.changed)
	return b
}

// Spec describes a statement to hold: who sent it, where it goes, what it is and which rule asked
// for review.
type Spec struct {
	Identity Identity
	Process  Process
	Target   string
	Database string
	DBUser   string
	SQL      string // as the client sent it: goes into the binding hash
	// DisplaySQL is SQL masked for reviewers (a card number in a literal); "" shows SQL.
	DisplaySQL string
	// Params are the raw bind parameters: they go into the binding hash and are never stored.
	Params []Param
	// Display are the same parameters masked for reviewers; nil shows only their sizes.
	Display []DisplayParam

	Rule string
	// RuleDigest identifies the rule's definition in the policy that held the statement (see
	// Rule). The request ends when a reload changes it, and a late grant passes a retry only
	// under the same digest.
	RuleDigest string
	Approvers  []string // groups whose members may decide
	Quorum     int      // approvals needed; 0 means 1
	Timeout    time.Duration
}

// Binding returns what the approval of s is bound to.
func (s Spec) Binding() Binding {
	return Binding{SQL: s.SQL, Params: s.Params, Target: s.Target, Database: s.Database, DBUser: s.DBUser, Subject: s.Identity.Subject}
}

func (s *Spec) validate() error {
	switch {
	case s.Identity.Subject == "":
		return errors.New("hold statement: requester has no subject")
	case s.Rule == "":
		return errors.New("hold statement: no rule name")
	case s.RuleDigest == "":
		return fmt.Errorf("hold statement: rule %s has no digest of its definition", s.Rule)
	case len(s.Approvers) == 0:
		return fmt.Errorf("hold statement: rule %s names no approver groups, nobody could approve", s.Rule)
	case s.Quorum < 0:
		return fmt.Errorf("hold statement: rule %s: quorum %d is negative", s.Rule, s.Quorum)
	case s.Display != nil && len(s.Display) != len(s.Params):
		return fmt.Errorf("hold statement: %d display parameters for %d parameters", len(s.Display), len(s.Params))
	}
	return nil
}

// Outcome is how a held statement ended.
type Outcome struct {
	// State is StateApproved only when the held statement may be forwarded now. A late approval
	// (after the client gave up) is reported as StateExpired.
	State   State
	Request *Request
	// Grant is set when an earlier late approval let this retry through without a new request;
	// Request is then nil and Grant.RequestID names the approved request.
	Grant *Grant
}

// Decided returns who decided the outcome's request (reviewers' subjects joined by commas, or
// "grant" when an earlier late approval let it through) and the reason they gave, for the
// session log.
func (o Outcome) Decided() (by, reason string) {
	if o.Grant != nil {
		return "grant", "approved after the request timed out; one-time grant used"
	}
	if o.Request == nil {
		return "", ""
	}
	var who []string
	for _, dec := range o.Request.Decisions {
		who = append(who, dec.Reviewer.Subject)
		if dec.Reason != "" {
			reason = dec.Reason
		}
	}
	if reason == "" {
		reason = o.Request.Reason
	}
	return strings.Join(who, ","), reason
}

// Approved reports whether the statement may be forwarded.
func (o Outcome) Approved() bool { return o.State == StateApproved }

// ID returns the request id the outcome refers to.
func (o Outcome) ID() string {
	if o.Request != nil {
		return o.Request.ID
	}
	if o.Grant != nil {
		return o.Grant.RequestID
	}
	return ""
}

func outcomeOf(r *Request) Outcome {
	s := r.State
	if s == StateApproved && r.Late {
		s = StateExpired
	}
	return Outcome{State: s, Request: r}
}

// pendingKey is whom a request counts against for Config.MaxPendingPerPerson: its subject, or
// its uid when it has none.
func pendingKey(id Identity) string {
	if id.Subject != "" {
		return id.Subject
	}
	return fmt.Sprintf("uid %d", id.UID)
}

// Request holds a statement until it is decided. It first consumes a matching one-time grant if
// there is one (the statement then passes at once). Otherwise it stores a new request and calls
// notice with it before waiting, so the caller can tell the client the request id; a notice error
// (client gone) withdraws the request. It returns when reviewers reach the quorum, one denies, the
// timeout passes (spec.Timeout if shorter than the broker's) or ctx is done (withdrawn).
//
// An error means the request could not be held or its end could not be stored; callers must treat
// it as a denial.
func (b *Broker) Request(ctx context.Context, spec Spec, notice func(*Request) error) (Outcome, error) {
	if err := spec.validate(); err != nil {
		return Outcome{State: StateFailed}, err
	}
	now := time.Now()
	timeout := b.settings.Load().Timeout
	if spec.Timeout > 0 && spec.Timeout < timeout {
		timeout = spec.Timeout
	}
	// No store call outlives the request's timeout: a store that stops answering (a fleet
	// database behind a partition) would otherwise hold the statement, and the re-reads below,
	// for as long as TCP takes to give up.
	sctx, cancel := context.WithDeadline(ctx, now.Add(timeout))
	defer cancel()
	hash := spec.Binding().Hash()
	if g, err := b.store.ConsumeGrant(sctx, hash, spec.Rule, spec.RuleDigest, now); err != nil {
		b.stats.storeErrors.Add(1)
		return Outcome{State: StateFailed}, fmt.Errorf("look up approval grant: %w", err)
	} else if g != nil {
		b.stats.consumed.Add(1)
		b.emit(Event{Type: EventConsumed, Time: now, Grant: g})
		return Outcome{State: StateApproved, Grant: g}, nil
	}

	display := spec.Display
	if display == nil {
		display = make([]DisplayParam, len(spec.Params))
		for i, p := range spec.Params {
			display[i] = DisplayParam{TypeOID: p.TypeOID, Null: p.Null, Value: fmt.Sprintf("[%d bytes]", len(p.Value))}
		}
	}
	shown := spec.SQL
	if spec.DisplaySQL != "" {
		shown = spec.DisplaySQL
	}
	r := &Request{
		ID: NewID(), Created: now, Deadline: now.Add(timeout), Owner: b.cfg.Owner,
		Identity: spec.Identity, Process: spec.Process,
		Target: spec.Target, Database: spec.Database, DBUser: spec.DBUser,
		SQL: shown, Params: display, Hash: hash,
		Rule: spec.Rule, RuleDigest: spec.RuleDigest, Approvers: spec.Approvers, Quorum: max(spec.Quorum, 1), Timeout: timeout,
		State: StatePending,
	}
	r = r.Clone() // never alias the caller's slices
	r.cutShown(createdCaps)

	person := pendingKey(spec.Identity)
	w := &waiter{wake: make(chan struct{}, 1), rule: spec.Rule, digest: spec.RuleDigest}
	b.mu.Lock()
	if n := b.pending[person]; n >= b.cfg.MaxPendingPerPerson {
		b.mu.Unlock()
		b.stats.tooMany.Add(1)
		return Outcome{State: StateFailed}, fmt.Errorf("%w (%d of %s's); wait until reviewers decide some", ErrTooManyPending, n, person)
	}
	if wait, ok := b.limit.Take(person, now); !ok {
		b.mu.Unlock()
		b.stats.rateLimited.Add(1)
		return Outcome{State: StateFailed}, b.limit.refusal(person, wait)
	}
	b.pending[person]++
	if b.rules != nil {
		// The policy was reloaded between the caller's judgment and now.
		w.voided = ruleChange(b.rules, spec.Rule, spec.RuleDigest)
	}
	b.waiters[r.ID] = w
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiters, r.ID)
		if b.pending[person]--; b.pending[person] <= 0 {
			delete(b.pending, person)
		}
		b.mu.Unlock()
	}()

	if err := b.store.Create(sctx, r); err != nil {
		b.stats.storeErrors.Add(1)
		return Outcome{State: StateFailed}, fmt.Errorf("store approval request: %w", err)
	}
	b.stats.created.Add(1)
	b.emit(Event{Type: EventCreated, Time: now, Request: r.Clone()})

	if notice != nil {
		if err := notice(r.Clone()); err != nil {
			return b.end(r.ID, StateWithdrawn, "the notice could not be sent to the client: "+err.Error())
		}
		b.stats.noticesSent.Add(1)
		b.emit(Event{Type: EventNoticeSent, Time: time.Now(), Request: r.Clone()})
	}

	timer := time.NewTimer(time.Until(r.Deadline))
	defer timer.Stop()
	poll := time.NewTicker(b.cfg.PollInterval)
	defer poll.Stop()
	for {
		if why := b.voided(r.ID); why != "" {
			return b.end(r.ID, StateFailed, fmt.Sprintf("%v: %s; send it again to have it judged under the current policy", ErrPolicyChanged, why))
		}
		select {
		case <-ctx.Done():
			return b.end(r.ID, StateWithdrawn, "the client cancelled the statement")
		case <-timer.C:
			return b.end(r.ID, StateExpired, "")
		case <-w.wake:
		case <-poll.C:
		}
		// A read cut short by the client's cancel or the deadline is harmless: the select above
		// then ends the request through Finish, which reports a decision that came first.
		cur, err := b.store.Get(sctx, r.ID)
		if err != nil {
			if sctx.Err() == nil {
				b.stats.storeErrors.Add(1)
				b.log.Warn("approval: re-read request", "id", r.ID, "err", err)
			}
			continue
		}
		if cur.State != StatePending {
			return b.settled(cur), nil
		}
	}
}

// end finishes the waiter's request (timeout, cancel) unless a decision got there first.
func (b *Broker) end(id string, s State, reason string) (Outcome, error) {
	// The caller's context may be the one that was cancelled; the store write must still happen.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Finish reports whether this call changed the request; either way r is how it ended, which may
	// be a decision that landed just before the timeout or cancel.
	r, _, err := b.store.Finish(ctx, id, s, reason, time.Now())
	if err != nil {
		b.stats.storeErrors.Add(1)
		b.stats.failed.Add(1)
		b.emit(Event{Type: EventFailed, Time: time.Now(), Detail: err.Error(), Request: &Request{ID: id, State: StateFailed}})
		return Outcome{State: StateFailed}, fmt.Errorf("finish approval request %s: %w", id, err)
	}
	if r.State == StateExpired {
		// Kept whole for a late approval until the window passes; an agent that waits out each
		// held statement would otherwise have the store keep ~130 KiB of each for its retention.
		at := r.Closed.Add(b.lateWindow())
		b.shrinkExpiredAt(at, at)
	}
	return b.settled(r), nil
}

// settled counts and reports the end of a request its waiter saw.
func (b *Broker) settled(r *Request) Outcome {
	o := outcomeOf(r)
	switch o.State {
	case StateApproved:
		b.stats.approved.Add(1)
	case StateDenied:
		b.stats.denied.Add(1)
	case StateExpired:
		b.stats.expired.Add(1)
		b.emit(Event{Type: EventExpired, Time: time.Now(), Request: r.Clone()})
	case StateWithdrawn:
		b.stats.withdrawn.Add(1)
		b.emit(Event{Type: EventWithdrawn, Time: time.Now(), Request: r.Clone()})
	case StateFailed:
		b.stats.failed.Add(1)
		b.emit(Event{Type: EventFailed, Time: time.Now(), Request: r.Clone(), Detail: r.Reason})
	}
	return o
}

// Approve records reviewer's approval of request id. The request is approved once the rule's
// quorum of distinct approvers is reached.
func (b *Broker) Approve(ctx context.Context, id string, reviewer Reviewer, reason string) (*Request, error) {
	return b.decide(ctx, id, Decision{Reviewer: reviewer, Verdict: Approve, Reason: reason})
}

// Deny records reviewer's denial of request id; reason is required and shown to the client.
func (b *Broker) Deny(ctx context.Context, id string, reviewer Reviewer, reason string) (*Request, error) {
	if strings.TrimSpace(reason) == "" {
		b.stats.refused.Add(1)
		return nil, ErrReasonRequired
	}
	return b.decide(ctx, id, Decision{Reviewer: reviewer, Verdict: Deny, Reason: reason})
}

func (b *Broker) decide(ctx context.Context, id string, d Decision) (*Request, error) {
	id, err := ParseID(id)
	if err != nil {
		b.stats.refused.Add(1)
		return nil, err
	}
	// A decision under a rule the policy has changed since would end nowhere: the waiting client
	// is told the policy changed, and a late grant would not pass the retry.
	if cur, err := b.store.Get(ctx, id); err == nil {
		if why := b.ruleChanged(cur); why != "" {
			b.stats.refused.Add(1)
			return nil, fmt.Errorf("%s: %w: %s; the client must send it again to have it judged under the current policy", id, ErrPolicyChanged, why)
		}
	}
	d.Time = time.Now()
	r, g, err := b.store.Decide(ctx, id, d, Windows{Late: b.lateWindow(), Grant: b.cfg.GrantTTL})
	if err != nil {
		b.stats.refused.Add(1)
		return nil, err
	}
	b.stats.votes.Add(1)
	b.emit(Event{Type: EventDecided, Time: d.Time, Request: r.Clone(), Decision: &d})
	if g != nil {
		b.stats.granted.Add(1)
		b.emit(Event{Type: EventGranted, Time: d.Time, Request: r.Clone(), Grant: g})
	}
	b.wake(id)
	return r, nil
}

// Get returns request id.
func (b *Broker) Get(ctx context.Context, id string) (*Request, error) {
	id, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	return b.store.Get(ctx, id)
}

// List returns requests matching f, oldest first.
func (b *Broker) List(ctx context.Context, f Filter) ([]*Request, error) {
	return b.store.List(ctx, f)
}

// Stats returns the counters.
func (b *Broker) Stats() Stats { return b.stats.snapshot() }

// watchBuffer is how many events a watcher may fall behind before it misses some.
const watchBuffer = 256

// Watch streams events until ctx is done, including changes other daemons make in a shared store.
// A watcher that falls behind misses events (counted in Stats.WatchDropped) rather than slowing
// the data path.
func (b *Broker) Watch(ctx context.Context) <-chan Event {
	ch := make(chan Event, watchBuffer)
	b.mu.Lock()
	b.watchers[ch] = struct{}{}
	b.mu.Unlock()
	go func() {
		<-ctx.Done()
		b.mu.Lock()
		delete(b.watchers, ch)
		close(ch)
		b.mu.Unlock()
	}()
	return ch
}

func (b *Broker) emit(ev Event) {
	if b.cfg.OnEvent != nil {
		b.cfg.OnEvent(ev)
	}
	if n := b.settings.Load().Notifier; n != nil {
		b.stats.webhookDropped.Add(uint64(n.Notify(ev)))
	}
	b.broadcast(ev)
}

func (b *Broker) broadcast(ev Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.watchers {
		select {
		case ch <- ev:
		default:
			b.stats.watchDropped.Add(1)
		}
	}
}

// waiter is a request waited for on this daemon.
type waiter struct {
	wake         chan struct{}
	rule, digest string
	// voided says why the request must end without running (ApplyRules): the policy no longer
	// defines its rule as it was. Under Broker.mu.
	voided string
}

func (b *Broker) wake(id string) {
	b.mu.Lock()
	w := b.waiters[id]
	b.mu.Unlock()
	if w != nil {
		w.signal()
	}
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default: // a wake-up is already queued
	}
}

// voided returns why the waited request id must end, or "".
func (b *Broker) voided(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := b.waiters[id]; w != nil {
		return w.voided
	}
	return ""
}

// ApplyRules takes a (re)loaded policy's approve rules, name to digest of the definition (see
// Rule), and takes away every approval of this daemon's requests (Config.Owner) that no longer
// stands because a rule changed or went: requests pending here under such a rule end as failed,
// saying which rule changed (their clients get that error at once, and reviewers can no longer
// decide them); usable late-approval grants given under such a rule are revoked in the store; and
// a later decision on a request of this daemon held under such a rule is refused. Requests of
// other daemons sharing the store are theirs to judge, by their own policies. It returns the number of requests ended and
// of grants revoked; an error means the grants could not be revoked (they still cannot pass
// a retry: Request looks them up by the current rule's digest).
func (b *Broker) ApplyRules(ctx context.Context, rules map[string]string) (ended, revoked int, err error) {
	rules = maps.Clone(rules)
	if rules == nil {
		rules = map[string]string{}
	}
	b.mu.Lock()
	b.rules = rules
	for _, w := range b.waiters {
		if w.voided == "" {
			if w.voided = ruleChange(rules, w.rule, w.digest); w.voided != "" {
				ended++
				w.signal()
			}
		}
	}
	b.mu.Unlock()
	revoked, err = b.store.RevokeGrants(ctx, b.cfg.Owner, rules, time.Now())
	if err != nil {
		b.stats.storeErrors.Add(1)
		return ended, revoked, fmt.Errorf("revoke approval grants of changed rules: %w", err)
	}
	return ended, revoked, nil
}

// ruleChanged says why a decision on r is refused because this daemon's policy changed its rule,
// or "". Only requests this daemon judges count: one pending with a waiter here, or an expired
// one it owned (its retry comes back here). Another daemon sharing the store judges its own by
// its own policy.
func (b *Broker) ruleChanged(r *Request) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	mine := r.State == StatePending && b.waiters[r.ID] != nil || r.State == StateExpired && r.Owner == b.cfg.Owner
	if b.rules == nil || !mine {
		return ""
	}
	return ruleChange(b.rules, r.Rule, r.RuleDigest)
}

// changed is the store's change hook: it wakes a local waiter and tells watchers about changes
// made by other daemons.
func (b *Broker) changed(c Change) {
	b.wake(c.ID)
	b.mu.Lock()
	watched := len(b.watchers) > 0
	b.mu.Unlock()
	if !c.Remote || !watched {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := b.store.Get(ctx, c.ID)
		if err != nil {
			b.log.Warn("approval: read remote change", "id", c.ID, "err", err)
			return
		}
		b.broadcast(Event{Type: c.Event, Time: time.Now(), Request: r, Remote: true})
	}()
}

// shrinkEvery is how often, at most, the broker shrinks the expired requests of this daemon
// whose late window has passed, while requests keep expiring: none keeps its statement longer
// than this past its window.
const shrinkEvery = time.Minute

// shrinkTimeout bounds one sweep of the store.
const shrinkTimeout = 30 * time.Second

// shrinkSchedule runs the broker's sweeps of expired requests (Store.ShrinkExpired) on one timer,
// one at a time, and only while some request is still to shrink.
type shrinkSchedule struct {
	mu      sync.Mutex
	timer   *time.Timer // nil when nothing is due
	at      time.Time   // when timer fires
	running bool
	// until is the last moment a request this daemon expired (or found expired at start or at a
	// reload) becomes shrinkable: sweeps go on until one has run after it.
	until time.Time
}

// shrinkExpiredAt has the expired requests of this daemon shrunk once their late window has
// passed: a sweep runs at at (or sooner), then every shrinkEvery (or sooner) until one has run
// after until.
func (b *Broker) shrinkExpiredAt(at, until time.Time) {
	s := &b.shrink
	s.mu.Lock()
	defer s.mu.Unlock()
	if until.After(s.until) {
		s.until = until
	}
	switch {
	case s.running:
		// The sweep under way schedules the next from s.until when it is done.
	case s.timer == nil:
		s.timer, s.at = time.AfterFunc(time.Until(at), b.sweepExpired), at
	case at.Before(s.at) && s.timer.Stop():
		s.timer.Reset(time.Until(at))
		s.at = at
	}
}

// sweepExpired is the schedule's timer: it sweeps, then schedules the next sweep if one is due.
func (b *Broker) sweepExpired() {
	s := &b.shrink
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	now := time.Now()
	_, err := b.shrinkExpired(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = false
	next := now.Add(shrinkEvery)
	switch {
	case errors.Is(err, ErrClosed):
		s.timer = nil
		return
	case err != nil:
		// Retried after shrinkEvery: nothing is shrunk too early meanwhile.
	case s.until.Before(now):
		s.timer = nil
		return
	case s.until.Before(next):
		next = s.until
	}
	s.timer.Reset(time.Until(next))
	s.at = next
}

// shrinkExpired shrinks the requests of this daemon that expired undecided before now less the
// late window (at now, with late approvals disabled): nobody can approve them any more.
func (b *Broker) shrinkExpired(now time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), shrinkTimeout)
	defer cancel()
	n, err := b.store.ShrinkExpired(ctx, b.cfg.Owner, now.Add(-b.lateWindow()))
	if err != nil && !errors.Is(err, ErrClosed) {
		b.stats.storeErrors.Add(1)
		b.log.Warn("approval: shrink expired requests past their late window", "err", err)
	}
	return n, err
}
