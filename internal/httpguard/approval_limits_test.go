package httpguard

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
)

// TestOverApprovalLimitsRefused: a request that would put its person over the broker's rate of
// new approval requests is refused at once with 403, saying whose and when to try again, as one
// over the bound on pending requests is; it creates no request for reviewers.
func TestOverApprovalLimitsRefused(t *testing.T) {
	tests := []struct {
		name string
		cfg  approval.Config
		want []string
	}{
		{"too many pending", approval.Config{MaxPendingPerPerson: 1}, []string{"await review", "alice"}},
		{"too many new", approval.Config{RequestBurst: 1, RequestEvery: time.Hour}, []string{"too many approval requests", "alice", "try again in 1h0m0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			created := make(chan string, 2)
			cfg := tt.cfg
			cfg.Timeout, cfg.LateWindow = time.Minute, -1
			cfg.OnEvent = func(e approval.Event) {
				if e.Type == approval.EventCreated {
					created <- e.Request.ID
				}
			}
			broker := approval.NewBroker(approval.NewMemoryStore(), cfg)
			g, _, _ := loggedGuard(t, parsePolicy(t, testPolicy), broker)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := make(chan struct{})
			go func() {
				defer close(first)
				g.Request(ctx, request("POST", "/v1/refunds", `{"order": 7}`, "Content-Type", "application/json"))
			}()
			select {
			case <-created:
			case <-time.After(10 * time.Second):
				t.Fatal("the first request was not held")
			}
			g2, _, _ := loggedGuard(t, parsePolicy(t, testPolicy), broker)
			v := g2.Request(context.Background(), request("POST", "/v1/refunds", `{"order": 8}`, "Content-Type", "application/json"))
			if v.Allow || v.Status != http.StatusForbidden {
				t.Fatalf("second request: %+v; want refused with 403", v)
			}
			for _, w := range tt.want {
				if !strings.Contains(v.Message, w) {
					t.Errorf("refusal %q does not say %q", v.Message, w)
				}
			}
			if len(created) != 0 {
				t.Error("the refused request was put to reviewers")
			}
			cancel()
			<-first
		})
	}
}
