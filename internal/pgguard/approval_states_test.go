package pgguard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestApprovalEndsRecorded: the record says how each held statement's request ended; a client
// that gave up (cancelled, hung up) is recorded as having withdrawn it, not as a request nobody
// answered in time.
func TestApprovalEndsRecorded(t *testing.T) {
	pol := parsePolicy(t, strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: review-writes, when: 'sql.writes', action: approve, approvers: [ops]}\n", 1)+"default: allow\n")
	bob := approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}
	for _, c := range []struct {
		name string
		act  func(b *approval.Broker, id string, cancel context.CancelFunc)
		want string
	}{
		{"approved", func(b *approval.Broker, id string, _ context.CancelFunc) {
			b.Approve(context.Background(), id, bob, "")
		}, record.ApprovalApproved},
		{"denied", func(b *approval.Broker, id string, _ context.CancelFunc) { b.Deny(context.Background(), id, bob, "no") }, record.ApprovalDenied},
		{"withdrawn", func(_ *approval.Broker, _ string, cancel context.CancelFunc) { cancel() }, record.ApprovalWithdrawn},
		{"expired", func(*approval.Broker, string, context.CancelFunc) {}, record.ApprovalExpired},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rec, err := record.Open(record.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var broker *approval.Broker
			broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: time.Second, LateWindow: -1,
				OnEvent: func(e approval.Event) {
					if e.Type == approval.EventCreated && e.Request != nil {
						go c.act(broker, e.Request.ID, cancel)
					}
				}})
			sh := testShared(func() *policy.Policy { return pol }, rec)
			sh.Approvals = broker
			g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
			g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "update customers set tel = 'x' where id = 1", TxStatus: 'I'})
			g.End("done", 0, 0)
			var states []string
			for _, ev := range eventsOf(t, closeAndLoad(t, rec, dir, g.SessionID())) {
				if ev.Approval != nil {
					states = append(states, ev.Approval.State)
				}
			}
			if len(states) != 2 || states[0] != record.ApprovalRequested || states[1] != c.want {
				t.Fatalf("approval records %q, want requested then %s", states, c.want)
			}
		})
	}
}
