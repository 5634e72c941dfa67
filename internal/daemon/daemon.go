package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/enforcer-dev/enforcer/internal/agentca"
	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/httpguard"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/pgguard"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/proxy"
	"github.com/enforcer-dev/enforcer/internal/record"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// Version is reported by status; set at build time with -ldflags.
var Version = "dev"

// Daemon is a running enforcer.
type Daemon struct {
	cfg       *Config
	log       *slog.Logger
	metrics   *metrics.Metrics
	subtree   *redirect.Subtree
	redir     redirect.Redirector
	proxy     *proxy.Server
	policy    atomic.Pointer[policy.Policy]
	reloadMu  sync.Mutex // serialises policy loads (file watch, SIGHUP, the control API)
	polHash   [32]byte   // under reloadMu
	ids       *identity.Manager
	approvals *approval.Broker
	host      string // names this daemon's requests in the approvals store (Request.Owner)
	guards    *pgguard.Shared
	// httpGuards is what the guards of HTTP connections share.
	httpGuards *httpguard.Shared
	// agentCA signs what the proxy shows agents calling http targets over HTTPS.
	agentCA *agentca.Authority
	// agentCABundle is the published file of the system's roots and the agent CA ("" if the
	// system has no roots to publish).
	agentCABundle string
	records       *record.Recorder
	// loginLimit and runLimit bound how often one user may log in and start runs: each costs a
	// write of the identity state, a run a cgroup too.
	loginLimit *control.RateLimit
	runLimit   *control.RateLimit
	// releaseLimit bounds how often one user may release a run's terminal: each freezes the run
	// and reads every descriptor of its processes.
	releaseLimit *control.RateLimit
	// releases knows the releases under way and the runs they froze.
	releases releaseTracker
	// runLocksMu guards runLocks, which serialise the terminal releases of each run.
	runLocksMu sync.Mutex
	runLocks   map[string]*runLock
	// runsMu makes counting a user's runs and creating one a single step.
	runsMu sync.Mutex
}

