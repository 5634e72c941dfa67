package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
)

// TestLoginAndRunFloodsRefused: a local user (nobody) who loops on `enforcer login` and on POST
// /v1/runs is refused with 429 (logins with when to retry) once past a small burst or the bound
// on runs, keeps at most identity.DefaultMaxSessionsPerUID sessions, and root's `enforcer run`
// still works.
func TestLoginAndRunFloodsRefused(t *testing.T) {
	e := newEnv(t, "bpf")
	asNobody := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Dir = "/"
		return cmd
	}

	var refusal string
	for range 20 {
		out, err := asNobody(enforcerBin, "login", "--socket", e.socket).CombinedOutput()
		if err != nil {
			refusal = string(out)
			break
		}
	}
	if !strings.Contains(refusal, "too many logins from uid 65534") || !strings.Contains(refusal, "try again in") {
		t.Errorf("20 logins in a row as nobody; the refusal: %q", refusal)
	}
	out, err := asNobody(enforcerBin, "logins", "--json", "--socket", e.socket).Output()
	if err != nil {
		t.Fatalf("logins: %v", err)
	}
	var sessions control.Sessions
	if err := json.Unmarshal(out, &sessions); err != nil {
		t.Fatal(err)
	}
	if n := len(sessions.Sessions); n == 0 || n > identity.DefaultMaxSessionsPerUID {
		t.Errorf("nobody keeps %d sessions, want 1 to %d", n, identity.DefaultMaxSessionsPerUID)
	}

	// Runs created and never entered: what a script looping on the API makes. More than the
	// per-user bound, so refusals come whether the rate or the bound stops them first.
	codes, err := asNobody("sh", "-c", `for i in $(seq 70); do curl -s -o /dev/null -w '%{http_code}\n' --unix-socket "$1" -X POST -H 'Content-Type: application/json' -d '{"command":["true"]}' http://enforcer/v1/runs; done`, "sh", e.socket).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	if got := strings.Count(string(codes), "429"); got == 0 || strings.Count(string(codes), "200") == 0 {
		t.Errorf("70 runs in a row as nobody answered %q; want some created, then 429", strings.Fields(string(codes)))
	}

	if out, code := e.run("true"); code != 0 {
		t.Errorf("root's `enforcer run true` after the floods: %d %q", code, out)
	}
}
