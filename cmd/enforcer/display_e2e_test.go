package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
)

// TestHeldStatementShowsCodeBetweenMaskedSecrets (from a review, 2026-12-07): a reviewer was shown
// "UPDATE orders … WHERE id = 7 /* [REDACTED:private_key] */" for a statement whose private-key
// BEGIN and END lines, in two comments, made the detector mask "OR id > 0" between them; approving
// "only order 7" updated every order. Must hold: the reviewer sees the code between the comments,
// with the key line masked, and so denies it; no order changes.
func TestHeldStatementShowsCodeBetweenMaskedSecrets(t *testing.T) {
	e, idp, pg, dsn := reviewEnv(t)
	loginAs(t, e, idp, "alice")
	reviewer := reviewerCLI(t, e, idp, "carol", 65534)

	const sql = "UPDATE orders SET status = 'shipped' WHERE id = 7 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* -----END PRIVATE KEY----- */"
	done := make(chan string, 1)
	go func() { o, _ := e.run("psql", dsn, "-Xc", sql); done <- o }()

	var req *approval.Request
	for deadline := time.Now().Add(20 * time.Second); req == nil && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, _ := reviewer("approvals", "--json").Output()
		var reqs []*approval.Request
		json.Unmarshal(out, &reqs)
		for _, r := range reqs {
			if strings.Contains(r.SQL, "status = 'shipped'") {
				req = r
			}
		}
	}
	if req == nil {
		t.Fatal("no pending request")
	}
	if !strings.Contains(req.SQL, "OR id > 0") || strings.Contains(req.SQL, "BEGIN PRIVATE KEY") {
		t.Errorf("the reviewer is shown %q: want OR id > 0 and the key line masked", req.SQL)
	}
	// The reviewer approves only what touches order 7 alone.
	decision := []string{"approve", req.ID, "--reason", "only order 7"}
	if strings.Contains(req.SQL, "OR id > 0") {
		decision = []string{"deny", req.ID, "--reason", "touches every order"}
	}
	if o, err := reviewer(decision...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", decision[0], err, o)
	}
	select {
	case out := <-done:
		t.Logf("agent: %q", out)
	case <-time.After(30 * time.Second):
		t.Fatal("held statement did not end")
	}
	if n := scalar(t, pg, "select count(*) from orders where status = 'shipped'"); n != "0" {
		t.Errorf("the reviewer was shown %q and %sd it; %s orders were updated", req.SQL, decision[0], n)
	}
}
