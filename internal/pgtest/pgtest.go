// Package pgtest starts a real PostgreSQL 15 server inside a lab network namespace, so tests (and the lab
// demo) talk to a "remote" database at 198.18.N.2:5432 and [2001:2:0:N::2]:5432 over TCP, with
// SCRAM-SHA-256 password authentication and a TLS certificate signed by a throwaway test CA.
//
// Besides the superuser, every server has a user whose password is stored as MD5 and authenticated
// with the md5 method, and a user authenticated with the cleartext "password" method, so clients can
// test every password exchange PostgreSQL offers.
package pgtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/lab"
)

// BinDir is where Debian installs the PostgreSQL 15 server binaries.
const BinDir = "/usr/lib/postgresql/15/bin"

// Port is the port the server listens on inside its namespace.
const Port = 5432

// Names of the users every server has besides the superuser.
const (
	SuperUser     = "postgres"
	MD5User       = "md5user"
	CleartextUser = "plainuser"
)

// Server is a running PostgreSQL server in a network namespace.
type Server struct {
	// Addr is the IPv4 address clients on the host dial; Addr6 the IPv6 one.
	Addr  netip.AddrPort
	Addr6 netip.AddrPort
	// Netns is the namespace the server runs in.
	Netns *lab.Netns
	// CAFile is the PEM file of the CA that signed the server certificate (for sslrootcert and
	// verify-full); the certificate's SANs hold both peer addresses and "localhost".
	CAFile string
	// SuperUser and Password authenticate as the bootstrap superuser.
	SuperUser string
	Password  string
	// Dir is the temporary directory holding the data directory, certificates and log.
	Dir string

	cmd       *exec.Cmd
	ownNetns  bool
	mu        sync.Mutex
	passwords map[string]string
	stopOnce  sync.Once
	stopErr   error
	exited    chan struct{}
	sslmode   string
}

type config struct {
	netns      *lab.Netns
	requireSSL bool
	settings   []string
}

// Option changes how a server is started.
type Option func(*config)

// WithNetns runs the server in an existing namespace instead of creating one; Stop leaves it in place.
func WithNetns(n *lab.Netns) Option { return func(c *config) { c.netns = n } }

// RequireSSL makes pg_hba accept only TLS connections (hostssl), to test that clients which do not use
// TLS are refused.
func RequireSSL() Option { return func(c *config) { c.requireSSL = true } }

// WithSetting adds a server setting (postgres -c name=value).
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, name+"="+value) }
}

// Start starts a server for the test and stops it (and removes its namespace and files) when the test
// ends, whether it passed or not.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := StartServer(ctx, opts...)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("pgtest: stop: %v", err)
		}
	})
	return s
}

