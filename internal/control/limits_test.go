package control

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveForTest serves a route that answers at once on a socket others may reach; confined, if
// not nil, tells enforced callers apart.
func serveForTest(t *testing.T, timeout time.Duration, confined func(Caller) bool) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "control-limits-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "ctl.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	routes := []Route{{Pattern: "POST /v1/echo", Handle: func(ctx context.Context, c Caller, r *http.Request) (any, error) {
		var in map[string]string
		return in, Decode(r, &in)
	}}}
	go serve(ctx, ln, routes, slog.New(slog.NewTextHandler(io.Discard, nil)), confined, timeout)
	return sock
}

// connHolder opens argv[2] connections to the socket argv[1] (argv[3], if any, only marks the
// process), sends a request on each once all are open, and prints how many the server answered:
// it closes a refused one as it accepts it. It then holds them until its stdin closes.
const connHolder = `
import socket, sys
conns = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    conns.append(s)
answered = 0
for s in conns:
    try:
        s.settimeout(20)
        s.sendall(b'POST /v1/echo HTTP/1.1\r\nHost: enforcer\r\nContent-Length: 2\r\n\r\n{}')
        if s.recv(4096):
            answered += 1
    except OSError:
        pass
print(answered, flush=True)
sys.stdin.read()
`

// TestControlSocketConnectionsPerUserBounded: a local user (an agent) cannot hold more than
// MaxConnsPerUser connections to the daemon's socket, so it cannot take the file descriptors the
// proxy and the session log need; root is not bounded, and others are still served.
func TestControlSocketConnectionsPerUserBounded(t *testing.T) {
	sock := serveForTest(t, requestTimeout, nil)
	cmd := exec.Command("/usr/bin/python3", "-c", connHolder, sock, strconv.Itoa(MaxConnsPerUser+20))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n != MaxConnsPerUser {
		t.Errorf("nobody was served on %s connections at once, want %d", strings.TrimSpace(string(out)), MaxConnsPerUser)
	}
	var held []net.Conn
	for range MaxConnsPerUser + 5 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	if err := NewClient(sock).Do(context.Background(), "POST", "/v1/echo", map[string]string{"a": "b"}, nil); err != nil {
		t.Errorf("root, holding %d connections, was refused: %v", len(held), err)
	}
}

// TestControlSocketBodyMustArrive: a request whose body never comes does not hold its connection
// (and goroutine) for ever.
func TestControlSocketBodyMustArrive(t *testing.T) {
	sock := serveForTest(t, 500*time.Millisecond, nil)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /v1/echo HTTP/1.1\r\nHost: enforcer\r\nContent-Length: 100\r\n\r\n{")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	io.ReadAll(c) // the server answers or closes
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("a request without its body held the connection for %v", waited)
	}
}
