package redirect

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestEndedConnectionLeavesNoOrigin: an enforced connection that ends before the proxy accepts
// it (the agent resets it, or the daemon dies with it queued) must take its origin record with
// it. Otherwise a process outside the enforced cgroups that binds the same client port and dials
// the proxy directly gets the same 4-tuple, finds the record and is served as the run: with its
// identity, its grants and the target's injected credential.
func TestEndedConnectionLeavesNoOrigin(t *testing.T) {
	r := newRig(t)
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()
	cases := []struct {
		name     string
		loopback netip.Addr
		// scenario is how the agent ends its connection: "tcp-from-reset" (SO_LINGER 0),
		// "tcp-from-close" (a normal close) or "tcp-from-hold" (it waits for the proxy to end
		// it). "" stands for a program version that did not withdraw records: the test writes
		// the record an ended connection left.
		scenario string
		// restart closes the proxy listener with the connection still queued, as when the daemon
		// is killed, then loads the programs and listens on the same port again.
		restart bool
		// kept: the connection closed normally, so what it sent may still be delivered: its
		// record stays until the proxy takes it or the programs are loaded again.
		kept bool
	}{
		{"ipv4 reset before accept", v4, "tcp-from-reset", false, false},
		{"ipv6 reset before accept", v6, "tcp-from-reset", false, false},
		{"ipv4 closed, then the proxy restarted", v4, "tcp-from-close", true, true},
		{"ipv6 closed, then the proxy restarted", v6, "tcp-from-close", true, true},
		{"ipv4 open while the proxy restarted", v4, "tcp-from-hold", true, false},
		{"ipv6 open while the proxy restarted", v6, "tcp-from-hold", true, false},
		{"ipv4 record left by an older version", v4, "", true, false},
		{"ipv6 record left by an older version", v6, "", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln := &r.ln4
			dst := r.remote
			if tc.loopback.Is6() {
				ln, dst = &r.ln6, r.remote6
			}
			client := netip.AddrPortFrom(tc.loopback, freePort(t, tc.loopback))
			proxy := netip.AddrPortFrom(tc.loopback, r.port)
			key := enforcerTuple{Client: key16(client.Addr()), Proxy: key16(proxy.Addr()), ClientPort: client.Port(), ProxyPort: proxy.Port()}

			if tc.scenario == "" {
				left := enforcerOrigin{Addr: key16(dst.Addr()), Port: dst.Port(), Proto: 6, Family: 2, Tgid: 1, CgroupId: r.child.ID, Cookie: 1}
				if err := r.bpf.objs.EnfOrigins.Put(&key, &left); err != nil {
					t.Fatal(err)
				}
				(*ln).Close()
			} else {
				done := r.startAgent(tc.scenario, client.String()+","+dst.String())
				if tc.restart {
					(*ln).Close()
				}
				if res := <-done; res.Err != "" {
					t.Fatalf("agent: %s", res.Err)
				}
				var rec enforcerOrigin
				if err := r.bpf.objs.EnfOrigins.Lookup(&key, &rec); (err == nil) != tc.kept {
					t.Errorf("origin record of the ended connection: published %v, want %v (cgroup %d, pid %d)", err == nil, tc.kept, rec.CgroupId, rec.Tgid)
				}
			}
			if tc.restart {
				r.restart()
				*ln = r.relisten(proxy)
			}

			// The outsider: this test process, outside the enforced subtree, on the same 4-tuple.
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(client), Timeout: 3 * time.Second}
			out, err := d.Dial("tcp", proxy.String())
			if err != nil {
				t.Fatalf("outsider dial from %v: %v", client, err)
			}
			defer out.Close()
			out.Write([]byte("o"))

			o, err := acceptOutsider(t, r.bpf, *ln)
			if !errors.Is(err, ErrNoOrigin) {
				t.Fatalf("outsider on the ended connection's 4-tuple got origin %+v (err %v); want ErrNoOrigin", o, err)
			}
		})
	}
}

