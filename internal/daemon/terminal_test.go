package daemon

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/redirect"
	"golang.org/x/sys/unix"
)

// callerTerminal opens a new terminal and returns its side the run's processes get and its
// number as a release names it.
func callerTerminal(t *testing.T) (*os.File, uint32) {
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
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	tty, err := unix.IoctlGetUint32(int(slave.Fd()), unix.TIOCGDEV)
	if err != nil {
		t.Fatal(err)
	}
	return slave, tty
}

// callerWith starts a process outside any run with stdin on the given file and returns it as a
// caller of the daemon, with the pidfd the control layer would hold.
func callerWith(t *testing.T, uid uint32, cgroup string, stdin *os.File) control.Caller {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	t.Cleanup(func() { f.Close() })
	return control.Caller{UID: uid, PID: int32(cmd.Process.Pid), Cgroup: cgroup, Pidfd: f}
}

// startInRun starts sleep in the run cgroup at path, stdin on the given file and extra as its
// descriptor 3, in a session of its own, with the terminal it has on stdin as controlling one
// if ctty.
func startInRun(t *testing.T, path string, stdin, extra *os.File, ctty bool) *exec.Cmd {
	t.Helper()
	cg, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command("sleep", "60")
	cmd.Stdin = stdin
	if extra != nil {
		cmd.ExtraFiles = []*os.File{extra}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Setsid: true, Setctty: ctty}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// TestReleaseKillsTheRunThatHoldsTheTerminal: POST /v1/runs/{name}/release kills the whole run
// when one of its processes has the caller's terminal as controlling terminal or holds a
// descriptor of it: it may have passed one (SCM_RIGHTS) to another process of the run, where no
// look sees it until received. A run whose processes all detached keeps running, thawed.
func TestReleaseKillsTheRunThatHoldsTheTerminal(t *testing.T) {
	d := limitsDaemon(t)
	if _, err := d.ids.LoginLocal(0); err != nil {
		t.Fatal(err)
	}
	slave, tty := callerTerminal(t)
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	root := callerWith(t, 0, "/user.slice", slave)
	tests := []struct {
		name string
		// start starts the run's processes and returns them.
		start        func(t *testing.T, path string) []*exec.Cmd
		wantKilled   bool
		wantAttached int
	}{
		{"controlling terminal", func(t *testing.T, path string) []*exec.Cmd {
			return []*exec.Cmd{startInRun(t, path, slave, nil, true), startInRun(t, path, devNull, nil, false)}
		}, true, 1},
		{"descriptor of the terminal, in a session of its own", func(t *testing.T, path string) []*exec.Cmd {
			return []*exec.Cmd{startInRun(t, path, slave, nil, false), startInRun(t, path, devNull, nil, false)}
		}, true, 1},
		{"descriptor in flight to a detached process", func(t *testing.T, path string) []*exec.Cmd {
			// The sender still holds the terminal; the receiver, detached, has it queued on its
			// socket and would take it once the release is over.
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			send, recv := os.NewFile(uintptr(fds[0]), "send"), os.NewFile(uintptr(fds[1]), "recv")
			defer send.Close()
			defer recv.Close()
			sender := startInRun(t, path, slave, nil, false)
			receiver := startInRun(t, path, devNull, recv, false)
			if err := unix.Sendmsg(fds[0], []byte{0}, unix.UnixRights(int(slave.Fd())), nil, 0); err != nil {
				t.Fatal(err)
			}
			return []*exec.Cmd{sender, receiver}
		}, true, 1},
		{"detached", func(t *testing.T, path string) []*exec.Cmd {
			return []*exec.Cmd{startInRun(t, path, devNull, nil, false)}
		}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run, err := d.createRun(root)
			if err != nil {
				t.Fatal(err)
			}
			procs := tt.start(t, run.Path)
			rel, err := d.releaseRun(root, run.Name, []uint32{tty})
			if err != nil {
				t.Fatal(err)
			}
			if killed := rel.RunKilled != ""; killed != tt.wantKilled {
				t.Errorf("run killed = %v (%q), want %v", killed, rel.RunKilled, tt.wantKilled)
			}
			if len(rel.Killed) != tt.wantAttached {
				t.Errorf("killed for holding the terminal: %v, want %d of them", rel.Killed, tt.wantAttached)
			}
			for _, p := range procs {
				alive := p.Process.Signal(syscall.Signal(0)) == nil
				if gone, _ := procGone(p.Process.Pid); gone {
					alive = false
				}
				if alive == tt.wantKilled {
					t.Errorf("pid %d (stdin %s): alive = %v, want %v", p.Process.Pid, p.Stdin.(*os.File).Name(), alive, !tt.wantKilled)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(run.Path, "cgroup.freeze")); !tt.wantKilled && strings.TrimSpace(string(b)) != "0" {
				t.Errorf("the run is left frozen: cgroup.freeze %q", b)
			}
		})
	}
}

// procGone reports whether pid has exited (a zombie has: its parent, the test, has yet to wait).
func procGone(pid int) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true, nil
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && len(b) > i+2 && b[i+2] == 'Z', nil
}

