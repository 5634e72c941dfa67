package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/enforcer-dev/enforcer/internal/control"
	"golang.org/x/sys/unix"
)

// runStubArg is the hidden first argument of the launcher stub: a child that waits until the
// daemon has moved it into the enforced cgroup, checks that it is there, confines itself (see
// confineStub), then execs the command.
const runStubArg = "__run-stub"

// rootAckEnv silences the warning `enforcer run` prints when started as root (for automation
// that knows; the tests set it).
const rootAckEnv = "ENFORCER_RUN_AS_ROOT_OK"

// rootWarning is printed to stderr when `enforcer run` starts a command as root.
const rootWarning = "enforcer: warning: the command runs as root and is NOT contained against root-level escapes " +
	"(it can leave its cgroup, detach or replace the kernel programs); run `enforcer run` as an ordinary user"

func cmdRun(ctx context.Context, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fs.Usage()
		return exitCode(2)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 && os.Getenv(rootAckEnv) == "" {
		fmt.Fprintln(os.Stderr, rootWarning)
	}
	// This process stays outside the enforced cgroup, with the caller's uid: were it dumpable, the
	// command could ptrace it (or use process_vm_writev, /proc/PID/mem, pidfd_getfd), make it open
	// a socket no enforcer program governs and take that socket. Not dumpable, only a process
	// with CAP_SYS_PTRACE may do any of that, whatever LSMs the kernel runs.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("make the launcher non-dumpable: %w", err)
	}
	cl := client()
	var run control.Run
	if err := cl.Do(ctx, "POST", "/v1/runs", control.RunRequest{Command: argv}, &run); err != nil {
		return err
	}
	defer cl.Do(context.Background(), "DELETE", "/v1/runs/"+run.Name, nil, nil)
	defer trustAgentCA(&run)()

	cmd, err := startInCgroup(ctx, cl, &run, path, argv)
	if err != nil {
		return err
	}
	// The child shares our process group, so keyboard signals (Ctrl-C, Ctrl-\, window size)
	// reach it from the terminal directly; we only must not die of them. Everything else sent
	// to us (kill, systemd stop, hangup) is relayed.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT, syscall.SIGWINCH)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT, syscall.SIGALRM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	releaseTerminal(cl, &run)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitCode(128 + int(ws.Signal()))
		}
		return exitCode(ee.ExitCode())
	}
	return err
}

// releaseTerminal has the daemon make sure, once the command has exited, that no process of the
// run is left attached to the caller's terminals: left running, one could make itself the
// terminal's foreground and read what the developer types next at the shell's prompt. The daemon
// freezes the run (root-owned, out of this process's reach) so that nothing forks away while it
// looks, and kills the whole run if a process still holds a terminal (it may have passed it on,
// out of sight, to another) or it cannot be sure, which is said here. Runs whose processes all
// detached keep running, enforced. (A process of the same uid can still open the terminal's
// device by its path: agents belong under a user of their own.)
func releaseTerminal(cl *control.Client, run *control.Run) {
	terminals := callerTerminals()
	if len(terminals) == 0 {
		return
	}
	// The daemon gives up looking well within this and kills the run instead.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var rel control.Release
	err := cl.Do(ctx, "POST", "/v1/runs/"+run.Name+"/release", control.ReleaseRequest{Terminals: terminals}, &rel)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "enforcer: warning: processes of the run may still hold this terminal and read what you type (%v): "+
			"`enforcer status` lists the run's processes; kill those of run %s\n", err, run.Name)
	case rel.RunKilled != "":
		fmt.Fprintf(os.Stderr, "enforcer: killed every process of the run, those that had detached too: %s\n", rel.RunKilled)
	}
}

// callerTerminals returns this process's controlling terminal and the terminals its standard
// descriptors are on, each numbered as /proc/PID/stat's tty_nr and TIOCGDEV number them.
func callerTerminals() []uint32 {
	var terminals []uint32
	if stat, err := os.ReadFile("/proc/self/stat"); err == nil {
		// After the command's name: state, ppid, pgrp, session, tty_nr.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
			if f := strings.Fields(string(stat[i+1:])); len(f) > 4 {
				if tty, err := strconv.ParseUint(f[4], 10, 32); err == nil && tty != 0 {
					terminals = append(terminals, uint32(tty))
				}
			}
		}
	}
	for fd := range 3 {
		if tty, err := unix.IoctlGetUint32(fd, unix.TIOCGDEV); err == nil && tty != 0 && !slices.Contains(terminals, tty) {
			terminals = append(terminals, tty)
		}
	}
	return terminals
}

