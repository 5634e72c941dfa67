package redirect

import (
	"encoding/binary"
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

// The nftables tests reuse the BPF tests' agent scenarios (agentEnv) and add their own under
// nftAgentEnv; init runs before TestMain, so the re-executed agent never reaches the test runner.
const nftAgentEnv = "ENFORCER_TEST_NFT_AGENT"

func init() {
	if sc := os.Getenv(nftAgentEnv); sc != "" {
		res := agentResult{}
		if err := nftAgentAction(sc, os.Args[len(os.Args)-1], &res); err != nil {
			res.Err = err.Error()
			var en syscall.Errno
			if errors.As(err, &en) {
				res.Errno = int(en)
			}
		}
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	}
}

func nftAgentAction(scenario, arg string, res *agentResult) error {
	switch scenario {
	case "udp6-send":
		ap := netip.MustParseAddrPort(arg)
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, []byte("hello"), 0, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
	case "udp-connected":
		c, err := net.Dial("udp", arg)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("quic"))
		return err
	case "icmp-echo":
		ap := netip.MustParseAddr(arg)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		echo := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g'}
		return unix.Sendto(fd, echo, 0, &unix.SockaddrInet4{Addr: ap.As4()})
	case "raw-udp":
		// A hand-made UDP datagram on a raw socket: the kernel adds only the IP header.
		ap := netip.MustParseAddrPort(arg)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		pkt := make([]byte, 8, 13)
		binary.BigEndian.PutUint16(pkt[0:], 40000)
		binary.BigEndian.PutUint16(pkt[2:], ap.Port())
		binary.BigEndian.PutUint16(pkt[4:], 13)
		pkt = append(pkt, "hello"...)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: ap.Addr().As4()})
	case "hijack":
		// arg: LISTEN,DIAL. Serve on the proxy's port, then dial out: the redirected connection
		// must not land on our own listener.
		listen, dial, _ := strings.Cut(arg, ",")
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("listen on the proxy port: %w", err)
		}
		defer ln.Close()
		var accepted atomic.Bool
		go func() {
			if c, err := ln.Accept(); err == nil {
				accepted.Store(true)
				c.Close()
			}
		}()
		c, err := net.DialTimeout("tcp", dial, 1500*time.Millisecond)
		if err == nil {
			c.Close()
			return errors.New("hijacked: the redirected connection reached the agent's own listener")
		}
		time.Sleep(100 * time.Millisecond)
		if accepted.Load() {
			return errors.New("hijacked: the agent's listener accepted a connection")
		}
		res.Local = "dial failed: " + err.Error()
		return nil
	case "tcp-loop":
		// arg: N,DST. Connect N times in a row, each time waiting for the proxy's byte.
		ns, dst, _ := strings.Cut(arg, ",")
		n, err := strconv.Atoi(ns)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp", dst, 3*time.Second)
			if err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			c.Read(make([]byte, 1))
			c.Close()
		}
		return nil
	}
	return fmt.Errorf("unknown nft scenario %q", scenario)
}

// nftRig is one nftables enforcement setup: a subtree and its own table, a listener pair standing
// in for the proxy, and a namespace counting what reaches the "remote" (TCP connections on 7000,
// UDP datagrams on 53 and 9999, v4 and v6).
type nftRig struct {
	t       testing.TB
	subtree *Subtree
	table   string
	nft     *NFT
	ln4     *net.TCPListener
	ln6     *net.TCPListener
	port    uint16
	ns      *lab.Netns
	remote  netip.AddrPort
	remote6 netip.AddrPort
	direct  atomic.Int64
	udp     map[uint16]*atomic.Int64 // datagrams received by port
	child   *Cgroup
}

