package postgres

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// psqlScript exercises psql through the proxy; it includes a 200 kB result row and a 150 kB query,
// larger than the relay's 64 kB buffers.
var psqlScript = `DROP TABLE IF EXISTS psql_t;
CREATE TABLE psql_t (id int PRIMARY KEY, name text NOT NULL, note text, amount numeric(10,2));
COMMENT ON TABLE psql_t IS 'psql through the proxy';
COPY psql_t FROM STDIN;
1	alice	first	10.50
2	bob	\N	-3.25
3	carol	tab\there	0
\.
\d psql_t
\dt+ psql_t
SELECT * FROM psql_t ORDER BY id;
COPY psql_t TO STDOUT;
COPY (SELECT id, name FROM psql_t ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER);
\copy psql_t to stdout with csv
SELECT 1 AS one; SELECT 2 AS two;
BEGIN;
INSERT INTO psql_t VALUES (4, 'dave', NULL, 1);
SELECT 1/0;
COMMIT;
SELECT count(*) FROM psql_t;
DO $$ BEGIN RAISE NOTICE 'notice from %', 'plpgsql'; END $$;
SET application_name = 'changed';
SHOW application_name;
PREPARE q(int) AS SELECT name FROM psql_t WHERE id = $1;
EXECUTE q(2);
SELECT md5(repeat('x', 100000)) AS big, repeat('y', 200000) AS bigger;
SELECT length('` + strings.Repeat("z", 150000) + `') AS long_query;
DROP TABLE psql_t;
`

// TestPsqlByteIdentical runs the same psql script directly and through the proxy and compares the
// complete output (stdout and stderr, in order).
func TestPsqlByteIdentical(t *testing.T) {
	p := startProxy(t, Config{}, defaultSession())
	script := tempFile(t, "script.sql", psqlScript)
	run := func(dsn string) []byte {
		cmd := exec.Command("psql", "-X", "-f", script, dsn)
		cmd.Env = append(os.Environ(), "PGPASSWORD=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		return out
	}
	direct := run(db.DSN(pgtest.SuperUser, "postgres"))
	proxied := run(p.dsn("postgres"))
	if !bytes.Equal(direct, proxied) {
		t.Fatalf("psql output differs\n--- direct\n%s\n--- proxy\n%s", direct, proxied)
	}
	for _, want := range []string{"Table \"public.psql_t\"", "division by zero", "notice from plpgsql", "changed", "tab\\there"} {
		if !bytes.Contains(proxied, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, proxied)
		}
	}
}

