package pgguard

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
)

// TestRuledValueShownToReviewers: a held statement that writes 'hunter2' to customers.tel
// through a VALUES subquery reaches reviewers (and the NOTICE, built from the same request)
// with the value masked by the rule.
func TestRuledValueShownToReviewers(t *testing.T) {
	pol := parsePolicy(t, strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: review-inserts, when: 'sql.kind == \"INSERT\"', action: approve, approvers: [ops]}\n", 1)+
		"default: allow\nmasking:\n  columns:\n    - {match: customers.tel, style: redact}\n")
	var mu sync.Mutex
	var shown []string
	broker := approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: 200 * time.Millisecond, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type == approval.EventCreated && e.Request != nil {
				mu.Lock()
				shown = append(shown, e.Request.SQL)
				mu.Unlock()
			}
		}})
	sh := testShared(func() *policy.Policy { return pol }, nil)
	sh.Approvals = broker
	g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
	for _, sql := range []string{
		"insert into customers(tel) values ('hunter2')", // control: masked
		"insert into customers(tel) select x from (values ('hunter2')) v(x)",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: sql})
		cancel()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(shown) != 2 {
		t.Fatalf("%d approval requests, want 2: %q", len(shown), shown)
	}
	for _, s := range shown {
		if strings.Contains(s, "hunter2") {
			t.Errorf("shown to reviewers in clear: %s", s)
		}
	}
}