// Run starts the daemon and serves until ctx ends or SIGTERM/SIGINT. Stopping never detaches the
// kernel side: enforced processes then get ECONNREFUSED until the daemon is back.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d := &Daemon{cfg: cfg, log: log, metrics: metrics.New(), loginLimit: newLoginLimit(), runLimit: newRunLimit(), releaseLimit: newReleaseLimit()}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	os.Chmod(cfg.StateDir, 0o700)
	if _, err := d.loadPolicy(); err != nil {
		return err
	}
	if err := d.startIdentity(); err != nil {
		return err
	}
	defer d.ids.Close()
	if err := d.startApprovals(ctx); err != nil {
		return err
	}
	recordDir := filepath.Join(cfg.StateDir, "records")
	if err := d.newRecordSink(recordDir); err != nil {
		return err
	}
	var err error
	d.records, err = record.Open(record.Options{
		Dir:              recordDir,
		Strict:           d.policy.Load().Recording.Strict(),
		MaxResultRows:    d.policy.Load().Recording.MaxRows,
		AcceptChainBreak: cfg.AcceptChainBreak,
		MaxAge:           cfg.Retention.MaxAge,
		MaxBytes:         cfg.Retention.MaxBytes,
		KeepFrom:         d.keepFrom,
		Logger:           log,
	})
	if err != nil {
		return fmt.Errorf("session log: %w (if the chain break is understood, start once with accept_chain_break: true)", err)
	}
	defer d.records.Close()
	d.runRecordSink(ctx)
	d.registerStats()
	d.guards = &pgguard.Shared{
		Policy:     d.policy.Load,
		Classifier: sqlclass.New(sqlclass.Options{}),
		Approvals:  d.approvals,
		Metrics:    d.metrics,
		Log:        log,
		Recorder:   d.records,
	}
	// Reads that wait for their connection's next statement are written before the log closes.
	defer d.guards.FlushLate()
	d.httpGuards = &httpguard.Shared{
		Policy:    d.policy.Load,
		Approvals: d.approvals,
		Metrics:   d.metrics,
		Log:       log,
		Recorder:  d.records,
	}
	d.subtree, err = redirect.OpenSubtree(cfg.Cgroup)
	if err != nil {
		return err
	}
	d.thawRuns()
	d.redir, err = d.loadRedirector()
	if err != nil {
		return err
	}
	defer d.redir.Close()

	lns, err := proxy.Listen(ctx, cfg.ProxyPort)
	if err != nil {
		return err
	}
	relay := &proxy.Relay{Metrics: d.metrics, Observe: d.recordRelay}
	pgCfg := postgres.Config{}
	if t := cfg.PostgresClientTLS; t != nil {
		if _, err := readSecretFile(t.KeyFile); err != nil {
			return fmt.Errorf("postgres_client_tls key: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("postgres_client_tls: %w", err)
		}
		pgCfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ca, err := openAgentCA(cfg)
	if err != nil {
		return err
	}
	d.agentCA = ca
	d.proxy = &proxy.Server{
		Redirector: d.redir,
		Policy:     d.policy.Load,
		Handlers: map[string]proxy.Handler{
			policy.ProtoTCP:            relay,
			policy.ProtoTLSPassthrough: relay,
			policy.ProtoPostgres:       &pgHandler{srv: postgres.NewServer(pgCfg), guard: d.postgresGuard},
			policy.ProtoHTTP:           &httpHandler{srv: &httpproto.Server{}, guard: d.httpGuard, ca: ca},
		},
		Authorize:      d.authorize,
		LookupName:     (&names{servers: func() []netip.Addr { return d.policy.Load().Resolvers }}).lookup,
		MaxConnsPerUID: cfg.MaxConnectionsPerUID,
		Metrics:        d.metrics,
		Log:            log,
	}
	ctl, err := control.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	if d.agentCABundle, err = publishAgentCA(cfg, ca); err != nil {
		ctl.Close()
		return err
	}
	if d.agentCABundle == "" {
		log.Warn("no system roots found (" + strings.Join(systemRootFiles, ", ") + "): `enforcer run` will not point SSL_CERT_FILE and the like at a bundle with the agent CA")
	}
	if ca.Renewed() {
		log.Warn("the agent CA had expired or was about to, and was replaced: agents must trust the new certificate", "file", agentCAFile(cfg))
	}

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- d.proxy.Serve(ctx, ln)
		}()
	}
	go func() { errc <- control.Serve(ctx, ctl, d.routes(), log, d.confined) }()
	if cfg.Metrics != "" {
		go func() {
			if err := d.metrics.Serve(ctx, cfg.Metrics, cfg.Pprof); err != nil {
				log.Error("metrics", "err", err)
			}
		}()
	}
	go d.watchPolicy(ctx)
	go d.collectRuns(ctx)
	warnUnprivilegedPorts(log, cfg)
	log.Info("enforcer running", "mode", d.redir.Mode(), "identity", d.ids.Provider().Name(), "cgroup", d.subtree.Path, "proxy_port", cfg.ProxyPort,
		"socket", cfg.Socket, "policy", cfg.Policy)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, ln := range lns {
		ln.Close()
	}
	ctl.Close()
	os.Remove(cfg.Socket)
	d.stopReleases(releaseShutdownWait)
	log.Info("enforcer stopped; enforcement stays attached (run `enforcer uninstall` to remove it)")
	return err
}

func (d *Daemon) loadRedirector() (redirect.Redirector, error) {
	pol := d.policy.Load()
	switch d.cfg.Redirect {
	case "bpf":
		return redirect.LoadBPF(redirect.BPFConfig{
			Subtree: d.subtree, PinDir: d.cfg.PinDir, ProxyPort: d.cfg.ProxyPort,
			ReservedPorts: d.cfg.reservedPorts(), DNSResolvers: pol.Resolvers, Logger: d.log,
		})
	case "nftables":
		return loadNFT(d, pol)
	}
	return nil, fmt.Errorf("unknown redirect mode %q", d.cfg.Redirect)
}