func newNFTRig(t testing.TB, checkInterval time.Duration, opts ...func(*NFTConfig)) *nftRig {
	t.Helper()
	r := &nftRig{t: t, udp: map[uint16]*atomic.Int64{53: {}, 9999: {}}}
	suffix := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1000000)
	var err error
	r.subtree, err = OpenSubtree("enforcer-nfttest-" + suffix + ".slice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.subtree.RemoveAll() })
	r.table = "enftest_" + strings.ReplaceAll(suffix, "-", "_")
	t.Cleanup(func() { UninstallNFT(r.table) })

	r.ln4, r.ln6, r.port = listenPair(t)
	r.ns, err = lab.NewNetns("enf-nft")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ns.Close() })
	r.remote = netip.AddrPortFrom(r.ns.PeerAddr, 7000)
	r.remote6 = netip.AddrPortFrom(r.ns.PeerAddr6, 7000)
	r.serve()

	cfg := NFTConfig{Subtree: r.subtree, ProxyPort: r.port, DNSResolvers: []netip.Addr{r.ns.PeerAddr},
		TableName: r.table, CheckInterval: checkInterval}
	for _, o := range opts {
		o(&cfg)
	}
	r.nft, err = LoadNFT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.nft.Close() })
	r.child, err = r.subtree.NewChild("agent")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// nftListenPair is listenPair for benchmarks too: 127.0.0.1 and [::1] on one free port.
// inNetns runs f with the calling thread inside the named network namespace.
func inNetns(t testing.TB, name string, f func() error) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
}

// serve listens inside the namespace and counts what arrives.
func (r *nftRig) serve() {
	var tcp []net.Listener
	var udp []net.PacketConn
	var udpPorts []uint16
	inNetns(r.t, r.ns.Name, func() error {
		for _, a := range []netip.AddrPort{r.remote, r.remote6} {
			ln, err := net.Listen("tcp", a.String())
			if err != nil {
				return err
			}
			tcp = append(tcp, ln)
			for p := range r.udp {
				pc, err := net.ListenPacket("udp", netip.AddrPortFrom(a.Addr(), p).String())
				if err != nil {
					return err
				}
				udp = append(udp, pc)
				udpPorts = append(udpPorts, p)
			}
		}
		return nil
	})
	for _, ln := range tcp {
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
	for i, pc := range udp {
		n := r.udp[udpPorts[i]]
		r.t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
				n.Add(1)
			}
		}()
	}
}

// agent runs a scenario in the child cgroup: BPF-test scenarios by their name, ours as "nft:NAME".
func (r *nftRig) agent(scenario, arg string) agentResult {
	r.t.Helper()
	cg, err := os.Open(r.child.Path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer cg.Close()
	env := agentEnv + "=" + scenario
	if s, ok := strings.CutPrefix(scenario, "nft:"); ok {
		scenario, env = s, nftAgentEnv+"="+s
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", scenario, arg)
	cmd.Env = append(os.Environ(), env)
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

func (r *nftRig) acceptOne(ln *net.TCPListener) (Origin, error) { return acceptOrigin(r.nft, ln) }

// connect runs the tcp agent against dst and returns the origin the proxy saw.
func (r *nftRig) connect(scenario string, dst netip.AddrPort, ln *net.TCPListener) (Origin, error) {
	r.t.Helper()
	type result struct {
		o   Origin
		err error
	}
	got := make(chan result, 1)
	go func() {
		o, err := r.acceptOne(ln)
		got <- result{o, err}
	}()
	res := r.agent(scenario, dst.String())
	if res.Err != "" {
		r.t.Fatalf("agent connect to %v failed: %s", dst, res.Err)
	}
	g := <-got
	return g.o, g.err
}

func TestNFTRedirectTCP(t *testing.T) {
	r := newNFTRig(t, 0)
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}
	cases := []struct {
		name     string
		scenario string
		dst      netip.AddrPort
		ln       *net.TCPListener
	}{
		{"ipv4", "tcp", r.remote, r.ln4},
		{"ipv6", "tcp", r.remote6, r.ln6},
		{"v4-mapped", "tcp-v4mapped", r.remote, r.ln4},
		{"double-fork", "grandchild", r.remote, r.ln4},
		{"loopback is redirected too", "tcp", netip.MustParseAddrPort("127.0.0.1:22"), r.ln4},
		{"ipv6 loopback is redirected too", "tcp", netip.MustParseAddrPort("[::1]:22"), r.ln6},
		// NAT to the same address is a no-op (no DNAT bit); the connection still has an origin.
		{"the proxy port itself", "tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), r.port), r.ln4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := r.connect(tc.scenario, tc.dst, tc.ln)
			if err != nil {
				t.Fatalf("origin: %v", err)
			}
			if o.Dst != tc.dst {
				t.Errorf("origin dst = %v, want %v", o.Dst, tc.dst)
			}
			if o.CgroupID != r.child.ID {
				t.Errorf("origin cgroup = %d, want %d", o.CgroupID, r.child.ID)
			}
			if o.PID == 0 || o.Comm != comm || o.Proto != "tcp" || o.Cookie == 0 {
				t.Errorf("origin process fields wrong (want comm %q): %+v", comm, o)
			}
			// The pid is a process of the enforced cgroup (for double-fork, the grandchild).
			procs, err := r.child.Procs()
			if err != nil {
				t.Fatal(err)
			}
			if len(procs) > 0 && !containsPID(procs, int(o.PID)) {
				t.Errorf("pid %d not in the agent cgroup %v", o.PID, procs)
			}
		})
	}
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d connections reached the remote directly", n)
	}
	st, err := r.nft.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != "nftables" || st.Counters["redirected"] < uint64(len(cases)) {
		t.Errorf("status: %+v", st)
	}
}

