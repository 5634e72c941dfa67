// Command enforcer is the enforcer daemon and its CLI in one binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/enforcer-dev/enforcer/internal/control"
)

type command struct {
	name    string
	args    string
	summary string
	run     func(ctx context.Context, fs *flag.FlagSet, args []string) error
}

var commands []*command

func init() {
	commands = []*command{
		{"daemon", "--config FILE", "run the daemon in the foreground (root)", cmdDaemon},
		{"login", "[--browser]", "log in (OIDC device code, or browser with PKCE); the daemon verifies the token", cmdLogin},
		{"logout", "[--session ID]", "end your sessions and close their connections", cmdLogout},
		{"logins", "[--json]", "list your login sessions (root: everyone's) and the cgroups bound to them", cmdLogins},
		{"bind", "--cgroup PATH --token-file FILE", "enrol an agent runner's cgroup with a workload identity (root)", cmdBind},
		{"run", "[--] CMD [ARGS...]", "run CMD enforced: all its network access goes through the enforcer", cmdRun},
		{"agent-ca", "[--file | --env]", "print the certificate agents must trust to call http targets over HTTPS (`enforcer run` trusts it)", cmdAgentCA},
		{"status", "[--json]", "show the redirect mode, attached programs, enforced cgroups and connections", cmdStatus},
		{"approvals", "[ID] [--watch] [--all] [--json]", "list statements waiting for a reviewer, or show one request", cmdApprovals},
		{"approve", "ID [--reason TEXT]", "approve a held statement (as yourself; not your own)", cmdApprove},
		{"deny", "ID --reason TEXT", "deny a held statement; the agent sees the reason", cmdDeny},
		{"sessions", "[--user U --target T --since D --json]", "list recorded sessions (root)", cmdSessions},
		{"replay", "SESSION [--follow] [--json]", "show a recorded session as it happened (root)", cmdReplay},
		{"record", "verify|export|checkpoint|sink-sql", "check the session log's hash chain, export it, export a signed checkpoint (root), or print the fleet sink's SQL", cmdRecord},
		{"policy", "check FILE | explain ...", "validate a policy file, or show how a statement or HTTP request is judged", cmdPolicy},
		{"uninstall", "[--config FILE]", "kill enforced processes, detach and unpin everything (root)", cmdUninstall},
	}
}

// socketFlag is shared by every client command.
var socketFlag string

func main() {
	if len(os.Args) >= 2 && os.Args[1] == runStubArg {
		os.Exit(runStub(os.Args[2:]))
	}
	if len(os.Args) < 2 || isHelp(os.Args[1]) {
		usage(os.Stdout)
		return
	}
	name := os.Args[1]
	for _, c := range commands {
		if c.name != name {
			continue
		}
		fs := flag.NewFlagSet("enforcer "+c.name, flag.ContinueOnError)
		fs.StringVar(&socketFlag, "socket", "", "control socket (default $ENFORCER_SOCKET or "+control.DefaultSocket+")")
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "usage: enforcer %s %s\n\n%s\n\nflags:\n", c.name, c.args, c.summary)
			fs.PrintDefaults()
		}
		err := c.run(context.Background(), fs, os.Args[2:])
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		var ex exitCode
		if errors.As(err, &ex) {
			os.Exit(int(ex))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "enforcer %s: %v\n", c.name, err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "enforcer: unknown command %q\n\n", name)
	usage(os.Stderr)
	os.Exit(2)
}

// isHelp reports whether a command's argument asks for its usage.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// exitCode makes main exit with that status without printing anything.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func usage(w io.Writer) {
	fmt.Fprintf(w, "enforcer: access controls around AI agents that reach production.\n\nusage: enforcer COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %-34s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "\nRun `enforcer COMMAND -h` for a command's flags.\n")
}

func client() *control.Client { return control.NewClient(control.SocketPath(socketFlag)) }

func newLogger(level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
