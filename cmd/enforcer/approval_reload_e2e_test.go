package main

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
)

// TestPolicyReloadVoidsApprovalsOfChangedRules: an approval counts only under the rule it was
// asked under, as the policy defines that rule when the statement would run. A reload that
// blocks the statement, or asks other approvers or more of them, ends a pending request (the
// agent is told why, a reviewer's approval after the reload runs nothing) and voids a late
// grant (the retry is held anew). A reload that leaves the rule as it was changes neither.
func TestPolicyReloadVoidsApprovalsOfChangedRules(t *testing.T) {
	const fast = "timeout: 2s, transaction_timeout: 1s"
	timeouts := func(rules, to string) string {
		return strings.Replace(rules, "timeout: 20s, transaction_timeout: 20s", to, 1)
	}
	frozen := `rules:
  - name: no-writes-at-all
    when: 'sql.writes'
    action: block
    message: writes are frozen
approvals: {timeout: 20s, transaction_timeout: 20s}
`
	stricter := strings.Replace(agentRules, "approvers: [dba]", "approvers: [secops]\n    quorum: 2", 1)
	for _, tc := range []struct {
		name string
		// late: the request times out and carol approves it after, which leaves a grant for
		// the identical retry; otherwise carol approves the pending request after the reload.
		late     bool
		before   string // the agent rules when the statement is sent
		reloaded string // the rules the reload brings
		runs     bool   // whether the statement may run after all
	}{
		{name: "pending, then writes blocked", before: agentRules, reloaded: frozen},
		{name: "pending, then two secops approvals needed", before: agentRules, reloaded: stricter},
		{name: "pending, only the timeout changed", before: agentRules, reloaded: timeouts(agentRules, "timeout: 30s, transaction_timeout: 30s"), runs: true},
		{name: "late grant, then two secops approvals needed", late: true, before: timeouts(agentRules, fast), reloaded: timeouts(stricter, fast)},
		{name: "late grant, then writes blocked", late: true, before: timeouts(agentRules, fast), reloaded: frozen},
		{name: "late grant, only the timeout changed", late: true, before: timeouts(agentRules, fast), reloaded: timeouts(agentRules, "timeout: 3s, transaction_timeout: 1s"), runs: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, idp, pg, dsn := reviewEnv(t)
			e.tailYAML = tc.before
			e.setPolicy()
			loginAs(t, e, idp, "alice")
			reviewer := reviewerCLI(t, e, idp, "carol", 65534)
			const stmt = "UPDATE orders SET status = 'approved-before-reload' WHERE id = 4"

			if tc.late {
				out, _ := e.run("psql", dsn, "-Xc", stmt)
				id := regexp.MustCompile(`apr_[a-z0-9]+`).FindString(out)
				if id == "" || !strings.Contains(out, "timed out") {
					t.Fatalf("the statement did not time out with a request id: %q", out)
				}
				if o, err := reviewer("approve", id, "--reason", "late").CombinedOutput(); err != nil {
					t.Fatalf("late approve: %v %s", err, o)
				}
				e.tailYAML = tc.reloaded
				e.setPolicy()
				out, _ = e.run("psql", dsn, "-Xc", stmt)
				t.Logf("retry after the reload: %q", out)
				if ran := strings.Contains(out, "UPDATE 1"); ran != tc.runs {
					t.Errorf("retry after the reload: %q; want it to run: %v", out, tc.runs)
				}
			} else {
				done := make(chan string, 1)
				go func() { o, _ := e.run("psql", dsn, "-Xc", stmt); done <- o }()
				id := waitPendingSQL(t, e, stmt).ID
				e.tailYAML = tc.reloaded
				e.setPolicy()
				o, err := reviewer("approve", id, "--reason", "approved after the reload").CombinedOutput()
				if (err == nil) != tc.runs {
					t.Errorf("approval after the reload: err=%v %s; want it accepted: %v", err, o, tc.runs)
				}
				var out string
				select {
				case out = <-done:
				case <-time.After(30 * time.Second):
					t.Fatal("the held statement did not end")
				}
				t.Logf("agent: %q", out)
				if ran := strings.Contains(out, "UPDATE 1"); ran != tc.runs {
					t.Errorf("agent: %q; want the statement to run: %v", out, tc.runs)
				}
				if !tc.runs {
					if !strings.Contains(out, "the policy changed") {
						t.Errorf("agent was not told the policy changed: %q", out)
					}
					all, _ := exec.Command(enforcerBin, "approvals", "--all", "--json", "--socket", e.socket).Output()
					var reqs []*approval.Request
					json.Unmarshal(all, &reqs)
					i := slices.IndexFunc(reqs, func(r *approval.Request) bool { return r.ID == id })
					if i < 0 || reqs[i].State != approval.StateFailed || !strings.Contains(reqs[i].Reason, "writes-need-review") {
						t.Errorf("request %s after the reload: want failed, naming the changed rule; requests: %s", id, all)
					}
				}
			}
			want := "new"
			if tc.runs {
				want = "approved-before-reload"
			}
			if got := scalar(t, pg, "select status from orders where id = 4"); got != want {
				t.Errorf("orders 4 has status %q, want %q", got, want)
			}
		})
	}
}
