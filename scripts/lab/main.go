// Command lab is the enforcer lab demo, the README's first command (`make lab`, through
// scripts/lab.sh, as root). It builds a stand-in for production on this machine (a network namespace
// on 198.18.0.0/15 running PostgreSQL and HTTP services, and a development OIDC provider), starts the
// real daemon with an example policy, and plays a narrated terminal session: every command a user
// would type runs the real bin/enforcer binary and is printed with its output. Each step checks that
// what happened is what should happen, so the demo doubles as a smoke test: it exits non-zero (and
// prints the daemon log) when a step misbehaves. Everything it created is removed on exit, also after
// a failure or Ctrl-C.
//
// The steps are the list in steps.go; adding one is a function of *Lab and a line in that list.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
	"github.com/enforcer-dev/enforcer/internal/lab"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// step is one section of the demo. run reports a misbehaviour with l.Expect or l.Fatalf.
type step struct {
	title string
	run   func(l *Lab)
}

// Lab is the state the steps share: what exists, where, and how to talk to it.
type Lab struct {
	ctx   context.Context
	color bool

	bin     string // the enforcer binary, copied into dir so every user may execute it
	dir     string // the lab's working directory (0755: the reviewer's CLI reaches the socket)
	socket  string
	cfgPath string

	ns   *lab.Netns
	prod string // the "production" address, ns.PeerAddr
	pg   *pgtest.Server
	idp  *devidp.Server
	// agentDSN is what the agent gives psql: no password, any user name.
	agentDSN string

	daemon     *exec.Cmd
	daemonDone chan struct{}
	daemonLog  string // the log's text once the daemon stopped

	cleanups []cleanup
	timings  []timing
	left     leftovers
	// teardownFailed is set when a cleanup fails.
	teardownFailed bool
}

type cleanup struct {
	what string
	f    func() error
}

type timing struct {
	title string
	d     time.Duration
}

// failure is what Fatalf panics with; runStep turns it back into an error.
type failure struct{ msg string }

// reviewerUID is the second person's Unix account (nobody): approvals need someone else.
const reviewerUID = 65534

// agentUID is alice's Unix account, which her agent runs as: an ordinary user, since root cannot
// be contained. No account needs to exist for it.
const agentUID = 4242

func main() { os.Exit(run()) }

func run() int {
	bin := flag.String("bin", "bin/enforcer", "the enforcer binary to demonstrate")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "lab: run as root (scripts/lab.sh does): it creates namespaces, cgroups and BPF programs")
		return 1
	}
	// The first SIGINT/SIGTERM cancels the context: running commands are killed and the teardown
	// runs. Later signals are caught too, so a second Ctrl-C cannot cut the teardown short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A hung step must not hang CI forever.
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()

	fi, _ := os.Stdout.Stat()
	l := &Lab{ctx: ctx, color: fi != nil && fi.Mode()&os.ModeCharDevice != 0}
	start := time.Now()
	err := l.prepare(*bin)
	if err == nil {
		for i, s := range steps {
			if err = l.runStep(i+1, s); err != nil {
				break
			}
		}
	}
	interrupted := errors.Is(ctx.Err(), context.Canceled)
	if err != nil {
		if interrupted {
			l.printf("\n%s\n", l.red("interrupted: tearing down (this takes a few seconds)"))
		} else {
			l.printf("\n%s %v\n", l.red("FAILED:"), err)
		}
	}
	terr := l.teardown()
	if err != nil && !interrupted {
		l.printDaemonLog()
	}
	l.printTimings(time.Since(start))
	switch {
	case interrupted:
		return 130
	case err != nil:
		l.printf("%s\n", l.red("lab demo FAILED"))
		return 1
	case terr != nil:
		l.printf("%s %v\n", l.red("lab demo FAILED to clean up:"), terr)
		return 1
	}
	l.printf("%s\n", l.green(fmt.Sprintf("lab demo passed: %d steps behaved as expected", len(steps))))
	return 0
}

