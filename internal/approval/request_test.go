package approval

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestEndedStatesRecordedAsSpelt: the guards record how a request ended by its state's
// spelling (record.ApprovalOutcome); each state a request can end in keeps its name there.
func TestEndedStatesRecordedAsSpelt(t *testing.T) {
	for _, s := range []State{StateApproved, StateDenied, StateExpired, StateWithdrawn, StateFailed} {
		if got := record.ApprovalOutcome(string(s)); got != string(s) {
			t.Errorf("a request that ended %s is recorded %s", s, got)
		}
	}
}

func TestIsLimit(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w (16 of alice's)", ErrTooManyPending), true},
		{fmt.Errorf("%w: try again in 5s", ErrRateLimited), true},
		{ErrNotFound, false},
		{nil, false},
	} {
		if got := IsLimit(c.err); got != c.want {
			t.Errorf("IsLimit(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestLateApprovalOfExpired: an expired request may be approved late only within the late window,
// and never once its daemon shrank it: what reviewers would see is no longer what was held.
func TestLateApprovalOfExpired(t *testing.T) {
	closed := time.Now().Add(-10 * time.Minute)
	for _, tc := range []struct {
		name   string
		late   time.Duration
		shrunk bool
		grant  bool
	}{
		{name: "within the window", late: DefaultLateWindow, grant: true},
		{name: "past the window", late: 5 * time.Minute},
		{name: "late approvals disabled", late: 0},
		{name: "shrunk within this window", late: time.Hour, shrunk: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := updateSpec("1")
			r := &Request{ID: NewID(), Identity: spec.Identity, Hash: spec.Binding().Hash(), Rule: spec.Rule, Approvers: spec.Approvers,
				Quorum: 1, State: StateExpired, Closed: closed, Deadline: closed, Shrunk: tc.shrunk}
			g, err := decide(r, Decision{Reviewer: bob, Verdict: Approve, Time: time.Now()}, Windows{Late: tc.late, Grant: DefaultGrantTTL})
			if tc.grant != (err == nil && g != nil) || !tc.grant && !errors.Is(err, ErrNotPending) {
				t.Fatalf("late approval: grant %v, %v; want a grant: %v", g, err, tc.grant)
			}
			if !tc.grant && (r.State != StateExpired || len(r.Decisions) != 0) {
				t.Errorf("a refused late approval changed the request: %s, %d decisions", r.State, len(r.Decisions))
			}
		})
	}
}
