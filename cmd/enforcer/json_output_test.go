package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestJSONOutputEscapesControls: the CLI's JSON is read on terminals too. A process name the
// agent chose (prctl(PR_SET_NAME)) with C1 controls (U+009B is CSI) and bidi controls comes out
// of `enforcer sessions --json` escaped, and decodes to the same name.
func TestJSONOutputEscapesControls(t *testing.T) {
	dir := t.TempDir()
	r, err := record.Open(record.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const comm = "\u009b2J\u009b8m\u202eqlsp\u2066"
	if err := r.Append(record.Event{Type: record.TypeSessionStart, Session: "s-1", Start: &record.SessionStart{
		Process: record.Process{Comm: comm, PID: 5}, Protocol: "postgres", Target: record.Target{Name: "prod-db"}}}, record.WriteAhead); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	out := stdoutOf(t, func() error {
		return cmdSessions(context.Background(), flag.NewFlagSet("sessions", flag.ContinueOnError), []string{"--dir", dir, "--json"})
	})
	if i := strings.IndexFunc(out, func(r rune) bool { return 0x80 <= r && r < 0xa0 || r == 0x202e || r == 0x2066 }); i >= 0 {
		t.Fatalf("sessions --json prints a control raw at byte %d: %q", i, out)
	}
	var ss []record.SessionSummary
	if err := json.Unmarshal([]byte(out), &ss); err != nil || len(ss) != 1 || ss[0].Process != comm {
		t.Fatalf("sessions --json does not decode to the process name: %v %+v", err, ss)
	}
}

// stdoutOf runs f and returns what it printed on standard output.
func stdoutOf(t *testing.T, f func() error) string {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = pw
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(pr)
		done <- b
	}()
	err = f()
	os.Stdout = old
	pw.Close()
	out := <-done
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestApprovalsAndStatusJSONEscapeControls: what `enforcer approvals --json` (the list, and one
// request by id) and `enforcer status --json` print escapes C1 and bidi controls the agent put in
// a held statement or its process name, as the plain views do. The control server here answers
// with such a request itself: what is tested is the CLI's printing of the daemon's answer.
func TestApprovalsAndStatusJSONEscapeControls(t *testing.T) {
	const hostile = "UPDATE orders SET status = 'x' WHERE id = 7 /* \u009b1K\u009b2K\u202e 7 = di */ OR id > 0"
	req := &approval.Request{ID: "apr_1", State: approval.StateDenied, SQL: hostile,
		Process: approval.Process{Comm: "\u009b2Jclaude"}, Approvers: []string{"dba"}}
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := control.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	routes := []control.Route{
		{Pattern: "GET /v1/approvals", Handle: func(context.Context, control.Caller, *http.Request) (any, error) {
			return []*approval.Request{req}, nil
		}},
		{Pattern: "GET /v1/approvals/{id}", Handle: func(_ context.Context, _ control.Caller, r *http.Request) (any, error) {
			if r.PathValue("id") != req.ID {
				return nil, control.Errorf(http.StatusNotFound, "no approval request %s that you may read", r.PathValue("id"))
			}
			return req, nil
		}},
		{Pattern: "GET /v1/status", Handle: func(context.Context, control.Caller, *http.Request) (any, error) {
			return control.Status{Policy: "/etc/enforcer/\u202epolicy.yaml"}, nil
		}},
	}
	go control.Serve(ctx, ln, routes, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	old := socketFlag
	socketFlag = sock
	defer func() { socketFlag = old }()

	raw := func(s string) int {
		return strings.IndexFunc(s, func(r rune) bool { return 0x80 <= r && r < 0xa0 || r == 0x202e || r == 0x2066 })
	}
	for _, c := range []struct {
		name string
		run  func(fs *flag.FlagSet) error
	}{
		{"approvals --json", func(fs *flag.FlagSet) error { return cmdApprovals(ctx, fs, []string{"--json"}) }},
		{"approvals ID --json", func(fs *flag.FlagSet) error { return cmdApprovals(ctx, fs, []string{req.ID, "--json"}) }},
		{"approvals ID", func(fs *flag.FlagSet) error { return cmdApprovals(ctx, fs, []string{req.ID}) }},
		{"status --json", func(fs *flag.FlagSet) error { return cmdStatus(ctx, fs, []string{"--json"}) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := stdoutOf(t, func() error { return c.run(flag.NewFlagSet(c.name, flag.ContinueOnError)) })
			if i := raw(out); i >= 0 {
				t.Fatalf("prints a control raw at byte %d: %q", i, out)
			}
			if strings.HasPrefix(c.name, "approvals ID") && !strings.Contains(out, req.ID) {
				t.Errorf("the request by id is not shown: %q", out)
			}
			if c.name == "approvals ID --json" {
				var got approval.Request
				if err := json.Unmarshal([]byte(out), &got); err != nil || got.SQL != hostile {
					t.Errorf("does not decode to the request: %v %q", err, got.SQL)
				}
			}
		})
	}
	err = cmdApprovals(ctx, flag.NewFlagSet("approvals", flag.ContinueOnError), []string{"apr_other"})
	if err == nil || !strings.Contains(err.Error(), "no approval request apr_other") {
		t.Errorf("an unknown id: %v", err)
	}
}
