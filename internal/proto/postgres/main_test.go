package postgres

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// db is the PostgreSQL server every test in the package shares (one start, ~1.5 s). It starts on
// first use (ensureDB), so fuzz workers, which run TestMain too, do not each start one.
var (
	db     *pgtest.Server
	dbOnce sync.Once
)

func ensureDB() *pgtest.Server {
	dbOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		s, err := pgtest.StartServer(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "start PostgreSQL:", err)
			os.Exit(1)
		}
		db = s
	})
	return db
}

func TestMain(m *testing.M) {
	code := m.Run()
	if db != nil {
		if err := db.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop PostgreSQL:", err)
		}
	}
	os.Exit(code)
}

// proxy is a Server listening on loopback for a test, with every accepted connection served with the
// same Session (the daemon's redirect is not part of this package).
type proxy struct {
	srv  *Server
	ln   net.Listener
	addr string
	sess Session
	wg   sync.WaitGroup

	mu     sync.Mutex
	sent   bytes.Buffer // every byte the proxy wrote to clients, when recording
	record bool
	errs   []error
}

func defaultSession() Session {
	ensureDB()
	return Session{ID: "test", Upstream: db.Addr.String(), User: pgtest.SuperUser, Password: db.Password}
}

func startProxy(t testing.TB, cfg Config, sess Session) *proxy {
	t.Helper()
	return startProxyOn(t, NewServer(cfg), sess)
}

// startProxyOn is startProxy with a Server another proxy may share: its budget, its sessions.
func startProxyOn(t testing.TB, srv *Server, sess Session) *proxy {
	t.Helper()
	// Plain TCP, as the daemon's listener (DESIGN: Go listens with MPTCP by default, and a plain
	// TCP client of an MPTCP listener pays for the fallback on every segment).
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{srv: srv, ln: ln, addr: ln.Addr().String(), sess: sess}
	ctx, cancel := context.WithCancel(context.Background())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				var conn net.Conn = c
				p.mu.Lock()
				if p.record {
					conn = &recordingConn{Conn: c, p: p}
				}
				p.mu.Unlock()
				if err := p.srv.Serve(ctx, conn, p.sess); err != nil {
					p.mu.Lock()
					p.errs = append(p.errs, err)
					p.mu.Unlock()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		cancel()
		p.wg.Wait()
	})
	return p
}

// serveLoopback listens on a loopback port until the test ends and runs handle in a goroutine of
// its own for each connection; it returns the address.
func serveLoopback(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

// dsn returns a libpq connection string to the proxy, with no password.
func (p *proxy) dsn(dbname string, extra ...string) string {
	host, port, _ := net.SplitHostPort(p.addr)
	return strings.Join(append([]string{"host=" + host, "port=" + port, "user=agent", "dbname=" + dbname, "sslmode=disable"}, extra...), " ")
}

type recordingConn struct {
	net.Conn
	p *proxy
}

func (r *recordingConn) Write(b []byte) (int, error) {
	r.p.mu.Lock()
	r.p.sent.Write(b)
	r.p.mu.Unlock()
	return r.Conn.Write(b)
}

// leakCheck fails the test if goroutines or file descriptors are left over when it ends (after the
// proxy's own cleanup, which is registered later and so runs first).
func leakCheck(t *testing.T) {
	ensureDB()                     // its process watcher is not a leak
	hangups.once.Do(hangups.start) // nor the hang-up watch, which lives as long as the process
	g0 := runtime.NumGoroutine()
	fd0 := countFDs(t)
	w0 := hangups.watching()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			g, fd, w := runtime.NumGoroutine(), countFDs(t), hangups.watching()
			if g <= g0 && fd <= fd0 && w <= w0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				n := runtime.Stack(buf, true)
				t.Errorf("leak: goroutines %d → %d, fds %d → %d, hang-up watches %d → %d\n%s", g0, g, fd0, fd, w0, w, buf[:n])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// watching is how many sockets the hang-up watch has.
func (h *hangupWatch) watching() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byID)
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func tempFile(t testing.TB, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
