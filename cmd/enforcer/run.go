package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/enforcer-dev/enforcer/internal/control"
)

// runStubArg is the hidden first argument of the launcher stub: a child that waits until the
// daemon has moved it into the enforced cgroup, checks that it is there, then execs the command.
const runStubArg = "__run-stub"

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
	cl := client()
	var run control.Run
	if err := cl.Do(ctx, "POST", "/v1/runs", control.RunRequest{Command: argv}, &run); err != nil {
		return err
	}
	defer cl.Do(context.Background(), "DELETE", "/v1/runs/"+run.Name, nil, nil)

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
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitCode(128 + int(ws.Signal()))
		}
		return exitCode(ee.ExitCode())
	}
	return err
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

// runStub is the launcher child: wait for the go-ahead on fd 3, verify the cgroup, exec.
func runStub(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "enforcer: bad launcher arguments")
		return 127
	}
	cgPath, path, argv := args[0], args[1], args[2:]
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
	err := syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "enforcer: exec %s: %v\n", path, err)
	return 127
}

// inCgroup reports whether this process's cgroup v2 path is the directory cgPath.
func inCgroup(cgPath string) bool {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rel, ok := strings.CutPrefix(s.Text(), "0::"); ok {
			return strings.HasSuffix(cgPath, rel) && rel != "/"
		}
	}
	return false
}
