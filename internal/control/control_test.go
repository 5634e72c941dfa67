package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"log/slog"
	"os"
)

func TestServeAuthorisesByPeerAndReportsErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(sock); st.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v", st.Mode().Perm())
	}
	type echo struct {
		Name string `json:"name"`
	}
	routes := []Route{
		{Pattern: "GET /v1/whoami", Handle: func(ctx context.Context, c Caller, r *http.Request) (any, error) {
			return c, nil
		}},
		{Pattern: "GET /v1/pidfd", Handle: func(ctx context.Context, c Caller, r *http.Request) (any, error) {
			if c.Pidfd == nil {
				return nil, errors.New("no pidfd of the caller")
			}
			info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", c.Pidfd.Fd()))
			return string(info), err
		}},
		{Pattern: "POST /v1/echo", Handle: func(ctx context.Context, c Caller, r *http.Request) (any, error) {
			var in echo
			if err := Decode(r, &in); err != nil {
				return nil, err
			}
			if in.Name == "" {
				return nil, Errorf(http.StatusUnprocessableEntity, "name is required")
			}
			return in, nil
		}},
		{Pattern: "POST /v1/boom", Handle: func(ctx context.Context, c Caller, r *http.Request) (any, error) {
			return nil, errors.New("internal detail")
		}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, ln, routes, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1})), nil)
	c := NewClient(sock)

	var who Caller
	if err := c.Do(ctx, "GET", "/v1/whoami", nil, &who); err != nil {
		t.Fatal(err)
	}
	if int(who.PID) != os.Getpid() || int(who.UID) != os.Getuid() {
		t.Errorf("caller %+v, want pid %d uid %d", who, os.Getpid(), os.Getuid())
	}
	own, _ := os.ReadFile("/proc/self/cgroup")
	if want := UnifiedCgroup(string(own)); who.Cgroup == "" || who.Cgroup != want {
		t.Errorf("caller's cgroup %q, want %q", who.Cgroup, want)
	}
	// The kernel's pidfd of the caller (Linux 6.5+) stays open while the request is served, for
	// handlers that read the caller's /proc to make sure it is still the caller's.
	var pidfdInfo string
	if err := c.Do(ctx, "GET", "/v1/pidfd", nil, &pidfdInfo); err != nil {
		t.Errorf("pidfd of the caller: %v", err)
	} else if want := fmt.Sprintf("\nPid:\t%d\n", os.Getpid()); !strings.Contains(pidfdInfo, want) {
		t.Errorf("the caller's pidfd names another process:\n%s", pidfdInfo)
	}
	cases := []struct {
		name   string
		path   string
		body   any
		status int
		msg    string
	}{
		{"ok", "/v1/echo", map[string]string{"name": "x"}, 0, ""},
		{"unknown field", "/v1/echo", map[string]string{"nme": "x"}, 400, "unknown field"},
		{"wrong type", "/v1/echo", map[string]int{"name": 1}, 400, "bad request body"},
		{"handler refusal", "/v1/echo", map[string]string{}, 422, "name is required"},
		{"oversized body", "/v1/echo", map[string]string{"name": strings.Repeat("a", 2<<20)}, 400, "too large"},
		{"no such route", "/v1/nope", nil, 404, ""},
		{"internal error", "/v1/boom", nil, 500, "internal detail"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out echo
			err := c.Do(ctx, "POST", tc.path, tc.body, &out)
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.status || !strings.Contains(e.Message, tc.msg) {
				t.Fatalf("got %v (%T), want status %d with %q", err, err, tc.status, tc.msg)
			}
		})
	}
}

func TestClientSaysWhatToRunWhenDaemonIsDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	err := c.Do(context.Background(), "GET", "/v1/status", nil, nil)
	if !errors.Is(err, ErrDaemonDown) || !strings.Contains(err.Error(), "enforcer daemon --config") {
		t.Fatalf("got %v", err)
	}
}

func TestSocketPathPrecedence(t *testing.T) {
	t.Setenv("ENFORCER_SOCKET", "/env.sock")
	if got := SocketPath("/flag.sock"); got != "/flag.sock" {
		t.Errorf("flag: %s", got)
	}
	if got := SocketPath(""); got != "/env.sock" {
		t.Errorf("env: %s", got)
	}
	t.Setenv("ENFORCER_SOCKET", "")
	if got := SocketPath(""); got != DefaultSocket {
		t.Errorf("default: %s", got)
	}
}

// TestUnifiedCgroup: the caller's cgroup comes from the "0::" line of /proc/PID/cgroup, whatever
// v1 hierarchies a hybrid host lists beside it.
func TestUnifiedCgroup(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0::/enforcer.slice/run-1000-ab\n", "/enforcer.slice/run-1000-ab"},
		{"12:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice\n0::/user.slice/x.scope\n", "/user.slice/x.scope"},
		{"12:cpu,cpuacct:/user.slice\n", ""},
		{"0::relative\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := UnifiedCgroup(tt.in); got != tt.want {
			t.Errorf("UnifiedCgroup(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
