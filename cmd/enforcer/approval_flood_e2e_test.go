package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
)

// TestApprovalFloodStaysBounded: an agent that sends held statements with a long comment and
// cancels each as soon as its NOTICE arrives (Ctrl-C in a loop) is refused past its person's rate
// of new requests, saying when to try again; it neither crowds another person's request out of
// the reviewers' slow webhook channel nor delays it behind its own, and what the daemon keeps of
// its withdrawn requests, in memory and in approvals.journal, is their start, not their text.
func TestApprovalFloodStaysBounded(t *testing.T) {
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{
			{Subject: "alice", Email: "alice@example.test", Groups: []string{"engineering"}},
			{Subject: "dave", Email: "dave@example.test", Groups: []string{"engineering"}},
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

	// The reviewers' channel, in the "remote" namespace: half a second a delivery while slow.
	var slow atomic.Bool
	slow.Store(true)
	var mu sync.Mutex
	var texts []string
	ln, err := e.ns.Listen("tcp", net.JoinHostPort(e.ns.PeerAddr.String(), "8088"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if slow.Load() {
			time.Sleep(500 * time.Millisecond)
		}
		mu.Lock()
		texts = append(texts, string(b))
		mu.Unlock()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	delivered := func(marker string) (n, all int) {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range texts {
			if strings.Contains(x, marker) {
				n++
			}
		}
		return n, len(texts)
	}
	e.tailYAML = strings.Replace(agentRules, "approvals: {timeout: 20s, transaction_timeout: 20s}",
		fmt.Sprintf("approvals: {timeout: 20s, transaction_timeout: 20s, webhooks: [{name: reviewers, url: \"http://%s:8088/hook\"}]}", e.ns.PeerAddr), 1)
	e.setPolicy()

	alice := reviewerCLI(t, e, idp, "alice", 65532)
	dave := reviewerCLI(t, e, idp, "dave", 65533)
	journal := e.dir + "/state/approvals.journal"
	size := func() int64 {
		st, err := os.Stat(journal)
		if err != nil {
			return 0
		}
		return st.Size()
	}
	before := size()

	// alice's agent: 16 connections, 20 statements each with a 200 kB comment.
	const threads, perThread, pad = 16, 20, 200_000
	flood := alice("run", "--socket", e.socket, "--", "python3", "-c", floodAgent, e.ns.PeerAddr.String(),
		fmt.Sprint(pad), fmt.Sprint(perThread), fmt.Sprint(threads))
	flood.Args = flood.Args[:len(flood.Args)-2] // not the runner's --socket for the agent
	start := time.Now()
	out, err := flood.CombinedOutput()
	t.Logf("alice's agent (%v): %v %s", time.Since(start).Round(time.Millisecond), err, out)
	var held, refused int
	var refusal string
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "refusal: "); ok {
			refusal = rest
		}
		fmt.Sscanf(line, "held %d refused %d", &held, &refused)
	}
	if held+refused != threads*perThread {
		t.Fatalf("alice's agent saw %d held and %d refused of %d statements", held, refused, threads*perThread)
	}
	if held > 2*threads || !strings.Contains(refusal, "alice") || !strings.Contains(refusal, "try again in") {
		t.Errorf("%d of alice's statements were held and %d refused (%q); want her burst held, the rest refused saying when to retry", held, refused, refusal)
	}

	// dave, another person, asks for one review while the channel is still slow.
	daveCmd := dave()
	daveCmd.Args = append(daveCmd.Args[:1], "run", "--socket", e.socket, "--", "timeout", "-k", "1", "-s", "INT", "3", "psql", dsn, "-Xc", "UPDATE orders SET status = 'dave-needs-this' WHERE id = 3")
	daveOut, daveErr := daveCmd.CombinedOutput()
	if !strings.Contains(string(daveOut), "approval required") {
		t.Fatalf("dave's statement was not held: %v %q", daveErr, daveOut)
	}
	if n, all := delivered("dave-needs-this"); n == 0 {
		t.Errorf("dave's request had not reached the slow channel 3 s after he sent it: it waits behind alice's flood (%d deliveries so far)", all)
	}

	// The channel speeds up; wait until everything queued is delivered.
	slow.Store(false)
	last := -1
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		_, all := delivered("")
		if all == last {
			break
		}
		last = all
	}
	daves, _ := delivered("dave-needs-this")
	floods, all := delivered("flood")
	t.Logf("the channel got %d notifications, %d of alice's", all, floods)
	if daves == 0 {
		t.Errorf("dave's held statement never reached the reviewers' channel")
	}

	grown := size() - before
	t.Logf("approvals.journal grew by %d bytes", grown)
	if limit := int64(held) * 200 << 10; grown > limit {
		t.Errorf("approvals.journal grew by %d bytes for %d held statements of %d bytes; want at most %d", grown, held, pad, limit)
	}
	listed, err := exec.Command(enforcerBin, "approvals", "--all", "--json", "--socket", e.socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	var reqs []*approval.Request
	if err := json.Unmarshal(listed, &reqs); err != nil {
		t.Fatal(err)
	}
	withdrawn, whole := 0, 0
	for _, r := range reqs {
		if r.Identity.Subject != "alice" || r.State != approval.StateWithdrawn {
			continue
		}
		withdrawn++
		if len(r.SQL) > 2<<10 || !strings.Contains(r.SQL, "status = 'flood'") || !r.SQLCut {
			if whole++; whole == 1 {
				t.Logf("withdrawn request %s keeps %d bytes of its text (cut %v)", r.ID, len(r.SQL), r.SQLCut)
			}
		}
	}
	if withdrawn == 0 || whole > 0 {
		t.Errorf("%d of alice's %d withdrawn requests keep more than the start of their text", whole, withdrawn)
	}
}

// floodAgent speaks the Postgres protocol, a connection per thread: each statement carries a
// comment of argv[2] bytes, is cancelled (CancelRequest) as soon as its NOTICE arrives, and the
// next follows its ErrorResponse. It prints how many were held and refused, and a refusal.
const floodAgent = `
import socket, struct, sys, threading
host, pad, per, nthreads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
comment = " /* " + "x" * pad + " */"
lock = threading.Lock()
held, refused, refusal = [0], [0], [""]
def msg(t, body): return t + struct.pack("!I", len(body) + 4) + body
def read(s, buf):
    while len(buf[0]) < 5 or len(buf[0]) < 1 + struct.unpack("!I", buf[0][1:5])[0]:
        d = s.recv(65536)
        if not d: raise EOFError
        buf[0] += d
    n = 1 + struct.unpack("!I", buf[0][1:5])[0]
    m, buf[0] = buf[0][:n], buf[0][n:]
    return m[0:1], m[5:]
def message(b):
    for f in b.split(b"\0"):
        if f[:1] == b"M": return f[1:].decode()
    return ""
def worker(k):
    s = socket.create_connection((host, 5432))
    params = b"user\0whoever\0database\0postgres\0\0"
    s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    buf = [b""]; pid = key = None
    while True:
        t, b = read(s, buf)
        if t == b"K": pid, key = struct.unpack("!II", b[:8])
        if t == b"Z": break
        if t == b"E": print("startup error", b); return
    for i in range(1, per + 1):
        s.sendall(msg(b"Q", ("UPDATE orders SET status = 'flood' WHERE id = %d%s\0" % (k * 1000 + i, comment)).encode()))
        was_held = False
        while True:
            t, b = read(s, buf)
            if t == b"N":
                was_held = True
                c = socket.create_connection((host, 5432))
                c.sendall(struct.pack("!IIII", 16, 80877102, pid, key)); c.close()
            if t == b"E" and not was_held:
                with lock:
                    refused[0] += 1
                    refusal[0] = refusal[0] or message(b)
            if t == b"Z": break
        if was_held:
            with lock: held[0] += 1
ts = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
[t.start() for t in ts]; [t.join() for t in ts]
print("refusal: " + refusal[0])
print("held %d refused %d" % (held[0], refused[0]))
`
