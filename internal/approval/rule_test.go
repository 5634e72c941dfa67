package approval

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestConfirm: an approval stands, when the statement is about to run, only for the rule it was
// asked under, with approvers and a quorum the recorded decisions meet under the policy in force;
// a late grant only under the very definition it was given under.
func TestConfirm(t *testing.T) {
	approved := func(by ...Reviewer) Outcome {
		r := &Request{ID: "apr_aaaaaaaaaa", Rule: "writes-need-review", RuleDigest: reviewDigest, Approvers: []string{"dba", "sre"}, Quorum: len(by), State: StateApproved}
		for _, rv := range by {
			r.Decisions = append(r.Decisions, Decision{Reviewer: rv, Verdict: Approve})
		}
		return Outcome{State: StateApproved, Request: r}
	}
	granted := func(rule, digest string) Outcome {
		return Outcome{State: StateApproved, Grant: &Grant{RequestID: "apr_aaaaaaaaaa", Rule: rule, RuleDigest: digest}}
	}
	same := Rule{Name: "writes-need-review", Digest: reviewDigest, Approvers: []string{"dba", "sre"}}
	for _, tc := range []struct {
		name  string
		out   Outcome
		now   Rule
		stand bool
	}{
		{"request, rule as it was", approved(bob), same, true},
		{"request, condition reworded, same approvers", approved(bob), Rule{Name: same.Name, Digest: "other", Approvers: []string{"dba"}}, true},
		{"request, approvers now secops", approved(bob), Rule{Name: same.Name, Digest: "other", Approvers: []string{"secops"}}, false},
		{"request, quorum now 2", approved(bob), Rule{Name: same.Name, Digest: "other", Approvers: []string{"dba"}, Quorum: 2}, false},
		{"request, quorum 2 met by dba and sre", approved(bob, dave), Rule{Name: same.Name, Digest: "other", Approvers: []string{"dba", "sre"}, Quorum: 2}, true},
		{"request, only the sre approval counts now", approved(bob, dave), Rule{Name: same.Name, Digest: "other", Approvers: []string{"sre"}, Quorum: 2}, false},
		{"request, now under another rule", approved(bob), Rule{Name: "all-writes", Digest: reviewDigest, Approvers: []string{"dba"}}, false},
		{"request not approved", Outcome{State: StateExpired, Request: approved(bob).Request}, same, false},
		{"grant, rule as it was", granted(same.Name, reviewDigest), same, true},
		{"grant, rule changed", granted(same.Name, reviewDigest), Rule{Name: same.Name, Digest: "other", Approvers: []string{"dba", "sre"}}, false},
		{"grant from before rule digests", granted(same.Name, ""), Rule{Name: same.Name, Approvers: []string{"dba", "sre"}}, false},
		{"grant, now under another rule", granted("other-rule", reviewDigest), same, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.out.Confirm(tc.now)
			if (err == nil) != tc.stand {
				t.Fatalf("Confirm: %v, want the approval to stand: %v", err, tc.stand)
			}
			if err != nil && tc.out.State == StateApproved && !errors.Is(err, ErrPolicyChanged) {
				t.Errorf("Confirm: %v, want it to wrap ErrPolicyChanged", err)
			}
		})
	}
}

