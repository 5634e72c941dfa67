package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// agentPrelude is the start of the agents the terminal tests run; format it with the paths of the
// capture, heartbeat and ready files. steal(fd) reads the terminal for a while and logs what it
// gets; detached() leaves a daemon with no terminal that beats its heartbeat file; ready(pgid)
// says that the thief (its process group) is set up, and wait_ready(), in the command, waits for
// that before the command exits.
const agentPrelude = `import os, signal, time, resource, threading, ctypes, select, socket, array
CAP, BEAT, READY = %q, %q, %q
def log(b):
    fd = os.open(CAP, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644); os.write(fd, b); os.close(fd)
def ready(pgid):
    fd = os.open(READY + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"%%d" %% pgid); os.close(fd); os.rename(READY + ".tmp", READY)
def wait_ready():
    end = time.time() + 30
    while not os.path.exists(READY) and time.time() < end:
        time.sleep(0.02)
def quiet():
    for s in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
def to_devnull():
    n = os.open("/dev/null", os.O_RDWR)
    for k in (0, 1, 2): os.dup2(n, k)
def shell_has_terminal(fd, fg0):
    end = time.time() + 60
    while time.time() < end:
        try:
            if os.tcgetpgrp(fd) not in (fg0, os.getpgrp()):
                return  # enforcer run has returned: the shell has the terminal again
        except OSError:
            pass
        time.sleep(0.02)
def steal(fd):
    log(b"READING\n")
    end = time.time() + 15
    while time.time() < end:
        try: os.tcsetpgrp(fd, os.getpgrp())
        except OSError: pass
        # Blocked in read(2) as the shell is, a process with no hold of the foreground gets
        # about every other line.
        try: b = os.read(fd, 1000)
        except OSError: time.sleep(0.05); continue
        if not b: break
        log(b"STOLEN:" + b)
    os._exit(0)
def detached(hold=0):
    if os.fork() == 0:
        os.setsid(); to_devnull()
        keep = [os.open("/dev/null", os.O_RDONLY) for _ in range(hold)]
        end = time.time() + 25
        while time.time() < end:
            fd = os.open(BEAT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.close(fd)
            time.sleep(0.2)
        os._exit(0)
`

// terminalAttack is an agent that leaves a process behind to read the caller's terminal after
// `enforcer run` returns, and what the release must do to its run.
type terminalAttack struct {
	name string
	// agent follows agentPrelude and calls ready, or ready(0) when it leaves no thief.
	agent string
	// runKilled: the whole run must be killed, the daemon that detached too.
	runKilled bool
}

