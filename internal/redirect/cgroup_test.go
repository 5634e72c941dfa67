package redirect

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestSubtreeHolds: the daemon confines callers by the cgroup path their /proc/PID/cgroup gives.
// Must hold: the subtree and everything under it are held, a sibling with the subtree's name as
// a prefix is not, and an unknown path is held (fail closed).
func TestSubtreeHolds(t *testing.T) {
	name := fmt.Sprintf("enforcer-holdtest-%d.slice", os.Getpid())
	sub, err := OpenSubtree(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.RemoveAll() })
	tests := []struct {
		cgroup string
		held   bool
	}{
		{"/" + name, true},
		{"/" + name + "/run-1000-ab12", true},
		{"/" + name + "/run-1000-ab12/../../user.slice", false},
		{"/" + name + "x/run-1000-ab12", false},
		{"/user.slice/user-1000.slice", false},
		{"/", false},
		{"", true},
	}
	for _, tt := range tests {
		if got := sub.Holds(tt.cgroup); got != tt.held {
			t.Errorf("Holds(%q) = %v, want %v", tt.cgroup, got, tt.held)
		}
	}
	if dir, ok := sub.Dir("/" + name + "/run-1"); !ok || dir != sub.Path+"/run-1" {
		t.Errorf("Dir = %q, %v", dir, ok)
	}
	if _, ok := sub.Dir(""); ok {
		t.Error("Dir of an unknown cgroup")
	}
}

// TestFreezeAndThaw: Freeze stops what runs in a cgroup, a process there still dies of SIGKILL,
// and Thaw lets the others go on; a cgroup someone else froze is reported so.
func TestFreezeAndThaw(t *testing.T) {
	sub, err := OpenSubtree(fmt.Sprintf("enforcer-freezetest-%d.slice", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.RemoveAll() })
	cg, err := sub.NewChild("run-0-freeze")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(cg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	var cmds []*exec.Cmd
	for range 2 {
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		cmds = append(cmds, cmd)
	}
	already, frozen, err := cg.Freeze(2 * time.Second)
	if err != nil || already || !frozen {
		t.Fatalf("Freeze = already %v, frozen %v, %v; want a cgroup frozen now", already, frozen, err)
	}
	if already, frozen, err := cg.Freeze(time.Second); err != nil || !already || !frozen {
		t.Errorf("Freeze again = already %v, frozen %v, %v; want one frozen already", already, frozen, err)
	}
	cmds[0].Process.Kill()
	done := make(chan error, 1)
	go func() { done <- cmds[0].Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("a frozen process did not die of SIGKILL")
	}
	if pids, err := cg.ProcsBelow(); err != nil || len(pids) != 1 || pids[0] != cmds[1].Process.Pid {
		t.Errorf("ProcsBelow = %v, %v; want [%d]", pids, err, cmds[1].Process.Pid)
	}
	if err := cg.Thaw(); err != nil {
		t.Fatal(err)
	}
	if frozen, err := cg.frozen(); err != nil || frozen {
		t.Errorf("after Thaw: frozen %v, %v", frozen, err)
	}
}
