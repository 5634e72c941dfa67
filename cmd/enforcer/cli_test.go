package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestCommandUsage checks what the CLI says, and the exit status, when it is asked for help or
// given too little to act on; none of these reaches the daemon.
func TestCommandUsage(t *testing.T) {
	tests := []struct {
		args      []string
		status    int
		stdout    string
		stderr    string
		notStderr string
	}{
		{args: []string{"record"}, status: 2, stderr: "usage: enforcer record verify"},
		{args: []string{"record", "-h"}, status: 0, stdout: "enforcer record checkpoint [--out FILE]"},
		{args: []string{"record", "--help"}, status: 0, stdout: "enforcer record export"},
		{args: []string{"record", "help"}, status: 0, stdout: "usage: enforcer record verify"},
		{args: []string{"record", "frobnicate"}, status: 2, stderr: `unknown command "frobnicate"`},
		{args: []string{"record", "verify", "-h"}, status: 0, stderr: "-checkpoint", notStderr: "unknown"},
		{args: []string{"record", "sink-sql", "--table", "audit.recs", "--role", "r1"}, status: 0, stdout: `GRANT INSERT ON "audit"."recs" TO "r1"`},
		{args: []string{"record", "sink-sql", "audit.recs"}, status: 1, stderr: "only --table and --role"},
		{args: []string{"record", "sink-sql", "--role", "x\nDROP TABLE t; --"}, status: 1, stderr: "without control characters"},
		{args: []string{"record", "sink-sql", "--table", "a.b.c"}, status: 1, stderr: "NAME or SCHEMA.NAME"},
		{args: []string{"deny", "x"}, status: 1, stderr: "--reason TEXT", notStderr: "daemon"},
		{args: []string{"deny", "x", "--reason", " "}, status: 1, stderr: "--reason TEXT", notStderr: "daemon"},
		{args: []string{"approve"}, status: 2, stderr: "usage: enforcer approve ID"},
		{args: []string{"policy", "-h"}, status: 0, stdout: "usage: enforcer policy check FILE"},
		{args: []string{"policy", "lint"}, status: 2, stderr: "usage: enforcer policy check FILE"},
		// explain judges with what the daemon's rules would see, and says what it assumed.
		{args: []string{"policy", "explain", "--policy", "../../examples/policy.yaml", "--target", "prod-db", "--as", "alice/engineering", "--email", "alice@example.com",
			"--comm", "psql", "--uid", "4242", "--database", "app", "--sql", "DELETE FROM orders"}, status: 0,
			stdout: `email "alice@example.com"; process comm "psql" exe "" uid 4242; target prod-db database "app"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(enforcerBin, tt.args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			status := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				status = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tt.status {
				t.Errorf("exit status %d, want %d (stderr: %s)", status, tt.status, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q does not contain %q", &stdout, tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not contain %q", &stderr, tt.stderr)
			}
			if tt.notStderr != "" && strings.Contains(stderr.String(), tt.notStderr) {
				t.Errorf("stderr %q contains %q", &stderr, tt.notStderr)
			}
		})
	}
}
