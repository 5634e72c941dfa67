package approval

import (
	"strings"
	"testing"
	"time"
)

// TestSummaryOfHTTPRequest: a held HTTP request is announced as a request sent to its target,
// not as a statement run on a database as a database user (which it has not).
func TestSummaryOfHTTPRequest(t *testing.T) {
	r := &Request{ID: "apr_1", Identity: Identity{Subject: "alice"}, Target: "api", SQL: HTTPPrefix + "POST /v1/refunds",
		Rule: "refunds", Approvers: []string{"ops"}, Quorum: 1, GrantExpires: time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)}
	cases := []struct {
		ev          Event
		want, never string
	}{
		{Event{Type: EventCreated, Request: r}, "wants to send to api:", "/"},
		{Event{Type: EventGranted, Request: r}, "retry the identical request once", "statement"},
	}
	for _, c := range cases {
		got := Summary(c.ev)
		if !strings.Contains(got, c.want) || (c.never == "/" && strings.Contains(got, "api/")) || (c.never != "/" && strings.Contains(got, c.never)) {
			t.Errorf("%s: %q, want %q", c.ev.Type, got, c.want)
		}
	}
	sql := *r
	sql.SQL, sql.Database, sql.DBUser = "UPDATE t SET a = 1 WHERE id = 2", "app", "agent_rw"
	if got := Summary(Event{Type: EventCreated, Request: &sql}); !strings.Contains(got, "wants to run on api/app as agent_rw") {
		t.Errorf("statement: %q", got)
	}
}
