package pgguard

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestApprovedStatementJudgedAgainAfterReload: a statement approved after the policy was reloaded
// runs only if the policy in force still sends it to the rule it was held under, with approvers
// and a quorum the reviewers' decisions meet (or allows it outright). Otherwise the client gets
// 42501 saying the policy changed and what to do, and the replay shows the approval voided and
// the statement blocked. The broker is not told of the reload here (the daemon does that, see
// Broker.ApplyRules), so the approval lands and only the guard's judgment stands in the way.
func TestApprovedStatementJudgedAgainAfterReload(t *testing.T) {
	const base = "default: allow\n" + testPolicy
	review := func(rule string) string { return strings.Replace(base, "rules:\n", "rules:\n"+rule+"\n", 1) }
	held := review("  - {name: writes-need-review, when: 'sql.writes', action: approve, approvers: [dba]}")
	for _, tc := range []struct {
		name     string
		reloaded string
		runs     bool
		says     string // in the refusal
	}{
		{"policy unchanged", held, true, ""},
		{"only the message changed", review("  - {name: writes-need-review, when: 'sql.writes', action: approve, approvers: [dba], message: ask a dba}"), true, ""},
		{"condition reworded, same approvers", review("  - {name: writes-need-review, when: 'sql.writes && sql.kind == \"UPDATE\"', action: approve, approvers: [dba]}"), true, ""},
		{"writes now allowed", base, true, ""},
		{"writes now blocked", review("  - {name: writes-frozen, when: 'sql.writes', action: block, message: writes are frozen}"), false, `rule "writes-frozen" now blocks`},
		{"approvers now secops", review("  - {name: writes-need-review, when: 'sql.writes', action: approve, approvers: [secops]}"), false, "from group [secops]"},
		{"quorum now 2", review("  - {name: writes-need-review, when: 'sql.writes', action: approve, approvers: [dba], quorum: 2}"), false, "2 approvals"},
		{"now under another rule", review("  - {name: updates-need-ops, when: 'sql.kind == \"UPDATE\"', action: approve, approvers: [dba]}\n  - {name: writes-need-review, when: 'sql.writes && sql.kind != \"UPDATE\"', action: approve, approvers: [dba]}"), false, `now falls under rule "updates-need-ops"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var current atomic.Pointer[policy.Policy]
			current.Store(parsePolicy(t, held))
			reloaded := parsePolicy(t, tc.reloaded)
			var broker *approval.Broker
			broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: time.Minute, LateWindow: -1,
				OnEvent: func(e approval.Event) {
					if e.Type == approval.EventCreated {
						// The reload lands while the statement waits; then carol, a dba, approves.
						current.Store(reloaded)
						go broker.Approve(context.Background(), e.Request.ID, approval.Reviewer{Subject: "carol", Groups: []string{"dba"}}, "ok")
					}
				}})
			dir := t.TempDir()
			rec, err := record.Open(record.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			sh := testShared(current.Load, rec)
			sh.Approvals = broker
			g := sh.NewGuard(ConnInfo{ID: "1", Target: current.Load().Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			v := g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "update customers set tel = 'x' where id = 4", TxStatus: 'I'})
			replay := replayText(t, closeAndLoad(t, rec, dir, g.SessionID()))
			if tc.runs {
				if v.Action == postgres.Refuse {
					t.Fatalf("refused: %s", v.Error.Message)
				}
				if !strings.Contains(replay, "approved by carol") || strings.Contains(replay, "voided") {
					t.Errorf("replay:\n%s\nwant the approval by carol, not voided", replay)
				}
				return
			}
			if v.Action != postgres.Refuse || v.Error.Code != "42501" || !strings.Contains(v.Error.Message, "the policy changed while it waited") ||
				!strings.Contains(v.Error.Message, tc.says) || !strings.Contains(v.Error.Hint, "send the statement again") {
				t.Fatalf("verdict %+v; want 42501 saying the policy changed (%q) and what to do", v.Error, tc.says)
			}
			approved, voided := strings.Index(replay, "approved by carol"), strings.Index(replay, "voided: the policy changed")
			if approved < 0 || voided < approved || !strings.Contains(replay, "BLOCK") {
				t.Errorf("replay:\n%s\nwant the approval by carol, then voided, and the statement blocked", replay)
			}
		})
	}
}
