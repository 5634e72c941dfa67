package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// limitsDaemon is a daemon with what logins and runs need: a local identity provider, an
// enforcement subtree of its own and the limits Run sets.
func limitsDaemon(t *testing.T) *Daemon {
	t.Helper()
	p, err := identity.NewProvider(identity.Config{Kind: identity.KindLocal})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := identity.NewManager(identity.ManagerConfig{StateDir: filepath.Join(t.TempDir(), "identity"), Provider: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ids.Close() })
	sub, err := redirect.OpenSubtree(fmt.Sprintf("enforcer-limitstest-%d.slice", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.RemoveAll() })
	return &Daemon{
		cfg: &Config{Socket: filepath.Join(t.TempDir(), "enforcer.sock")}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ids: ids, subtree: sub, loginLimit: newLoginLimit(), runLimit: newRunLimit(), releaseLimit: newReleaseLimit(),
	}
}

// route finds the handler of pattern among the daemon's routes.
func (d *Daemon) route(t *testing.T, pattern string) func(control.Caller) (any, error) {
	t.Helper()
	for _, rt := range d.routes() {
		if rt.Pattern == pattern {
			return func(c control.Caller) (any, error) {
				r := httptest.NewRequestWithContext(context.Background(), "POST", "/", strings.NewReader("{}"))
				return rt.Handle(r.Context(), c, r)
			}
		}
	}
	t.Fatalf("no route %s", pattern)
	return nil
}

// wantRefused checks that err is a control error with status and a message holding each of want.
func wantRefused(t *testing.T, what string, err error, status int, want ...string) {
	t.Helper()
	var ce *control.Error
	if !errors.As(err, &ce) || ce.Status != status {
		t.Fatalf("%s: %v, want status %d", what, err, status)
	}
	for _, w := range want {
		if !strings.Contains(ce.Message, w) {
			t.Errorf("%s: %q does not say %q", what, ce.Message, w)
		}
	}
}

// TestLoginsAndRunsRateLimitedPerUser: a local user who loops on POST /v1/login or POST /v1/runs
// gets a burst, then 429 with when to retry, and keeps few sessions; root, who owns the daemon,
// is not limited.
func TestLoginsAndRunsRateLimitedPerUser(t *testing.T) {
	outside := func(uid uint32) control.Caller { return control.Caller{UID: uid, PID: 1, Cgroup: "/user.slice"} }
	tests := []struct {
		name    string
		pattern string
		burst   int
		caller  control.Caller
		what    string
	}{
		{"logins", "POST /v1/login", newLoginLimit().Burst, outside(65534), "too many logins from uid 65534"},
		{"runs", "POST /v1/runs", newRunLimit().Burst, outside(65534), "too many new runs from uid 65534"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := limitsDaemon(t)
			// The daemon's bursts, with refills too slow to come during the test.
			d.loginLimit.Every, d.runLimit.Every = time.Hour, time.Hour
			handle := d.route(t, tt.pattern)
			for _, uid := range []uint32{0, 65534} {
				if _, err := d.ids.LoginLocal(uid); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tt.burst {
				if _, err := handle(tt.caller); err != nil {
					t.Fatalf("request %d of a burst of %d: %v", i+1, tt.burst, err)
				}
			}
			_, err := handle(tt.caller)
			wantRefused(t, "one past the burst", err, http.StatusTooManyRequests, tt.what, "try again in")
			var ce *control.Error
			if errors.As(err, &ce) && ce.RetryAfter <= 0 {
				t.Errorf("refusal without Retry-After: %+v", ce)
			}
			for i := range tt.burst + 5 {
				if _, err := handle(outside(0)); err != nil {
					t.Fatalf("root's request %d: %v", i+1, err)
				}
			}
			if n := len(d.ids.Sessions(65534)); n > identity.DefaultMaxSessionsPerUID {
				t.Errorf("uid 65534 keeps %d sessions", n)
			}
		})
	}
}

// TestRunsPerUserBounded: a user other than root has at most maxRunsPerUID run cgroups; one more
// is refused with how many there are and how to end them, runs whose processes have exited
// make way, and root and other users are not held back.
func TestRunsPerUserBounded(t *testing.T) {
	d := limitsDaemon(t)
	d.runLimit = &control.RateLimit{What: "new runs", Every: time.Nanosecond, Burst: 10 * maxRunsPerUID}
	for _, uid := range []uint32{0, 65534} {
		if _, err := d.ids.LoginLocal(uid); err != nil {
			t.Fatal(err)
		}
	}
	nobody := control.Caller{UID: 65534, PID: 1, Cgroup: "/user.slice"}
	var runs []*control.Run
	for i := range maxRunsPerUID {
		r, err := d.createRun(nobody)
		if err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		runs = append(runs, r)
	}
	_, err := d.createRun(nobody)
	wantRefused(t, "one run past the bound", err, http.StatusTooManyRequests,
		fmt.Sprintf("uid 65534 has %d enforced runs", maxRunsPerUID), "enforcer status")
	if _, err := d.createRun(control.Caller{UID: 0, PID: 1, Cgroup: "/user.slice"}); err != nil {
		t.Errorf("root's run while uid 65534 is at its bound: %v", err)
	}
	if n := len(d.ids.Bindings(65534)); n != maxRunsPerUID {
		t.Errorf("uid 65534 has %d bound cgroups, want %d", n, maxRunsPerUID)
	}

	// A run whose processes have exited (and that is old enough not to be one being entered)
	// makes way for a new one, without waiting for the collector.
	old := time.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(runs[0].Path, old, old); err != nil {
		t.Fatalf("age a run's cgroup directory: %v", err)
	}
	if _, err := d.createRun(nobody); err != nil {
		t.Fatalf("a run after one had exited: %v", err)
	}
	if _, err := os.Stat(runs[0].Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the exited run %s is still there: %v", runs[0].Path, err)
	}
	if _, ok := d.ids.Bindings(0)[runs[0].ID]; ok {
		t.Errorf("the exited run's cgroup %d is still bound", runs[0].ID)
	}
}
