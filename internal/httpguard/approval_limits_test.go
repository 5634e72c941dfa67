package httpguard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// TestLongBodyShownCutWhole: reviewers of a held request with a long body see its start and a
// marker with the whole shown body's length and SHA-256, not those of a shorter copy.
func TestLongBodyShownCutWhole(t *testing.T) {
	created := make(chan *approval.Request, 1)
	broker := approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: time.Minute, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type == approval.EventCreated {
				created <- e.Request
			}
		}})
	g, _, _ := loggedGuard(t, parsePolicy(t, testPolicy), broker)
	body := `{"note": "` + strings.Repeat("n", 100_000) + `"}`
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Request(ctx, request("POST", "/v1/refunds", body, "Content-Type", "application/json"))
	}()
	defer func() { cancel(); <-done }()
	var r *approval.Request
	select {
	case r = <-created:
	case <-time.After(10 * time.Second):
		t.Fatal("the request was not held")
	}
	sum := sha256.Sum256([]byte(body))
	want := fmt.Sprintf("[cut: %d bytes, sha256 %s]", len(body), hex.EncodeToString(sum[:]))
	if len(r.Params) != 1 || !r.Params[0].Cut || !strings.HasSuffix(r.Params[0].Value, want) || len(r.Params[0].Value) > approval.MaxShownParam {
		t.Fatalf("shown body: %+v; want at most %d bytes, cut, ending %q", r.Params, approval.MaxShownParam, want)
	}
}
