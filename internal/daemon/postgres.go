package daemon

import (
	"context"
	"net"

	"errors"
	"fmt"
	"github.com/jackc/pgx/v5/pgconn"
	"os"
	"strconv"
	"strings"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/pgguard"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/proxy"
)

// pgHandler serves postgres targets: it authenticates upstream with the target's own credentials
// and relays the session through the hook chain.
type pgHandler struct {
	srv *postgres.Server
	// guard builds the per-connection hook (policy, masking, approval, recording).
	guard func(c *proxy.Conn) *pgguard.Guard
}

func (h *pgHandler) Serve(ctx context.Context, c *proxy.Conn) error {
	up := c.Target.Upstream
	pw, err := readSecret(up)
	if err != nil {
		c.Log.Error("upstream credential unavailable", "target", c.Target.Name, "err", err)
		postgres.RefuseStartup(c.Client, "08004", fmt.Sprintf("enforcer cannot read the credential for target %q", c.Target.Name),
			"an administrator must fix the target's password_file or password_env; the daemon log says what is wrong")
		return nil
	}
	sess := postgres.Session{
		ID:         strconv.FormatUint(c.ID, 10),
		Upstream:   proxy.UpstreamAddr(c),
		Database:   up.Database,
		User:       up.User,
		Password:   pw,
		TLS:        postgres.TLSMode(tlsMode(up.TLS)),
		CAFile:     up.CAFile,
		Auth:       up.Auth,
		ServerName: up.ServerName,
		Owner:      budgetOwner(c),
	}
	if h.guard == nil {
		return h.srv.Serve(ctx, c.ServeConn(), sess)
	}
	g := h.guard(c)
	sess.Hook = g
	err = h.srv.Serve(ctx, c.ServeConn(), sess)
	reason := "client closed"
	if err != nil {
		reason = err.Error()
	}
	in, out := c.ClientCounts()
	g.End(reason, in, out)
	return err
}

// Refuse tells a Postgres client why its connection is refused, with the command to run.
func (h *pgHandler) Refuse(ctx context.Context, c *proxy.Conn, reason error) {
	msg, hint, code := reason.Error(), "", "28000"
	var r *refusal
	switch {
	case errors.As(reason, &r):
		msg, hint = r.Message, r.Hint
	case errors.Is(reason, proxy.ErrTooManyConnections):
		code, hint = "53300", tooManyHint
	}
	postgres.RefuseStartup(c.Client, code, msg, hint)
}

// budgetOwner is whom c's share of the proxies' memory budgets (internal/budget) counts
// against: its agent's uid, as the kernel reported it.
func budgetOwner(c *proxy.Conn) string { return "uid " + strconv.FormatUint(uint64(c.Origin.UID), 10) }

// tooManyHint is what a client refused for its uid's connection count is told to do.
const tooManyHint = "close connections this user no longer needs (idle pools, leaked clients); the limit is max_connections_per_uid in the enforcer's daemon configuration"

// postgresGuard builds the guard of one Postgres connection.
func (d *Daemon) postgresGuard(c *proxy.Conn) *pgguard.Guard {
	s, _ := c.Identity.(identity.Session)
	p := readProc(int(c.Origin.PID))
	return d.guards.NewGuard(pgguard.ConnInfo{
		ID:       strconv.FormatUint(c.ID, 10),
		Target:   c.Target,
		Identity: s,
		Origin:   c.Origin,
		Cmdline:  strings.Join(p.argv, " "),
		Argv:     p.argv,
		Exe:      p.exe,
		Cgroup:   p.cgroup,
		Database: c.Target.Upstream.Database,
		DBUser:   c.Target.Upstream.User,
		Connect:  upstreamConnector(c),
		Upstream: proxy.UpstreamAddr(c),
	})
}

// upstreamConnector opens connections to a target with its own credentials (for the masking
// catalog), never with anything the agent sent.
func upstreamConnector(c *proxy.Conn) pgguard.Connector {
	up := c.Target.Upstream
	addr := proxy.UpstreamAddr(c)
	return func(ctx context.Context, database string) (*pgconn.PgConn, error) {
		pw, err := readSecret(up)
		if err != nil {
			return nil, err
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=%s connect_timeout=10", host, port, quoteDSN(up.User), quoteDSN(database), tlsMode(up.TLS))
		if up.CAFile != "" {
			dsn += " sslrootcert=" + quoteDSN(up.CAFile)
		}
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.Password = pw
		cfg.RequireAuth, cfg.ChannelBinding = postgres.UpstreamAuth(postgres.TLSMode(tlsMode(up.TLS)), up.Auth)
		if up.ServerName != "" && cfg.TLSConfig != nil {
			cfg.TLSConfig.ServerName = up.ServerName
		}
		return pgconn.ConnectConfig(ctx, cfg)
	}
}

func quoteDSN(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// cmdline is the process's command line for reviewers; best effort (the process may be gone).
// procInfo is what /proc says about the process that opened a connection, read once per session
// for its record; fields are empty when the process is already gone.
type procInfo struct {
	argv   []string
	exe    string
	cgroup string
}

func readProc(pid int) procInfo {
	var p procInfo
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(b) > 0 {
		p.argv = strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	}
	p.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
		p.cgroup = control.UnifiedCgroup(string(b))
	}
	return p
}

// refusal is an authorisation failure with a hint for the user.
type refusal struct {
	Message string
	Hint    string
}

func (r *refusal) Error() string {
	if r.Hint == "" {
		return r.Message
	}
	return r.Message + " (" + r.Hint + ")"
}

func tlsMode(s string) string {
	if s == "" {
		return "verify-full"
	}
	return s
}

// readSecret reads a target's password from the daemon's environment or a secret file.
func readSecret(up policy.Upstream) (string, error) {
	if up.PasswordEnv != "" {
		v, ok := os.LookupEnv(up.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set in the daemon", up.PasswordEnv)
		}
		return v, nil
	}
	return readSecretFile(up.PasswordFile)
}
