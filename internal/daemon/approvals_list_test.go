package daemon

import (
	"fmt"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/approval"
)

// TestListingShowsTheNewestVisible: a listing is cut after it is filtered by what the caller may
// read, and keeps the newest requests: 300 old requests another user may not read, or more than
// maxListed of the caller's own, do not hide the caller's newest.
func TestListingShowsTheNewestVisible(t *testing.T) {
	var reqs []*approval.Request
	for i := range 300 {
		reqs = append(reqs, &approval.Request{ID: fmt.Sprintf("other-%d", i), Owner: "b"})
	}
	for i := range maxListed + 50 {
		reqs = append(reqs, &approval.Request{ID: fmt.Sprintf("mine-%d", i), Owner: "a"})
	}
	got := newestVisible(reqs, func(r *approval.Request) bool { return r.Owner == "a" })
	if len(got) != maxListed || got[0].ID != "mine-50" || got[len(got)-1].ID != fmt.Sprintf("mine-%d", maxListed+49) {
		t.Fatalf("%d requests, %s..%s; want the newest %d of mine, oldest first", len(got), got[0].ID, got[len(got)-1].ID, maxListed)
	}
	if got := newestVisible(reqs[:3], func(*approval.Request) bool { return false }); got == nil || len(got) != 0 {
		t.Errorf("nothing visible: %v, want an empty list (JSON [])", got)
	}
}
