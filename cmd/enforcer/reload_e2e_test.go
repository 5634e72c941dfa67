package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
)

// serveLines runs a service in the lab namespace on port that answers every line of a
// connection with prefix + line, for as long as the connection stays open.
func (e *env) serveLines(port int, prefix string) {
	e.t.Helper()
	e.serveTCP(net.JoinHostPort(e.ns.PeerAddr.String(), fmt.Sprint(port)), func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, prefix+line)
		}
	})
}

// waitFile waits for path to hold a line, and returns what it holds.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(path); strings.HasSuffix(string(b), "\n") {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("%s was not written", path)
	return ""
}

// heldConnProbe connects to argv[1]:argv[2], exchanges a line, writes the answer to argv[3], waits
// for the file argv[4] to exist and then tries a second line: it prints that answer, or what went
// wrong.
const heldConnProbe = `
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b'a\n')
first = s.recv(100).decode().strip()
with open(sys.argv[3], 'w') as f: f.write(first + '\n')
while not os.path.exists(sys.argv[4]): time.sleep(0.05)
try:
    s.sendall(b'b\n')
    print(s.recv(100).decode().strip() or 'closed')
except Exception as e:
    print(type(e).__name__)
`

// TestPolicyReloadEndsConnectionsItNoLongerGrants: once a reload takes a target's grant away
// from a person (or removes the target), that person's live connections to it end; they must
// not keep the access the policy no longer gives.
func TestPolicyReloadEndsConnectionsItNoLongerGrants(t *testing.T) {
	e := newEnv(t, "bpf")
	e.serveLines(7004, "held:")
	e.serveLines(7005, "kept:")
	e.targetsYAML = fmt.Sprintf(`  - name: held
    match: {addresses: ["%[1]s"], ports: [7004]}
    protocol: tcp
  - name: kept
    match: {addresses: ["%[1]s"], ports: [7005]}
    protocol: tcp
`, e.ns.PeerAddr)
	e.setPolicy()

	type result struct {
		port int
		out  string
	}
	done := make(chan result, 2)
	goFile := filepath.Join(e.dir, "go")
	for _, port := range []int{7004, 7005} {
		first := filepath.Join(e.dir, fmt.Sprintf("first-%d", port))
		go func() {
			out, _ := e.run("python3", "-c", heldConnProbe, e.ns.PeerAddr.String(), fmt.Sprint(port), first, goFile)
			done <- result{port, strings.TrimSpace(out)}
		}()
		if got := waitFile(t, first); !strings.HasPrefix(got, "held:a") && !strings.HasPrefix(got, "kept:a") {
			t.Fatalf("port %d before the reload: %q", port, got)
		}
	}

	// The grant of "held" goes away; "kept" stays granted.
	b, err := os.ReadFile(filepath.Join(e.dir, "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	revoked := strings.Replace(string(b), "targets: [echo, llm, held, kept]", "targets: [echo, llm, kept]", 1)
	if revoked == string(b) {
		t.Fatalf("grant line not found in the policy:\n%s", b)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "policy.yaml"), []byte(revoked), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := control.NewClient(e.socket).Do(context.Background(), "POST", "/v1/policy/reload", nil, nil); err != nil {
		t.Fatalf("reload: %v", err)
	}
	os.WriteFile(goFile, nil, 0o644)
	for range 2 {
		r := <-done
		switch r.port {
		case 7004:
			if strings.HasPrefix(r.out, "held:") {
				t.Errorf("a connection whose grant the reload removed still reaches the service: %q", r.out)
			}
		case 7005:
			if r.out != "kept:b" {
				t.Errorf("a connection the reload still grants was disturbed: %q", r.out)
			}
		}
	}
}

// bindProbe waits for the file argv[2], then tries to listen on 127.0.0.1:argv[1] and prints
// "bound" or the error's name.
const bindProbe = `
import os, socket, sys, time
while not os.path.exists(sys.argv[2]): time.sleep(0.05)
s = socket.socket()
try:
    s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(1)
    print('bound')
except Exception as e:
    print(type(e).__name__)
`

// TestAgentCannotTakeTheMetricsPort: an enforced process may not bind the daemon's metrics port,
// so that while the daemon is down or restarting it cannot serve the scraper forged metrics (and
// hold the port so the daemon comes back without its own).
func TestAgentCannotTakeTheMetricsPort(t *testing.T) {
	mport := freePort(t)
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {kind: local}\nmetrics: 127.0.0.1:%d\n", mport))
	e.login()
	goFile := filepath.Join(e.dir, "go")
	done := make(chan string, 1)
	go func() {
		out, _ := e.run("python3", "-c", bindProbe, fmt.Sprint(mport), goFile)
		done <- strings.TrimSpace(out)
	}()
	// The agent is running when the daemon stops.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if st := e.status(); len(st.Cgroups) > 0 && len(st.Cgroups[0].Procs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not start")
		}
	}
	e.stopDaemon(syscall.SIGTERM)
	os.WriteFile(goFile, nil, 0o644)
	if got := <-done; got != "PermissionError" {
		t.Errorf("an enforced process binding the metrics port while the daemon is down: got %q, want PermissionError", got)
	}
}
