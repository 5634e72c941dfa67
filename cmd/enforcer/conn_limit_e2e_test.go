package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// connLimitProbe opens two connections to a line service and has each answered (so the proxy
// counts both), tries a third, then closes the first and tries a fourth until it is answered; it
// prints what the third got, then the fourth.
const connLimitProbe = `
import socket, sys, time
def conn():
    return socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
def ping(s):
    try:
        s.sendall(b'ping\n')
        return s.recv(100).decode().strip() or 'closed'
    except Exception as e:
        return type(e).__name__
held = [conn(), conn()]
answers = [ping(s) for s in held]
try:
    third = ping(conn())
except Exception as e:
    third = type(e).__name__
held[0].close()
for _ in range(50):  # the proxy counts the first until its relay has ended
    try:
        fourth = ping(conn())
    except Exception as e:  # reset while connecting
        fourth = type(e).__name__
    if fourth == 'line:ping':
        break
    time.sleep(0.1)
print(' '.join(answers), third, fourth, ping(held[1]))
`

// TestConnectionsPerUID: with max_connections_per_uid: 2, an enforced process that holds two
// connections open has its third refused (reset: a byte relay has no words for it), and gets
// its next once one has ended, while the two go on; the uid comes from the kernel's record of
// the connection, in both redirect modes.
func TestConnectionsPerUID(t *testing.T) {
	for _, mode := range []string{"bpf", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnvWith(t, mode, "identity: {kind: local}\nmax_connections_per_uid: 2\n")
			e.login()
			e.serveLines(7002, "line:")
			out, code := e.run("python3", "-c", connLimitProbe, e.ns.PeerAddr.String(), "7002")
			got := strings.Fields(out)
			if code != 0 || len(got) != 5 || got[0] != "line:ping" || got[1] != "line:ping" ||
				(got[2] != "closed" && !strings.HasSuffix(got[2], "Error")) || got[3] != "line:ping" || got[4] != "line:ping" {
				t.Fatalf("exit %d: %q; want two answered, the third refused, a fourth answered once the first closed", code, out)
			}
			if logs, _ := os.ReadFile(filepath.Join(e.dir, "daemon.log")); !strings.Contains(string(logs), "too many through the enforcer") {
				t.Error("the daemon's log does not say why it refused")
			}
		})
	}
}
