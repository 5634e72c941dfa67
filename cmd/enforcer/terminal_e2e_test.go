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