func containsPID(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

func TestNFTDenied(t *testing.T) {
	r := newNFTRig(t, 0)
	// Let root create ICMP datagram sockets at all, so the ICMP case reaches our ruleset.
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
		{"udp6 to non-DNS port", "nft:udp6-send", netip.AddrPortFrom(r.ns.PeerAddr6, 9999).String(), unix.EPERM},
		{"udp 53 to a non-resolver", "udp-send", "198.18.250.9:53", unix.EPERM},
		{"udp6 53 to a non-resolver", "nft:udp6-send", netip.AddrPortFrom(r.ns.PeerAddr6, 53).String(), unix.EPERM},
		{"udp to loopback non-DNS", "udp-send", "127.0.0.1:9999", unix.EPERM},
		{"raw socket crafting UDP", "nft:raw-udp", netip.AddrPortFrom(r.ns.PeerAddr, 9999).String(), unix.EPERM},
		{"icmp echo", "nft:icmp-echo", r.ns.PeerAddr.String(), unix.EPERM},
		{"connected udp (QUIC-like)", "nft:udp-connected", netip.AddrPortFrom(r.ns.PeerAddr, 9999).String(), unix.EPERM},
		// A new network namespace has no route out; its sockets never see our table but reach nothing.
		{"connect from another netns", "netns", r.remote.String(), unix.ENETUNREACH},
		{"udp 53 to the named resolver", "udp-send", netip.AddrPortFrom(r.ns.PeerAddr, 53).String(), 0},
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
			if syscall.Errno(res.Errno) != tc.errno {
				t.Fatalf("want %v, got %q (errno %d)", tc.errno, res.Err, res.Errno)
			}
		})
	}
	// The allowed DNS datagram is the positive control: counting works, so zero means dropped.
	deadline := time.Now().Add(3 * time.Second)
	for r.udp[53].Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if got := r.udp[53].Load(); got != 1 {
		t.Errorf("remote got %d datagrams on port 53, want exactly 1 (the named-resolver case)", got)
	}
	if got := r.udp[9999].Load(); got != 0 {
		t.Errorf("remote got %d datagrams on port 9999, want 0", got)
	}
	if n := r.direct.Load(); n != 0 {
		t.Errorf("%d connections reached the remote directly", n)
	}
	st, err := r.nft.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters["egress_dropped"] < 8 || st.Counters["dns_allowed"] < 1 {
		t.Errorf("counters not incremented: %v", st.Counters)
	}
}

func TestNFTOutsideProcessHasNoOrigin(t *testing.T) {
	r := newNFTRig(t, 0)
	for _, ln := range []*net.TCPListener{r.ln4, r.ln6} {
		go func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err == nil {
				time.Sleep(100 * time.Millisecond)
				c.Close()
			}
		}()
		if _, err := r.acceptOne(ln); !errors.Is(err, ErrNoOrigin) {
			t.Fatalf("%v: want ErrNoOrigin for a connection from outside the enforced cgroup, got %v", ln.Addr(), err)
		}
	}
}

// An agent cannot be refused bind() in this mode, but a socket it binds on the proxy port (while
// the daemon is down) receives nothing, so it cannot capture other agents' connections.
func TestNFTProxyPortHijackRefused(t *testing.T) {
	r := newNFTRig(t, 0)
	r.ln4.Close()
	r.ln6.Close()
	res := r.agent("nft:hijack", fmt.Sprintf("127.0.0.1:%d,%s", r.port, r.remote))
	if res.Err != "" {
		t.Fatal(res.Err)
	}
	t.Log(res.Local)
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d connections reached the remote directly", n)
	}
	st, err := r.nft.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters["denied_bind"] == 0 {
		t.Errorf("denied_bind not counted: %v", st.Counters)
	}
}

