package redirect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/lab"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The tests re-execute their own binary as the "agent", started inside an enforced cgroup.
const agentEnv = "ENFORCER_TEST_AGENT"

func TestMain(m *testing.M) {
	if sc := os.Getenv(agentEnv); sc != "" {
		os.Exit(runAgent(sc, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// agentResult is what an agent scenario reports on stdout.
type agentResult struct {
	Err   string `json:"err,omitempty"`
	Errno int    `json:"errno,omitempty"`
	Local string `json:"local,omitempty"`
}

func runAgent(scenario, arg string) int {
	res := agentResult{}
	err := agentAction(scenario, arg, &res)
	if err != nil {
		res.Err = err.Error()
		var en syscall.Errno
		if errors.As(err, &en) {
			res.Errno = int(en)
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func agentAction(scenario, arg string, res *agentResult) error {
	switch scenario {
	case "tcp":
		c, err := net.DialTimeout("tcp", arg, 3*time.Second)
		if err != nil {
			return err
		}
		res.Local = c.LocalAddr().String()
		c.Write([]byte("x"))
		buf := make([]byte, 1)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		c.Read(buf)
		c.Close()
		return nil
	case "tcp-v4mapped":
		ap := netip.MustParseAddrPort(arg)
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: netip.AddrFrom16(ap.Addr().As16()).As16()}
		if err := unix.Connect(fd, sa); err != nil {
			return err
		}
		unix.Write(fd, []byte("x"))
		unix.Read(fd, make([]byte, 1))
		return nil
	case "udp-send":
		ap := netip.MustParseAddrPort(arg)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, []byte("hello"), 0, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	case "udp-connect":
		c, err := net.Dial("udp", arg)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	case "socket":
		// arg: family/type/proto
		p := strings.Split(arg, "/")
		fam, _ := strconv.Atoi(p[0])
		typ, _ := strconv.Atoi(p[1])
		proto, _ := strconv.Atoi(p[2])
		fd, err := unix.Socket(fam, typ, proto)
		if err == nil {
			unix.Close(fd)
		}
		return err
	case "bind":
		ap := netip.MustParseAddrPort(arg)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Bind(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	case "netns":
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		exec.Command("ip", "link", "set", "lo", "up").Run()
		ap := netip.MustParseAddrPort(arg)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	case "tcp-from-reset", "tcp-from-close", "tcp-from-hold", "tcp-from-send-close":
		// arg: local,dst. The agent connects from a fixed local address, then resets at once,
		// closes at once, or says so on stderr and waits until the connection ends.
		local, dst, _ := strings.Cut(arg, ",")
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local)), Timeout: 3 * time.Second}
		c, err := d.Dial("tcp", dst)
		if err != nil {
			return err
		}
		res.Local = c.LocalAddr().String()
		switch scenario {
		case "tcp-from-reset":
			c.(*net.TCPConn).SetLinger(0)
		case "tcp-from-hold":
			fmt.Fprintln(os.Stderr, "connected")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 1))
		case "tcp-from-send-close":
			// As nc does: the data, a FIN, then the close of a socket in FIN_WAIT2, which
			// the kernel turns into a TIME_WAIT at once (the state callback sees CLOSE).
			if _, err := c.Write([]byte("sent")); err != nil {
				return err
			}
			c.(*net.TCPConn).CloseWrite()
			time.Sleep(20 * time.Millisecond)
		}
		return c.Close()
	case "grandchild":
		// Double fork: a detached grandchild in a new session does the connect.
		cmd := exec.Command(os.Args[0], "-test.run=^$", "tcp", arg)
		cmd.Env = append(os.Environ(), agentEnv+"=tcp")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		out, err := cmd.Output()
		if err != nil {
			return err
		}
		var r agentResult
		json.Unmarshal(out, &r)
		if r.Err != "" {
			return errors.New(r.Err)
		}
		return nil
	}
	return fmt.Errorf("unknown scenario %q", scenario)
}

// rig is one enforcement setup: a subtree with programs attached, a listener standing in for the
// proxy on 127.0.0.1 and [::1], and a "remote" namespace counting connections that reach it.
type rig struct {
	t       *testing.T
	subtree *Subtree
	pinDir  string
	bpf     *BPF
	ln4     *net.TCPListener
	ln6     *net.TCPListener
	port    uint16
	ns      *lab.Netns
	remote  netip.AddrPort
	remote6 netip.AddrPort
	direct  atomic.Int64
	child   *Cgroup
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{t: t}
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	var err error
	r.subtree, err = OpenSubtree("enforcer-test-" + suffix + ".slice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.subtree.RemoveAll() })
	r.pinDir = "/sys/fs/bpf/enforcer-test-" + suffix
	t.Cleanup(func() { UninstallBPF(r.pinDir) })

	r.ln4, r.ln6, r.port = listenPair(t)
	r.ns, err = lab.NewNetns("enf-redir")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ns.Close() })
	r.remote = netip.AddrPortFrom(r.ns.PeerAddr, 7000)
	r.remote6 = netip.AddrPortFrom(r.ns.PeerAddr6, 7000)
	r.serveRemote()

	r.bpf, err = LoadBPF(BPFConfig{Subtree: r.subtree, PinDir: r.pinDir, ProxyPort: r.port, DNSResolvers: []netip.Addr{r.ns.PeerAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.bpf.Close() })
	r.child, err = r.subtree.NewChild("agent")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func listenPair(t testing.TB) (*net.TCPListener, *net.TCPListener, uint16) {
	t.Helper()
	for i := 0; i < 20; i++ {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		l4, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l4.Addr().(*net.TCPAddr).Port
		l6, err := lc.Listen(context.Background(), "tcp6", fmt.Sprintf("[::1]:%d", port))
		if err != nil {
			l4.Close()
			continue
		}
		t.Cleanup(func() { l4.Close(); l6.Close() })
		return l4.(*net.TCPListener), l6.(*net.TCPListener), uint16(port)
	}
	t.Fatal("no port free on both 127.0.0.1 and ::1")
	return nil, nil, 0
}

// serveRemote listens inside the namespace (v4 and v6, TCP 7000) and counts every connection
// that arrives there: with enforcement on, the count must stay zero.
func (r *rig) serveRemote() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		r.t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(r.ns.Name)
	if err != nil {
		r.t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		r.t.Fatal(err)
	}
	var lns []net.Listener
	for _, a := range []netip.AddrPort{r.remote, r.remote6} {
		ln, err := net.Listen("tcp", a.String())
		if err != nil {
			netns.Set(orig)
			r.t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	if err := netns.Set(orig); err != nil {
		r.t.Fatal(err)
	}
	for _, ln := range lns {
		r.t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				r.direct.Add(1)
				c.Close()
			}
		}()
	}
}

// agent runs a scenario inside the child cgroup, cloned straight into it.
func (r *rig) agent(scenario, arg string) agentResult {
	r.t.Helper()
	cg, err := os.Open(r.child.Path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$", scenario, arg)
	cmd.Env = append(os.Environ(), agentEnv+"="+scenario)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	out, err := cmd.Output()
	if err != nil {
		r.t.Fatalf("agent %s %s: %v", scenario, arg, err)
	}
	var res agentResult
	if err := json.Unmarshal(out, &res); err != nil {
		r.t.Fatalf("agent output %q: %v", out, err)
	}
	return res
}

// acceptOne accepts on the v4 or v6 listener and returns the origin of the connection.
func (r *rig) acceptOne(ln *net.TCPListener) (Origin, error) { return acceptOrigin(r.bpf, ln) }

// acceptOrigin accepts one connection on ln, returns its origin from red, and answers one byte.
func acceptOrigin(red Redirector, ln *net.TCPListener) (Origin, error) {
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.AcceptTCP()
	if err != nil {
		return Origin{}, err
	}
	defer c.Close()
	o, err := red.Origin(c)
	c.Write([]byte("y"))
	return o, err
}

func TestRedirectTCP(t *testing.T) {
	r := newRig(t)
	cases := []struct {
		name     string
		scenario string
		dst      netip.AddrPort
		ln       func() *net.TCPListener
	}{
		{"ipv4", "tcp", r.remote, func() *net.TCPListener { return r.ln4 }},
		{"ipv6", "tcp", r.remote6, func() *net.TCPListener { return r.ln6 }},
		{"v4-mapped", "tcp-v4mapped", r.remote, func() *net.TCPListener { return r.ln4 }},
		{"double-fork", "grandchild", r.remote, func() *net.TCPListener { return r.ln4 }},
		{"loopback is redirected too", "tcp", netip.MustParseAddrPort("127.0.0.1:22"), func() *net.TCPListener { return r.ln4 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan Origin, 1)
			errc := make(chan error, 1)
			go func() {
				o, err := r.acceptOne(tc.ln())
				errc <- err
				got <- o
			}()
			res := r.agent(tc.scenario, tc.dst.String())
			if res.Err != "" {
				t.Fatalf("agent connect failed: %s", res.Err)
			}
			if err := <-errc; err != nil {
				t.Fatalf("origin: %v", err)
			}
			o := <-got
			if o.Dst != tc.dst {
				t.Errorf("origin dst = %v, want %v", o.Dst, tc.dst)
			}
			if o.CgroupID != r.child.ID {
				t.Errorf("origin cgroup = %d, want %d", o.CgroupID, r.child.ID)
			}
			if o.PID == 0 || o.Comm == "" || o.Proto != "tcp" {
				t.Errorf("origin process fields missing: %+v", o)
			}
		})
	}
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d connections reached the remote directly", n)
	}
}

func TestDenied(t *testing.T) {
	r := newRig(t)
	// Let root create ICMP datagram sockets at all, so the test proves our sock_create hook refuses
	// them rather than the kernel's default ping_group_range.
	const pingRange = "/proc/sys/net/ipv4/ping_group_range"
	if old, err := os.ReadFile(pingRange); err == nil {
		os.WriteFile(pingRange, []byte("0 0"), 0)
		t.Cleanup(func() { os.WriteFile(pingRange, old, 0) })
	}
	cases := []struct {
		name     string
		scenario string
		arg      string
		errno    syscall.Errno // 0: must succeed
	}{
		{"udp to non-DNS port", "udp-send", netip.AddrPortFrom(r.ns.PeerAddr, 9999).String(), unix.EPERM},
		{"udp 53 to a non-resolver", "udp-send", "198.18.250.9:53", unix.EPERM},
		{"udp 53 to the named resolver", "udp-send", netip.AddrPortFrom(r.ns.PeerAddr, 53).String(), 0},
		{"connected udp (QUIC-like)", "udp-connect", netip.AddrPortFrom(r.ns.PeerAddr, 443).String(), unix.EPERM},
		{"raw socket", "socket", fmt.Sprintf("%d/%d/%d", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP), unix.EPERM},
		{"icmp datagram socket", "socket", fmt.Sprintf("%d/%d/%d", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP), unix.EPERM},
		{"udplite socket", "socket", fmt.Sprintf("%d/%d/%d", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE), unix.EPERM},
		{"mptcp socket", "socket", fmt.Sprintf("%d/%d/%d", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP), unix.EPERM},
		{"sctp socket", "socket", fmt.Sprintf("%d/%d/%d", unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP), unix.EPERM},
		{"bind the proxy port", "bind", fmt.Sprintf("127.0.0.1:%d", r.port), unix.EPERM},
		{"bind another port", "bind", "127.0.0.1:0", 0},
		{"connect from another netns", "netns", r.remote.String(), unix.EPERM},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := r.agent(tc.scenario, tc.arg)
			if tc.errno == 0 {
				if res.Err != "" {
					t.Fatalf("want success, got %s", res.Err)
				}
				return
			}
			// SCTP is not built into this kernel: socket() fails before our hook with
			// EPROTONOSUPPORT, which also refuses it.
			if tc.scenario == "socket" && syscall.Errno(res.Errno) == unix.EPROTONOSUPPORT {
				return
			}
			if syscall.Errno(res.Errno) != tc.errno {
				t.Fatalf("want %v, got %q (errno %d)", tc.errno, res.Err, res.Errno)
			}
		})
	}
	st, err := r.bpf.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters["denied_udp"] == 0 || st.Counters["denied_socket"] == 0 || st.Counters["denied_bind"] == 0 || st.Counters["denied_netns"] == 0 {
		t.Errorf("deny counters not incremented: %v", st.Counters)
	}
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d connections reached the remote directly", n)
	}
}

