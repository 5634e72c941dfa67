package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// reviewEnv starts a daemon with the dev IdP (alice: engineering, carol: dba), a seeded Postgres
// target and the agent rules (bounded writes need a dba's approval).
func reviewEnv(t *testing.T) (*env, *devidp.Server, *pgtest.Server, string) {
	t.Helper()
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{
			{Subject: "alice", Email: "alice@example.test", Groups: []string{"engineering"}},
			{Subject: "carol", Email: "carol@example.test", Groups: []string{"dba"}},
		},
		PollInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {issuer: %q, client_id: %q}\n", idp.Issuer(), idp.ClientID()))
	pg, _, dsn := e.addPostgres()
	seed(t, pg)
	e.tailYAML = agentRules
	e.setPolicy()
	return e, idp, pg, dsn
}

// pendingRequests lists the pending requests as root sees them.
func pendingRequests(e *env) []*approval.Request {
	out, err := exec.Command(enforcerBin, "approvals", "--json", "--socket", e.socket).Output()
	if err != nil {
		return nil
	}
	var reqs []*approval.Request
	json.Unmarshal(out, &reqs)
	return reqs
}

// waitPendingSQL waits for a pending request of the statement sql.
func waitPendingSQL(t *testing.T, e *env, sql string) *approval.Request {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for _, r := range pendingRequests(e) {
			if r.SQL == sql {
				return r
			}
		}
	}
	t.Fatalf("no pending request for %q appeared", sql)
	return nil
}