// TestApplyRulesEndsRequestsOfChangedRules: a reload that changes or drops the rule a request
// waits under ends the request at once (failed, saying which rule and what to do), and a
// reviewer can no longer decide it; a reload that leaves the rule as it was changes nothing.
func TestApplyRulesEndsRequestsOfChangedRules(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		rules map[string]string
		ends  string // what the failure reason says; "" when the request goes on
	}{
		{"rule unchanged", map[string]string{"writes-need-review": reviewDigest}, ""},
		{"another rule changed", map[string]string{"writes-need-review": reviewDigest, "ddl-needs-review": "v2"}, ""},
		{"rule changed", map[string]string{"writes-need-review": "v2"}, `rule "writes-need-review" was changed`},
		{"rule removed", map[string]string{"ddl-needs-review": "v1"}, `rule "writes-need-review" was removed`},
		{"no approve rules left", nil, `rule "writes-need-review" was removed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &eventLog{}
			b := NewBroker(NewMemoryStore(), Config{Timeout: time.Minute, OnEvent: log.add, PollInterval: time.Hour})
			if _, _, err := b.ApplyRules(ctx, map[string]string{"writes-need-review": reviewDigest}); err != nil {
				t.Fatal(err)
			}
			h := hold(t, ctx, b, updateSpec("1"))
			ended, _, err := b.ApplyRules(ctx, tc.rules)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ends == "" {
				if ended != 0 {
					t.Errorf("ApplyRules ended %d requests", ended)
				}
				if _, err := b.Approve(ctx, h.id, bob, ""); err != nil {
					t.Fatalf("approval under the unchanged rule: %v", err)
				}
				if out := h.wait(t); !out.Approved() {
					t.Errorf("outcome %s, want approved", out.State)
				}
				return
			}
			if ended != 1 {
				t.Errorf("ApplyRules ended %d requests, want 1", ended)
			}
			out := h.wait(t)
			if out.State != StateFailed || out.Request == nil || !strings.Contains(out.Request.Reason, tc.ends) ||
				!strings.Contains(out.Message(), ErrPolicyChanged.Error()) || !strings.Contains(out.Message(), "send it again") {
				t.Fatalf("outcome %s (%q), want failed saying %q and what to do", out.State, out.Message(), tc.ends)
			}
			if _, err := b.Approve(ctx, h.id, bob, ""); err == nil {
				t.Error("a reviewer approved a request that the reload ended")
			}
			checkEvents(t, log.types(h.id), EventCreated, EventNoticeSent, EventFailed)

			// A statement held under the old definition after the reload (its guard judged it
			// before) ends at once too.
			late := hold(t, ctx, b, updateSpec("2"))
			if out := late.wait(t); out.State != StateFailed {
				t.Errorf("request held under a rule the reload had changed: %s, want failed", out.State)
			}
		})
	}
}

// TestLateApprovalOfChangedRuleRefused: a reviewer cannot approve an expired request whose rule
// a reload changed: the grant would never pass the retry, which the policy now judges otherwise.
func TestLateApprovalOfChangedRuleRefused(t *testing.T) {
	ctx := context.Background()
	b := NewBroker(NewMemoryStore(), Config{Timeout: 50 * time.Millisecond, LateWindow: time.Hour})
	h := hold(t, ctx, b, updateSpec("1"))
	if out := h.wait(t); out.State != StateExpired {
		t.Fatalf("outcome %s, want expired", out.State)
	}
	if _, _, err := b.ApplyRules(ctx, map[string]string{"writes-need-review": "v2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Approve(ctx, h.id, bob, "late"); !errors.Is(err, ErrPolicyChanged) {
		t.Fatalf("late approval under a changed rule: %v, want ErrPolicyChanged", err)
	}
}

// TestOtherDaemonsRulesLeaveRequestsAlone: daemons sharing a store judge their own requests by
// their own policies. A reviewer's host whose policy lacks the agent host's rule still decides
// the agent's requests, and its reload revokes none of the agent host's grants.
func TestOtherDaemonsRulesLeaveRequestsAlone(t *testing.T) {
	ctx := context.Background()
	store := NewMemoryStore()
	agentHost := NewBroker(store, Config{Owner: "agent-host", Timeout: time.Second, LateWindow: time.Hour, PollInterval: 20 * time.Millisecond})
	reviewHost := NewBroker(store, Config{Owner: "review-host", PollInterval: 20 * time.Millisecond})
	rules := map[string]string{"writes-need-review": reviewDigest}
	if _, _, err := agentHost.ApplyRules(ctx, rules); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reviewHost.ApplyRules(ctx, map[string]string{}); err != nil {
		t.Fatal(err)
	}

	h := hold(t, ctx, agentHost, updateSpec("1"))
	if _, err := reviewHost.Approve(ctx, h.id, bob, "from the reviewer's host"); err != nil {
		t.Fatalf("approval through another daemon: %v", err)
	}
	if out := h.wait(t); !out.Approved() {
		t.Fatalf("outcome %s, want approved", out.State)
	}

	late := hold(t, ctx, agentHost, updateSpec("2"))
	if out := late.wait(t); out.State != StateExpired {
		t.Fatalf("outcome %s, want expired", out.State)
	}
	if _, err := reviewHost.Approve(ctx, late.id, bob, "late"); err != nil {
		t.Fatalf("late approval through another daemon: %v", err)
	}
	if _, revoked, err := reviewHost.ApplyRules(ctx, map[string]string{}); err != nil || revoked != 0 {
		t.Fatalf("the reviewer's host revoked %d of the agent host's grants (%v)", revoked, err)
	}
	out, err := agentHost.Request(ctx, updateSpec("2"), nil)
	if err != nil || out.Grant == nil {
		t.Fatalf("retry on the agent host: %s, %v; want it to pass on the grant", out.State, err)
	}
}