func TestNFTRestoresRuleset(t *testing.T) {
	// As on kernels before 6.9, which cannot keep an owned table: others can change it, and the
	// watcher puts it back.
	unowned := func(c *NFTConfig) { c.noOwner = true }
	t.Run("monitor", func(t *testing.T) {
		// A check interval of a minute leaves the monitor alone to notice the changes.
		testRestore(t, newNFTRig(t, time.Minute, unowned))
	})
	t.Run("periodic check", func(t *testing.T) {
		testRestore(t, newNFTRig(t, 200*time.Millisecond, unowned, func(c *NFTConfig) { c.noMonitor = true }))
	})
}

// tamperCommands are what an administrator's tools might do to our table.
func tamperCommands(table string) []struct{ name, nft string } {
	return []struct{ name, nft string }{
		{"delete table", "delete table inet " + table},
		{"flush table", "flush table inet " + table},
		{"flush agent chain", "flush chain inet " + table + " agent"},
		{"delete nat chain", "flush chain inet " + table + " nat_output; delete chain inet " + table + " nat_output"},
		{"insert accept before the drop", "insert rule inet " + table + " agent accept"},
		{"table made dormant", "add table inet " + table + " { flags dormant; }"},
	}
}

// On this kernel (6.9+) the daemon's socket owns the table: nobody else can touch it.
func TestNFTOwnedTableRefusesChanges(t *testing.T) {
	r := newNFTRig(t, time.Minute)
	for _, tc := range tamperCommands(r.table) {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command("nft", tc.nft).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "Operation not permitted") {
				t.Fatalf("nft %s: want EPERM, got %v: %s", tc.nft, err, out)
			}
			if _, err := r.nft.check(); err != nil {
				t.Fatalf("owned table changed: %v", err)
			}
		})
	}
	if err := UninstallNFT(r.table); !errors.Is(err, unix.EPERM) {
		t.Errorf("uninstall while the daemon owns the table: want EPERM, got %v", err)
	}
	st, err := r.nft.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters["table_owned"] != 1 || st.Counters["restored"] != 0 {
		t.Errorf("counters %v", st.Counters)
	}
	if o, err := r.connect("tcp", r.remote, r.ln4); err != nil || o.Dst != r.remote {
		t.Fatalf("enforcement after tampering attempts: %+v %v", o, err)
	}
}

// `nft flush ruleset` (firewalld reloads, iptables-restore wrappers...) skips an owned table but
// removes an orphaned one. Run in a private network namespace: the host ruleset is shared.
func TestNFTOwnedTableSurvivesFlushRuleset(t *testing.T) {
	name := fmt.Sprintf("enf-nftflush-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	nsf, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer nsf.Close()
	sub, err := OpenSubtree(fmt.Sprintf("enforcer-nfttest-flush-%d.slice", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.RemoveAll() })
	n, err := LoadNFT(NFTConfig{Subtree: sub, ProxyPort: 4999, TableName: "enftest_flush", netnsFD: int(nsf.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	listed := func() bool {
		out, err := exec.Command("ip", "netns", "exec", name, "nft", "list", "tables").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list tables: %v: %s", err, out)
		}
		return strings.Contains(string(out), "enftest_flush")
	}
	flush := func() {
		if out, err := exec.Command("ip", "netns", "exec", name, "nft", "flush", "ruleset").CombinedOutput(); err != nil {
			t.Fatalf("nft flush ruleset: %v: %s", err, out)
		}
	}
	flush()
	if _, err := n.check(); err != nil || !listed() {
		t.Fatalf("owned table flushed: %v", err)
	}
	// Daemon stopped: the table stays (persistent) but is no one's, so a flush now removes it.
	n.Close()
	if !listed() {
		t.Fatal("table gone when its owner closed")
	}
	flush()
	if listed() {
		t.Fatal("orphaned table survived nft flush ruleset")
	}
}

func testRestore(t *testing.T, r *nftRig) {
	cases := tamperCommands(r.table)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := r.nft.Status()
			if out, err := exec.Command("nft", tc.nft).CombinedOutput(); err != nil {
				t.Fatalf("nft %s: %v: %s", tc.nft, err, out)
			}
			start := time.Now()
			var err error
			for time.Since(start) < 5*time.Second {
				r.nft.mu.Lock()
				_, err = r.nft.check()
				r.nft.mu.Unlock()
				if err == nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("ruleset not restored: %v", err)
			}
			t.Logf("restored after %v", time.Since(start).Round(time.Millisecond))
			st, err := r.nft.Status()
			if err != nil {
				t.Fatal(err)
			}
			if st.Counters["restored"] <= before.Counters["restored"] {
				t.Errorf("restored counter = %d, was %d", st.Counters["restored"], before.Counters["restored"])
			}
			// And it enforces again.
			o, err := r.connect("tcp", r.remote, r.ln4)
			if err != nil || o.Dst != r.remote || o.CgroupID != r.child.ID {
				t.Fatalf("after restore: origin %+v, %v", o, err)
			}
		})
	}
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d connections reached the remote directly", n)
	}
}