func TestOutsideProcessHasNoOrigin(t *testing.T) {
	r := newRig(t)
	go func() {
		c, err := net.Dial("tcp", r.ln4.Addr().String())
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	_, err := r.acceptOne(r.ln4)
	if !errors.Is(err, ErrNoOrigin) {
		t.Fatalf("want ErrNoOrigin for a connection from outside the enforced cgroup, got %v", err)
	}
}

func TestReloadSwapsProgramsWithoutDuplicates(t *testing.T) {
	r := newRig(t)
	for i := 0; i < 2; i++ {
		b2, err := LoadBPF(BPFConfig{Subtree: r.subtree, PinDir: r.pinDir, ProxyPort: r.port})
		if err != nil {
			t.Fatal(err)
		}
		st, err := b2.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Programs {
			if p.Count != 1 {
				t.Errorf("reload %d: %s has %d programs attached, want 1", i, p.Attach, p.Count)
			}
		}
		b2.Close()
	}
	// Handles of both loads are closed: the pins alone must keep enforcing.
	r.bpf.Close()
	b3, err := LoadBPF(BPFConfig{Subtree: r.subtree, PinDir: r.pinDir, ProxyPort: r.port})
	if err != nil {
		t.Fatal(err)
	}
	r.bpf = b3
	go r.acceptOne(r.ln4)
	if res := r.agent("tcp", r.remote.String()); res.Err != "" {
		t.Fatalf("connect after reload: %s", res.Err)
	}
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d direct connections", n)
	}
}

func TestUninstallDetaches(t *testing.T) {
	r := newRig(t)
	r.bpf.Close()
	if err := UninstallBPF(r.pinDir); err != nil {
		t.Fatal(err)
	}
	cg, _ := os.Open(r.subtree.Path)
	defer cg.Close()
	for _, a := range attachments {
		q, err := linkQuery(int(cg.Fd()), a.typ)
		if err != nil {
			t.Fatal(err)
		}
		if q != 0 {
			t.Errorf("%s still attached after uninstall", a.name)
		}
	}
	if _, err := os.Stat(filepath.Join(r.pinDir, "links")); !os.IsNotExist(err) {
		t.Errorf("pins remain: %v", err)
	}
}
