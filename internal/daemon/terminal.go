package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/redirect"
	"golang.org/x/sys/unix"
)

// maxReleaseTerminals bounds the terminals one release names: a caller has a controlling
// terminal and three standard descriptors.
const maxReleaseTerminals = 4

const (
	// releaseFreezeTimeout is how long a release waits for every process of the run to stop;
	// only one in an uninterruptible sleep takes longer.
	releaseFreezeTimeout = 2 * time.Second
	// releaseScanTimeout bounds the look at the run's processes, well within the control API's
	// request timeout; a run with more descriptors than can be checked in that time is killed.
	releaseScanTimeout = 10 * time.Second
	// releaseExitTimeout is how long the killed processes have to be gone.
	releaseExitTimeout = 2 * time.Second
)

// newReleaseLimit bounds how often each user may release a run's terminal: one release ends
// each run, so it allows what newRunLimit does.
func newReleaseLimit() *control.RateLimit {
	return &control.RateLimit{What: "terminal releases", Every: 100 * time.Millisecond, Burst: 32}
}

// releaseRun kills the processes of run name still attached to one of terminals (the caller's,
// as its `enforcer run` finds them when the command has exited): left running, one could make
// itself the terminal's foreground, or just read it, and take what the developer types next at
// the shell's prompt. Daemons that detached keep running, enforced.
//
// The run is frozen first, so nothing in it forks, exits or changes its descriptors while it is
// looked at: a fork-and-exit chain cannot stay ahead of the kills, however long the look takes.
// When a release cannot be sure (the run did not stop, the look took too long, a killed
// process stayed), it kills the whole run and says so.
func (d *Daemon) releaseRun(c control.Caller, name string, terminals []uint32) (*control.Release, error) {
	if err := d.releaseLimit.Allow(c, d.confined(c)); err != nil {
		return nil, err
	}
	if len(terminals) > maxReleaseTerminals {
		return nil, control.Errorf(http.StatusBadRequest, "%d terminals named, at most %d: a caller has one controlling terminal and three standard descriptors", len(terminals), maxReleaseTerminals)
	}
	if slices.Contains(terminals, 0) {
		return nil, control.Errorf(http.StatusBadRequest, "terminal 0 names no terminal: name terminals by their device number as /proc/PID/stat's tty_nr gives it")
	}
	cg, err := d.findRun(c, name)
	if err != nil {
		return nil, err
	}
	rel := &control.Release{Killed: []int{}}
	if len(terminals) == 0 {
		return rel, nil
	}
	// Another release of the run (an enforced process may ask for its session's runs) must not
	// thaw it while this one looks.
	defer d.lockRun(cg.Name)()
	start := time.Now()
	already, frozen, err := cg.Freeze(releaseFreezeTimeout)
	if err != nil {
		d.log.Warn("cannot freeze the run to release the terminal", "cgroup", cg.Path, "err", err)
	} else if !already {
		defer func() {
			if err := cg.Thaw(); err != nil {
				d.log.Error("run left frozen after releasing the terminal", "cgroup", cg.Path, "err", err)
			}
		}()
	}
	if reason := d.killAttached(cg, terminals, frozen, rel); reason != "" {
		d.log.Warn("killing the run to release the terminal", "cgroup", cg.Path, "uid", c.UID, "reason", reason)
		if err := killRun(cg); err != nil {
			return nil, err
		}
		rel.RunKilled = reason
	}
	if len(rel.Killed) > 0 {
		d.log.Info("processes attached to the terminal killed", "cgroup", cg.Path, "uid", c.UID, "pids", rel.Killed, "took", time.Since(start))
	}
	return rel, nil
}

// killAttached kills the processes of cg attached to terminals, adding them to rel, and returns
// why the whole run must be killed, if it must.
func (d *Daemon) killAttached(cg *redirect.Cgroup, terminals []uint32, frozen bool, rel *control.Release) string {
	want := map[uint32]bool{}
	for _, t := range terminals {
		want[t] = true
	}
	killed, err := d.killAttachedOnce(cg, want, time.Now().Add(releaseScanTimeout))
	rel.Killed = append(rel.Killed, killed...)
	switch {
	case err != nil:
		return fmt.Sprintf("could not check every process of the run for the terminal: %v", err)
	case !frozen && len(killed) > 0:
		// Running, a process could have forked a new one after it was listed.
		return fmt.Sprintf("processes of the run were attached to the terminal and the run could not be stopped (frozen) within %v to make sure none forked away", releaseFreezeTimeout)
	}
	if left := waitGone(cg, killed, releaseExitTimeout); len(left) > 0 {
		return fmt.Sprintf("processes %v, killed for being attached to the terminal, had not exited after %v", left, releaseExitTimeout)
	}
	return ""
}

// killAttachedOnce looks at every process of cg once and kills those attached to one of the
// terminals in want.
func (d *Daemon) killAttachedOnce(cg *redirect.Cgroup, want map[uint32]bool, deadline time.Time) ([]int, error) {
	pids, err := cg.ProcsBelow()
	if err != nil {
		return nil, err
	}
	var killed []int
	for _, pid := range pids {
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("the run's processes take over %v to look at", releaseScanTimeout)
		}
		ok, err := d.killIfAttached(cg, pid, want, deadline)
		if err != nil {
			return killed, err
		}
		if ok {
			killed = append(killed, pid)
		}
	}
	return killed, nil
}

