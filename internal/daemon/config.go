// Package daemon wires the enforcer together: kernel redirect, proxy, protocol handlers,
// identity, policy reloads, metrics and the control socket.
package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity"
)

// Config is the daemon's own configuration file (not the policy).
type Config struct {
	Policy    string `yaml:"policy"`    // path of the policy file
	StateDir  string `yaml:"state_dir"` // sessions, records, keys (0700)
	Socket    string `yaml:"socket"`    // control socket
	Redirect  string `yaml:"redirect"`  // bpf (default) or nftables
	PinDir    string `yaml:"bpf_pin_dir"`
	Cgroup    string `yaml:"cgroup"`     // enforcement subtree, relative to the cgroup2 mount or absolute
	ProxyPort uint16 `yaml:"proxy_port"` // on 127.0.0.1 and [::1]
	NFTTable  string `yaml:"nft_table"`
	Metrics   string `yaml:"metrics"` // loopback host:port, empty = off
	// Pprof serves Go's profiles (/debug/pprof) on the metrics listener. Off by default: any
	// local user who can reach the loopback port could then profile and trace the daemon.
	Pprof    bool   `yaml:"pprof"`
	LogLevel string `yaml:"log_level"`
	// Identity says who may log in and how tokens are verified (default: OIDC, which needs issuer
	// and client_id; kind: local uses Unix users and groups, for a single workstation or a lab).
	Identity identity.Config `yaml:"identity"`
	// AcceptChainBreak starts even when the session log's saved chain state and its files
	// disagree, recording a chain_break event (`enforcer record verify` reports it forever).
	AcceptChainBreak bool `yaml:"accept_chain_break"`
	// Fleet settings: a PostgreSQL database shared by many hosts.
	Fleet Fleet `yaml:"fleet"`
	// Retention of the local session log.
	Retention Retention `yaml:"retention"`
	// MaxProcs is how many CPUs run the daemon's Go code at once (GOMAXPROCS). The default, 1,
	// measured best here: a relay's work is mostly syscalls, and one scheduler thread avoids a
	// cross-CPU wake-up per message (`make bench`: CPU per statement at or below pgbouncer's,
	// which is single-threaded too). 0 uses every CPU; $GOMAXPROCS, if set, wins.
	MaxProcs *int `yaml:"max_procs"`
	// PostgresClientTLS, if set, lets Postgres clients negotiate TLS with the proxy (the hop is
	// loopback, so the default answers SSLRequest with 'N').
	PostgresClientTLS *CertKey `yaml:"postgres_client_tls"`
	// AgentCA is the certificate authority whose certificates the proxy shows agents that call
	// http targets over HTTPS (`enforcer agent-ca` prints it for them to trust). Default: one the
	// daemon generates in state_dir/agent-ca the first time, kept across restarts.
	AgentCA *CertKey `yaml:"agent_ca"`
	// MaxConnectionsPerUID bounds the connections one uid's processes have through the proxy
	// at once (default 1024); more are refused (Postgres 53300, HTTP 429).
	MaxConnectionsPerUID int `yaml:"max_connections_per_uid"`
}

// CertKey names a PEM certificate and its private key.
type CertKey struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"` // 0600
}

// Fleet points the daemon at shared PostgreSQL services. DSNs are read from files (0600).
type Fleet struct {
	// ApprovalsDSNFile: approval requests live in this database (LISTEN/NOTIFY), so a reviewer
	// on any host decides for agents on every host.
	ApprovalsDSNFile string `yaml:"approvals_dsn_file"`
	// RecordsDSNFile: the session log is shipped to an insert-only table there.
	RecordsDSNFile string `yaml:"records_dsn_file"`
	RecordsTable   string `yaml:"records_table"`
}

// Retention bounds the local session log; whole old segments are removed, the chain stays
// verifiable from an anchor record. Unshipped records (fleet sink) are never removed.
type Retention struct {
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes int64         `yaml:"max_bytes"`
}

// Defaults for a system install.
const (
	DefaultPolicy    = "/etc/enforcer/policy.yaml"
	DefaultStateDir  = "/var/lib/enforcer"
	DefaultPinDir    = "/sys/fs/bpf/enforcer"
	DefaultCgroup    = "enforcer.slice"
	DefaultProxyPort = 700 // privileged: an unprivileged agent cannot bind it even with the hook gone
	DefaultNFTTable  = "enforcer"
)

// LoadConfig reads a daemon configuration file; missing fields take the defaults.
func LoadConfig(path string) (*Config, error) { return loadConfig(path, os.ReadFile) }

