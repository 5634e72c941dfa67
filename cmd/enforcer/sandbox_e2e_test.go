package main

// The sandbox that `enforcer run` puts an agent in, beyond the network redirect: what an
// ordinary user's agent must not be able to do.
// These tests hold the probes of review 19c (2026-12-07): AF_VSOCK sockets, ptrace of the
// same-uid `enforcer run` client and of other same-uid processes outside the run, io_uring, and
// the probes that already held then.

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
	"unsafe"

	"golang.org/x/sys/unix"
)

const sandboxAgentEnv = "ENFORCER_SANDBOX_AGENT"

// init turns the test binary into a probe agent when started with sandboxAgentEnv set (it runs
// before TestMain, which would build the daemon). It also acknowledges, for every test of this
// binary, that `enforcer run` started as root is not contained (rootAckEnv): the tests compare
// what root's commands print. TestRunAsRootWarns checks the warning itself.
func init() {
	if mode := os.Getenv(sandboxAgentEnv); mode != "" {
		res := sandboxAgent(mode, os.Args[len(os.Args)-2], os.Args[len(os.Args)-1])
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	}
	if os.Getenv(seccompChildEnv) != "" {
		os.Exit(seccompChild())
	}
	os.Setenv(rootAckEnv, "1")
}

type sandboxResult struct {
	Step  string `json:"step"`
	Err   string `json:"err,omitempty"`
	Reply string `json:"reply,omitempty"`
	Info  string `json:"info,omitempty"`
}

func sandboxAgent(mode, target, addr string) sandboxResult {
	switch mode {
	case "ptrace-steal":
		pid, _ := strconv.Atoi(target)
		if pid == 0 {
			pid = os.Getppid()
		}
		return sandboxPtraceSteal(pid, addr)
	case "uring":
		if target == "vsock" {
			return sandboxURingVsock()
		}
		return sandboxURing(addr)
	}
	return sandboxResult{Step: "mode", Err: "unknown mode " + mode}
}

// sandboxPtraceSteal makes process target, of our uid and outside the enforced cgroup, create a
// TCP socket by injecting socket(2) with ptrace, takes that socket with pidfd_getfd and connects
// it to addr. The socket's cgroup is the target's, so no program of the enforcement subtree runs
// for it: only the refusal of the ptrace or of the pidfd_getfd stops this.
func sandboxPtraceSteal(target int, addr string) sandboxResult {
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", target))
	self, _ := os.ReadFile("/proc/self/cgroup")
	info := fmt.Sprintf("uid=%d self=%q target=%d %q", os.Getuid(), strings.TrimSpace(string(self)), target, strings.TrimSpace(string(cg)))
	runtime.LockOSThread()
	tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", target))
	fd := -1
	lastErr := errors.New("no thread")
	for _, t := range tids {
		tid, _ := strconv.Atoi(t.Name())
		fd, lastErr = sandboxInjectSocket(tid)
		if lastErr == nil {
			break
		}
	}
	pidfd, err := unix.PidfdOpen(target, 0)
	if err != nil {
		return sandboxResult{Step: "pidfd_open", Err: err.Error(), Info: info}
	}
	if fd < 0 {
		// Injection refused: try to take a descriptor the target already holds.
		if _, err := unix.PidfdGetfd(pidfd, 0, 0); err != nil {
			return sandboxResult{Step: "inject", Err: fmt.Sprintf("%v; pidfd_getfd: %v", lastErr, err), Info: info}
		}
		return sandboxResult{Step: "inject", Err: fmt.Sprint(lastErr), Reply: "pidfd_getfd allowed", Info: info}
	}
	s, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return sandboxResult{Step: "pidfd_getfd", Err: err.Error(), Info: info}
	}
	ap := netip.MustParseAddrPort(addr)
	if err := unix.Connect(s, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return sandboxResult{Step: "connect", Err: err.Error(), Info: info}
	}
	unix.Write(s, []byte("stolen-socket\n"))
	tv := unix.Timeval{Sec: 3}
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 100)
	n, _ := unix.Read(s, buf)
	return sandboxResult{Step: "done", Reply: strings.TrimSpace(string(buf[:max(n, 0)])), Info: info}
}