// prepare makes the lab's directory, copies the binary into it, and takes the host-wide lab lock
// (two demos would fight over the proxy port, the pin directory and the metrics address).
func (l *Lab) prepare(bin string) error {
	lock, err := os.OpenFile("/run/enforcer-lab-demo.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lab lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return errors.New("another lab demo is running on this machine (it holds /run/enforcer-lab-demo.lock)")
	}
	l.Defer("", lock.Close) // releases the lock, last of all
	l.Defer("", func() error {
		// Everything is gone, unless a cleanup failed: then the next run retries from the record.
		if !l.teardownFailed {
			os.Remove(leftoversPath)
		}
		return nil
	})
	l.dir, err = os.MkdirTemp("", "enforcer-lab-")
	if err != nil {
		return err
	}
	l.Defer("remove "+l.dir, func() error { return os.RemoveAll(l.dir) })
	if err := os.Chmod(l.dir, 0o755); err != nil {
		return err
	}
	// Library logs (the IdP's request errors) go to a file, not into the narration.
	logf, err := os.OpenFile(filepath.Join(l.dir, "lab.log"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	l.Defer("", logf.Close)
	slog.SetDefault(slog.New(slog.NewTextHandler(logf, nil)))

	// The repository may live in a directory only root can enter; the reviewer runs the CLI as
	// another user, so every command uses a copy in the lab directory.
	src, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("the enforcer binary (build it with `make build`): %w", err)
	}
	l.bin = filepath.Join(l.dir, "bin", "enforcer")
	if err := os.MkdirAll(filepath.Dir(l.bin), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(l.bin, src, 0o755); err != nil {
		return err
	}
	l.socket = filepath.Join(l.dir, "enforcer.sock")
	if err := l.removeLeftovers(); err != nil {
		return fmt.Errorf("remove what an earlier run left: %w", err)
	}
	l.left.Dir = l.dir
	return l.saveLeftovers()
}

func (l *Lab) runStep(n int, s step) (err error) {
	title := fmt.Sprintf("%d/%d  %s", n, len(steps), s.title)
	l.printf("\n%s\n", l.bold("━━ "+title+" "+strings.Repeat("━", max(3, 96-len(title)))))
	start := time.Now()
	defer func() {
		l.timings = append(l.timings, timing{s.title, time.Since(start)})
		r := recover()
		if r == nil {
			return
		}
		f, ok := r.(failure)
		if !ok {
			panic(r)
		}
		err = fmt.Errorf("step %d (%s): %s", n, s.title, f.msg)
	}()
	s.run(l)
	return nil
}

// teardown runs the cleanups in reverse order of registration and reports each.
func (l *Lab) teardown() error {
	l.printf("\n%s\n", l.bold("━━ Tear down "+strings.Repeat("━", 84)))
	var errs []error
	for i := len(l.cleanups) - 1; i >= 0; i-- {
		c := l.cleanups[i]
		err := c.f()
		if c.what == "" {
			continue
		}
		if err != nil {
			l.printf("  %s %s: %v\n", l.red("✗"), c.what, err)
			errs = append(errs, fmt.Errorf("%s: %w", c.what, err))
			l.teardownFailed = true
		} else {
			l.printf("  %s %s\n", l.green("✓"), c.what)
		}
	}
	l.cleanups = nil
	return errors.Join(errs...)
}

func (l *Lab) printDaemonLog() {
	if l.daemonLog == "" {
		return
	}
	l.printf("\n%s\n", l.bold("━━ daemon log "+strings.Repeat("━", 83)))
	for _, line := range strings.Split(strings.TrimRight(l.daemonLog, "\n"), "\n") {
		l.printf("    %s\n", line)
	}
}

func (l *Lab) printTimings(total time.Duration) {
	l.printf("\n%s", l.dim("timings:"))
	for i, t := range l.timings {
		l.printf("%s", l.dim(fmt.Sprintf(" %d: %.1fs ·", i+1, t.d.Seconds())))
	}
	l.printf("%s\n", l.dim(fmt.Sprintf(" total %.1fs", total.Seconds())))
}

// Defer registers a cleanup; teardown runs them last-registered first. An empty what runs silently.
func (l *Lab) Defer(what string, f func() error) {
	l.cleanups = append(l.cleanups, cleanup{what, f})
}

// Fatalf ends the current step as failed.
func (l *Lab) Fatalf(format string, args ...any) {
	panic(failure{fmt.Sprintf(format, args...)})
}

// Must ends the step if err is not nil; what says what was being done.
func (l *Lab) Must(err error, what string) {
	if err != nil {
		l.Fatalf("%s: %v", what, err)
	}
}

// Expect prints a check mark and what was expected, or ends the step if it did not happen.
func (l *Lab) Expect(ok bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !ok {
		l.interrupted()
		l.printf("  %s %s\n", l.red("✗ expected:"), msg)
		l.Fatalf("expected: %s", msg)
	}
	l.printf("  %s %s\n", l.green("✓"), msg)
}

// interrupted ends the step if the demo was interrupted, so a killed command is not reported as
// a misbehaviour.
func (l *Lab) interrupted() {
	if l.ctx.Err() != nil {
		l.Fatalf("%v", l.ctx.Err())
	}
}

// Say prints narration.
func (l *Lab) Say(format string, args ...any) {
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		l.printf("  %s\n", line)
	}
}

func (l *Lab) printf(format string, args ...any) { fmt.Fprintf(os.Stdout, format, args...) }

func (l *Lab) style(code, s string) string {
	if !l.color {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}
func (l *Lab) bold(s string) string  { return l.style("1", s) }
func (l *Lab) dim(s string) string   { return l.style("2", s) }
func (l *Lab) red(s string) string   { return l.style("1;31", s) }
func (l *Lab) green(s string) string { return l.style("32", s) }
func (l *Lab) cyan(s string) string  { return l.style("1;36", s) }

// Cmd is a command the narrated session runs.
type Cmd struct {
	Args []string // Args[0] is a program on PATH or the enforcer binary (l.bin)
	// Show is the command line printed after the prompt; default: Args, shell-quoted, with the
	// binary's path shown as "enforcer".
	Show string
	// Prompt defaults to "$" (root, the person at the keyboard); the reviewer's commands use their own.
	Prompt string
	Env    []string // added to the environment
	// UID runs the command as that user and group (non-zero only).
	UID uint32
	// OnLine sees each line of output as it is printed; what it returns, if anything, is printed
	// after the line as narration.
	OnLine func(line string) string
	// Timeout bounds the command (default 30s).
	Timeout time.Duration
}

// Result is what a command printed and how it exited.
type Result struct {
	Out  string // stdout and stderr, interleaved as on a terminal
	Code int    // exit status; -1 if it did not start or was killed
}

// Has reports whether the output contains every one of subs.
func (r Result) Has(subs ...string) bool {
	for _, s := range subs {
		if !strings.Contains(r.Out, s) {
			return false
		}
	}
	return true
}

func (l *Lab) prepareCmd(c Cmd) (*exec.Cmd, context.CancelFunc) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	cmd := exec.CommandContext(ctx, c.Args[0], c.Args[1:]...)
	cmd.Dir = l.dir
	env := []string{"ENFORCER_SOCKET=" + l.socket, "PATH=" + filepath.Dir(l.bin) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if c.UID != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.UID, Gid: c.UID}}
		env = append(env, "HOME=/nonexistent")
	} else {
		env = append(env, "HOME="+os.Getenv("HOME"))
		if t := os.Getenv("TERM"); t != "" {
			env = append(env, "TERM="+t)
		}
	}
	cmd.Env = append(env, c.Env...)
	cmd.WaitDelay = 2 * time.Second // a child that keeps the output pipe open must not hang us
	return cmd, cancel
}