// LoadDaemonConfig is LoadConfig for the daemon itself: the file names the policy, the state and
// the identity provider, so it must be root's and writable by no one else (readRootOwned).
func LoadDaemonConfig(path string) (*Config, error) {
	return loadConfig(path, func(p string) ([]byte, error) { return readRootOwned(p, "configuration") })
}

func loadConfig(path string, read func(string) ([]byte, error)) (*Config, error) {
	c := &Config{}
	if path != "" {
		data, err := read(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := yaml.UnmarshalWithOptions(data, c, yaml.Strict()); err != nil {
			return nil, fmt.Errorf("%s: %s", path, yaml.FormatError(err, false, true))
		}
		// Relative paths in the file are relative to the file.
		base := filepath.Dir(path)
		for _, p := range []*string{&c.Policy, &c.StateDir} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(base, *p)
			}
		}
	}
	c.setDefaults()
	switch c.Redirect {
	case "bpf", "nftables":
	default:
		return nil, fmt.Errorf("%s: redirect: want bpf or nftables, got %q", path, c.Redirect)
	}
	if c.MaxConnectionsPerUID < 0 {
		return nil, fmt.Errorf("%s: max_connections_per_uid: want a positive count (default 1024), got %d", path, c.MaxConnectionsPerUID)
	}
	if c.Pprof && c.Metrics == "" {
		return nil, fmt.Errorf("%s: pprof: the profiles are served on the metrics listener; set metrics (a loopback host:port) too", path)
	}
	return c, nil
}

func (c *Config) setDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.Policy, DefaultPolicy)
	def(&c.StateDir, DefaultStateDir)
	def(&c.Socket, control.DefaultSocket)
	def(&c.Redirect, "bpf")
	def(&c.PinDir, DefaultPinDir)
	def(&c.Cgroup, DefaultCgroup)
	def(&c.NFTTable, DefaultNFTTable)
	def(&c.LogLevel, "info")
	if c.ProxyPort == 0 {
		c.ProxyPort = DefaultProxyPort
	}
}

// reservedPorts are the daemon's listening ports besides the proxy's, which enforced processes
// may not bind: an agent holding the metrics port while the daemon is down or restarting would
// serve the scraper its own numbers (no failures, no lost records) and keep the daemon from
// serving the real ones.
func (c *Config) reservedPorts() []uint16 {
	if c.Metrics == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(c.Metrics)
	if err != nil {
		return nil // the metrics listener refuses it and says why
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return nil
	}
	return []uint16{uint16(n)}
}

// unprivilegedPorts are the daemon's listening ports (the proxy's, the metrics') that a process
// without CAP_NET_BIND_SERVICE may bind: the bind hook keeps enforced processes off them, but any
// other local user could take one while the daemon is down or restarting, and then receive the
// enforced processes' connections (the programs keep redirecting there) or serve the scraper.
// start is the host's net.ipv4.ip_unprivileged_port_start.
func (c *Config) unprivilegedPorts(start int) []uint16 {
	var out []uint16
	for _, p := range append([]uint16{c.ProxyPort}, c.reservedPorts()...) {
		if int(p) >= start {
			out = append(out, p)
		}
	}
	return out
}

// warnUnprivilegedPorts logs a warning naming the daemon's ports another user could take.
func warnUnprivilegedPorts(log *slog.Logger, c *Config) {
	start := 1024
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			start = n
		}
	}
	if ports := c.unprivilegedPorts(start); len(ports) > 0 {
		log.Warn("a port of the daemon's is unprivileged: while the daemon is down, any local user could listen on it and receive what enforced processes send (use ports below net.ipv4.ip_unprivileged_port_start)",
			"ports", ports, "ip_unprivileged_port_start", start)
	}
}

// readRootOwned reads a file that decides what the enforcer allows (its configuration, its
// policy): a regular file owned by root that no group or other user can write, as sshd's
// StrictModes asks of authorized_keys, since whoever may write it decides who reaches what.
func readRootOwned(path, what string) ([]byte, error) {
	return readRootFile(path, what, 0o022, "others may change what the enforcer allows (chmod go-w "+path+")")
}

// readRootFile reads a regular file owned by root whose mode has none of the bits in forbidden
// (else the error says why, and what to run). The checks are made on the descriptor read, so the
// file cannot be swapped between them and the read; and a FIFO put there does not hang the
// daemon.
func readRootFile(path, what string, forbidden os.FileMode, why string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
		return nil, fmt.Errorf("%s %s is owned by uid %d; it must be root's (chown root %s)", what, path, sys.Uid, path)
	}
	if st.Mode().Perm()&forbidden != 0 {
		return nil, fmt.Errorf("%s %s has mode %o: %s", what, path, st.Mode().Perm(), why)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return data, nil
}
