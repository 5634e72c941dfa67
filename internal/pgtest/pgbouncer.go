package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Pgbouncer is a pgbouncer (Debian package) in session-pooling mode on a free loopback port in
// front of a Server: the reference proxy the benchmarks compare against.
type Pgbouncer struct {
	// DSN connects to pgbouncer as the given user (no password: clients are trusted on loopback;
	// pgbouncer itself logs in to the server with the user's password).
	DSN string
	PID int
}

// StartPgbouncer starts pgbouncer for database db as user (whose password pgtest knows), with TLS
// verify-full to the server when serverTLS is set. It stops with the test.
func StartPgbouncer(tb testing.TB, s *Server, db, user string, serverTLS bool) *Pgbouncer {
	tb.Helper()
	dir, err := os.MkdirTemp("", "enforcer-pgbouncer-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	uid, gid := postgresIDs(tb)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	tlsLines := ""
	if serverTLS {
		tlsLines = "server_tls_sslmode = verify-full\nserver_tls_ca_file = " + s.CAFile + "\n"
	}
	ini := fmt.Sprintf(`[databases]
%[1]s = host=%[2]s port=%[3]d dbname=%[1]s user=%[4]s password=%[5]s
[pgbouncer]
%[6]slisten_addr = 127.0.0.1
listen_port = %[7]d
unix_socket_dir =
auth_type = trust
auth_file = %[8]s/users.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = %[8]s/pgbouncer.log
pidfile = %[8]s/pgbouncer.pid
`, db, s.Addr.Addr(), s.Addr.Port(), user, s.PasswordOf(user), tlsLines, port, dir)
	files := map[string]string{"pgbouncer.ini": ini, "users.txt": strconv.Quote(user) + ` ""` + "\n"}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
		os.Chown(p, uid, gid)
	}
	os.Chown(dir, uid, gid)
	cmd := exec.Command("pgbouncer", filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			tb.Fatalf("pgbouncer did not start: %s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Pgbouncer{DSN: fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", port, user, db), PID: cmd.Process.Pid}
}

func postgresIDs(tb testing.TB) (int, int) {
	u, err := user.Lookup("postgres")
	if err != nil {
		tb.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}
