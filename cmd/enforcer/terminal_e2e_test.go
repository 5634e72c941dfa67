package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRunReleasesTheTerminal (from a review, 2026-12-07): `enforcer run` gives the command the
// caller's controlling terminal, and a run's processes may outlive it. A process left behind
// made its own group the terminal's foreground (TIOCSPGRP, allowed from the background with
// SIGTTOU ignored) and read what the developer typed at the shell's prompt after the run ended.
// Must hold: processes of the run still attached to the terminal are killed when the command
// exits, and nothing of the run reads it afterwards.
func TestRunReleasesTheTerminal(t *testing.T) {
	e := newEnv(t, "bpf")
	sandboxNobody(t, e) // logs nobody in
	capture := filepath.Join(os.TempDir(), fmt.Sprintf("enforcer-capture-%d", os.Getpid()))
	os.Remove(capture)
	t.Cleanup(func() { os.Remove(capture) })
	agent := fmt.Sprintf(`import os, signal, select, time
if os.fork() == 0:
    for s in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    os.setpgid(0, 0)
    time.sleep(3)
    fd = os.open("/dev/tty", os.O_RDWR)
    out = os.open(%q, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    end = time.time() + 20
    while time.time() < end:
        try:
            os.tcsetpgrp(fd, os.getpgrp())
        except OSError as e:
            os.write(out, b"tcsetpgrp failed %%d\n" %% e.errno)
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                os.write(out, b"STOLEN:" + os.read(fd, 1000))
            except OSError:
                pass
    os._exit(0)
print("AGENT_DONE", flush=True)
`, capture)
	pyFile := filepath.Join(e.dir, "takeover.py")
	os.WriteFile(pyFile, []byte(agent), 0o644)

	master, shown := nobodysTerminal(t)
	time.Sleep(500 * time.Millisecond)
	fmt.Fprintf(master, "%s run --socket %s -- python3 %s; echo RUN_RETURNED\n", enforcerBin, e.socket, pyFile)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && strings.Count(shown(), "RUN_RETURNED") < 2 {
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(shown(), "RUN_RETURNED") < 2 {
		t.Fatalf("enforcer run did not return:\n%s", shown())
	}
	// The developer, back at the prompt, types.
	time.Sleep(4 * time.Second)
	for i := 0; i < 5; i++ {
		fmt.Fprintf(master, "echo DEV_TYPED_%d\n", i)
		time.Sleep(700 * time.Millisecond)
	}
	time.Sleep(time.Second)
	got, _ := os.ReadFile(capture)
	t.Logf("terminal:\n%s", shown())
	t.Logf("left-behind agent process captured:\n%s", got)
	if strings.Contains(string(got), "DEV_TYPED") {
		t.Errorf("a process of the run, after `enforcer run` returned, made itself the terminal's foreground and read what the developer typed at the shell prompt: %q", got)
	}
}

// TestRunReleasesTheTerminalFromEvasiveProcesses (from a review, 2026-12-07): the client killed
// the run's processes attached to the terminal in rounds (list the cgroup, read each process's
// descriptors, kill), giving up after 50. Sixty detached processes with 4,000 descriptors each
// made a round slow, and a fork-and-exit chain still attached moved on to a new pid before its
// listed one was killed: it outlived the rounds, took the terminal's foreground and read 4 of the
// 5 lines typed next. A descriptor of /dev/tty (its link names no /dev/pts/N) kept after setsid,
// or held by a thread with a descriptor table of its own, was not seen at all.
// Must hold: none of them reads what is typed after `enforcer run` returns, and a daemon that
// detached keeps running (not left frozen).
func TestRunReleasesTheTerminalFromEvasiveProcesses(t *testing.T) {
	e := newEnv(t, "bpf")
	sandboxNobody(t, e) // logs nobody in
	// prelude: steal(fd) reads the terminal for a while and logs what it gets; detached() leaves
	// a daemon with no terminal that beats its heartbeat file.
	const prelude = `import os, signal, time, resource, threading, ctypes
CAP, BEAT = %q, %q
def log(b):
    fd = os.open(CAP, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644); os.write(fd, b); os.close(fd)
def quiet():
    for s in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
def to_devnull():
    n = os.open("/dev/null", os.O_RDWR)
    for k in (0, 1, 2): os.dup2(n, k)
def steal(fd):
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
	tests := []struct {
		name  string
		agent string
	}{
		{"fork-and-exit chain among processes with thousands of descriptors", `
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
for i in range(60): detached(4000)
time.sleep(2)
fg0 = os.tcgetpgrp(0)
if os.fork() == 0:
    quiet(); os.setpgid(0, 0)
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
`},
		{"descriptor of /dev/tty kept after setsid", `
detached()
if os.fork() == 0:
    quiet(); fd = os.open("/dev/tty", os.O_RDWR); os.setsid(); to_devnull()
    steal(fd)
time.sleep(0.5)
`},
		{"descriptor held by a thread with a table of its own", `
detached()
if os.fork() == 0:
    quiet(); fd = os.open("/dev/tty", os.O_RDWR); ready = threading.Event()
    def thief():
        ctypes.CDLL(None, use_errno=True).unshare(0x400)  # CLONE_FILES
        ready.set(); steal(fd)
    threading.Thread(target=thief).start(); ready.wait()
    os.close(fd); os.setsid(); to_devnull()
    time.sleep(20); os._exit(0)
time.sleep(0.5)
`},
	}
	// nobody's agents write their captures and heartbeats here.
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
			pyFile := filepath.Join(e.dir, fmt.Sprintf("agent-%d.py", i))
			agent := fmt.Sprintf(prelude, capture, beat) + tt.agent + "print(\"AGENT_DONE\", flush=True)\n"
			if err := os.WriteFile(pyFile, []byte(agent), 0o644); err != nil {
				t.Fatal(err)
			}
			master, shown := nobodysTerminal(t)
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			fmt.Fprintf(master, "%s run --socket %s -- python3 %s; echo RUN_RETURNED\n", enforcerBin, e.socket, pyFile)
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && strings.Count(shown(), "RUN_RETURNED") < 2; {
				time.Sleep(100 * time.Millisecond)
			}
			if strings.Count(shown(), "RUN_RETURNED") < 2 {
				t.Fatalf("enforcer run did not return:\n%s", shown())
			}
			t.Logf("enforcer run returned after %v", time.Since(start))
			// The developer, back at the prompt, types.
			time.Sleep(time.Second)
			for i := range 8 {
				fmt.Fprintf(master, "echo DEV_TYPED_%d\n", i)
				time.Sleep(300 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			got, _ := os.ReadFile(capture)
			if strings.Contains(string(got), "DEV_TYPED") {
				t.Errorf("a process of the run read what the developer typed after `enforcer run` returned: %q\nterminal:\n%s", got, shown())
			}
			if st, err := os.Stat(beat); err != nil || time.Since(st.ModTime()) > 2*time.Second {
				t.Errorf("the daemon that detached from the terminal did not keep running after the release (heartbeat: %v)\nterminal:\n%s", err, shown())
			}
		})
	}
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
