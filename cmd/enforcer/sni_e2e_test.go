package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the connections to addr inside the lab namespace; each is answered
// "reached" once a line arrives.
func countingListener(t *testing.T, ln net.Listener) *atomic.Int64 {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	var hits atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					io.WriteString(c, "reached\n")
				}
			}()
		}
	}()
	return &hits
}

// helloThenLine sends a genuine TLS ClientHello naming argv[3], then a plain line, to
// argv[1]:argv[2], and prints what comes back.
const helloThenLine = `
import socket, ssl, sys
def hello(sni):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(i, o, server_hostname=sni)
    try: obj.do_handshake()
    except ssl.SSLWantReadError: pass
    return o.read()
host, port, sni = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET); s.settimeout(5)
try:
    s.connect((host, port)); s.sendall(hello(sni)); s.sendall(b'line\n')
    print(s.recv(100).decode().strip() or 'closed')
except Exception as e:
    print(type(e).__name__)
`

// addLabAddress gives the lab namespace one more address, a host the policy does not name.
func addLabAddress(t *testing.T, e *env) netip.Addr {
	t.Helper()
	a := netip.AddrFrom4([4]byte{198, 18, byte(e.ns.Index), 3})
	if out, err := exec.Command("ip", "-n", e.ns.Name, "addr", "add", a.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("add address: %v %s", err, out)
	}
	return a
}

// TestSNIDoesNotChooseTheHost (from a review, 2026-12-07): the policy's TLS target is
// "*.llm.test on port 8443", matched by name alone. The proxy used to connect wherever the
// agent had connected, so one ClientHello naming api.llm.test opened a tunnel to any host on
// that port, the host's own loopback services included (the daemon dials unenforced). Must
// hold: the connection goes to the name's addresses, as the policy's resolver gives them.
func TestSNIDoesNotChooseTheHost(t *testing.T) {
	for _, mode := range []string{"bpf", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			other := addLabAddress(t, e)
			ln, err := e.ns.Listen("tcp", net.JoinHostPort(other.String(), "8443"))
			if err != nil {
				t.Fatal(err)
			}
			remoteHits := countingListener(t, ln)
			lo := fmt.Sprintf("127.77.19.%d", e.ns.Index)
			lln, err := net.Listen("tcp", net.JoinHostPort(lo, "8443"))
			if err != nil {
				t.Fatal(err)
			}
			localHits := countingListener(t, lln)
			for _, c := range []struct {
				name, host string
				hits       *atomic.Int64
			}{
				{"host not in policy", other.String(), remoteHits},
				{"host loopback service", lo, localHits},
			} {
				out, _ := e.run("python3", "-c", helloThenLine, c.host, "8443", llmName)
				if n := c.hits.Load(); n != 0 {
					t.Errorf("%s: the agent reached %s:8443 by naming %s: %d connection(s), it read %q", c.name, c.host, llmName, n, strings.TrimSpace(out))
				}
			}
		})
	}
}

// TestSNICheckedWhenTargetAlsoNamesAddresses (from a review, 2026-12-07): a tls-passthrough
// target that names addresses and SNI ("only api.cdn.test on this shared address") was matched
// by address alone. Must hold: a ClientHello naming another host, or no TLS at all, is refused;
// the named host passes.
func TestSNICheckedWhenTargetAlsoNamesAddresses(t *testing.T) {
	e := newEnv(t, "bpf")
	cdn := addLabAddress(t, e)
	ln, err := e.ns.Listen("tcp", net.JoinHostPort(cdn.String(), "9443"))
	if err != nil {
		t.Fatal(err)
	}
	hits := countingListener(t, ln)
	e.targetsYAML = fmt.Sprintf("  - name: cdn\n    match: {addresses: [\"%s\"], ports: [9443], sni: [\"api.cdn.test\"]}\n    protocol: tls-passthrough\n", cdn)
	e.setPolicy()
	if out, _ := e.run("python3", "-c", helloThenLine, cdn.String(), "9443", "evil.example"); hits.Load() != 0 {
		t.Errorf("a ClientHello naming evil.example reached the cdn target: agent read %q", strings.TrimSpace(out))
	}
	if out := e.probe(cdn.String(), 9443); hits.Load() != 0 {
		t.Errorf("plain TCP without a ClientHello reached the cdn target: agent read %q", out)
	}
	if out, _ := e.run("python3", "-c", helloThenLine, cdn.String(), "9443", "api.cdn.test"); hits.Load() != 1 || strings.TrimSpace(out) != "reached" {
		t.Errorf("api.cdn.test at its address: %d connection(s), agent read %q", hits.Load(), strings.TrimSpace(out))
	}
}
