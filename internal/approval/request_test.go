package approval

import (
	"fmt"
	"testing"

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