// sandboxInjectSocket runs socket(AF_INET, SOCK_STREAM, 0) in thread tid, which must be stopped
// in a system call, and returns the new descriptor number (in tid's process).
func sandboxInjectSocket(tid int) (int, error) {
	if err := unix.PtraceAttach(tid); err != nil {
		return -1, fmt.Errorf("attach %d: %w", tid, err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil {
		return -1, fmt.Errorf("wait: %w", err)
	}
	var saved unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &saved); err != nil {
		unix.PtraceDetach(tid)
		return -1, fmt.Errorf("getregs: %w", err)
	}
	insn := make([]byte, 2)
	if _, err := unix.PtracePeekText(tid, uintptr(saved.Rip-2), insn); err != nil || insn[0] != 0x0f || insn[1] != 0x05 {
		unix.PtraceDetach(tid)
		return -1, fmt.Errorf("thread %d not stopped after a syscall instruction (%x, %v)", tid, insn, err)
	}
	regs := saved
	regs.Rip -= 2
	regs.Rax = unix.SYS_SOCKET
	regs.Orig_rax = ^uint64(0)
	regs.Rdi, regs.Rsi, regs.Rdx = unix.AF_INET, unix.SOCK_STREAM, 0
	if err := unix.PtraceSetRegs(tid, &regs); err != nil {
		unix.PtraceDetach(tid)
		return -1, fmt.Errorf("setregs: %w", err)
	}
	if err := unix.PtraceSingleStep(tid); err != nil {
		unix.PtraceDetach(tid)
		return -1, fmt.Errorf("singlestep: %w", err)
	}
	unix.Wait4(tid, &ws, unix.WALL, nil)
	unix.PtraceGetRegs(tid, &regs)
	fd := int(int64(regs.Rax))
	unix.PtraceSetRegs(tid, &saved)
	unix.PtraceDetach(tid)
	if fd < 0 {
		return -1, fmt.Errorf("injected socket: %v", syscall.Errno(-fd))
	}
	return fd, nil
}

// sandboxNobody logs nobody in and returns a function running `enforcer run -- args...` as
// nobody, with its combined output.
func sandboxNobody(t *testing.T, e *env) func(args ...string) string {
	t.Helper()
	as := func(args ...string) *exec.Cmd {
		cmd := exec.Command(enforcerBin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent"}
		return cmd
	}
	if out, err := as("login", "--socket", e.socket).CombinedOutput(); err != nil {
		t.Fatalf("login as nobody: %v %s", err, out)
	}
	return func(args ...string) string {
		out, _ := as(append([]string{"run", "--socket", e.socket, "--"}, args...)...).CombinedOutput()
		return string(out)
	}
}

// sandboxAgentBinary copies the test binary where nobody can execute it.
func sandboxAgentBinary(t *testing.T, e *env) string {
	t.Helper()
	agent := filepath.Join(e.dir, "sandbox-agent")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return agent
}

// sandboxListen counts TCP connections and UDP datagrams to port 7001 of the lab host, which the
// test policy does not name: with enforcement, both counts must stay zero. A TCP connection is
// answered "reached" once a line arrives.
func sandboxListen(t *testing.T, e *env) (tcp, udp *atomic.Int64) {
	t.Helper()
	addr := net.JoinHostPort(e.ns.PeerAddr.String(), "7001")
	ln, err := e.ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tcp = countingListener(t, ln)
	pc, err := e.ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	udp = new(atomic.Int64)
	go func() {
		buf := make([]byte, 2000)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			udp.Add(1)
		}
	}()
	return tcp, udp
}

// TestRunRefusesOtherSocketFamilies: the cgroup socket programs run only for AF_INET and AF_INET6
// sockets. AF_VSOCK (present on this Firecracker VM, CID 2 is the hypervisor host) and the other
// families would be channels off the machine that no program sees. An agent (as nobody) may
// create only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK sockets (the launcher's seccomp
// filter); io_uring's IORING_OP_SOCKET is not seen by seccomp, so io_uring is refused.
func TestRunRefusesOtherSocketFamilies(t *testing.T) {
	e := newEnv(t, "bpf")
	run := sandboxNobody(t, e)
	const probe = `
import socket
for name, fam, typ, proto in [("vsock", socket.AF_VSOCK, socket.SOCK_STREAM, 0), ("vsock-dgram", socket.AF_VSOCK, socket.SOCK_DGRAM, 0),
        ("packet", socket.AF_PACKET, socket.SOCK_DGRAM, 0), ("bluetooth", 31, socket.SOCK_STREAM, 0), ("can", 29, socket.SOCK_RAW, 1),
        ("unix", socket.AF_UNIX, socket.SOCK_STREAM, 0), ("netlink", socket.AF_NETLINK, socket.SOCK_RAW, 0), ("tcp", socket.AF_INET, socket.SOCK_STREAM, 0)]:
    try:
        s = socket.socket(fam, typ, proto); print(name, "created"); s.close()
    except Exception as e:
        print(name, type(e).__name__, e.errno)
try:
    a, b = socket.socketpair(socket.AF_VSOCK, socket.SOCK_STREAM); print("vsock-pair created")
except Exception as e:
    print("vsock-pair", type(e).__name__, e.errno)
`
	out := run("python3", "-c", probe)
	t.Logf("agent:\n%s", out)
	for _, refused := range []string{"vsock", "vsock-dgram", "packet", "bluetooth", "can", "vsock-pair"} {
		if !strings.Contains(out, refused+" PermissionError 1") {
			t.Errorf("%s socket: want EPERM", refused)
		}
	}
	for _, allowed := range []string{"unix", "netlink", "tcp"} {
		if !strings.Contains(out, allowed+" created") {
			t.Errorf("%s socket: want it created", allowed)
		}
	}
	// The same through io_uring: IORING_OP_SOCKET(AF_VSOCK).
	agent := sandboxAgentBinary(t, e)
	if out := run("env", sandboxAgentEnv+"=uring", agent, "-test.run=^$", "vsock", "1.2.3.4:1"); !strings.Contains(out, "io_uring_setup: function not implemented") {
		t.Errorf("io_uring must be refused; agent said %s", out)
	}
}

// TestRunAgentCannotPtraceOutside: with no Yama on this kernel, a process may ptrace any process
// of its uid. An agent under `enforcer run` has such processes at hand: its parent, the `enforcer
// run` client, which stays outside the cgroup, and the developer's shell or IDE. It could make one
// create a TCP socket (ptrace, injecting socket(2)) and take it (pidfd_getfd): the socket belongs
// to the outside process's cgroup, so nothing redirects it. Port 7001 is not in the policy; no
// connection may reach it. The client is not dumpable (so only CAP_SYS_PTRACE could trace it);
// other processes are protected by the launcher's Landlock domain (a process in a domain may
// ptrace only within it).
func TestRunAgentCannotPtraceOutside(t *testing.T) {
	e := newEnv(t, "bpf")
	tcp, _ := sandboxListen(t, e)
	agent := sandboxAgentBinary(t, e)
	run := sandboxNobody(t, e)
	// The developer's shell: a process of the same uid, outside the subtree.
	shell := exec.Command("sleep", "60")
	shell.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shell.Process.Kill(); shell.Wait() })
	dst := netip.AddrPortFrom(e.ns.PeerAddr, 7001).String()
	for _, c := range []struct{ name, pid string }{
		{"the enforcer run client", "0"},
		{"another process of the uid", strconv.Itoa(shell.Process.Pid)},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := tcp.Load()
			out := run("env", sandboxAgentEnv+"=ptrace-steal", agent, "-test.run=^$", c.pid, dst)
			t.Logf("agent: %s", strings.TrimSpace(out))
			if n := tcp.Load() - before; n != 0 {
				t.Errorf("an enforced process reached %s (not in the policy) through a socket made by %s: %d connection(s); agent said %s", dst, c.name, n, strings.TrimSpace(out))
			}
			if !strings.Contains(out, `"step":"inject"`) || strings.Contains(out, "pidfd_getfd allowed") {
				t.Errorf("ptrace or pidfd_getfd of %s was not refused: %s", c.name, strings.TrimSpace(out))
			}
		})
	}
}

