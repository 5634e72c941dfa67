package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
)

// TestOIDCSessionsGrantsAndRevocation logs in against a real OIDC provider (devidp over HTTP,
// signed tokens), then checks grants by group, logout closing a live Postgres session, and expiry
// of a session whose refresh the IdP refuses.
func TestOIDCSessionsGrantsAndRevocation(t *testing.T) {
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{
			{Subject: "alice", Email: "alice@example.test", Groups: []string{"engineering"}},
			{Subject: "bob", Email: "bob@example.test", Groups: []string{"sales"}},
		},
		IDTokenLifetime: 6 * time.Second,
		PollInterval:    time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {issuer: %q, client_id: %q}\n", idp.Issuer(), idp.ClientID()))
	_, _, dsn := e.addPostgres()

	if out, code := e.run("true"); code == 0 || !strings.Contains(out, "not logged in: run `enforcer login`") {
		t.Fatalf("run before login: %d %q", code, out)
	}

	loginAs(t, e, idp, "bob")
	out, code := e.run("psql", dsn, "-XAtc", "select 1")
	if code == 0 || !strings.Contains(out, `target "prod-db"`) || !strings.Contains(out, "engineering") {
		t.Fatalf("bob (sales) must be refused with the target and the missing grant: %d %q", code, out)
	}

	loginAs(t, e, idp, "alice")
	if out, code := e.run("psql", dsn, "-XAtc", "select current_user"); code != 0 || strings.TrimSpace(out) != "agent_ro" {
		t.Fatalf("alice: %d %q", code, out)
	}
	st := e.status()
	if !strings.HasPrefix(st.Identity, "oidc:") {
		t.Errorf("status identity %q", st.Identity)
	}
	var sawAlice bool
	for _, s := range st.Sessions {
		sawAlice = sawAlice || (s.Subject == "alice" && s.State == "active")
	}
	if !sawAlice {
		t.Errorf("status does not list alice's session: %+v", st.Sessions)
	}

	// Logout closes a live session within seconds; the next connection says why.
	script := fmt.Sprintf(`psql %q -XAtc "select pg_sleep(30)"; echo "exit=$?"; psql %q -XAtc "select 1"`, dsn, dsn)
	start := time.Now()
	done := make(chan string, 1)
	go func() { o, _ := e.run("sh", "-c", script); done <- o }()
	time.Sleep(2 * time.Second)
	if out, err := exec.Command(enforcerBin, "logout", "--socket", e.socket).CombinedOutput(); err != nil {
		t.Fatalf("logout: %v %s", err, out)
	}
	select {
	case out := <-done:
		if time.Since(start) > 15*time.Second {
			t.Errorf("live session outlived logout: %v", time.Since(start))
		}
		if strings.Contains(out, "exit=0") || !strings.Contains(out, "session revoked") {
			t.Errorf("after logout: %q", out)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("pg_sleep was not interrupted by logout")
	}

	// Expiry: the IdP refuses alice's refresh, so her session ends at token expiry and her live
	// connection with it.
	loginAs(t, e, idp, "alice")
	idp.RevokeUser("alice")
	start = time.Now()
	out, _ = e.run("sh", "-c", script)
	if time.Since(start) > 25*time.Second || strings.Contains(out, "exit=0") || !strings.Contains(out, "session expired") {
		t.Errorf("after expiry (%v): %q", time.Since(start), out)
	}

	// New groups at the IdP: the next refresh brings them, alice's live connection (granted for
	// engineering) is closed, and her next one is judged with the new groups.
	loginAs(t, e, idp, "alice")
	start = time.Now()
	done = make(chan string, 1)
	go func() { o, _ := e.run("sh", "-c", script); done <- o }()
	time.Sleep(2 * time.Second)
	if err := idp.SetGroups("alice", []string{"sales"}); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-done:
		if strings.Contains(out, "exit=0") || !strings.Contains(out, "engineering") {
			t.Errorf("after alice's groups changed (%v): %q", time.Since(start), out)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("pg_sleep was not interrupted when alice's groups changed")
	}
}

// loginAs runs `enforcer login` (device flow) and approves the printed code as subject.
func loginAs(t *testing.T, e *env, idp *devidp.Server, subject string) {
	t.Helper()
	loginWith(t, exec.Command(enforcerBin, "login", "--socket", e.socket), idp, subject)
}

// loginWith runs a prepared `enforcer login` command and approves its device code as subject.
func loginWith(t *testing.T, cmd *exec.Cmd, idp *devidp.Server, subject string) {
	t.Helper()
	stderr, _ := cmd.StderrPipe()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	codeRe := regexp.MustCompile(`enter the code (\S+)`)
	sc := bufio.NewScanner(stderr)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if m := codeRe.FindStringSubmatch(sc.Text()); m != nil {
			if err := idp.ApproveDevice(m[1], subject); err != nil {
				t.Fatalf("approve: %v", err)
			}
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("login as %s: %v\n%s\n%s", subject, err, strings.Join(lines, "\n"), stdout.String())
	}
	if !strings.Contains(stdout.String(), "logged in as "+subject) {
		t.Fatalf("login output: %q", stdout.String())
	}
}

// TestWorkloadBind: an agent runner's cgroup (a systemd unit in the enforcement slice) is enrolled
// with a workload token from a file; its processes reach what the workload's groups are granted.
// Only root may enrol.
func TestWorkloadBind(t *testing.T) {
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{{Subject: "svc-runner", Email: "runner@example.test", Groups: []string{"engineering"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {issuer: %q, client_id: %q}\n", idp.Issuer(), idp.ClientID()))
	tok, err := idp.MintIDToken(devidp.Mint{Subject: "svc-runner", Extra: map[string]any{"groups": []string{"engineering"}}})
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(e.dir, "runner.token")
	os.WriteFile(tokenFile, []byte(tok), 0o600)
	unit := filepath.Join(e.status().Redirect.Cgroup, "agent-runner.service")
	if err := os.Mkdir(unit, 0o755); err != nil {
		t.Fatal(err)
	}

	nobody := exec.Command(enforcerBin, "bind", "--socket", e.socket, "--cgroup", unit, "--token-file", tokenFile)
	nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := nobody.CombinedOutput(); err == nil || !strings.Contains(string(out), "only root") {
		t.Errorf("bind as nobody: %v %s", err, out)
	}
	if out, err := exec.Command(enforcerBin, "bind", "--socket", e.socket, "--cgroup", "/sys/fs/cgroup/unified", "--token-file", tokenFile).CombinedOutput(); err == nil || !strings.Contains(string(out), "not under the enforcement subtree") {
		t.Errorf("bind outside the subtree: %v %s", err, out)
	}
	if out, err := exec.Command(enforcerBin, "bind", "--socket", e.socket, "--cgroup", unit, "--token-file", tokenFile).CombinedOutput(); err != nil || !strings.Contains(string(out), "svc-runner") {
		t.Fatalf("bind: %v %s", err, out)
	}

	cg, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	probe := exec.Command("python3", "-c", tcpProbe, e.ns.PeerAddr.String(), "7000")
	probe.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	out, err := probe.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "echo:ping" {
		t.Fatalf("runner process: %v %q", err, out)
	}
	if e.hits.Load() != 1 {
		t.Errorf("remote hits %d", e.hits.Load())
	}
}