func TestNFTCloseLeavesRulesUninstallRemoves(t *testing.T) {
	for _, owned := range []bool{true, false} {
		t.Run(fmt.Sprintf("owned=%v", owned), func(t *testing.T) { testCloseUninstall(t, owned) })
	}
}

func testCloseUninstall(t *testing.T, owned bool) {
	r := newNFTRig(t, 0, func(c *NFTConfig) { c.noOwner = !owned })
	if err := r.nft.Close(); err != nil {
		t.Fatal(err)
	}
	// The daemon is gone: no monitor, no listener. The rules alone keep the agent off the network.
	r.ln4.Close()
	r.ln6.Close()
	if _, err := r.nft.check(); err != nil {
		t.Fatalf("ruleset changed by Close: %v", err)
	}
	for _, dst := range []netip.AddrPort{r.remote, r.remote6} {
		res := r.agent("tcp", dst.String())
		if syscall.Errno(res.Errno) != unix.ECONNREFUSED {
			t.Errorf("daemon down, connect %v: want ECONNREFUSED, got %q", dst, res.Err)
		}
	}
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d connections reached the remote with the daemon down", n)
	}
	// A new daemon takes the table over: it rebuilds it atomically to own it, or, where tables
	// cannot be owned, adopts it as it is (counters kept).
	before, _ := r.nft.Status()
	n2, err := LoadNFT(NFTConfig{Subtree: r.subtree, ProxyPort: r.port, DNSResolvers: []netip.Addr{r.ns.PeerAddr}, TableName: r.table, noOwner: !owned})
	if err != nil {
		t.Fatal(err)
	}
	after, err := n2.Status()
	if err != nil {
		t.Fatal(err)
	}
	if owned && after.Counters["table_owned"] != 1 {
		t.Errorf("restarted daemon does not own the table: %v", after.Counters)
	}
	if !owned && (after.Counters["redirected"] != before.Counters["redirected"] || after.Counters["redirected"] < 2) {
		t.Errorf("reload rebuilt the table: redirected %d before, %d after", before.Counters["redirected"], after.Counters["redirected"])
	}
	for _, p := range after.Programs {
		if p.Count == 0 {
			t.Errorf("chain %s empty after reload", p.Attach)
		}
	}
	n2.Close()

	if err := UninstallNFT(r.table); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nft", "list", "table", "inet", r.table).CombinedOutput(); err == nil {
		t.Fatalf("table still present after uninstall:\n%s", out)
	}
	if err := UninstallNFT(r.table); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
	// Positive control: without the table the same agent reaches the remote directly.
	if res := r.agent("tcp", r.remote.String()); res.Err != "" {
		t.Fatalf("after uninstall: %s", res.Err)
	}
	if n := r.direct.Load(); n != 1 {
		t.Fatalf("after uninstall: %d direct connections, want 1", n)
	}
}

