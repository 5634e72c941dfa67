package approval

import (
	"context"
	"slices"
	"time"
)

// Windows says how long an expired request may still be approved (Late) and how long the one-time
// grant that such an approval creates stays usable (Grant). Zero Late disables late approvals.
type Windows struct {
	Late  time.Duration
	Grant time.Duration
}

// Change tells a Broker that a request changed in its store. Remote is set when another daemon
// sharing the store made the change.
type Change struct {
	ID     string
	Event  EventType
	Remote bool
}

// Filter selects requests for List. Zero fields match everything.
type Filter struct {
	States  []State
	Subject string // requester subject
	Since   time.Time
	Limit   int
	// Newest keeps, with Limit, the newest Limit requests instead of the oldest (listed oldest
	// first either way).
	Newest bool
}

func (f Filter) match(r *Request) bool {
	if len(f.States) > 0 && !slices.Contains(f.States, r.State) {
		return false
	}
	if f.Subject != "" && r.Identity.Subject != f.Subject {
		return false
	}
	return f.Since.IsZero() || !r.Created.Before(f.Since)
}

// Store keeps requests, decisions and grants. Every state change goes through the package's single
// state machine, applied under the store's lock or transaction, so all stores decide alike.
type Store interface {
	// Create stores a new pending request.
	Create(ctx context.Context, r *Request) error
	// Get returns a copy of the request, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (*Request, error)
	// List returns matching requests, oldest first.
	List(ctx context.Context, f Filter) ([]*Request, error)
	// Decide records one reviewer's vote atomically and returns the request after it, plus the
	// grant a late approval created (nil otherwise).
	Decide(ctx context.Context, id string, d Decision, w Windows) (*Request, *Grant, error)
	// Finish moves a pending request to a final state (expired, withdrawn, failed). It returns the
	// request after the call and whether this call changed it; false means a decision came first.
	Finish(ctx context.Context, id string, s State, reason string, now time.Time) (*Request, bool, error)
	// ConsumeGrant uses up one unexpired, unconsumed grant for hash that was given under rule as
	// ruleDigest defines it, or returns nil if none: a grant from another rule, or from another
	// definition of the same rule, does not pass a statement the policy now sends elsewhere.
	ConsumeGrant(ctx context.Context, hash, rule, ruleDigest string, now time.Time) (*Grant, error)
	// RevokeGrants ends (expires at now) every usable grant of owner's requests whose rule is not
	// in rules (name to digest) with the digest it was given under, and returns how many it
	// ended. Other daemons sharing the store judge their own grants by their own policies.
	RevokeGrants(ctx context.Context, owner string, rules map[string]string, now time.Time) (int, error)
	// ShrinkExpired shrinks to the ended caps (endUndecided) every request of owner that expired
	// before cutoff with no decision and is not shrunk yet, and returns how many it shrank. The
	// broker passes now less its late window, so that only requests nobody can approve late any
	// more are shrunk; other daemons sharing the store shrink theirs by their own windows.
	ShrinkExpired(ctx context.Context, owner string, cutoff time.Time) (int, error)
	// OnChange registers the function called after every change, including changes made by other
	// daemons sharing the store. It must not block.
	OnChange(fn func(Change))
	// Close releases the store.
	Close() error
}
