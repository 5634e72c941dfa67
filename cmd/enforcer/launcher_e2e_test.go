package main

// More of the launcher's confinement (from a review, 2026-12-07): what it must refuse, and what
// ordinary agent work must keep doing under it.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// outsideAsNobody is a command as nobody outside any run: the developer's own processes.
func outsideAsNobody(args ...string) *exec.Cmd {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent"}
	return cmd
}

// TestRunAllowsMountsInOwnNamespaces: a Landlock domain that handles a file access right (REFER,
// as the launcher's did) also denies mount(2) and pivot_root(2), even in the agent's own user and
// mount namespace, so bubblewrap (Claude Code's and Flatpak's sandbox), rootless podman and
// `unshare -m` failed under `enforcer run`. Must hold where Landlock has ABI 6 (scopes only).
func TestRunAllowsMountsInOwnNamespaces(t *testing.T) {
	e := newEnv(t, "bpf")
	run := sandboxNobody(t, e)
	script := `unshare -Urm sh -c 'mount -t tmpfs none /mnt && echo MOUNT_OK'`
	outside, _ := outsideAsNobody("sh", "-c", script).CombinedOutput()
	t.Logf("outside enforcer run: %s", strings.TrimSpace(string(outside)))
	if !strings.Contains(string(outside), "MOUNT_OK") {
		t.Fatalf("baseline: a mount in nobody's own user and mount namespace fails even outside a run: %s", outside)
	}
	inside := run("sh", "-c", script)
	t.Logf("inside enforcer run: %s", strings.TrimSpace(inside))
	if !strings.Contains(inside, "MOUNT_OK") {
		t.Errorf("a mount in the agent's own user+mount namespace works outside `enforcer run` but fails inside it (the Landlock domain denies mounts): %s", strings.TrimSpace(inside))
	}
}

// TestRunOrdinaryWorkloads: what an agent ordinarily runs keeps working under the
// confinement (no_new_privs, Landlock, seccomp): git, renames across directories, node and
// npm, python's resolver (AF_NETLINK), curl to an allowed target through the proxy, psql.
func TestRunOrdinaryWorkloads(t *testing.T) {
	e := newEnv(t, "bpf")
	run := sandboxNobody(t, e)
	script := fmt.Sprintf(`set -u
export HOME=$(mktemp -d)
cd "$HOME"
git init -q a && cd a && git -c user.email=a@b -c user.name=n commit -q --allow-empty -m x && git clone -q . ../b && echo GIT_OK
cd "$HOME"
mkdir d1 d2 && echo x > d1/f && mv d1/f d2/f && ln d2/f d1/g && echo MV_OK
mkdir -p /dev/shm/launcher-$$/a /dev/shm/launcher-$$/b 2>/dev/null && touch /dev/shm/launcher-$$/a/f && mv /dev/shm/launcher-$$/a/f /dev/shm/launcher-$$/b/f && echo SHM_MV_OK; rm -rf /dev/shm/launcher-$$
node -e "require('fs').promises.writeFile('n.txt','y').then(()=>require('dns').lookup('localhost',(e,a)=>console.log('NODE_OK',e,a)))"
npm --version >/dev/null 2>&1 && echo NPM_OK
python3 -c "import socket; socket.getaddrinfo('localhost', 80); print('PY_OK')"
curl -s --http0.9 --max-time 5 http://%s:7000/ | grep -q echo: && echo CURL_OK
psql --version >/dev/null && echo PSQL_OK
`, e.ns.PeerAddr)
	out := run("sh", "-c", script)
	t.Logf("agent:\n%s", out)
	for _, want := range []string{"GIT_OK", "MV_OK", "SHM_MV_OK", "NODE_OK null", "NPM_OK", "PY_OK", "CURL_OK", "PSQL_OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("%s missing under enforcer run", want)
		}
	}
}

