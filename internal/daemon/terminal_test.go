package daemon

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
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

// TestReleaseKillsOnlyWhatHoldsTheTerminal: POST /v1/runs/{name}/release kills the run's
// processes that have the caller's terminal as controlling terminal or hold a descriptor of it,
// and leaves the others running, the run thawed.
func TestReleaseKillsOnlyWhatHoldsTheTerminal(t *testing.T) {
	d := limitsDaemon(t)
	root := control.Caller{UID: 0, PID: int32(os.Getpid()), Cgroup: "/user.slice"}
	if _, err := d.ids.LoginLocal(0); err != nil {
		t.Fatal(err)
	}
	run, err := d.createRun(root)
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(run.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	slave, tty := callerTerminal(t)
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	tests := []struct {
		name       string
		stdin      *os.File
		ctty       bool
		wantKilled bool
	}{
		{"controlling terminal", slave, true, true},
		{"descriptor of the terminal, in a session of its own", slave, false, true},
		{"detached", devNull, false, false},
	}
	procs := map[string]*exec.Cmd{}
	for _, tt := range tests {
		cmd := exec.Command("sleep", "60")
		cmd.Stdin = tt.stdin
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Setsid: true, Setctty: tt.ctty}
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		procs[tt.name] = cmd
	}
	rel, err := d.releaseRun(root, run.Name, []uint32{tty})
	if err != nil {
		t.Fatal(err)
	}
	if rel.RunKilled != "" {
		t.Errorf("the whole run was killed: %s", rel.RunKilled)
	}
	for _, tt := range tests {
		pid := procs[tt.name].Process.Pid
		if killed := slices.Contains(rel.Killed, pid); killed != tt.wantKilled {
			t.Errorf("%s: killed = %v, want %v (killed %v)", tt.name, killed, tt.wantKilled, rel.Killed)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(run.Path, "cgroup.freeze")); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("the run is left frozen: cgroup.freeze %q", b)
	}
	detached := procs["detached"].Process
	if err := detached.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the detached process did not survive: %v", err)
	}
}

// TestReleaseRefusals: only the run's owner (or root) may release it, naming a few real
// terminals, and not in a loop.
func TestReleaseRefusals(t *testing.T) {
	d := limitsDaemon(t)
	d.releaseLimit.Every = time.Hour
	for _, uid := range []uint32{0, 65534} {
		if _, err := d.ids.LoginLocal(uid); err != nil {
			t.Fatal(err)
		}
	}
	nobody := control.Caller{UID: 65534, PID: 1, Cgroup: "/user.slice"}
	other := control.Caller{UID: 1000, PID: 1, Cgroup: "/user.slice"}
	run, err := d.createRun(nobody)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		caller    control.Caller
		run       string
		terminals []uint32
		status    int
		want      string
	}{
		{"another user's run", other, run.Name, []uint32{34816}, http.StatusForbidden, "belongs to uid 65534"},
		{"no such run", nobody, "run-65534-000000000000", []uint32{34816}, http.StatusNotFound, "no run"},
		{"too many terminals", nobody, run.Name, []uint32{1, 2, 3, 4, 5}, http.StatusBadRequest, "at most 4"},
		{"terminal 0", nobody, run.Name, []uint32{0}, http.StatusBadRequest, "names no terminal"},
	}
	spent := 0 // of nobody's burst: a refused release counts too
	for _, tt := range tests {
		_, err := d.releaseRun(tt.caller, tt.run, tt.terminals)
		wantRefused(t, tt.name, err, tt.status, tt.want)
		if tt.caller == nobody {
			spent++
		}
	}
	for i := spent; i < newReleaseLimit().Burst; i++ {
		if _, err := d.releaseRun(nobody, run.Name, nil); err != nil {
			t.Fatalf("release %d of a burst: %v", i+1, err)
		}
	}
	_, err = d.releaseRun(nobody, run.Name, nil)
	wantRefused(t, "one past the burst", err, http.StatusTooManyRequests, "too many terminal releases from uid 65534")
}