func (l *Lab) showCmd(c Cmd, suffix string) {
	show := c.Show
	if show == "" {
		show = l.shellLine(c.Args)
	}
	prompt := c.Prompt
	if prompt == "" {
		prompt = "$"
	}
	l.printf("  %s %s%s\n", l.cyan(prompt), l.bold(show), suffix)
}

// shellLine quotes args as a user would type them.
func (l *Lab) shellLine(args []string) string {
	var parts []string
	for i, a := range args {
		if i == 0 && a == l.bin {
			a = "enforcer"
		}
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@%+") == "" {
		return s
	}
	if !strings.ContainsAny(s, "\"$`\\!") {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Run prints the command, runs it, and prints its output, indented, as it arrives.
func (l *Lab) Run(c Cmd) Result {
	l.showCmd(c, "")
	cmd, cancel := l.prepareCmd(c)
	defer cancel()
	w := &lineWriter{l: l, live: true, onLine: c.OnLine}
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	w.flush()
	return l.result(cmd, err, w)
}

func (l *Lab) result(cmd *exec.Cmd, err error, w *lineWriter) Result {
	r := Result{Out: w.text(), Code: -1}
	if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
		r.Code = cmd.ProcessState.ExitCode()
	}
	if err != nil && r.Code == -1 {
		l.printf("    %s\n", l.dim(fmt.Sprintf("(%v)", err)))
	}
	return r
}

// Enforcer runs the enforcer CLI as root.
func (l *Lab) Enforcer(args ...string) Result {
	return l.Run(Cmd{Args: append([]string{l.bin}, args...)})
}

// Agent runs an agent command under `enforcer run`, as alice's Unix account.
func (l *Lab) Agent(args ...string) Result {
	return l.Run(l.aliceCmd(append([]string{"run", "--"}, args...)...))
}

// aliceCmd is the enforcer CLI run as alice's Unix account.
func (l *Lab) aliceCmd(args ...string) Cmd {
	return Cmd{Args: append([]string{l.bin}, args...), Prompt: "alice$", UID: agentUID}
}

// Reviewer runs the enforcer CLI as the second person's Unix account.
func (l *Lab) Reviewer(args ...string) Result {
	return l.Run(l.reviewerCmd(args...))
}

func (l *Lab) reviewerCmd(args ...string) Cmd {
	return Cmd{Args: append([]string{l.bin}, args...), Prompt: "nobody$", UID: reviewerUID}
}

// DirectSQL runs psql straight to the database as its superuser, outside enforcement: what a DBA
// (or an unenforced agent) would see. The password travels in the environment, never on screen.
func (l *Lab) DirectSQL(sql string) Result {
	dsn := fmt.Sprintf("host=%s port=%d dbname=postgres user=%s", l.prod, pgtest.Port, l.pg.SuperUser)
	return l.Run(Cmd{Args: []string{"psql", dsn, "-c", sql}, Env: []string{"PGPASSWORD=" + l.pg.Password}})
}

// Query runs sql as the superuser over a direct connection, silently, and returns the first
// column of the first row as text: for checks, not for show.
func (l *Lab) Query(sql string) string {
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, l.pg.DSN(l.pg.SuperUser, "postgres"))
	l.Must(err, "direct connection")
	defer c.Close(context.Background())
	var v string
	l.Must(c.QueryRow(ctx, sql).Scan(&v), sql)
	return v
}