// runTerminalAttacks runs each attack's agent under `enforcer run` from nobody's interactive
// shell, then types at the shell's prompt: nothing of the run may read it. The test waits for the
// thief to be set up and, if it survived, to be reading before it types, so that a theft that was
// slow to start cannot pass for one that was stopped.
func runTerminalAttacks(t *testing.T, tests []terminalAttack) {
	e := newEnv(t, "bpf")
	sandboxNobody(t, e) // logs nobody in
	// nobody's agents write their captures, heartbeats and ready files here.
	out, err := os.MkdirTemp("", "enforcer-release-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(out) })
	os.Chmod(out, 0o777)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			capture := filepath.Join(out, fmt.Sprintf("capture-%d", i))
			beat := filepath.Join(out, fmt.Sprintf("heartbeat-%d", i))
			ready := filepath.Join(out, fmt.Sprintf("ready-%d", i))
			pyFile := filepath.Join(e.dir, fmt.Sprintf("agent-%d.py", i))
			agent := fmt.Sprintf(agentPrelude, capture, beat, ready) + tt.agent + "wait_ready()\nprint(\"AGENT_DONE\", flush=True)\n"
			if err := os.WriteFile(pyFile, []byte(agent), 0o644); err != nil {
				t.Fatal(err)
			}
			master, shown := nobodysTerminal(t)
			start := time.Now()
			fmt.Fprintf(master, "%s run --socket %s -- python3 %s; echo RUN_RETURNED\n", enforcerBin, e.socket, pyFile)
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && strings.Count(shown(), "RUN_RETURNED") < 2; {
				time.Sleep(100 * time.Millisecond)
			}
			if strings.Count(shown(), "RUN_RETURNED") < 2 {
				t.Fatalf("enforcer run did not return:\n%s", shown())
			}
			t.Logf("enforcer run returned after %v", time.Since(start))
			b, err := os.ReadFile(ready)
			if err != nil {
				t.Fatalf("the agent did not set its attack up before the command exited: %v\nterminal:\n%s", err, shown())
			}
			thief, err := strconv.Atoi(string(b))
			if err != nil {
				t.Fatalf("ready file: %q", b)
			}
			if thief != 0 && thiefSurvived(t, thief, capture) {
				t.Logf("the thief (process group %d) survived the release and reads the terminal", thief)
			}
			// The developer, back at the prompt, types.
			for i := range 8 {
				fmt.Fprintf(master, "echo DEV_TYPED_%d\n", i)
				time.Sleep(300 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			got, _ := os.ReadFile(capture)
			if strings.Contains(string(got), "DEV_TYPED") {
				t.Errorf("a process of the run read what the developer typed after `enforcer run` returned: %q\nterminal:\n%s", got, shown())
			}
			st, err := os.Stat(beat)
			switch {
			case err != nil:
				if !tt.runKilled {
					t.Errorf("the daemon that detached from the terminal never beat: %v", err)
				}
			case tt.runKilled && time.Since(st.ModTime()) < time.Second:
				t.Errorf("the run was not killed whole: its daemon still beats\nterminal:\n%s", shown())
			case !tt.runKilled && time.Since(st.ModTime()) > 2*time.Second:
				t.Errorf("the daemon that detached from the terminal did not keep running after the release (last beat %v ago)\nterminal:\n%s", time.Since(st.ModTime()), shown())
			}
			if said := strings.Contains(shown(), "still held your terminal"); said != tt.runKilled {
				t.Errorf("enforcer run said the run was killed for holding the terminal: %v, want %v\nterminal:\n%s", said, tt.runKilled, shown())
			}
		})
	}
}

// thiefSurvived reports whether a process of process group pgid is alive after the release, and
// then waits for it to be reading the terminal; it fails the test if that never comes.
func thiefSurvived(t *testing.T, pgid int, capture string) bool {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !groupAlive(pgid) {
			return false
		}
		if b, _ := os.ReadFile(capture); strings.Contains(string(b), "READING") {
			return true
		}
	}
	t.Fatalf("the thief (process group %d) survived the release but did not begin reading the terminal within 15 s", pgid)
	return false
}