// StartServer starts a server; the caller must call Stop. Without WithNetns it creates a namespace
// named enf-pg-N, which Stop deletes.
func StartServer(ctx context.Context, opts ...Option) (_ *Server, err error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("look up the postgres OS user: %w", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)

	s := &Server{
		SuperUser: SuperUser,
		Password:  randomSecret(),
		passwords: map[string]string{},
		exited:    make(chan struct{}),
		sslmode:   "disable",
	}
	if cfg.requireSSL {
		s.sslmode = "require"
	}
	s.passwords[SuperUser] = s.Password
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	s.Dir, err = os.MkdirTemp("", "enforcer-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if err := os.Chown(s.Dir, uid, gid); err != nil {
		return nil, fmt.Errorf("chown %s: %w", s.Dir, err)
	}
	if cfg.netns == nil {
		cfg.netns, err = lab.NewNetns("enf-pg")
		if err != nil {
			return nil, fmt.Errorf("create namespace: %w", err)
		}
		s.ownNetns = true
	}
	s.Netns = cfg.netns
	s.Addr = netip.AddrPortFrom(s.Netns.PeerAddr, Port)
	s.Addr6 = netip.AddrPortFrom(s.Netns.PeerAddr6, Port)

	asPostgres := func(f string) error { return os.Chown(f, uid, gid) }
	pwFile := filepath.Join(s.Dir, "pwfile")
	if err := os.WriteFile(pwFile, []byte(s.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := asPostgres(pwFile); err != nil {
		return nil, err
	}
	dataDir := filepath.Join(s.Dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(BinDir, "initdb"), "-D", dataDir, "--no-sync",
		"-U", SuperUser, "--pwfile="+pwFile, "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	initdb.Dir = s.Dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	os.Remove(pwFile)

	if err := s.writeTLS(asPostgres); err != nil {
		return nil, err
	}
	hba := filepath.Join(s.Dir, "pg_hba.conf")
	host := "host"
	if cfg.requireSSL {
		host = "hostssl"
	}
	hbaText := fmt.Sprintf("# written by pgtest\n%[1]s all %[2]s all md5\n%[1]s all %[3]s all password\n%[1]s all all all scram-sha-256\n",
		host, MD5User, CleartextUser)
	if err := os.WriteFile(hba, []byte(hbaText), 0o600); err != nil {
		return nil, err
	}
	if err := asPostgres(hba); err != nil {
		return nil, err
	}

	args := []string{"--reuid=" + pgUser.Uid, "--regid=" + pgUser.Gid, "--init-groups", "--pdeathsig=KILL",
		filepath.Join(BinDir, "postgres"), "-D", dataDir,
		"-c", "listen_addresses=" + s.Netns.PeerAddr.String() + "," + s.Netns.PeerAddr6.String(),
		"-c", "port=" + strconv.Itoa(Port),
		"-c", "unix_socket_directories=",
		"-c", "hba_file=" + hba,
		"-c", "ssl=on",
		"-c", "ssl_cert_file=" + filepath.Join(s.Dir, "server.crt"),
		"-c", "ssl_key_file=" + filepath.Join(s.Dir, "server.key"),
		"-c", "shared_buffers=32MB",
		"-c", "max_connections=60",
		"-c", "password_encryption=scram-sha-256",
		"-c", "log_min_messages=warning",
		"-c", "logging_collector=off",
	}
	for _, kv := range cfg.settings {
		args = append(args, "-c", kv)
	}
	logFile, err := os.OpenFile(filepath.Join(s.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	// The command must outlive ctx (it bounds startup only), so it is not tied to it.
	s.cmd = s.Netns.Command(context.Background(), "setpriv", args...)
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}

	setup := fmt.Sprintf(`SET password_encryption = 'md5';
CREATE ROLE %s LOGIN PASSWORD '%s';
SET password_encryption = 'scram-sha-256';
CREATE ROLE %s LOGIN PASSWORD '%s';`, MD5User, s.setPassword(MD5User), CleartextUser, s.setPassword(CleartextUser))
	if err := s.ExecContext(ctx, setup); err != nil {
		return nil, fmt.Errorf("create test users: %w", err)
	}
	return s, nil
}

func (s *Server) setPassword(user string) string {
	p := randomSecret()
	s.mu.Lock()
	s.passwords[user] = p
	s.mu.Unlock()
	return p
}

// PasswordOf returns the password of a user pgtest created, or "".
func (s *Server) PasswordOf(user string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.passwords[user]
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited during startup: %s", s.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready: %w (last: %v): %s", ctx.Err(), last, s.LogTail())
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := pgconn.Connect(cctx, s.DSN(SuperUser, "postgres", "connect_timeout=2"))
		cancel()
		if err == nil {
			c.Close(context.Background())
			return nil
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("postgres not ready after 30s (last: %v): %s", last, s.LogTail())
}

// LogTail returns the end of the server log, for error messages.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// DSN returns a keyword/value connection string to the server over IPv4 without TLS (with
// sslmode=require under RequireSSL) for a user pgtest
// knows the password of; extra holds more "key=value" settings (later ones win, e.g. "sslmode=verify-full").
func (s *Server) DSN(user, db string, extra ...string) string {
	parts := []string{
		"host=" + s.Addr.Addr().String(),
		"port=" + strconv.Itoa(int(s.Addr.Port())),
		"user=" + quoteDSN(user),
		"dbname=" + quoteDSN(db),
		"sslmode=" + s.sslmode,
	}
	if p := s.PasswordOf(user); p != "" {
		parts = append(parts, "password="+quoteDSN(p))
	}
	return strings.Join(append(parts, extra...), " ")
}

func quoteDSN(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// ExecContext runs sql (one or more statements, simple protocol) as the superuser on database postgres.
func (s *Server) ExecContext(ctx context.Context, sql string) error {
	return s.ExecDB(ctx, "postgres", sql)
}

// ExecDB runs sql as the superuser on database db.
func (s *Server) ExecDB(ctx context.Context, db, sql string) error {
	c, err := pgconn.Connect(ctx, s.DSN(SuperUser, db))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return nil
}

// Exec runs sql as the superuser on database postgres and fails the test on error.
func (s *Server) Exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.ExecContext(ctx, sql); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// CreateUser creates a login role with a SCRAM password and returns the password.
func (s *Server) CreateUser(ctx context.Context, name string, superuser bool) (string, error) {
	p := randomSecret()
	attrs := "LOGIN"
	if superuser {
		attrs += " SUPERUSER"
	}
	if err := s.ExecContext(ctx, fmt.Sprintf("CREATE ROLE %s %s PASSWORD '%s'", quoteIdent(name), attrs, p)); err != nil {
		return "", err
	}
	s.mu.Lock()
	s.passwords[name] = p
	s.mu.Unlock()
	return p, nil
}

// CreateDatabase creates a database owned by owner (the superuser if empty).
func (s *Server) CreateDatabase(ctx context.Context, name, owner string) error {
	q := "CREATE DATABASE " + quoteIdent(name)
	if owner != "" {
		q += " OWNER " + quoteIdent(owner)
	}
	return s.ExecContext(ctx, q)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Stop kills the server, deletes its files and, if Start created it, its namespace. It is safe to call
// more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		if s.cmd != nil && s.cmd.Process != nil {
			// Immediate shutdown (SIGQUIT): the data is throwaway. SIGKILL to the process group after a
			// grace period catches anything left.
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGQUIT)
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
				syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.exited
			}
			// Backends exit on their own once the postmaster is gone; make sure of it.
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		}
		if s.ownNetns && s.Netns != nil {
			if err := s.Netns.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.Dir != "" {
			if err := os.RemoveAll(s.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

func (s *Server) writeTLS(chown func(string) error) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "enforcer pgtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create CA: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: s.Netns.PeerAddr.String()},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{s.Netns.PeerAddr.AsSlice(), s.Netns.PeerAddr6.AsSlice()},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files := []struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}{
		{"ca.crt", "CERTIFICATE", caDER, 0o644},
		{"server.crt", "CERTIFICATE", der, 0o644},
		{"server.key", "EC PRIVATE KEY", keyDER, 0o600},
	}
	for _, f := range files {
		p := filepath.Join(s.Dir, f.name)
		var buf bytes.Buffer
		pem.Encode(&buf, &pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(p, buf.Bytes(), f.mode); err != nil {
			return err
		}
		if err := chown(p); err != nil {
			return err
		}
	}
	s.CAFile = filepath.Join(s.Dir, "ca.crt")
	return nil
}

func randomSecret() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
