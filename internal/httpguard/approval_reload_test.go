package httpguard

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestApprovedRequestJudgedAgainAfterReload: a request approved after the policy was reloaded is
// forwarded only if the policy in force still sends it to the rule it was held under, with
// approvers and a quorum the reviewers' decisions meet (or allows it outright). Otherwise the
// client gets 403 saying the policy changed and what to do, and the record shows the approval
// voided and the request blocked. The broker is not told of the reload here (the daemon does
// that, see Broker.ApplyRules), so the approval lands and only the guard's judgment stands in
// the way.
func TestApprovedRequestJudgedAgainAfterReload(t *testing.T) {
	const refunds = `  - {name: refunds, when: 'http.method == "POST" && http.path == "/v1/refunds"', action: approve, approvers: [ops]}` + "\n"
	with := func(rule string) string { return strings.Replace(testPolicy, refunds, rule, 1) }
	for _, tc := range []struct {
		name     string
		reloaded string
		forwards bool
		says     string // in the refusal
	}{
		{"policy unchanged", testPolicy, true, ""},
		{"refunds rule removed", with(""), false, "policy default"},
		{"refunds now allowed", with(`  - {name: refunds-open, when: 'http.path == "/v1/refunds"', action: allow}` + "\n"), true, ""},
		{"refunds now blocked", with(`  - {name: refunds-frozen, when: 'http.path == "/v1/refunds"', action: block}` + "\n"), false, `rule "refunds-frozen" now blocks`},
		{"approvers now finance", with(`  - {name: refunds, when: 'http.method == "POST" && http.path == "/v1/refunds"', action: approve, approvers: [finance]}` + "\n"), false, "from group [finance]"},
		{"quorum now 2", with(`  - {name: refunds, when: 'http.method == "POST" && http.path == "/v1/refunds"', action: approve, approvers: [ops], quorum: 2}` + "\n"), false, "2 approvals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var current atomic.Pointer[policy.Policy]
			current.Store(parsePolicy(t, testPolicy))
			reloaded := parsePolicy(t, tc.reloaded)
			var broker *approval.Broker
			broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: time.Minute, LateWindow: -1,
				OnEvent: func(e approval.Event) {
					if e.Type == approval.EventCreated {
						current.Store(reloaded)
						go broker.Approve(context.Background(), e.Request.ID, approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}, "ok")
					}
				}})
			dir := t.TempDir()
			rec, err := record.Open(record.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			sh := &Shared{Policy: current.Load, Approvals: broker, Recorder: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			g := sh.NewGuard(ConnInfo{ID: "1", Target: current.Load().Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
			v := exchange(g, request("POST", "/v1/refunds", `{"order": 7}`, "Content-Type", "application/json"), 201, `{"ok": true}`)
			var states, reasons []string
			var verdict string
			for _, ev := range sessionRecords(t, rec, dir, g.SessionID()) {
				if ev.Approval != nil {
					states, reasons = append(states, ev.Approval.State), append(reasons, ev.Approval.Reason)
				}
				if ev.Statement != nil {
					verdict = ev.Statement.Verdict
				}
			}
			if tc.forwards {
				if !v.Allow {
					t.Fatalf("refused: %+v", v)
				}
				if got := strings.Join(states, " "); got != "requested approved" {
					t.Errorf("approval records %q, want requested approved", got)
				}
				return
			}
			if v.Allow || v.Status != http.StatusForbidden || !strings.Contains(v.Message, "the policy changed while it waited") ||
				!strings.Contains(v.Message, tc.says) || !strings.Contains(v.Hint, "send the request again") || v.Header.Get("X-Enforcer-Approval") == "" {
				t.Fatalf("verdict %+v; want 403 saying the policy changed (%q) and what to do", v, tc.says)
			}
			if got := strings.Join(states, " "); got != "requested approved voided" || !strings.Contains(reasons[2], tc.says) || verdict != record.VerdictBlock {
				t.Errorf("approval records %q (%q), request verdict %q; want requested approved voided, and block", got, reasons, verdict)
			}
		})
	}
}
