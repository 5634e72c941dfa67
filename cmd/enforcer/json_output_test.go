package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

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
