package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestRecordCommandUsage checks that `enforcer record` answers a request for help, a missing
// command and an unknown one with its usage, and the exit status each deserves.
func TestRecordCommandUsage(t *testing.T) {
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