// startInCgroup starts the command so that its first instruction already runs enforced. Root
// clones it straight into the cgroup (CLONE_INTO_CGROUP). Other users may not write to the
// cgroup, so a stub child is started, moved in by the daemon, and only then execs the command.
func startInCgroup(ctx context.Context, cl *control.Client, run *control.Run, path string, argv []string) (*exec.Cmd, error) {
	if os.Geteuid() == 0 {
		cg, err := os.Open(run.Path)
		if err != nil {
			return nil, fmt.Errorf("open cgroup: %w", err)
		}
		defer cg.Close()
		cmd := exec.Command(path, argv[1:]...)
		cmd.Args[0] = argv[0]
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s in %s: %w", argv[0], run.Path, err)
		}
		return cmd, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	cmd := exec.Command(self, append([]string{runStubArg, run.Path, path}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{r}
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, err
	}
	r.Close()
	if err := cl.Do(ctx, "POST", "/v1/runs/"+run.Name+"/enter", control.EnterRequest{PID: cmd.Process.Pid}, nil); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("enter enforced cgroup: %w", err)
	}
	w.Write([]byte{1})
	return cmd, nil
}

// runStub is the launcher child: wait for the go-ahead on fd 3, verify the cgroup, confine
// itself, exec.
func runStub(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "enforcer: bad launcher arguments")
		return 127
	}
	cgPath, path, argv := args[0], args[1], args[2:]
	// no_new_privs, the Landlock domain and the seccomp filter are per thread until exec: keep
	// this goroutine on the thread that execs.
	runtime.LockOSThread()
	go3 := os.NewFile(3, "go")
	buf := make([]byte, 1)
	if n, _ := go3.Read(buf); n != 1 {
		fmt.Fprintln(os.Stderr, "enforcer: launcher was not enrolled; not starting the command")
		return 126
	}
	go3.Close()
	if !inCgroup(cgPath) {
		fmt.Fprintln(os.Stderr, "enforcer: launcher is not in its enforced cgroup; not starting the command")
		return 126
	}
	if err := confineStub(); err != nil {
		fmt.Fprintf(os.Stderr, "enforcer: %v; not starting the command\n", err)
		return 126
	}
	err := syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "enforcer: exec %s: %v\n", path, err)
	return 127
}

// inCgroup reports whether this process's cgroup v2 path is the directory cgPath.
func inCgroup(cgPath string) bool {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return false
	}
	rel := control.UnifiedCgroup(string(b))
	return rel != "" && rel != "/" && strings.HasSuffix(cgPath, rel)
}

// confineStub applies to this thread, and so to the command it execs and all its descendants,
// what the cgroup programs cannot see:
//
//   - no_new_privs: setuid binaries (sudo, su) and file capabilities (ping, dumpcap) give the
//     command no privileges it does not have.
//   - a Landlock domain (see landlockScope): no ptrace, memory access or descriptor taking
//     toward processes outside the run, nor (Landlock ABI 6+) connections to their abstract
//     unix sockets or signals to them.
//   - a seccomp filter (see stubFilter): socket(2) and socketpair(2) only for AF_UNIX, AF_INET,
//     AF_INET6 and AF_NETLINK (the cgroup programs see inet sockets only, and AF_VSOCK reaches
//     the hypervisor's host); no io_uring (seccomp cannot see its IORING_OP_SOCKET; programs
//     fall back to plain system calls); no TIOCSTI or TIOCLINUX, which would type a command
//     into the caller's terminal for its shell to run, outside the run, once the command ends.
//
// What the kernel lacks is said on stderr; the command still runs, enforced by the cgroup
// programs.
func confineStub() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if warning, err := landlockScope(); err != nil {
		return err
	} else if warning != "" {
		fmt.Fprintln(os.Stderr, "enforcer: warning: "+warning)
	}
	prog := stubFilter()
	if len(prog) == 0 {
		fmt.Fprintf(os.Stderr, "enforcer: warning: no seccomp filter for %s: the command may open sockets of any family and use io_uring\n", runtime.GOARCH)
		return nil
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	runtime.KeepAlive(prog)
	return nil
}

// landlockScope puts this thread in a Landlock domain. Any domain keeps its processes from
// ptrace, process_vm_*, /proc/PID/mem and pidfd_getfd toward processes outside it. From ABI 6
// the domain scopes abstract unix sockets and signals too, and handles no file access, so
// nothing else changes (mounts in the command's own namespaces keep working). ABI 2 to 5 need a
// file access to handle: LANDLOCK_ACCESS_FS_REFER, granted beneath / (a domain that does not
// handle it would forbid renaming files across directories); such a domain also forbids
// mount(2), so rootless containers and bubblewrap fail there. Without Landlock (or with ABI 1)
// the warning says what the command can reach.
func landlockScope() (warning string, err error) {
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 || abi < 2 {
		return "Landlock is not available: the command can ptrace other processes of your uid outside the run", nil
	}
	var attr unix.LandlockRulesetAttr
	if abi >= 6 {
		attr.Scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	} else {
		attr.Handled_access_fs = unix.LANDLOCK_ACCESS_FS_REFER
	}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno != 0 {
		return "", fmt.Errorf("landlock ruleset: %w", errno)
	}
	defer unix.Close(int(fd))
	if abi < 6 {
		root, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("landlock: open /: %w", err)
		}
		defer unix.Close(root)
		rule := unix.LandlockPathBeneathAttr{Allowed_access: unix.LANDLOCK_ACCESS_FS_REFER, Parent_fd: int32(root)}
		if _, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, fd, unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0); errno != 0 {
			return "", fmt.Errorf("landlock rule: %w", errno)
		}
		warning = fmt.Sprintf("Landlock ABI %d: the command can still connect to abstract unix sockets and signal processes of your uid outside the run, and cannot mount", abi)
	}
	if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, fd, 0, 0); errno != 0 {
		return "", fmt.Errorf("landlock restrict: %w", errno)
	}
	return warning, nil
}