// TestReleaseRefusals: only the run's owner (or root) may release it, for terminals the asking
// process has, an enforced process only a run it started (a nested `enforcer run`), and not in a
// loop.
func TestReleaseRefusals(t *testing.T) {
	d := limitsDaemon(t)
	d.releaseLimit.Every = time.Hour
	for _, uid := range []uint32{0, 65534} {
		if _, err := d.ids.LoginLocal(uid); err != nil {
			t.Fatal(err)
		}
	}
	slave, tty := callerTerminal(t)
	nobody := callerWith(t, 65534, "/user.slice", slave)
	other := callerWith(t, 1000, "/user.slice", slave)
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	noTerminal := callerWith(t, 65534, "/user.slice", devNull)
	run, err := d.createRun(nobody)
	if err != nil {
		t.Fatal(err)
	}
	// An agent in another run of nobody's session, and the run a nested `enforcer run` of it
	// started.
	agentsRun, err := d.createRun(nobody)
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := redirect.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	agent := callerWith(t, 65534, strings.TrimPrefix(agentsRun.Path, mnt), slave)
	if !d.confined(agent) {
		t.Fatalf("the agent in %s is not confined", agent.Cgroup)
	}
	nested, err := d.createRun(agent)
	if err != nil {
		t.Fatal(err)
	}
	otherAgent := callerWith(t, 65534, agent.Cgroup, slave)
	tests := []struct {
		name      string
		caller    control.Caller
		run       string
		terminals []uint32
		status    int
		want      string
	}{
		{"another user's run", other, run.Name, []uint32{tty}, http.StatusForbidden, "belongs to uid 65534"},
		{"no such run", nobody, "run-65534-000000000000", []uint32{tty}, http.StatusNotFound, "no run"},
		{"too many terminals", nobody, run.Name, []uint32{1, 2, 3, 4, 5}, http.StatusBadRequest, "at most 4"},
		{"terminal 0", nobody, run.Name, []uint32{0}, http.StatusBadRequest, "names no terminal"},
		{"a terminal not the caller's", noTerminal, run.Name, []uint32{tty}, http.StatusForbidden, "not one of pid"},
		{"an enforced process, a sibling run of its session", agent, run.Name, []uint32{tty}, http.StatusForbidden, "may release only the runs it started"},
		{"an enforced process, the run another of its run started", otherAgent, nested.Name, []uint32{tty}, http.StatusForbidden, "may release only the runs it started"},
	}
	spent := map[control.Caller]int{} // of each one's burst: a refused release counts too
	for _, tt := range tests {
		_, err := d.releaseRun(tt.caller, tt.run, tt.terminals)
		wantRefused(t, tt.name, err, tt.status, tt.want)
		spent[tt.caller]++
	}
	if _, err := d.releaseRun(agent, nested.Name, []uint32{tty}); err != nil {
		t.Errorf("an enforced process releasing the run it started (a nested `enforcer run`): %v", err)
	}
	for i := spent[noTerminal] + spent[nobody]; i < newReleaseLimit().Burst; i++ {
		if _, err := d.releaseRun(noTerminal, run.Name, nil); err != nil {
			t.Fatalf("release %d of a burst: %v", i+1, err)
		}
	}
	_, err = d.releaseRun(nobody, run.Name, nil)
	wantRefused(t, "one past the burst", err, http.StatusTooManyRequests, "too many terminal releases from uid 65534")
}

// TestFrozenRunsThawed: a run frozen by a release the daemon did not finish is thawed, when the
// daemon stops with the release under way and when it starts after it was killed during one.
func TestFrozenRunsThawed(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	tests := []struct {
		name string
		// leave freezes cg as a release under way would, and then does what the daemon does.
		leave func(d *Daemon, cg *redirect.Cgroup)
	}{
		{"the daemon starts after one was killed during a release", func(d *Daemon, cg *redirect.Cgroup) {
			d.thawRuns()
		}},
		{"the daemon stops during a release", func(d *Daemon, cg *redirect.Cgroup) {
			if !d.releases.begin() {
				t.Fatal("a release refused before the daemon stops")
			}
			d.releases.froze(cg)
			d.stopReleases(10 * time.Millisecond)
			if d.releases.begin() {
				t.Error("a release began after the daemon stopped")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := limitsDaemon(t)
			if _, err := d.ids.LoginLocal(0); err != nil {
				t.Fatal(err)
			}
			run, err := d.createRun(control.Caller{UID: 0, PID: int32(os.Getpid()), Cgroup: "/user.slice"})
			if err != nil {
				t.Fatal(err)
			}
			startInRun(t, run.Path, devNull, nil, false)
			cg := &redirect.Cgroup{Name: run.Name, Path: run.Path, ID: run.ID}
			if _, frozen, err := cg.Freeze(2 * time.Second); err != nil || !frozen {
				t.Fatalf("freeze: frozen %v, %v", frozen, err)
			}
			tt.leave(d, cg)
			if b, _ := os.ReadFile(filepath.Join(run.Path, "cgroup.freeze")); strings.TrimSpace(string(b)) != "0" {
				t.Errorf("the run is left frozen: cgroup.freeze %q", b)
			}
		})
	}
}
