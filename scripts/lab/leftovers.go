package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// leftoversPath records what the running demo created. The teardown removes everything and then
// this file; if the demo is killed before (SIGKILL, a crash), the next run finds the file and
// removes what the earlier one left.
const leftoversPath = "/run/enforcer-lab-demo.json"

type leftovers struct {
	Dir       string `json:"dir"`
	PGDir     string `json:"pg_dir,omitempty"`
	Netns     string `json:"netns,omitempty"`
	DaemonPID int    `json:"daemon_pid,omitempty"`
}

// note updates the record after f changed it.
func (l *Lab) note(f func(*leftovers)) {
	f(&l.left)
	if err := l.saveLeftovers(); err != nil {
		l.Fatalf("%v", err)
	}
}

func (l *Lab) saveLeftovers() error {
	b, _ := json.Marshal(l.left)
	if err := os.WriteFile(leftoversPath, b, 0o600); err != nil {
		return fmt.Errorf("record what the lab creates: %w", err)
	}
	return nil
}

// removeLeftovers cleans up after an earlier run that could not (called under the lab lock).
func (l *Lab) removeLeftovers() error {
	b, err := os.ReadFile(leftoversPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var left leftovers
	if err := json.Unmarshal(b, &left); err != nil || left.Dir == "" || !strings.HasPrefix(left.Dir, os.TempDir()) {
		return fmt.Errorf("%s is not a record of an earlier lab run; remove it by hand", leftoversPath)
	}
	l.printf("%s\n", l.bold("━━ An earlier lab run was killed before it could clean up; removing what it left "+strings.Repeat("━", 16)))
	step := func(what string, err error) {
		if err != nil {
			l.printf("  %s %s: %v\n", l.red("✗"), what, err)
		} else {
			l.printf("  %s %s\n", l.green("✓"), what)
		}
	}
	// Only the daemon that run started: its command line names the binary in its directory.
	if pid := left.DaemonPID; pid > 0 {
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil &&
			bytes.HasPrefix(cmdline, []byte(filepath.Join(left.Dir, "bin", "enforcer")+"\x00daemon")) {
			step(fmt.Sprintf("stop its daemon (pid %d)", pid), stopPID(pid))
		}
	}
	if cfg := filepath.Join(left.Dir, "enforcer.yaml"); fileExists(cfg) {
		step("enforcer uninstall --config "+cfg, l.uninstall(cfg))
	}
	if left.Netns != "" && fileExists(filepath.Join("/run/netns", left.Netns)) {
		// Deleting the namespace destroys the veth pair with it.
		out, err := exec.Command("ip", "netns", "del", left.Netns).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		}
		step("delete network namespace "+left.Netns, err)
	}
	for _, d := range []string{left.PGDir, left.Dir} {
		if d != "" && strings.HasPrefix(d, os.TempDir()) && fileExists(d) {
			step("remove "+d, os.RemoveAll(d))
		}
	}
	return os.Remove(leftoversPath)
}

func stopPID(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for range 100 {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// uninstall runs `enforcer uninstall` in its own process group, so that a second Ctrl-C during
// the teardown cannot stop it half-way.
func (l *Lab) uninstall(cfg string) error {
	cmd := exec.Command(l.bin, "uninstall", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}