func TestNFTConfigErrors(t *testing.T) {
	mnt, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	sub := &Subtree{Path: mnt}
	cases := []struct {
		name string
		cfg  NFTConfig
		want string
	}{
		{"no subtree", NFTConfig{ProxyPort: 1}, "no enforcement subtree"},
		{"no port", NFTConfig{Subtree: sub}, "proxy port is 0"},
		{"bad table name", NFTConfig{Subtree: sub, ProxyPort: 1, TableName: "a b"}, "invalid table name"},
		{"bad resolver", NFTConfig{Subtree: sub, ProxyPort: 1, DNSResolvers: []netip.Addr{{}}}, "invalid DNS resolver"},
		{"subtree is the cgroup root", NFTConfig{Subtree: sub, ProxyPort: 1, TableName: "enftest_root"}, "not below the cgroup2 mount"},
		{"subtree outside cgroupfs", NFTConfig{Subtree: &Subtree{Path: "/tmp/x"}, ProxyPort: 1, TableName: "enftest_tmp"}, "not below the cgroup2 mount"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := LoadNFT(tc.cfg)
			if err == nil {
				n.Close()
				UninstallNFT(tc.cfg.TableName)
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestNFTReloadWithNewPortReplacesRules(t *testing.T) {
	r := newNFTRig(t, 0)
	r.nft.Close()
	ln4, _, port := listenPair(t)
	n2, err := LoadNFT(NFTConfig{Subtree: r.subtree, ProxyPort: port, DNSResolvers: []netip.Addr{r.ns.PeerAddr}, TableName: r.table})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	r.nft, r.port = n2, port
	st, err := n2.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters["redirected"] != 0 {
		t.Errorf("a changed config must rebuild the table (fresh counters), got %v", st.Counters)
	}
	o, err := r.connect("tcp", r.remote, ln4)
	if err != nil || o.Dst != r.remote {
		t.Fatalf("after reload on port %d: %+v %v", port, o, err)
	}
	if n := r.direct.Load(); n != 0 {
		t.Fatalf("%d direct connections", n)
	}
}

// BenchmarkNFTOrigin measures what the proxy pays per accepted connection in nftables mode:
// SO_ORIGINAL_DST, a sock_diag lookup, the cgroup directory walk and the /proc fd scan. One agent
// process makes b.N connections; the benchmark times only Origin.
func BenchmarkNFTOrigin(b *testing.B) {
	r := newNFTRig(b, 0)
	cg, err := os.Open(r.child.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "tcp-loop", fmt.Sprintf("%d,%s", b.N, r.remote))
	cmd.Env = append(os.Environ(), nftAgentEnv+"=tcp-loop")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	var elapsed time.Duration
	begin := time.Now()
	for i := 0; i < b.N; i++ {
		r.ln4.SetDeadline(time.Now().Add(5 * time.Second))
		c, err := r.ln4.AcceptTCP()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		o, err := r.nft.Origin(c)
		elapsed += time.Since(start)
		if err != nil || o.PID == 0 {
			b.Fatalf("origin %+v: %v", o, err)
		}
		c.Write([]byte("y"))
		c.Close()
	}
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N), "origin-ns/op")
	// The ratio: how much of a whole loopback connection cycle (dial, accept, origin, reply)
	// the origin lookup takes.
	b.ReportMetric(float64(elapsed)/float64(time.Since(begin)), "origin/connection")
}

func TestNFTSetResolvers(t *testing.T) {
	r := newNFTRig(t, 0)
	if err := r.nft.SetResolvers([]netip.Addr{r.ns.PeerAddr6}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		scenario string
		dst      netip.AddrPort
		errno    syscall.Errno
	}{
		{"old resolver refused", "udp-send", netip.AddrPortFrom(r.ns.PeerAddr, 53), unix.EPERM},
		{"new resolver allowed", "nft:udp6-send", netip.AddrPortFrom(r.ns.PeerAddr6, 53), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := r.agent(tc.scenario, tc.dst.String())
			if syscall.Errno(res.Errno) != tc.errno || (tc.errno == 0 && res.Err != "") {
				t.Fatalf("want errno %d, got %q (%d)", tc.errno, res.Err, res.Errno)
			}
		})
	}
	deadline := time.Now().Add(3 * time.Second)
	for r.udp[53].Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.udp[53].Load(); got != 1 {
		t.Errorf("remote got %d DNS datagrams, want 1", got)
	}
	st, err := r.nft.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters["table_owned"] != 1 {
		t.Errorf("lost ownership on update: %v", st.Counters)
	}
}