// TestRunAgentProbesHeld runs, as nobody under `enforcer run`, attempts that must all fail to
// reach the disallowed TCP and UDP port 7001 of the lab host (they held when review 19c wrote
// them), and checks that the agent runs with no_new_privs, so that setuid binaries (sudo) and
// file capabilities give it nothing.
func TestRunAgentProbesHeld(t *testing.T) {
	e := newEnv(t, "bpf")
	tcp, udp := sandboxListen(t, e)
	run := sandboxNobody(t, e)
	probe := fmt.Sprintf(`
import socket, os, sys
H, P = %q, 7001
def t(name, f):
    try: print(name, f())
    except Exception as e: print(name, type(e).__name__, e)
def fastopen():
    s = socket.socket(); s.settimeout(3)
    s.sendto(b'ping\n', socket.MSG_FASTOPEN, (H, P)); return s.recv(100)
def fastopen_connect():
    s = socket.socket(); s.settimeout(3); s.setsockopt(socket.IPPROTO_TCP, 30, 1)
    s.connect((H, P)); s.sendall(b'ping\n'); return s.recv(100)
def bindtodevice():
    s = socket.socket(); s.settimeout(3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'lo')
    s.connect((H, P)); s.sendall(b'ping\n'); return s.recv(100)
def bound_first():
    s = socket.socket(); s.settimeout(3); s.bind(('0.0.0.0', 0))
    s.connect((H, P)); s.sendall(b'ping\n'); return s.recv(100)
def udp_sendmsg():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.sendmsg([b'x'], [], 0, (H, P))
def udp_mapped():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    return s.sendto(b'x', ('::ffff:' + H, P))
def udp_connect_resolver_then_sendto():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((H, 53))
    return s.sendto(b'x', (H, P))
def packet():
    return socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
def cgroup_escape():
    open('/sys/fs/cgroup/unified/cgroup.procs', 'w').write(str(os.getpid())); return 'moved'
def no_new_privs():
    return [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].strip()
t('fastopen', fastopen); t('fastopen_connect', fastopen_connect); t('bindtodevice', bindtodevice)
t('bound_first', bound_first); t('udp_sendmsg', udp_sendmsg); t('udp_mapped', udp_mapped)
t('udp_connected_sendto', udp_connect_resolver_then_sendto); t('packet', packet); t('cgroup_escape', cgroup_escape)
t('nnp', no_new_privs)
`, e.ns.PeerAddr.String())
	out := run("python3", "-c", probe)
	t.Logf("probes:\n%s", out)
	// A new user and network namespace: its sockets are refused (netns cookie check).
	out2 := run("unshare", "-Urn", "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(); s.settimeout(3)
try: s.connect((%q, 7001)); print('connected')
except Exception as e: print('userns', type(e).__name__, e)
`, e.ns.PeerAddr.String()))
	t.Logf("userns: %s", out2)
	time.Sleep(200 * time.Millisecond)
	if tcp.Load() != 0 || udp.Load() != 0 {
		t.Errorf("disallowed port reached: tcp %d udp %d", tcp.Load(), udp.Load())
	}
	if strings.Contains(out, "moved") {
		t.Errorf("nobody moved itself out of the enforced cgroup")
	}
	if !strings.Contains(out, "NoNewPrivs:\t1") {
		t.Errorf("the agent runs without no_new_privs: setuid binaries would raise its privileges")
	}
}

// sandboxRing is a minimal synchronous io_uring: one operation at a time.
type sandboxRing struct {
	fd              int
	ring, sqes      []byte
	sqTail, sqArray unsafe.Pointer
	sqMask          uint32
	cqHead, cqTail  *uint32
	cqMask          uint32
	cqes            unsafe.Pointer
	sqpoll          bool
	sqFlags         *uint32
}

type sandboxRingParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32
	cqOff                                                                  [10]uint32
}

type sandboxSQE struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	opFlags  uint32
	userData uint64
	_        [3]uint64
}

func newSandboxRing(flags uint32) (*sandboxRing, error) {
	p := sandboxRingParams{flags: flags, sqThreadIdle: 2000}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &sandboxRing{fd: int(fd), sqpoll: flags&2 != 0}
	size := max(p.sqOff[6]+p.sqEntries*4, p.cqOff[5]+p.cqEntries*16)
	var err error
	if r.ring, err = unix.Mmap(r.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, err
	}
	if r.sqes, err = unix.Mmap(r.fd, 0x10000000, int(p.sqEntries*64), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, err
	}
	at := func(off uint32) unsafe.Pointer { return unsafe.Pointer(&r.ring[off]) }
	r.sqTail = at(p.sqOff[1])
	r.sqMask = *(*uint32)(at(p.sqOff[2]))
	r.sqFlags = (*uint32)(at(p.sqOff[4]))
	r.sqArray = at(p.sqOff[6])
	r.cqHead = (*uint32)(at(p.cqOff[0]))
	r.cqTail = (*uint32)(at(p.cqOff[1]))
	r.cqMask = *(*uint32)(at(p.cqOff[2]))
	r.cqes = at(p.cqOff[5])
	return r, nil
}

func (r *sandboxRing) do(e sandboxSQE) (int32, error) {
	tail := atomic.LoadUint32((*uint32)(r.sqTail))
	i := tail & r.sqMask
	*(*sandboxSQE)(unsafe.Add(unsafe.Pointer(&r.sqes[0]), uintptr(i)*64)) = e
	*(*uint32)(unsafe.Add(r.sqArray, uintptr(i)*4)) = i
	atomic.StoreUint32((*uint32)(r.sqTail), tail+1)
	flags := uintptr(1) // IORING_ENTER_GETEVENTS
	toSubmit := uintptr(1)
	if r.sqpoll {
		toSubmit = 0
		if atomic.LoadUint32(r.sqFlags)&1 != 0 { // IORING_SQ_NEED_WAKEUP
			flags |= 2
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for atomic.LoadUint32(r.cqHead) == atomic.LoadUint32(r.cqTail) {
		if time.Now().After(deadline) {
			return 0, errors.New("no completion")
		}
		if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), toSubmit, 1, flags, 0, 0); errno != 0 && errno != unix.EINTR {
			return 0, fmt.Errorf("io_uring_enter: %w", errno)
		}
		toSubmit = 0
	}
	head := atomic.LoadUint32(r.cqHead)
	res := *(*int32)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*16+8))
	atomic.StoreUint32(r.cqHead, head+1)
	return res, nil
}

// sandboxURing: TCP socket and connect through io_uring (IORING_OP_SOCKET, IORING_OP_CONNECT,
// plain and with an SQPOLL kernel thread), UDP sendmsg through io_uring, all to arg.
func sandboxURing(arg string) sandboxResult {
	ap := netip.MustParseAddrPort(arg)
	var sa unix.RawSockaddrInet4
	sa.Family = unix.AF_INET
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	sa.Addr = ap.Addr().As4()
	var out []string
	for _, flags := range []uint32{0, 2} {
		r, err := newSandboxRing(flags)
		if err != nil {
			out = append(out, fmt.Sprintf("ring %d: %v", flags, err))
			continue
		}
		fd, err := r.do(sandboxSQE{opcode: 45, fd: unix.AF_INET, off: unix.SOCK_STREAM}) // IORING_OP_SOCKET
		if err != nil || fd < 0 {
			out = append(out, fmt.Sprintf("ring %d socket: %v %v", flags, fd, err))
			s, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			fd = int32(s)
		}
		res, err := r.do(sandboxSQE{opcode: 16, fd: fd, addr: uint64(uintptr(unsafe.Pointer(&sa))), off: uint64(unsafe.Sizeof(sa))}) // IORING_OP_CONNECT
		runtime.KeepAlive(&sa)
		line := fmt.Sprintf("ring %d tcp connect: res=%d err=%v", flags, res, err)
		if err == nil && res == 0 {
			unix.Write(int(fd), []byte("ping\n"))
			tv := unix.Timeval{Sec: 3}
			unix.SetsockoptTimeval(int(fd), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			buf := make([]byte, 64)
			n, _ := unix.Read(int(fd), buf)
			line += fmt.Sprintf(" read %q", buf[:max(n, 0)])
		}
		out = append(out, line)
		u, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		payload := []byte("udp-uring")
		iov := unix.Iovec{Base: &payload[0], Len: uint64(len(payload))}
		msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sa)), Namelen: uint32(unsafe.Sizeof(sa)), Iov: &iov, Iovlen: 1}
		res, err = r.do(sandboxSQE{opcode: 9, fd: int32(u), addr: uint64(uintptr(unsafe.Pointer(&msg))), len: 1}) // IORING_OP_SENDMSG
		runtime.KeepAlive(&msg)
		runtime.KeepAlive(payload)
		out = append(out, fmt.Sprintf("ring %d udp sendmsg: res=%d err=%v", flags, res, err))
	}
	return sandboxResult{Step: "done", Info: strings.Join(out, "; ")}
}

// TestRunIOURing: io_uring's operations (socket, connect, and sendmsg, with and without an SQPOLL
// kernel thread) reach nothing the system calls cannot: they run the same cgroup hooks. The
// launcher refuses io_uring to ordinary users' commands, so this runs the probe as root, cloned
// straight into the cgroup with the kernel programs as its only confinement (as a workload
// cgroup's processes are). Port 7001 is not in the policy.
func TestRunIOURing(t *testing.T) {
	e := newEnv(t, "bpf")
	tcp, udp := sandboxListen(t, e)
	out, _ := e.run("env", sandboxAgentEnv+"=uring", os.Args[0], "-test.run=^$", "inet", netip.AddrPortFrom(e.ns.PeerAddr, 7001).String())
	t.Logf("agent: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "ring 0 ") || strings.Contains(out, "io_uring_setup") {
		t.Fatalf("the probe did not get a ring: %s", out)
	}
	time.Sleep(200 * time.Millisecond)
	if tcp.Load() != 0 || udp.Load() != 0 {
		t.Errorf("io_uring reached the disallowed port: tcp %d udp %d", tcp.Load(), udp.Load())
	}
}

// TestRunAsRootWarns: root cannot be contained (it can write another cgroup's cgroup.procs,
// detach the programs, load its own); `enforcer run` started as root says so on stderr, unless
// told it is known (rootAckEnv), and still runs the command.
func TestRunAsRootWarns(t *testing.T) {
	e := newEnv(t, "bpf")
	for _, c := range []struct {
		ack  string
		warn bool
	}{{"", true}, {"1", false}} {
		cmd := exec.Command(enforcerBin, "run", "--socket", e.socket, "--", "echo", "ran")
		cmd.Env = append(os.Environ(), rootAckEnv+"="+c.ack)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || strings.TrimSpace(string(out)) != "ran" {
			t.Fatalf("run as root (%s=%q): %v, stdout %q", rootAckEnv, c.ack, err, out)
		}
		if got := strings.Contains(stderr.String(), "NOT contained against root-level escapes"); got != c.warn {
			t.Errorf("run as root (%s=%q): warning printed %v, want %v; stderr %q", rootAckEnv, c.ack, got, c.warn, stderr.String())
		}
	}
}

// TestRunSeccompFilter checks the launcher's seccomp program itself, in a child outside any
// enforced cgroup: the families it lets socket(2) and socketpair(2) create, and io_uring
// refused.
func TestRunSeccompFilter(t *testing.T) {
	if prog := stubFilter(); len(prog) == 0 {
		t.Fatalf("no seccomp filter for %s", runtime.GOARCH)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), seccompChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

const seccompChildEnv = "ENFORCER_SECCOMP_CHILD"

// seccompChild installs the filter and tries each case; it prints what went
// wrong and returns 1 if anything did.
func seccompChild() int {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println(err)
		return 1
	}
	prog := stubFilter()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		fmt.Println("seccomp:", errno)
		return 1
	}
	failed := 0
	for _, c := range []struct {
		name               string
		family, typ, proto int
		want               syscall.Errno // 0: allowed
	}{
		{"vsock", unix.AF_VSOCK, unix.SOCK_STREAM, 0, unix.EPERM},
		{"packet", unix.AF_PACKET, unix.SOCK_RAW, 0x0300, unix.EPERM},
		{"xdp", unix.AF_XDP, unix.SOCK_RAW, 0, unix.EPERM},
		{"vsock with high bits in the argument", unix.AF_VSOCK | 1<<40, unix.SOCK_STREAM, 0, unix.EPERM},
		{"unix", unix.AF_UNIX, unix.SOCK_STREAM, 0, 0},
		{"netlink", unix.AF_NETLINK, unix.SOCK_RAW, 0, 0},
		{"tcp", unix.AF_INET, unix.SOCK_STREAM, 0, 0},
		{"tcp6", unix.AF_INET6, unix.SOCK_STREAM, 0, 0},
	} {
		fd, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(c.family), uintptr(c.typ), uintptr(c.proto))
		if errno == 0 {
			unix.Close(int(fd))
		}
		if errno != c.want {
			fmt.Printf("socket %s: errno %v, want %v\n", c.name, errno, c.want)
			failed = 1
		}
	}
	var pair [2]int32
	if _, _, errno := unix.RawSyscall6(unix.SYS_SOCKETPAIR, unix.AF_VSOCK, unix.SOCK_STREAM, 0, uintptr(unsafe.Pointer(&pair)), 0, 0); errno != unix.EPERM {
		fmt.Printf("socketpair vsock: %v, want EPERM\n", errno)
		failed = 1
	}
	// Must hold: no typing into the caller's terminal (its shell would run the line, outside the
	// run); other ioctls pass (ENOTTY on a pipe).
	for _, c := range []struct {
		name string
		req  uintptr
		want syscall.Errno
	}{{"TIOCSTI", unix.TIOCSTI, unix.EPERM}, {"TIOCLINUX", unix.TIOCLINUX, unix.EPERM}, {"TIOCGWINSZ", unix.TIOCGWINSZ, unix.ENOTTY}} {
		r, w, _ := os.Pipe()
		var b [8]byte
		_, _, errno := unix.RawSyscall(unix.SYS_IOCTL, r.Fd(), c.req, uintptr(unsafe.Pointer(&b[0])))
		r.Close()
		w.Close()
		if errno != c.want {
			fmt.Printf("ioctl %s: %v, want %v\n", c.name, errno, c.want)
			failed = 1
		}
	}
	if _, err := newSandboxRing(0); !errors.Is(err, unix.ENOSYS) {
		fmt.Printf("io_uring_setup: %v, want ENOSYS\n", err)
		failed = 1
	}
	return failed
}

// sandboxURingVsock creates an AF_VSOCK socket with io_uring (IORING_OP_SOCKET), which a seccomp
// filter on socket(2) does not see.
func sandboxURingVsock() sandboxResult {
	r, err := newSandboxRing(0)
	if err != nil {
		return sandboxResult{Step: "ring", Err: err.Error()}
	}
	fd, err := r.do(sandboxSQE{opcode: 45, fd: unix.AF_VSOCK, off: unix.SOCK_STREAM}) // IORING_OP_SOCKET
	if err != nil || fd < 0 {
		return sandboxResult{Step: "socket", Err: fmt.Sprint(fd, err)}
	}
	return sandboxResult{Step: "done", Reply: "vsock socket created"}
}