// killIfAttached kills process pid if it is in cg and attached to a terminal in want. Its pidfd
// keeps a new process that reused the pid from being mistaken for it: what /proc says is about
// the process the pidfd names as long as that is still alive after reading.
func (d *Daemon) killIfAttached(cg *redirect.Cgroup, pid int, want map[uint32]bool, deadline time.Time) (bool, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false, nil // exited
	}
	defer unix.Close(pidfd)
	cgroup, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	dir, in := d.subtree.Dir(control.UnifiedCgroup(string(cgroup)))
	in = in && (dir == cg.Path || strings.HasPrefix(dir, cg.Path+"/"))
	attached, err := attachedTo(pid, want, deadline)
	if unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil || !in {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !attached {
		return false, nil
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return false, fmt.Errorf("kill pid %d: %w", pid, err)
	}
	return true, nil
}

// attachedTo reports whether process pid has a terminal in want as its controlling terminal or
// holds a descriptor of one, in any of its threads' descriptor tables. What cannot be read of a
// process that is still alive counts as attached.
func attachedTo(pid int, want map[uint32]bool, deadline time.Time) (bool, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true, nil
	}
	// After the command's name: state, ppid, pgrp, session, tty_nr.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return true, nil
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 5 {
		return true, nil
	}
	if tty, err := strconv.ParseUint(f[4], 10, 32); err != nil || want[uint32(tty)] {
		return true, nil
	}
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true, nil
	}
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		// A thread may have a descriptor table of its own (unshare(CLONE_FILES)); most share
		// the process's, which is looked at once.
		if tid != pid && sameDescriptors(pid, tid) {
			continue
		}
		attached, err := descriptorsAttached(pid, tid, want, deadline)
		if attached || err != nil {
			return attached, err
		}
	}
	return false, nil
}

// kcmpFiles is KCMP_FILES of kcmp(2): whether two tasks share one descriptor table.
const kcmpFiles = 2

func sameDescriptors(pid, tid int) bool {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(tid), kcmpFiles, 0, 0, 0)
	return errno == 0 && r == 0
}

// descriptorsAttached reports whether thread tid of process pid has a descriptor of a terminal
// in want. A descriptor of /dev/tty or /dev/console is of the terminal behind it, which only
// the TIOCGDEV ioctl on the descriptor itself tells.
func descriptorsAttached(pid, tid int, want map[uint32]bool, deadline time.Time) (bool, error) {
	dir, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/fd", pid, tid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist), nil // a thread that exited holds nothing
	}
	defer dir.Close()
	fds, err := dir.Readdirnames(-1)
	if err != nil {
		return true, nil
	}
	for i, name := range fds {
		if i%1024 == 0 && time.Now().After(deadline) {
			return false, fmt.Errorf("the run's processes take over %v to look at", releaseScanTimeout)
		}
		// What the kernel has cached (AT_STATX_DONT_SYNC): a FUSE file served by a process of
		// the run, frozen, would otherwise never answer. A terminal's attributes are in memory.
		var st unix.Statx_t
		if err := unix.Statx(int(dir.Fd()), name, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // closed meanwhile
			}
			return true, nil
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR {
			continue
		}
		if want[terminalNumber(st.Rdev_major, st.Rdev_minor)] {
			return true, nil
		}
		if st.Rdev_major == 5 && st.Rdev_minor <= 1 {
			fd, _ := strconv.Atoi(name)
			if real, err := terminalBehind(tid, fd); err != nil || want[real] {
				return true, nil
			}
		}
	}
	return false, nil
}

// terminalBehind returns the number of the terminal that descriptor fd of thread tid (one of
// /dev/tty or /dev/console) reaches.
func terminalBehind(tid, fd int) (uint32, error) {
	pidfd, err := unix.PidfdOpen(tid, pidfdThread)
	if err != nil {
		return 0, err
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(dup)
	return unix.IoctlGetUint32(dup, unix.TIOCGDEV)
}

// pidfdThread is PIDFD_THREAD of pidfd_open(2) (Linux 6.9): a pidfd of the thread, not its
// process, so pidfd_getfd reaches the thread's descriptor table.
const pidfdThread = unix.O_EXCL

// terminalNumber encodes a terminal's device number as /proc/PID/stat's tty_nr and the TIOCGDEV
// ioctl do.
func terminalNumber(major, minor uint32) uint32 {
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

// waitGone waits up to timeout for pids to leave cg and returns those that have not.
func waitGone(cg *redirect.Cgroup, pids []int, timeout time.Duration) []int {
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		in, err := cg.ProcsBelow()
		if err != nil {
			return pids
		}
		var left []int
		for _, p := range pids {
			if slices.Contains(in, p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
	}
}

// killRun kills every process of cg and waits until they are gone.
func killRun(cg *redirect.Cgroup) error {
	if err := redirect.Kill(cg.Path); err != nil {
		return err
	}
	pids, err := cg.ProcsBelow()
	if err != nil {
		return err
	}
	if left := waitGone(cg, pids, releaseExitTimeout); len(left) > 0 {
		return fmt.Errorf("processes %v of %s outlived cgroup.kill (Linux 5.14+ has it): kill them, they may read the terminal", left, filepath.Base(cg.Path))
	}
	return nil
}

// lockRun serialises the releases of run name and returns the unlock.
func (d *Daemon) lockRun(name string) func() {
	d.runLocksMu.Lock()
	if d.runLocks == nil {
		d.runLocks = map[string]*runLock{}
	}
	l := d.runLocks[name]
	if l == nil {
		l = &runLock{}
		d.runLocks[name] = l
	}
	l.waiters++
	d.runLocksMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		d.runLocksMu.Lock()
		if l.waiters--; l.waiters == 0 {
			delete(d.runLocks, name)
		}
		d.runLocksMu.Unlock()
	}
}

// runLock is the lock of one run's releases, held or waited for by waiters.
type runLock struct {
	mu      sync.Mutex
	waiters int
}
