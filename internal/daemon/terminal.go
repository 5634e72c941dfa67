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

// releaseRun makes sure no process of run name is left attached to the terminals of the process
// that asks (its controlling terminal and its standard descriptors', as its `enforcer run` has
// them when the command has exited): left running, one could make itself the terminal's
// foreground, or just read it, and take what the developer types next at the shell's prompt.
// named, what the request body says, must be among those terminals. Daemons that detached keep
// running, enforced.
//
// The run is frozen first, so nothing in it forks, exits or changes its descriptors while it is
// looked at. When a process still holds one of the terminals, the whole run is killed: it may
// have passed a descriptor of the terminal (SCM_RIGHTS) to another process of the run, which no
// look can see until that one receives it. So is it when a release cannot be sure (the run did
// not stop, the look took too long).
func (d *Daemon) releaseRun(c control.Caller, name string, named []uint32) (*control.Release, error) {
	if err := d.releaseLimit.Allow(c, d.confined(c)); err != nil {
		return nil, err
	}
	if len(named) > maxReleaseTerminals {
		return nil, control.Errorf(http.StatusBadRequest, "%d terminals named, at most %d: a caller has one controlling terminal and three standard descriptors", len(named), maxReleaseTerminals)
	}
	if slices.Contains(named, 0) {
		return nil, control.Errorf(http.StatusBadRequest, "terminal 0 names no terminal: name terminals by their device number as /proc/PID/stat's tty_nr gives it")
	}
	cg, err := d.findRun(c, name)
	if err != nil {
		return nil, err
	}
	if d.confined(c) {
		if err := mayReleaseConfined(c, cg); err != nil {
			return nil, err
		}
	}
	// The terminals are the caller's own, not what it names: an enforced process must not have
	// a run's processes killed for holding a terminal it has no part in.
	terminals, err := callerTerminals(c)
	if err != nil {
		return nil, control.Errorf(http.StatusForbidden, "cannot read the terminals of pid %d, which asks: %v", c.PID, err)
	}
	for _, t := range named {
		if !slices.Contains(terminals, t) {
			return nil, control.Errorf(http.StatusForbidden, "terminal %d is not one of pid %d's (its controlling terminal and standard descriptors are on %v): a release is for the asker's own terminals", t, c.PID, terminals)
		}
	}
	rel := &control.Release{Killed: []int{}}
	if len(terminals) == 0 {
		return rel, nil
	}
	if !d.releases.begin() {
		return nil, control.Errorf(http.StatusServiceUnavailable, "the daemon is stopping: processes of run %s may still hold the terminal; kill them", name)
	}
	defer d.releases.end()
	// Another release of the run (an enforced process may ask for the runs it started) must not
	// thaw it while this one looks.
	defer d.lockRun(cg.Name)()
	start := time.Now()
	already, frozen, err := cg.Freeze(releaseFreezeTimeout)
	if err != nil {
		d.log.Warn("cannot freeze the run to release the terminal", "cgroup", cg.Path, "err", err)
	} else if !already {
		d.releases.froze(cg)
		defer func() {
			if err := cg.Thaw(); err != nil {
				d.log.Error("run left frozen after releasing the terminal", "cgroup", cg.Path, "err", err)
			}
			d.releases.thawed(cg)
		}()
	}
	attached, err := d.attachedProcs(cg, terminals, time.Now().Add(releaseScanTimeout))
	var reason string
	switch {
	case err != nil:
		reason = fmt.Sprintf("could not check every process of the run for the terminal: %v", err)
	case len(attached) > 0:
		reason = fmt.Sprintf("processes %v of the run still held your terminal after the command exited, and may have passed a descriptor of it to another of its processes", attached)
	case !frozen:
		// Nothing held a terminal when looked at, but the run kept running meanwhile: a
		// descriptor may have moved from a process not looked at yet to one already looked at.
		reason = fmt.Sprintf("the run could not be stopped (frozen) within %v to look at it", releaseFreezeTimeout)
	}
	if reason != "" {
		d.log.Warn("killing the run to release the terminal", "cgroup", cg.Path, "uid", c.UID, "attached", attached, "reason", reason)
		if err := killRun(cg); err != nil {
			return nil, err
		}
		rel.Killed = append(rel.Killed, attached...)
		rel.RunKilled = reason
		d.log.Info("run killed to release the terminal", "cgroup", cg.Path, "uid", c.UID, "took", time.Since(start))
	}
	return rel, nil
}