// groupAlive reports whether a process of process group pgid is alive (not a zombie).
func groupAlive(pgid int) bool {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		// After the command's name: state, ppid, pgrp.
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// TestRunReleasesTheTerminal (from a review, 2026-12-07): `enforcer run` gives the command the
// caller's controlling terminal, and a run's processes may outlive it. A process left behind
// made its own group the terminal's foreground (TIOCSPGRP, allowed from the background with
// SIGTTOU ignored) and read what the developer typed at the shell's prompt after the run ended.
// Must hold: nothing of the run reads the terminal after the command exits; a run with a process
// still attached to it is killed whole.
func TestRunReleasesTheTerminal(t *testing.T) {
	runTerminalAttacks(t, []terminalAttack{{"process group of its own takes the foreground", `
fg0 = os.tcgetpgrp(0)
if os.fork() == 0:
    quiet(); os.setpgid(0, 0); ready(os.getpgrp())
    shell_has_terminal(0, fg0)
    steal(os.open("/dev/tty", os.O_RDWR))
`, true}})
}

// TestRunReleasesTheTerminalFromEvasiveProcesses (from reviews, 2026-12-07): the client killed
// the run's processes attached to the terminal in rounds (list the cgroup, read each process's
// descriptors, kill), giving up after 50. Sixty detached processes with 4,000 descriptors each
// made a round slow, and a fork-and-exit chain still attached moved on to a new pid before its
// listed one was killed: it outlived the rounds, took the terminal's foreground and read 4 of the
// 5 lines typed next. A descriptor of /dev/tty (its link names no /dev/pts/N) kept after setsid,
// or held by a thread with a descriptor table of its own, was not seen at all. Then the daemon,
// freezing the run, killed only the processes attached: one passed the terminal (SCM_RIGHTS) to
// a detached one, which took it off its socket after the release and read the terminal.
// Must hold: none of them reads what is typed after `enforcer run` returns, a run with something
// still attached is killed whole, and a daemon that detached keeps running (not left frozen).
func TestRunReleasesTheTerminalFromEvasiveProcesses(t *testing.T) {
	runTerminalAttacks(t, []terminalAttack{
		{"fork-and-exit chain among processes with thousands of descriptors", `
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
for i in range(60): detached(4000)
time.sleep(2)
fg0 = os.tcgetpgrp(0)
if os.fork() == 0:
    quiet(); os.setpgid(0, 0); ready(os.getpgrp())
    end = time.time() + 60
    while time.time() < end:
        try:
            if os.tcgetpgrp(0) not in (fg0, os.getpgrp()):
                break  # enforcer run has returned: the shell has the terminal again
        except OSError:
            pass
        if os.fork() != 0:
            os._exit(0)
    steal(os.open("/dev/tty", os.O_RDWR))
`, true},
		{"descriptor of /dev/tty kept after setsid", `
detached()
if os.fork() == 0:
    quiet(); fd = os.open("/dev/tty", os.O_RDWR); os.setsid(); to_devnull(); ready(os.getpgrp())
    steal(fd)
`, true},
		{"descriptor held by a thread with a table of its own", `
detached()
if os.fork() == 0:
    quiet(); fd = os.open("/dev/tty", os.O_RDWR); started = threading.Event()
    def thief():
        ctypes.CDLL(None, use_errno=True).unshare(0x400)  # CLONE_FILES
        started.set(); steal(fd)
    threading.Thread(target=thief).start(); started.wait()
    os.close(fd); os.setsid(); to_devnull(); ready(os.getpgrp())
    time.sleep(20); os._exit(0)
`, true},
		{"descriptor passed to a detached process, received after the release", `
detached()
a, b = socket.socketpair()
sender = os.fork()
if sender == 0:
    quiet(); b.close()
    a.sendmsg([b"t"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0]))])
    time.sleep(30); os._exit(0)
if os.fork() == 0:
    quiet(); a.close(); sender_gone = os.pidfd_open(sender)
    os.setsid(); to_devnull(); ready(os.getpgrp())
    # The release kills the sender, which holds the terminal; the terminal waits on the socket.
    select.select([sender_gone], [], [], 40)
    _, anc, _, _ = b.recvmsg(1, socket.CMSG_SPACE(4))
    steal(array.array("i", anc[0][2][:4])[0])
`, true},
		{"a daemon that detached", `
detached(); ready(0)
`, false},
	})
}

// TestRunAgentCannotSignalItsLauncher: with Landlock ABI 6 the command must not signal
// the `enforcer run` client (same uid, outside the run); the client still relays SIGTERM in.
// Must hold where Landlock has ABI 6.
func TestRunAgentCannotSignalItsLauncher(t *testing.T) {
	e := newEnv(t, "bpf")
	run := sandboxNobody(t, e)
	out := run("python3", "-c", `import os, signal
for s in (0, signal.SIGSTOP, signal.SIGKILL):
    try: os.kill(os.getppid(), s); print("signal", int(s), "DELIVERED")
    except OSError as e: print("signal", int(s), "refused", e.errno)
try: os.killpg(os.getpgrp(), signal.SIGCONT); print("killpg ok")
except OSError as e: print("killpg", e.errno)
`)
	t.Logf("%s", out)
	if strings.Contains(out, "DELIVERED") {
		t.Errorf("the command signalled its launcher: %s", out)
	}
}

// nobodysTerminal starts an interactive shell as nobody on a new terminal (the developer's, outside
// any run) and returns the terminal's master side and what it has shown so far.
func nobodysTerminal(t *testing.T) (master *os.File, shown func() string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slavePath := fmt.Sprintf("/dev/pts/%d", n)
	os.Chown(slavePath, 65534, 65534)
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	shell := outsideAsNobody("sh", "-i")
	shell.Stdin, shell.Stdout, shell.Stderr = slave, slave, slave
	shell.SysProcAttr.Setsid, shell.SysProcAttr.Setctty, shell.SysProcAttr.Ctty = true, true, 0
	if err := shell.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	t.Cleanup(func() { shell.Process.Kill(); shell.Wait() })
	var mu sync.Mutex
	var screen strings.Builder
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				mu.Lock()
				screen.Write(buf[:n])
				mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	return master, func() string { mu.Lock(); defer mu.Unlock(); return screen.String() }
}