// seccompArch is what the filter needs to know of an architecture: its audit number and system
// call numbers, natively and for the 32-bit ABI the kernel also runs.
type seccompArch struct {
	audit                                   uint32
	x32Bit                                  uint32 // system call numbers with this bit set are another ABI (x32)
	socket, socketpair, ioURingSetup, ioctl uint32
	compat                                  uint32 // audit number of the 32-bit ABI
	compatSocket, compatSocketpair          uint32
	compatSocketcall                        uint32 // 0: none
	compatIOURingSetup, compatIoctl         uint32
}

var seccompArches = map[string]seccompArch{
	"amd64": {audit: unix.AUDIT_ARCH_X86_64, x32Bit: 0x40000000, socket: 41, socketpair: 53, ioURingSetup: 425, ioctl: 16,
		compat: unix.AUDIT_ARCH_I386, compatSocket: 359, compatSocketpair: 360, compatSocketcall: 102, compatIOURingSetup: 425, compatIoctl: 54},
	"arm64": {audit: unix.AUDIT_ARCH_AARCH64, socket: 198, socketpair: 199, ioURingSetup: 425, ioctl: 29,
		compat: unix.AUDIT_ARCH_ARM, compatSocket: 281, compatSocketpair: 288, compatIOURingSetup: 425, compatIoctl: 54},
}

// stubFilter returns the seccomp program confineStub installs, or nil on an architecture it does
// not know. socketcall(2) of the 32-bit x86 ABI passes its arguments in memory, where seccomp
// cannot look: it is refused (32-bit programs that use it cannot open sockets). Family and
// ioctl request are compared on their low 32 bits, all the kernel reads of them.
func stubFilter() []unix.SockFilter {
	a, ok := seccompArches[runtime.GOARCH]
	if !ok {
		return nil
	}
	const (
		ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	type insn struct {
		code     uint16
		k        uint32
		jt, jf   string // labels; "" is the next instruction
		label    string // names this instruction
		onlyWhen bool   // false: left out
	}
	in := func(code uint16, k uint32, jt, jf string) insn {
		return insn{code: code, k: k, jt: jt, jf: jf, onlyWhen: true}
	}
	at := func(label string, i insn) insn { i.label = label; return i }
	when := func(cond bool, i insn) insn { i.onlyWhen = i.onlyWhen && cond; return i }
	// struct seccomp_data: nr at 0, arch at 4, args[0] at 16 and args[1] at 24 (their low words on
	// little-endian).
	prog := []insn{
		in(ldW, 4, "", ""),
		in(jeq, a.audit, "", "compat"),
		in(ldW, 0, "", ""),
		when(a.x32Bit != 0, in(jset, a.x32Bit, "enosys", "")),
		in(jeq, a.socket, "family", ""),
		in(jeq, a.socketpair, "family", ""),
		in(jeq, a.ioURingSetup, "enosys", ""),
		in(jeq, a.ioctl, "ioctl", ""),
		in(ret, unix.SECCOMP_RET_ALLOW, "", ""),
		at("compat", in(jeq, a.compat, "", "allow")),
		in(ldW, 0, "", ""),
		in(jeq, a.compatSocket, "family", ""),
		in(jeq, a.compatSocketpair, "family", ""),
		when(a.compatSocketcall != 0, in(jeq, a.compatSocketcall, "eperm", "")),
		in(jeq, a.compatIOURingSetup, "enosys", ""),
		in(jeq, a.compatIoctl, "ioctl", ""),
		in(ret, unix.SECCOMP_RET_ALLOW, "", ""),
		at("ioctl", in(ldW, 24, "", "")), // args[1], the request
		in(jeq, unix.TIOCSTI, "eperm", ""),
		in(jeq, unix.TIOCLINUX, "eperm", "allow"),
		at("family", in(ldW, 16, "", "")),
		in(jeq, unix.AF_UNIX, "allow", ""),
		in(jeq, unix.AF_INET, "allow", ""),
		in(jeq, unix.AF_INET6, "allow", ""),
		in(jeq, unix.AF_NETLINK, "allow", ""),
		at("eperm", in(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM), "", "")),
		at("allow", in(ret, unix.SECCOMP_RET_ALLOW, "", "")),
		at("enosys", in(ret, unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS), "", "")),
	}
	var kept []insn
	pos := map[string]int{}
	for _, i := range prog {
		if i.onlyWhen {
			if i.label != "" {
				pos[i.label] = len(kept)
			}
			kept = append(kept, i)
		}
	}
	out := make([]unix.SockFilter, len(kept))
	for n, i := range kept {
		jump := func(l string) uint8 {
			if l == "" {
				return 0
			}
			return uint8(pos[l] - n - 1)
		}
		out[n] = unix.SockFilter{Code: i.code, K: i.k, Jt: jump(i.jt), Jf: jump(i.jf)}
	}
	return out
}