// mayReleaseConfined refuses a release that an enforced process asks for a run it did not
// start: an agent must not freeze a sibling run of its session, and kill it, with its terminal.
// A nested `enforcer run` releases the run it started.
func mayReleaseConfined(c control.Caller, cg *redirect.Cgroup) error {
	starter, err := cg.Starter()
	if err != nil {
		return err
	}
	self, err := processStart(c)
	if err != nil {
		return control.Errorf(http.StatusForbidden, "cannot tell whether pid %d started run %s: %v", c.PID, cg.Name, err)
	}
	if starter == "" || starter != self {
		return control.Errorf(http.StatusForbidden, "run %s was not started by pid %d: an enforced process may release only the runs it started", cg.Name, c.PID)
	}
	return nil
}

// recordStarter records on a run that an enforced process started it, for mayReleaseConfined.
func (d *Daemon) recordStarter(c control.Caller, cg *redirect.Cgroup) error {
	if !d.confined(c) {
		return nil
	}
	self, err := processStart(c)
	if err != nil {
		return control.Errorf(http.StatusForbidden, "cannot name pid %d, which asks, to record it as the run's starter: %v", c.PID, err)
	}
	return cg.SetStarter(self)
}

// processStart names the caller's process for as long as the machine runs: its pid and its
// start time (clock ticks after boot, /proc/PID/stat's starttime), which a process reusing the
// pid does not share.
func processStart(c control.Caller) (string, error) {
	var id string
	err := readingCaller(c, func(pidfd int) error {
		f, err := procStat(int(c.PID))
		if err != nil {
			return err
		}
		if len(f) < 20 {
			return fmt.Errorf("/proc/%d/stat has %d fields", c.PID, len(f))
		}
		id = fmt.Sprintf("%d:%s", c.PID, f[19])
		return nil
	})
	return id, err
}

// callerTerminals returns the caller's controlling terminal and the terminals its standard
// descriptors are on, numbered as /proc/PID/stat's tty_nr and TIOCGDEV number them: what
// `enforcer run` finds for itself.
func callerTerminals(c control.Caller) ([]uint32, error) {
	var terminals []uint32
	err := readingCaller(c, func(pidfd int) error {
		f, err := procStat(int(c.PID))
		if err != nil {
			return err
		}
		tty, err := strconv.ParseUint(f[4], 10, 32)
		if err != nil {
			return fmt.Errorf("/proc/%d/stat: tty_nr %q", c.PID, f[4])
		}
		if tty != 0 {
			terminals = append(terminals, uint32(tty))
		}
		for fd := range 3 {
			tty, err := descriptorTerminal(pidfd, fd)
			if err != nil {
				return err
			}
			if tty != 0 && !slices.Contains(terminals, tty) {
				terminals = append(terminals, tty)
			}
		}
		return nil
	})
	return terminals, err
}

// descriptorTerminal returns the terminal descriptor fd of the process of pidfd is on, 0 when it
// is on none or is not open.
func descriptorTerminal(pidfd, fd int) (uint32, error) {
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if errors.Is(err, unix.EBADF) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("descriptor %d: %w", fd, err)
	}
	defer unix.Close(dup)
	// What the kernel has cached: a FUSE file's server could otherwise keep the release waiting.
	var st unix.Statx_t
	if err := unix.Statx(dup, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &st); err != nil {
		return 0, fmt.Errorf("descriptor %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return 0, nil
	}
	tty, err := unix.IoctlGetUint32(dup, unix.TIOCGDEV)
	if err != nil {
		return 0, nil // a character device other than a terminal
	}
	return tty, nil
}

// readingCaller runs read, which reads /proc of the caller's process, with a pidfd of it, and
// fails when that process is gone after the read (what was read may be of a process that reused
// its pid). The pidfd is the one the kernel took at connect time; before Linux 6.5 there is
// none, and one opened now stands in, as control's peerCgroup explains.
func readingCaller(c control.Caller, read func(pidfd int) error) error {
	var pidfd int
	if c.Pidfd != nil {
		pidfd = int(c.Pidfd.Fd())
	} else {
		fd, err := unix.PidfdOpen(int(c.PID), 0)
		if err != nil {
			return fmt.Errorf("pid %d: %w", c.PID, err)
		}
		defer unix.Close(fd)
		pidfd = fd
	}
	if err := read(pidfd); err != nil {
		return err
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return fmt.Errorf("pid %d has exited", c.PID)
	}
	return nil
}

