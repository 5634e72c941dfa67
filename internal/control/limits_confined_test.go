package control

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// oneRequest sends one request to the socket argv[1] and prints the status line's code.
const oneRequest = `
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
data = b''
try:
    s.sendall(b'POST /v1/echo HTTP/1.1\r\nHost: enforcer\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}')
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
except OSError:
    pass
print(data.split(b' ')[1].decode() if data else 'closed')
`

// TestControlSocketAgentCannotLockItsUserOut: an enforced process that holds every connection
// its uid may have does not keep a process of the same uid outside enforcement (the developer's
// `enforcer logout`, an approval) from being served; its own further connections are refused.
func TestControlSocketAgentCannotLockItsUserOut(t *testing.T) {
	// The daemon says which callers run under enforcement by their cgroup; here the agent's
	// processes carry a marker in their command line instead.
	confined := func(c Caller) bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(int(c.PID)) + "/cmdline")
		return strings.Contains(string(b), "enforced-agent-marker")
	}
	sock := serveForTest(t, requestTimeout, confined)

	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	agent := exec.Command("/usr/bin/python3", "-c", connHolder, sock, strconv.Itoa(MaxConnsPerUser+10), "enforced-agent-marker")
	agent.SysProcAttr = nobody
	stdin, err := agent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer agent.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(line)); n != MaxConnsPerUser {
		t.Errorf("the agent was served on %s connections at once, want %d", strings.TrimSpace(line), MaxConnsPerUser)
	}

	person := exec.Command("/usr/bin/python3", "-c", oneRequest, sock)
	person.SysProcAttr = nobody
	out, err := person.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "200" {
		t.Errorf("the agent's user, outside enforcement, got %q while the agent held its connections, want 200", got)
	}
	more := exec.Command("/usr/bin/python3", "-c", oneRequest, sock, "enforced-agent-marker")
	more.SysProcAttr = nobody
	out, err = more.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "closed" {
		t.Errorf("one more connection of the agent got %q, want it closed", got)
	}
}