// TestPsqlCancel interrupts `select pg_sleep(30)` with SIGINT, as Ctrl-C does: psql sends a
// CancelRequest on a new connection, the proxy maps its key to the upstream's.
func TestPsqlCancel(t *testing.T) {
	p := startProxy(t, Config{}, defaultSession())
	cmd := exec.Command("psql", "-X", "-c", "select pg_sleep(30)", p.dsn("postgres"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	if !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Fatalf("psql output: %s", out.String())
	}
}

func TestPgbench(t *testing.T) {
	p := startProxy(t, Config{}, defaultSession())
	db.Exec(t, "DROP DATABASE IF EXISTS bench_t")
	db.Exec(t, "CREATE DATABASE bench_t")
	bench := func(args ...string) string {
		cmd := exec.Command("pgbench", append(args, p.dsn("bench_t"))...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	bench("-i", "-s", "1", "-q")
	for _, mode := range []string{"simple", "extended", "prepared"} {
		for _, extra := range [][]string{{"-S"}, {}} {
			out := bench(append([]string{"-M", mode, "-c", "2", "-t", "100", "-n"}, extra...)...)
			if !strings.Contains(out, "number of failed transactions: 0") || !strings.Contains(out, "number of transactions actually processed: 200/200") {
				t.Errorf("pgbench -M %s %v:\n%s", mode, extra, out)
			}
		}
	}
}

// TestPgxPipelineAndCopy uses pgx's batch (one pipeline of extended-protocol messages) and COPY in
// both directions, and compares the COPY TO output with a direct connection's.
func TestPgxPipelineAndCopy(t *testing.T) {
	leakCheck(t)
	p := startProxy(t, Config{}, defaultSession())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS pgx_t; CREATE TABLE pgx_t (id int, name text, data bytea)"); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 2000)
	for i := range rows {
		rows[i] = []any{i, strings.Repeat("n", i%50), []byte{byte(i), 0, 0xff}}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"pgx_t"}, []string{"id", "name", "data"}, pgx.CopyFromRows(rows))
	if err != nil || n != 2000 {
		t.Fatalf("CopyFrom: %d %v", n, err)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT count(*) FROM pgx_t")
	b.Queue("SELECT name FROM pgx_t WHERE id = $1", 49)
	b.Queue("INSERT INTO pgx_t VALUES ($1, $2, $3)", 5000, "batch", []byte("x"))
	b.Queue("SELECT sum(id) FROM pgx_t WHERE id > $1", 1990)
	br := conn.SendBatch(ctx, b)
	var count, sum int64
	var name string
	if err := br.QueryRow().Scan(&count); err != nil || count != 2000 {
		t.Fatalf("batch 1: %d %v", count, err)
	}
	if err := br.QueryRow().Scan(&name); err != nil || name != strings.Repeat("n", 49) {
		t.Fatalf("batch 2: %q %v", name, err)
	}
	if _, err := br.Exec(); err != nil {
		t.Fatalf("batch 3: %v", err)
	}
	if err := br.QueryRow().Scan(&sum); err != nil || sum != 1991+1992+1993+1994+1995+1996+1997+1998+1999+5000 {
		t.Fatalf("batch 4: %d %v", sum, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}

	// A pipeline with an error in the middle: the rest up to Sync is skipped, then all is well.
	pl := conn.PgConn().StartPipeline(ctx)
	pl.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	pl.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
	pl.SendQueryParams("SELECT 3", nil, nil, nil, nil)
	pl.SendPipelineSync()
	pl.SendQueryParams("SELECT 4", nil, nil, nil, nil)
	pl.SendPipelineSync()
	if got := pipelineResults(t, pl); got != "1,err:22012,sync,4,sync" {
		t.Fatalf("pipeline results %s", got)
	}

	copyTo := func(c *pgconn.PgConn) []byte {
		var buf bytes.Buffer
		if _, err := c.CopyTo(ctx, &buf, "COPY (SELECT * FROM pgx_t ORDER BY id) TO STDOUT WITH (FORMAT binary)"); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	direct, err := pgconn.Connect(ctx, db.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if a, b := copyTo(direct), copyTo(conn.PgConn()); !bytes.Equal(a, b) || len(a) < 2000*10 {
		t.Fatalf("COPY TO differs: direct %d bytes, proxy %d bytes", len(a), len(b))
	}
	if _, err := conn.Exec(ctx, "DROP TABLE pgx_t"); err != nil {
		t.Fatal(err)
	}
}

// TestNotifyAndParameterStatus checks asynchronous messages: NOTIFY from another session reaches a
// listener idle between queries, and a changed setting comes back as ParameterStatus.
func TestNotifyAndParameterStatus(t *testing.T) {
	p := startProxy(t, Config{}, defaultSession())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := pgconn.Connect(ctx, p.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	if _, err := l.Exec(ctx, "LISTEN chan_t").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Exec(ctx, "SET TimeZone = 'Asia/Tokyo'").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if got := l.ParameterStatus("TimeZone"); got != "Asia/Tokyo" {
		t.Errorf("TimeZone ParameterStatus = %q", got)
	}
	if got := l.ParameterStatus("server_version"); !strings.HasPrefix(got, "15") {
		t.Errorf("server_version ParameterStatus = %q", got)
	}
	if err := db.ExecContext(ctx, "NOTIFY chan_t, 'payload 1'"); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitForNotification(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUpstreamAuthAndTLS connects through the proxy with each password method and TLS mode.
func TestUpstreamAuthAndTLS(t *testing.T) {
	leakCheck(t)
	base := defaultSession()
	cases := []struct {
		name    string
		mod     func(*Session)
		wantErr string
	}{
		{"scram plain", func(s *Session) {}, ""},
		{"md5 allowed", func(s *Session) {
			s.User, s.Password, s.Auth = pgtest.MD5User, db.PasswordOf(pgtest.MD5User), []string{AuthSCRAM, AuthMD5}
		}, ""},
		{"cleartext over tls allowed", func(s *Session) {
			s.User, s.Password, s.TLS, s.Auth = pgtest.CleartextUser, db.PasswordOf(pgtest.CleartextUser), TLSRequire, []string{AuthPassword}
		}, ""},
		// Must hold: a server that asks for a weaker method than the target allows gets no answer
		// (it could be anyone at the agent's destination, collecting the password or a hash).
		{"md5 by default", func(s *Session) { s.User, s.Password = pgtest.MD5User, db.PasswordOf(pgtest.MD5User) }, "08006"},
		{"cleartext by default", func(s *Session) {
			s.User, s.Password, s.TLS = pgtest.CleartextUser, db.PasswordOf(pgtest.CleartextUser), TLSRequire
		}, "08006"},
		{"require", func(s *Session) { s.TLS = TLSRequire }, ""},
		{"verify-ca", func(s *Session) { s.TLS, s.CAFile = TLSVerifyCA, db.CAFile }, ""},
		{"verify-full", func(s *Session) { s.TLS, s.CAFile = TLSVerifyFull, db.CAFile }, ""},
		{"verify-ca ignores name", func(s *Session) { s.TLS, s.CAFile, s.ServerName = TLSVerifyCA, db.CAFile, "wrong.example" }, ""},
		{"verify-full wrong name", func(s *Session) { s.TLS, s.CAFile, s.ServerName = TLSVerifyFull, db.CAFile, "wrong.example" }, "08006"},
		{"ipv6 verify-full", func(s *Session) { s.Upstream, s.TLS, s.CAFile = db.Addr6.String(), TLSVerifyFull, db.CAFile }, ""},
		{"wrong password", func(s *Session) { s.Password = "wrong-password-xyz" }, "28P01"},
		{"database override", func(s *Session) { s.Database = "template1" }, ""},
		{"no such database", func(s *Session) { s.Database = "nope" }, "3D000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sess := base
			c.mod(&sess)
			p := startProxy(t, Config{}, sess)
			p.mu.Lock()
			p.record = true
			p.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := pgconn.Connect(ctx, p.dsn("postgres", "password=client-secret-ignored"))
			if c.wantErr != "" {
				if err == nil {
					conn.Close(ctx)
					t.Fatal("connected, want error")
				}
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != c.wantErr || !strings.Contains(pe.Message, "enforcer") {
					t.Fatalf("got %v, want PgError %s naming the enforcer", err, c.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				res, err := conn.Exec(ctx, "SELECT current_user, current_database(), coalesce((SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()), 'none')").ReadAll()
				if err != nil {
					t.Fatal(err)
				}
				row := res[0].Rows[0]
				if string(row[0]) != sess.User {
					t.Errorf("current_user %s, want %s", row[0], sess.User)
				}
				wantDB := "postgres"
				if sess.Database != "" {
					wantDB = sess.Database
				}
				if string(row[1]) != wantDB {
					t.Errorf("database %s, want %s", row[1], wantDB)
				}
				if wantTLS := sess.TLS != "" && sess.TLS != TLSDisable; (string(row[2]) == "true") != wantTLS {
					t.Errorf("upstream ssl %s, want %v", row[2], wantTLS)
				}
				conn.Close(ctx)
			}
			p.ln.Close()
			p.wg.Wait()
			p.mu.Lock()
			defer p.mu.Unlock()
			if bytes.Contains(p.sent.Bytes(), []byte(sess.Password)) {
				t.Fatal("the upstream password reached the client")
			}
		})
	}
}

// TestClientTLS: with a certificate configured the proxy accepts TLS from clients (sslmode=require
// fails unless it does); without one it answers 'N' and sslmode=prefer falls back to plain.
func TestClientTLS(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	withTLS := startProxy(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, defaultSession())
	plain := startProxy(t, Config{}, defaultSession())
	cases := []struct {
		p       *proxy
		sslmode string
		want    string
	}{
		{withTLS, "require", "t"},
		{plain, "prefer", "f"},
		{plain, "require", "error"},
	}
	for _, c := range cases {
		// The server-side ssl flag is the proxy's upstream link; psql's own view comes from \conninfo.
		out, err := exec.Command("psql", "-X", "-At", "-c", `\conninfo`, c.p.dsn("postgres", "sslmode="+c.sslmode)).CombinedOutput()
		got := "f"
		switch {
		case err != nil:
			got = "error"
		case strings.Contains(string(out), "SSL connection"):
			got = "t"
		}
		if got != c.want {
			t.Errorf("sslmode=%s: got %s, want %s: %s", c.sslmode, got, c.want, out)
		}
	}
}

// funcHook refuses FunctionCall messages when refuse is set and counts those it sees.
type funcHook struct {
	PassThrough
	refuse atomic.Bool
	mu     sync.Mutex
	calls  int
}

func (h *funcHook) Statement(_ context.Context, s *Statement) Verdict {
	if s.Kind != KindFunctionCall {
		return Verdict{}
	}
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	if h.refuse.Load() {
		return Verdict{Action: Refuse, Error: &pgproto3.ErrorResponse{Message: "function calls are not allowed"}}
	}
	return Verdict{}
}

// TestFunctionCall: psql's \lo_import and \lo_export use the FunctionCall message (libpq's PQfn);
// a large object round-trips through the proxy, and a hook can refuse function calls.
func TestFunctionCall(t *testing.T) {
	h := &funcHook{}
	sess := defaultSession()
	sess.Hook = h
	p := startProxy(t, Config{}, sess)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	data := bytes.Repeat([]byte("large object \x00\x01\xff "), 5000)
	os.WriteFile(in, data, 0o600)
	out := filepath.Join(dir, "out.bin")
	script := tempFile(t, "lo.sql", `\lo_import `+in+`
SELECT lo_export(:LASTOID, '/dev/null') IS NOT NULL AS server_side;
\lo_export :LASTOID `+out+`
\lo_unlink :LASTOID
`)
	res, err := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", script, p.dsn("postgres")).CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, res)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatalf("large object came back with %d bytes, want %d", len(got), len(data))
	}
	h.mu.Lock()
	calls := h.calls
	h.mu.Unlock()
	if calls < 4 {
		t.Fatalf("hook saw %d function calls", calls)
	}
	h.refuse.Store(true)
	res, err = exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", `\lo_import `+in, p.dsn("postgres")).CombinedOutput()
	if err == nil || !strings.Contains(string(res), "function calls are not allowed") {
		t.Fatalf("refused function call: %v\n%s", err, res)
	}
}

// TestVerifyFullWithSystemRoots: verify-full without a CA file checks the server against the
// system's roots, as http targets and libpq's sslrootcert=system do (it used to refuse every
// connection for want of a CA file, while the policy's default mode is verify-full). The
// system's roots do not hold the test server's CA, so the check must fail on its authority.
func TestVerifyFullWithSystemRoots(t *testing.T) {
	cfg, err := upstreamTLS(Session{TLS: TLSVerifyFull}, "db.example")
	if err != nil || cfg == nil || cfg.RootCAs != nil || cfg.InsecureSkipVerify || cfg.ServerName != "db.example" {
		t.Fatalf("upstreamTLS = %+v, %v; want the system's roots for db.example", cfg, err)
	}
	if _, err := upstreamTLS(Session{TLS: TLSVerifyCA}, "db.example"); err == nil {
		t.Fatal("verify-ca without a CA file was accepted")
	}
	sess := defaultSession()
	sess.TLS = TLSVerifyFull
	p := startProxy(t, Config{}, sess)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, p.dsn("postgres", "password=client-secret-ignored"))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a server whose CA is not among the system's roots")
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "08006" || !strings.Contains(pe.Message, "unknown authority") {
		t.Fatalf("got %v, want 08006 naming the unknown authority", err)
	}
}
