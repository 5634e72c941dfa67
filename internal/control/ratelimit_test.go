package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRateLimitPerUser: each user may make Burst requests at once, then one every Every; a
// refusal is a 429 that says when to try again. Must hold: users, and a user's enforced
// processes and its others, have buckets of their own, and root is not limited.
func TestRateLimitPerUser(t *testing.T) {
	user := Caller{UID: 1000}
	type call struct {
		advance  time.Duration // before the call
		caller   Caller
		confined bool
		allowed  bool
	}
	tests := []struct {
		name  string
		calls []call
	}{
		{"a burst, then refused", []call{
			{caller: user, allowed: true}, {caller: user, allowed: true}, {caller: user, allowed: true},
			{caller: user, allowed: false},
		}},
		{"one more after each interval", []call{
			{caller: user, allowed: true}, {caller: user, allowed: true}, {caller: user, allowed: true},
			{advance: 9 * time.Second, caller: user, allowed: false},
			{advance: time.Second, caller: user, allowed: true},
			{caller: user, allowed: false},
			{advance: time.Hour, caller: user, allowed: true}, {caller: user, allowed: true}, {caller: user, allowed: true},
			{caller: user, allowed: false},
		}},
		{"users apart", []call{
			{caller: user, allowed: true}, {caller: user, allowed: true}, {caller: user, allowed: true},
			{caller: Caller{UID: 1001}, allowed: true},
		}},
		{"an agent apart from its user", []call{
			{caller: user, confined: true, allowed: true}, {caller: user, confined: true, allowed: true},
			{caller: user, confined: true, allowed: true}, {caller: user, confined: true, allowed: false},
			{caller: user, allowed: true},
		}},
		{"root not limited", []call{
			{caller: Caller{}, allowed: true}, {caller: Caller{}, allowed: true}, {caller: Caller{}, allowed: true},
			{caller: Caller{}, allowed: true}, {caller: Caller{}, confined: true, allowed: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1_000_000, 0)
			l := &RateLimit{What: "logins", Every: 10 * time.Second, Burst: 3, now: func() time.Time { return now }}
			for i, c := range tt.calls {
				now = now.Add(c.advance)
				err := l.Allow(c.caller, c.confined)
				if c.allowed {
					if err != nil {
						t.Fatalf("call %d refused: %v", i, err)
					}
					continue
				}
				var ce *Error
				if !errors.As(err, &ce) || ce.Status != http.StatusTooManyRequests || ce.RetryAfter <= 0 ||
					!strings.Contains(ce.Message, "too many logins from uid 1000") || !strings.Contains(ce.Message, "try again in") {
					t.Fatalf("call %d: %v, want a 429 that says when to try again", i, err)
				}
			}
		})
	}
}

// TestRetryAfterHeader: an Error that says when to retry sends Retry-After, in whole seconds
// rounded up, with its message.
func TestRetryAfterHeader(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	routes := []Route{{Pattern: "POST /v1/limited", Handle: func(ctx context.Context, c Caller, r *http.Request) (any, error) {
		return nil, &Error{Status: http.StatusTooManyRequests, Message: "slow down", RetryAfter: 1500 * time.Millisecond}
	}}}
	go serve(ctx, ln, routes, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, requestTimeout)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Post("http://enforcer/v1/limited", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" || !strings.Contains(string(body), "slow down") {
		t.Errorf("%s, Retry-After %q, %s", resp.Status, resp.Header.Get("Retry-After"), body)
	}
}