// Job is a command running in the background.
type Job struct {
	l      *Lab
	cmd    *exec.Cmd
	w      *lineWriter
	done   chan struct{}
	err    error
	cancel context.CancelFunc
	shown  int // lines already printed
}

// Start prints the command with a trailing & and runs it in the background; its output is kept
// until Flush or Wait prints it.
func (l *Lab) Start(c Cmd) *Job {
	l.showCmd(c, " &")
	cmd, cancel := l.prepareCmd(c)
	j := &Job{l: l, cmd: cmd, w: &lineWriter{l: l}, done: make(chan struct{}), cancel: cancel}
	cmd.Stdout, cmd.Stderr = j.w, j.w
	if err := cmd.Start(); err != nil {
		cancel()
		l.Fatalf("start %s: %v", c.Args[0], err)
	}
	go func() {
		j.err = cmd.Wait()
		cancel()
		close(j.done)
	}()
	l.Defer("", func() error { cancel(); <-j.done; return nil })
	return j
}

// Flush prints the output the job produced since the last Flush.
func (j *Job) Flush() {
	lines := j.w.lines()
	for _, line := range lines[j.shown:] {
		j.l.printf("    %s\n", line)
	}
	j.shown = len(lines)
}

// Wait waits for the job, prints the rest of its output and returns its result.
func (j *Job) Wait() Result {
	select {
	case <-j.done:
	case <-j.l.ctx.Done():
		j.cancel()
		<-j.done
	}
	j.w.flush()
	j.l.printf("  %s\n", j.l.dim("[the background command finished]"))
	j.Flush()
	return j.l.result(j.cmd, j.err, j.w)
}

// lineWriter collects output and, when live, prints each complete line indented.
type lineWriter struct {
	l      *Lab
	live   bool
	onLine func(string) string
	mu     sync.Mutex
	all    bytes.Buffer
	part   []byte
	done   []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.part[:i]))
		w.part = w.part[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) line(s string) {
	s = strings.TrimRight(s, "\r")
	w.done = append(w.done, s)
	if w.live {
		w.l.printf("    %s\n", s)
	}
	if w.onLine != nil {
		if note := w.onLine(s); note != "" {
			w.l.printf("  %s\n", w.l.dim(note))
		}
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.part) > 0 {
		w.line(string(w.part))
		w.part = nil
	}
}

func (w *lineWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

func (w *lineWriter) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.done...)
}

// ShowFile prints a file the way `cat` would.
func (l *Lab) ShowFile(name string) {
	l.showCmd(Cmd{Show: "cat " + name}, "")
	f, err := os.Open(filepath.Join(l.dir, name))
	l.Must(err, "open "+name)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l.printf("    %s\n", sc.Text())
	}
}

// WriteFile writes a file into the lab directory.
func (l *Lab) WriteFile(name, text string, mode os.FileMode) string {
	p := filepath.Join(l.dir, name)
	l.Must(os.WriteFile(p, []byte(text), mode), "write "+name)
	return p
}

// waitFor polls cond until it holds or timeout passes.
func (l *Lab) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && l.ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

var _ io.Writer = (*lineWriter)(nil)