// asUID runs the enforcer CLI as uid, outside any enforced cgroup.
func asUID(uid uint32, args ...string) *exec.Cmd {
	cmd := exec.Command(enforcerBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	return cmd
}

// TestEnforcedProcessesDecideNothing: a process inside an enforced cgroup acts as its cgroup's
// session at most, whatever its Unix user logged in to since. Must hold: the agent's cgroup is
// bound to alice; the same Unix user then logs in as carol, a dba (a second account of the same
// person, say); the agent must not approve its own held statement, log out, or start a nested
// run as carol. Before, the daemon took the reviewer (and a nested run's person) from the uid's
// newest session, so the agent approved its own UPDATE.
func TestEnforcedProcessesDecideNothing(t *testing.T) {
	e, idp, pg, dsn := reviewEnv(t)
	loginAs(t, e, idp, "alice")

	const held = "UPDATE orders SET status = 'agent' WHERE id = 5"
	const nested = "UPDATE orders SET status = 'nested' WHERE id = 8"
	idFile, goFile := filepath.Join(e.dir, "request.id"), filepath.Join(e.dir, "go")
	script := fmt.Sprintf(`psql %[1]q -Xc %[2]q > %[3]s/held.out 2>&1 &
i=0; while [ ! -f %[4]s ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done
%[5]s approve "$(cat %[6]s)" --socket %[7]s --reason "agent says lgtm"; echo "approve-exit=$?"
%[5]s logout --socket %[7]s; echo "logout-exit=$?"
%[5]s run --socket %[7]s -- psql %[1]q -Xc %[8]q > %[3]s/nested.out 2>&1 &
wait
cat %[3]s/held.out %[3]s/nested.out`, dsn, held, e.dir, goFile, enforcerBin, idFile, e.socket, nested)
	done := make(chan string, 1)
	go func() { o, _ := e.run("sh", "-c", script); done <- o }()

	first := waitPendingSQL(t, e, held)
	os.WriteFile(idFile, []byte(first.ID), 0o644)
	loginAs(t, e, idp, "carol") // the same uid now also has a dba session
	os.WriteFile(goFile, nil, 0o644)

	second := waitPendingSQL(t, e, nested)
	if second.Identity.Subject != "alice" {
		t.Errorf("a run nested in alice's agent asks as %q, want alice", second.Identity.Subject)
	}
	for _, id := range []string{first.ID, second.ID} {
		exec.Command(enforcerBin, "deny", id, "--socket", e.socket, "--reason", "test over").Run()
	}
	var out string
	select {
	case out = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("agent script did not finish")
	}
	for _, want := range []string{"approve-exit=1", "logout-exit=1", "enforced processes cannot decide approvals", "enforced processes cannot log out"} {
		if !strings.Contains(out, want) {
			t.Errorf("agent output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "UPDATE 1") || scalar(t, pg, "select status from orders where id = 5") != "new" {
		t.Errorf("the agent's self-approved UPDATE ran:\n%s", out)
	}
}

// TestAgentOfAReviewerDecidesNothing: carol is a DBA and runs an agent; alice (another Unix
// user) has a statement held. Must hold: carol's agent, not carol, cannot approve it.
func TestAgentOfAReviewerDecidesNothing(t *testing.T) {
	e, idp, pg, dsn := reviewEnv(t)
	loginWith(t, asUID(65534, "login", "--socket", e.socket), idp, "alice")
	loginAs(t, e, idp, "carol") // root is carol, a dba

	const sql = "UPDATE orders SET status = 'by-agent' WHERE id = 6"
	done := make(chan string, 1)
	go func() {
		o, _ := asUID(65534, "run", "--socket", e.socket, "--", "psql", dsn, "-Xc", sql).CombinedOutput()
		done <- string(o)
	}()
	id := waitPendingSQL(t, e, sql).ID
	if out, code := e.run(enforcerBin, "approve", id, "--socket", e.socket, "--reason", "agent decided"); code == 0 {
		t.Errorf("carol's enforced agent approved alice's request %s: %q", id, out)
	}
	exec.Command(enforcerBin, "deny", id, "--socket", e.socket, "--reason", "test over").Run()
	select {
	case o := <-done:
		if strings.Contains(o, "UPDATE 1") || scalar(t, pg, "select status from orders where id = 6") == "by-agent" {
			t.Errorf("alice's UPDATE ran on the agent's approval: %q", o)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("held statement did not end")
	}
}

// TestApprovalsListingEscapedAndScoped: what `enforcer approvals` shows comes from the agent (the
// statement, its command line). Must hold: no terminal control sequence reaches the reviewer's
// screen (a carriage return and "erase line" once overwrote the statement's real line with a
// harmless one), and a local user with no session and no approver group reads nobody's
// requests, while a reviewer of the request's group and the requester's own uid do.
func TestApprovalsListingEscapedAndScoped(t *testing.T) {
	e, idp, _, dsn := reviewEnv(t)
	loginWith(t, asUID(65534, "login", "--socket", e.socket), idp, "alice")
	reviewer := reviewerCLI(t, e, idp, "carol", 1000)

	const hidden = "UPDATE orders SET status = 'gone' WHERE id > 0 /*\r\x1b[2K    UPDATE orders SET status = 'shipped' WHERE id = 7 */"
	done := make(chan string, 1)
	go func() {
		o, _ := asUID(65534, "run", "--socket", e.socket, "--", "psql", dsn, "-Xc", hidden).CombinedOutput()
		done <- string(o)
	}()
	id := waitPendingSQL(t, e, hidden).ID
	defer func() {
		reviewer("deny", id, "--reason", "test over").Run()
		<-done
	}()

	out, err := reviewer("approvals").CombinedOutput()
	if err != nil {
		t.Fatalf("approvals: %v %s", err, out)
	}
	if strings.ContainsAny(string(out), "\x1b\r") || !strings.Contains(string(out), `/*\r\x1B[2K`) {
		t.Errorf("`enforcer approvals` must show the statement's control characters escaped:\n%q", out)
	}
	tests := []struct {
		name string
		cmd  *exec.Cmd
		sees bool
	}{
		{"reviewer of the rule's group", reviewer("approvals", "--json"), true},
		{"the requester's uid", asUID(65534, "approvals", "--json", "--socket", e.socket), true},
		{"root", exec.Command(enforcerBin, "approvals", "--json", "--socket", e.socket), true},
		{"a user with no session", asUID(1001, "approvals", "--json", "--socket", e.socket), false},
	}
	for _, tt := range tests {
		out, _ := tt.cmd.CombinedOutput()
		if sees := strings.Contains(string(out), id); sees != tt.sees {
			t.Errorf("%s: sees request %s = %v, want %v:\n%s", tt.name, id, sees, tt.sees, out)
		}
	}
}

// TestLateGrantBoundToTheDatabase: an approval names the database the client chose when the
// target does not fix one. Must hold: reviewers see that database, and a late grant for a
// statement on one database does not let the same text run on another database of the target
// (the request named the target's empty database, so its binding matched both).
func TestLateGrantBoundToTheDatabase(t *testing.T) {
	e, idp, pg, dsn := reviewEnv(t)
	ctx := t.Context()
	if err := pg.CreateDatabase(ctx, "scratch", "postgres"); err != nil {
		t.Fatal(err)
	}
	if err := pg.ExecDB(ctx, "scratch", `CREATE TABLE orders (id int PRIMARY KEY, customer int, status text);
INSERT INTO orders SELECT g, g, 'new' FROM generate_series(1, 20) g;
GRANT SELECT, UPDATE ON orders TO agent_ro;`); err != nil {
		t.Fatal(err)
	}
	e.tailYAML = strings.Replace(agentRules, "timeout: 20s, transaction_timeout: 20s", "timeout: 2s, transaction_timeout: 1s", 1)
	e.setPolicy()
	loginAs(t, e, idp, "alice")
	reviewer := reviewerCLI(t, e, idp, "carol", 65534)

	const stmt = "UPDATE orders SET status = 'late' WHERE id = 10"
	scratch := strings.Replace(dsn, "dbname=postgres", "dbname=scratch", 1)
	out, _ := e.run("psql", scratch, "-Xc", stmt)
	id := regexp.MustCompile(`apr_[a-z0-9]+`).FindString(out)
	if id == "" || !strings.Contains(out, "ERROR") {
		t.Fatalf("timed-out statement on scratch: %q", out)
	}
	all, _ := exec.Command(enforcerBin, "approvals", "--all", "--json", "--socket", e.socket).Output()
	var reqs []*approval.Request
	json.Unmarshal(all, &reqs)
	for _, r := range reqs {
		if r.ID == id && r.Database != "scratch" {
			t.Errorf("request %s shows database %q to reviewers, want scratch", id, r.Database)
		}
	}
	if o, err := reviewer("approve", id, "--reason", "scratch only").CombinedOutput(); err != nil || !strings.Contains(string(o), "pass once on retry") {
		t.Fatalf("late approve: %v %s", err, o)
	}
	out, _ = e.run("psql", dsn, "-Xc", stmt)
	if strings.Contains(out, "UPDATE 1") || scalar(t, pg, "select status from orders where id = 10") == "late" {
		t.Errorf("a late grant for database scratch ran the statement on database postgres: %q", out)
	}
	out, _ = e.run("psql", scratch, "-Xc", stmt)
	if !strings.Contains(out, "UPDATE 1") {
		t.Errorf("the late grant did not pass the statement on scratch: %q", out)
	}
}