// loadPolicy reads the policy file and reports whether the policy changed; on error the running
// policy stays.
func (d *Daemon) loadPolicy() (changed bool, err error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	data, err := readPolicyFile(d.cfg.Policy)
	if err != nil {
		return false, err
	}
	h := sha256.Sum256(data)
	if h == d.polHash && d.policy.Load() != nil {
		return false, nil
	}
	p, err := policy.Parse(d.cfg.Policy, data)
	if err != nil {
		return false, err
	}
	// Approvals take their timeouts and webhooks from the policy too; a webhook whose secret
	// cannot be read refuses the reload as a bad file does.
	var approvals *approval.Settings
	if cur := d.policy.Load(); d.approvals != nil && cur != nil && !reflect.DeepEqual(cur.Approvals, p.Approvals) {
		set, err := d.approvalSettings(p.Approvals)
		if err != nil {
			return false, err
		}
		approvals = &set
	}
	if d.redir != nil {
		if rs, ok := d.redir.(interface{ SetResolvers([]netip.Addr) error }); ok {
			if err := rs.SetResolvers(p.Resolvers); err != nil {
				if approvals != nil && approvals.Notifier != nil {
					approvals.Notifier.Close()
				}
				return false, fmt.Errorf("apply DNS resolvers: %w", err)
			}
		}
	}
	// The broker learns the new rules before any guard can judge by them: a request judged by
	// the new policy and checked against the old rules would be taken for one whose rule
	// changed while it waited.
	if d.approvals != nil {
		d.applyApprovalRules(p)
	}
	old := d.policy.Swap(p)
	d.polHash = h
	if approvals != nil {
		if n := d.approvals.Reconfigure(*approvals); n != nil {
			go n.Close() // its workers stop; what it still queued is dropped, as at shutdown
		}
	}
	if n := d.endRevoked(old, p); n > 0 {
		d.log.Info("policy reload ended connections it no longer allows", "closed_connections", n)
	}
	if p.Recording.Disabled {
		d.log.Warn("session recording is disabled by the policy", "policy", d.cfg.Policy)
	}
	return true, nil
}

// endRevoked closes the live connections that policy p no longer allows as old did (see
// revokedBy). Grants and masking are decided when a connection opens, so without this an agent
// that keeps a connection open keeps the access a reload took away.
func (d *Daemon) endRevoked(old, p *policy.Policy) int {
	if d.proxy == nil || old == nil {
		return 0
	}
	return d.proxy.CloseWhere(func(c *proxy.Conn) bool { return revokedBy(old, p, c) })
}

// revokedBy says whether p takes away what old gave connection c: its target is gone, has
// another protocol, no longer matches where c goes (or the name c's ClientHello gave) or reaches
// its upstream otherwise; the person's grant is gone; or c is a
// Postgres session p masks otherwise than old did (a session's masking plan is taken when it
// opens, so a column rule added for what the agent reads would not reach it). A session p
// leaves in clear stays as it is, masked more than it need be.
func revokedBy(old, p *policy.Policy, c *proxy.Conn) bool {
	s, _ := c.Identity.(identity.Session)
	i := slices.IndexFunc(p.Targets, func(t *policy.Target) bool { return t.Name == c.Target.Name })
	if i < 0 || p.Targets[i].Protocol != c.Target.Protocol {
		return true
	}
	t := p.Targets[i]
	// The connection must still go to this target as the proxy would pick it now: by address,
	// or by the name its ClientHello gave (a name or port taken off the target, or an address
	// target that now comes first, ends it).
	nt := p.TargetFor(c.Origin.Dst)
	if c.SNI != "" && nt == nil {
		nt = p.TargetForSNI(c.SNI, c.Origin.Dst)
	}
	if nt == nil || nt.Name != t.Name {
		return true
	}
	// The upstream was logged in to (or dialled) as the old target said: another user,
	// credential, address or TLS setting takes that login away.
	if !reflect.DeepEqual(t.Upstream, c.Target.Upstream) {
		return true
	}
	if ok, _ := p.Granted(t.Name, s.Subject, s.Groups); !ok {
		return true
	}
	// Whether and how a session is recorded is decided when it starts: a connection opened
	// while recording was off would stay unrecorded, one opened in default durability would not
	// write its reads ahead.
	if p.Recording.Disabled != old.Recording.Disabled || p.Recording.Strict() != old.Recording.Strict() {
		return true
	}
	// Masking is chosen when a postgres or http connection starts.
	masks := t.Protocol == policy.ProtoPostgres || t.Protocol == policy.ProtoHTTP
	return masks && p.MaskFor(t.Name, s.Groups) != nil &&
		(old.MaskFor(t.Name, s.Groups) == nil || !p.SameMasking(old))
}

// readPolicyFile reads the policy: a root's file no one else may write (readRootOwned), re-read
// every two seconds.
func readPolicyFile(path string) ([]byte, error) { return readRootOwned(path, "policy") }

// watchPolicy reloads on SIGHUP and when the file changes.
func (d *Daemon) watchPolicy(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-tick.C:
		}
		changed, err := d.loadPolicy()
		if err != nil {
			d.log.Error("policy reload failed; keeping the running policy", "err", err)
			continue
		}
		if changed {
			d.log.Info("policy reloaded", "policy", d.cfg.Policy)
		}
	}
}

// Reload re-reads the policy now.
func (d *Daemon) Reload() error {
	_, err := d.loadPolicy()
	return err
}