// TestClosedConnectionStillDelivered: a client that sends its data and closes before the proxy
// accepts (a fire-and-forget metrics line, `echo … > /dev/tcp/…`) keeps its origin record, so
// the proxy can still judge and deliver what it sent.
func TestClosedConnectionStillDelivered(t *testing.T) {
	r := newRig(t)
	for _, loopback := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		t.Run(loopback.String(), func(t *testing.T) {
			ln, dst := r.ln4, r.remote
			if loopback.Is6() {
				ln, dst = r.ln6, r.remote6
			}
			client := netip.AddrPortFrom(loopback, freePort(t, loopback))
			if res := <-r.startAgent("tcp-from-send-close", client.String()+","+dst.String()); res.Err != "" {
				t.Fatalf("agent: %s", res.Err)
			}
			ln.SetDeadline(time.Now().Add(5 * time.Second))
			for {
				c, err := ln.AcceptTCP()
				if err != nil {
					t.Fatalf("accept: %v", err)
				}
				if c.RemoteAddr().(*net.TCPAddr).AddrPort() != client {
					c.Close() // left by an earlier test
					continue
				}
				o, err := r.bpf.Origin(c)
				b, _ := io.ReadAll(c)
				c.Close()
				if err != nil || o.CgroupID != r.child.ID || o.Dst != dst || string(b) != "sent" {
					t.Fatalf("origin %+v, %v, data %q; want the agent's, and what it sent", o, err, b)
				}
				return
			}
		})
	}
}

// acceptOutsider accepts from ln until it finds the connection whose client wrote "o" (the
// listener may still hold the reset connection ahead of it) and returns that one's origin.
func acceptOutsider(t *testing.T, red Redirector, ln *net.TCPListener) (Origin, error) {
	t.Helper()
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		o, oerr := red.Origin(c)
		c.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 1)
		n, _ := c.Read(b)
		c.Close()
		if n == 1 && b[0] == 'o' {
			return o, oerr
		}
	}
}

// startAgent runs scenario in the enforced child cgroup and returns once the agent is connected
// (for tcp-from-hold, which says so on stderr) or finished; its result arrives on the channel.
func (r *rig) startAgent(scenario, arg string) <-chan agentResult {
	r.t.Helper()
	cg, err := os.Open(r.child.Path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$", scenario, arg)
	cmd.Env = append(os.Environ(), agentEnv+"="+scenario)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("agent %s %s: %v", scenario, arg, err)
	}
	sc := bufio.NewScanner(stderr)
	connected := make(chan struct{})
	go func() {
		for sc.Scan() {
			if sc.Text() == "connected" {
				close(connected)
			}
		}
	}()
	done := make(chan agentResult, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var res agentResult
		if err := cmd.Wait(); err != nil {
			res.Err = fmt.Sprintf("agent %s %s: %v", scenario, arg, err)
		} else if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			res.Err = fmt.Sprintf("agent output %q: %v", stdout.Bytes(), err)
		}
		done <- res
	}()
	select {
	case <-connected:
	case <-finished:
	}
	return done
}

// freePort returns a TCP port nothing on addr uses at the moment.
func freePort(t *testing.T, addr netip.Addr) uint16 {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort().Port()
}

// restart loads the programs again over the pinned links and maps, as a restarted daemon does.
func (r *rig) restart() {
	r.t.Helper()
	b, err := LoadBPF(BPFConfig{Subtree: r.subtree, PinDir: r.pinDir, ProxyPort: r.port, DNSResolvers: []netip.Addr{r.ns.PeerAddr}})
	if err != nil {
		r.t.Fatalf("load the programs again: %v", err)
	}
	r.bpf.Close()
	r.bpf = b
}

// relisten listens on addr again, as a restarted daemon does; the listener lives as long as r.
func (r *rig) relisten(addr netip.AddrPort) *net.TCPListener {
	r.t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		r.t.Fatalf("listen again on %v: %v", addr, err)
	}
	r.t.Cleanup(func() { ln.Close() })
	return ln
}
