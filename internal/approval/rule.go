package approval

import (
	"errors"
	"fmt"
	"slices"
)

// Rule is a policy rule that sends statements for approval, as the policy in force defines it.
// Digest identifies that definition (the policy computes it from the rule's condition, action,
// approvers and quorum): requests and grants remember the digest they were made under, and count
// only while the policy still defines the rule so.
type Rule struct {
	Name      string
	Digest    string
	Approvers []string
	Quorum    int // 0 means 1
}

// ErrPolicyChanged ends, or refuses to let through, an approval whose rule the policy no longer
// defines as it did when the statement was held.
var ErrPolicyChanged = errors.New("the policy changed while it waited")

// Confirm reports whether the approval in o still stands for a statement that the policy in force
// now sends for approval under rule now. o must be approved.
//
// An approval holds only for the rule it was given under, and only for approvers and a quorum that
// the current policy asks for:
//   - a request approved by reviewers stands if now is the rule it was held under (same name) and
//     its approving reviewers, counted by the groups they had when they decided, are at least
//     now's quorum from now's approver groups. A reworded condition that still sends the
//     statement to that rule keeps the approval; other approvers, or more of them, void it.
//   - a late grant stands only under the very definition it was given under (name and digest):
//     it does not keep the reviewers' groups, so nothing less can be checked.
//
// The caller judges the statement again with the policy in force just before forwarding it, and
// calls Confirm with the rule that judgment picked; a statement that judgment blocks never gets
// here.
func (o Outcome) Confirm(now Rule) error {
	switch {
	case o.State != StateApproved:
		return fmt.Errorf("request %s is %s, not approved", o.ID(), o.State)
	case o.Grant != nil:
		g := o.Grant
		if g.Rule != now.Name {
			return fmt.Errorf("%w: the grant of request %s was given under rule %q, the statement now falls under rule %q", ErrPolicyChanged, g.RequestID, g.Rule, now.Name)
		}
		if g.RuleDigest == "" || g.RuleDigest != now.Digest {
			return fmt.Errorf("%w: rule %q was changed since the grant of request %s was given", ErrPolicyChanged, now.Name, g.RequestID)
		}
		return nil
	case o.Request != nil:
		r := o.Request
		if r.Rule != now.Name {
			return fmt.Errorf("%w: request %s was held under rule %q, the statement now falls under rule %q", ErrPolicyChanged, r.ID, r.Rule, now.Name)
		}
		need := max(now.Quorum, 1)
		if got := r.approvalsFrom(now.Approvers); got < need {
			return fmt.Errorf("%w: rule %q now needs %s from group %v, and %d of this request's approvals are from them", ErrPolicyChanged, now.Name, approvalsWord(need), now.Approvers, got)
		}
		return nil
	}
	return errors.New("the outcome names neither a request nor a grant")
}

// approvalsFrom counts approving votes by reviewers who were, when they voted, in one of groups.
func (r *Request) approvalsFrom(groups []string) int {
	n := 0
	for _, d := range r.Decisions {
		if d.Verdict == Approve && slices.ContainsFunc(d.Reviewer.Groups, func(g string) bool { return slices.Contains(groups, g) }) {
			n++
		}
	}
	return n
}

// ruleChange says how rules (name to digest, as Broker.ApplyRules takes them) changed the rule
// a request was held under (with digest), or "" when they did not.
func ruleChange(rules map[string]string, rule, digest string) string {
	cur, ok := rules[rule]
	switch {
	case !ok:
		return fmt.Sprintf("rule %q was removed or no longer asks for approval", rule)
	case digest == "" || cur != digest:
		return fmt.Sprintf("rule %q was changed", rule)
	}
	return ""
}