// TestRunAgentCannotReachIntoOutsideProcesses: besides ptrace and pidfd_getfd (sandbox_e2e_test.go),
// /proc/PID/mem, process_vm_readv/writev, /proc/PID/fd, /proc/PID/environ and kcmp of a same-uid
// process outside the run are refused by the Landlock domain. Must hold.
func TestRunAgentCannotReachIntoOutsideProcesses(t *testing.T) {
	e := newEnv(t, "bpf")
	run := sandboxNobody(t, e)
	shell := outsideAsNobody("sleep", "60")
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shell.Process.Kill(); shell.Wait() })
	pid := shell.Process.Pid
	probe := fmt.Sprintf(`
import ctypes, os
pid = %d
libc = ctypes.CDLL(None, use_errno=True)
def t(name, f):
    try: print(name, "ALLOWED", f())
    except Exception as e: print(name, "refused", type(e).__name__)
t("mem", lambda: open("/proc/%%d/mem" %% pid, "r+b").close())
t("fd", lambda: open("/proc/%%d/fd/1" %% pid, "wb").close())
t("environ", lambda: open("/proc/%%d/environ" %% pid, "rb").read()[:10])
class iovec(ctypes.Structure): _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
loc = iovec(ctypes.cast(buf, ctypes.c_void_p), 8); rem = iovec(0x400000, 8)
def vm():
    r = libc.syscall(310, pid, ctypes.byref(loc), 1, ctypes.byref(rem), 1, 0)
    if r < 0 and ctypes.get_errno() in (1, 13): raise PermissionError(ctypes.get_errno())
    return (r, ctypes.get_errno())
t("process_vm_readv", vm)
def kcmp():
    r = libc.syscall(312, pid, os.getpid(), 0, 0, 0)
    if r < 0 and ctypes.get_errno() in (1, 13): raise PermissionError(ctypes.get_errno())
    return (r, ctypes.get_errno())
t("kcmp", kcmp)
`, pid)
	out := run("python3", "-c", probe)
	t.Logf("agent:\n%s", out)
	if strings.Contains(out, "ALLOWED") || !strings.Contains(out, "kcmp") {
		t.Errorf("an agent reached into a same-uid process outside its run:\n%s", out)
	}
}

// TestRunAgentCannotTypeIntoTheTerminal: `enforcer run` hands the command the caller's terminal,
// in the caller's session. With TIOCSTI (dev.tty.legacy_tiocsti = 1 here, the kernel's default)
// the command pushed a line into the terminal's input, which the developer's shell ran outside
// the enforced cgroup once the command exited. Must hold: the launcher's seccomp filter refuses
// TIOCSTI; port 7001 is not in the policy and no connection may reach it.
func TestRunAgentCannotTypeIntoTheTerminal(t *testing.T) {
	e := newEnv(t, "bpf")
	tcp, _ := sandboxListen(t, e)
	sandboxNobody(t, e) // logs nobody in
	escape := filepath.Join(e.dir, "escape.sh")
	os.WriteFile(escape, []byte(fmt.Sprintf(`python3 -c "import socket; s=socket.create_connection(('%s', 7001), 3); s.sendall(b'x\n'); print('REPLY', s.recv(100))"`+"\n", e.ns.PeerAddr)), 0o755)
	// The developer's interactive shell on a terminal.
	master, shown := nobodysTerminal(t)
	inject := fmt.Sprintf(`import fcntl, termios
for ch in "sh %s\n": fcntl.ioctl(0, termios.TIOCSTI, ch.encode())
print("injected")`, escape)
	pyFile := filepath.Join(e.dir, "inject.py")
	os.WriteFile(pyFile, []byte(inject), 0o644)
	fmt.Fprintf(master, "%s run --socket %s -- python3 %s\n", enforcerBin, e.socket, pyFile)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && tcp.Load() == 0 {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("terminal:\n%s", shown())
	if n := tcp.Load(); n != 0 {
		t.Errorf("an agent under `enforcer run` pushed a command into its terminal (TIOCSTI) that the developer's shell ran outside enforcement and reached port 7001: %d connection(s)", n)
	}
}

// TestRunAgentCannotReachOutsideAbstractSockets: a same-uid process outside the run that serves
// on an abstract unix socket (X11, D-Bus session buses, some IDEs) could run things for the agent
// outside enforcement. Must hold where Landlock has ABI 6: the domain scopes abstract sockets, so
// the agent's connect is refused, while one inside the run still works.
func TestRunAgentCannotReachOutsideAbstractSockets(t *testing.T) {
	e := newEnv(t, "bpf")
	run := sandboxNobody(t, e)
	name := fmt.Sprintf("enforcer-test-%d", os.Getpid())
	srv := outsideAsNobody("/usr/bin/python3", "-c", `import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind("\0" + sys.argv[1]); s.listen(); print("listening", flush=True); time.sleep(60)`, name)
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	got := run("python3", "-c", `import socket, sys, threading
def try_connect(n):
    c = socket.socket(socket.AF_UNIX)
    try: c.connect("\0" + n); return "connected"
    except OSError as e: return "refused %d" % e.errno
inside = socket.socket(socket.AF_UNIX); inside.bind("\0" + sys.argv[1] + "-inside"); inside.listen()
print("outside", try_connect(sys.argv[1])); print("inside", try_connect(sys.argv[1] + "-inside"))`, name)
	if abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION); errno != 0 || abi < 6 {
		// Landlock cannot scope them here: the launcher must say so.
		if !strings.Contains(got, "enforcer: warning: Landlock") {
			t.Errorf("Landlock ABI %d, and the launcher gave no warning: %s", abi, got)
		}
		return
	}
	if !strings.Contains(got, "outside refused 1") || !strings.Contains(got, "inside connected") {
		t.Errorf("abstract sockets under the run: %s", got)
	}
}