// procStat returns the fields of /proc/PID/stat after the command's name: state, ppid, pgrp,
// session, tty_nr, and so on.
func procStat(pid int) ([]string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat has no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 5 {
		return nil, fmt.Errorf("/proc/%d/stat has %d fields", pid, len(f))
	}
	return f, nil
}

// attachedProcs looks at every process of cg once and returns those attached to one of
// terminals.
func (d *Daemon) attachedProcs(cg *redirect.Cgroup, terminals []uint32, deadline time.Time) ([]int, error) {
	want := map[uint32]bool{}
	for _, t := range terminals {
		want[t] = true
	}
	pids, err := cg.ProcsBelow()
	if err != nil {
		return nil, err
	}
	var attached []int
	for _, pid := range pids {
		if time.Now().After(deadline) {
			return attached, fmt.Errorf("the run's processes take over %v to look at", releaseScanTimeout)
		}
		ok, err := d.isAttached(cg, pid, want, deadline)
		if err != nil {
			return attached, err
		}
		if ok {
			attached = append(attached, pid)
		}
	}
	return attached, nil
}

// isAttached reports whether process pid is in cg and attached to a terminal in want. Its pidfd
// keeps a new process that reused the pid from being mistaken for it: what /proc says is about
// the process the pidfd names as long as that is still alive after reading.
func (d *Daemon) isAttached(cg *redirect.Cgroup, pid int, want map[uint32]bool, deadline time.Time) (bool, error) {
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
	return attached, err
}

// attachedTo reports whether process pid has a terminal in want as its controlling terminal or
// holds a descriptor of one, in any of its threads' descriptor tables. What cannot be read of a
// process that is still alive counts as attached.
func attachedTo(pid int, want map[uint32]bool, deadline time.Time) (bool, error) {
	f, err := procStat(pid)
	if err != nil {
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

// releaseShutdownWait bounds how long a stopping daemon waits for the releases under way: the
// longest a release takes (it freezes, looks, then may kill the run and wait for it).
const releaseShutdownWait = releaseFreezeTimeout + releaseScanTimeout + 2*releaseExitTimeout

// releaseTracker knows the runs that releases under way have frozen, so that a daemon that stops
// leaves none frozen.
type releaseTracker struct {
	mu       sync.Mutex
	stopping bool
	frozen   map[*redirect.Cgroup]bool
	underWay sync.WaitGroup
}

// begin counts a release in, unless the daemon is stopping.
func (r *releaseTracker) begin() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return false
	}
	r.underWay.Add(1)
	return true
}

func (r *releaseTracker) end() { r.underWay.Done() }

func (r *releaseTracker) froze(cg *redirect.Cgroup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen == nil {
		r.frozen = map[*redirect.Cgroup]bool{}
	}
	r.frozen[cg] = true
}

func (r *releaseTracker) thawed(cg *redirect.Cgroup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.frozen, cg)
}

// stopReleases refuses new releases, waits up to timeout for those under way and thaws what
// those still under way froze: the process exits next, and a run frozen by a release that never
// ends would stay so.
func (d *Daemon) stopReleases(timeout time.Duration) {
	d.releases.mu.Lock()
	d.releases.stopping = true
	d.releases.mu.Unlock()
	done := make(chan struct{})
	go func() { d.releases.underWay.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(timeout):
	}
	d.releases.mu.Lock()
	defer d.releases.mu.Unlock()
	for cg := range d.releases.frozen {
		if err := cg.Thaw(); err != nil {
			d.log.Error("run left frozen by a release the stopping daemon did not finish", "cgroup", cg.Path, "err", err)
			continue
		}
		d.log.Warn("run thawed: the daemon stopped before its release finished; processes of the run may still hold the terminal", "cgroup", cg.Path)
	}
}

// thawRuns thaws every run a release left frozen: a daemon killed, or crashed, while it released
// a run's terminal. The daemon is the only freezer of runs, and a release finds a run frozen
// already only if another freezer froze it, which it then leaves so.
func (d *Daemon) thawRuns() {
	runs, err := d.subtree.Children()
	if err != nil {
		d.log.Error("cannot list the runs to thaw those a release left frozen", "err", err)
		return
	}
	for _, cg := range runs {
		was, err := cg.ThawIfFrozen()
		switch {
		case err != nil:
			d.log.Error("cannot thaw a run a release may have left frozen", "cgroup", cg.Path, "err", err)
		case was:
			d.log.Warn("run thawed: a release of its terminal had left it frozen when the daemon stopped", "cgroup", cg.Path)
		}
	}
}
