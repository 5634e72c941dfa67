package approval

import (
	"sync/atomic"
	"time"
)

// EventType names a step in a request's life.
type EventType string

// Event types, in the order they usually happen.
const (
	EventCreated    EventType = "created"     // request stored, the client is about to be told
	EventNoticeSent EventType = "notice_sent" // the caller delivered the notice to the client
	EventDecided    EventType = "decided"     // a reviewer voted (Event.Decision); State shows whether it closed
	EventGranted    EventType = "granted"     // a late approval stored a one-time grant (Event.Grant)
	EventExpired    EventType = "expired"     // the timeout passed before the quorum
	EventWithdrawn  EventType = "withdrawn"   // the client cancelled or disconnected
	EventFailed     EventType = "failed"      // the waiter is gone (daemon restart) or the store failed
	EventConsumed   EventType = "consumed"    // a retry used a grant (Event.Grant) and runs without a new request
)

func eventFor(s State) EventType {
	switch s {
	case StateExpired:
		return EventExpired
	case StateWithdrawn:
		return EventWithdrawn
	case StateFailed:
		return EventFailed
	}
	return EventDecided
}

// Event is one step, for the session recorder, reviewers watching and webhooks. Request is a
// snapshot taken right after the step.
type Event struct {
	Type     EventType `json:"type"`
	Time     time.Time `json:"time"`
	Request  *Request  `json:"request,omitempty"`
	Decision *Decision `json:"decision,omitempty"`
	Grant    *Grant    `json:"grant,omitempty"`
	// Remote is set for changes another daemon made in a shared store (only sent to watchers).
	Remote bool `json:"remote,omitempty"`
	// Detail carries the error text of a failed notice or store operation.
	Detail string `json:"detail,omitempty"`
}

// Stats counts what a Broker did since it started. The daemon exports them to Prometheus.
type Stats struct {
	Created, NoticesSent                         uint64
	Approved, Denied, Expired, Withdrawn, Failed uint64
	Votes, Refused                               uint64 // decisions recorded, decisions refused
	Granted, GrantsConsumed                      uint64
	WatchDropped                                 uint64 // events a slow watcher missed
	StoreErrors                                  uint64
	TooMany                                      uint64 // requests refused over MaxPendingPerPerson
	RateLimited                                  uint64 // requests refused over RequestBurst and RequestEvery
	WebhookDropped                               uint64 // webhook deliveries dropped from a full queue
}

type counters struct {
	created, noticesSent                         atomic.Uint64
	approved, denied, expired, withdrawn, failed atomic.Uint64
	votes, refused                               atomic.Uint64
	granted, consumed                            atomic.Uint64
	watchDropped                                 atomic.Uint64
	storeErrors                                  atomic.Uint64
	tooMany                                      atomic.Uint64
	rateLimited                                  atomic.Uint64
	webhookDropped                               atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Created: c.created.Load(), NoticesSent: c.noticesSent.Load(),
		Approved: c.approved.Load(), Denied: c.denied.Load(), Expired: c.expired.Load(),
		Withdrawn: c.withdrawn.Load(), Failed: c.failed.Load(),
		Votes: c.votes.Load(), Refused: c.refused.Load(),
		Granted: c.granted.Load(), GrantsConsumed: c.consumed.Load(),
		WatchDropped: c.watchDropped.Load(), StoreErrors: c.storeErrors.Load(),
		TooMany: c.tooMany.Load(), RateLimited: c.rateLimited.Load(), WebhookDropped: c.webhookDropped.Load(),
	}
}
