package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fuzzHook refuses and rewrites on markers, so the fuzzer reaches the refusal and rewrite paths.
type fuzzHook struct{}

func (fuzzHook) Statement(_ context.Context, s *Statement) Verdict {
	switch {
	case strings.Contains(s.SQL, "forbidden"):
		return Verdict{Action: Refuse}
	case strings.Contains(s.SQL, "rewrite"):
		return Verdict{Action: Rewrite, SQL: "SELECT 1"}
	}
	return Verdict{Observe: true}
}

func (fuzzHook) Result(context.Context, *Result) error { return nil }

// sinkConn is a net.Conn that swallows writes; the client side of a fuzzed session.
type sinkConn struct{ net.Conn }

func (sinkConn) Write(b []byte) (int, error) { return len(b), nil }

// FuzzClientStream drives the client-facing parser and statement tracking with arbitrary bytes after
// startup. The server side is a sink: the fuzzer checks that no input panics, hangs or grows without
// bound, and that bad input ends in an error rather than being forwarded half-parsed.
func FuzzClientStream(f *testing.F) {
	f.Add(msgBytes('Q', append([]byte("SELECT 1"), 0)...))
	f.Add(append(msgBytes('P', append([]byte("s\x00SELECT forbidden\x00"), 0, 0)...), msgBytes('S')...))
	f.Fuzz(func(t *testing.T, in []byte) {
		// Go's fuzzer does not notice an input that never returns (its workers just stop), so the
		// session runs under a watchdog.
		type result struct {
			up  []byte
			err error
		}
		done := make(chan result, 1)
		go func() {
			up, err := replayClient(in, fuzzHook{}, 1<<16)
			done <- result{up, err}
		}()
		var res result
		select {
		case res = <-done:
		case <-time.After(5 * time.Second):
			stacks := make([]byte, 1<<20)
			t.Fatalf("the client loop hung on %q:\n%s", in, stacks[:runtime.Stack(stacks, true)])
		}
		up, err := res.up, res.err
		if err == nil {
			t.Fatal("clientLoop returned nil without Terminate")
		}
		// Whatever was forwarded must be a sequence of whole messages.
		b := up
		for len(b) > 0 {
			if len(b) < 5 {
				t.Fatalf("forwarded a truncated header: %x", b)
			}
			l := int(uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4]))
			if l < 4 || l+1 > len(b) {
				t.Fatalf("forwarded a truncated message: type %q length %d, %d bytes left", b[0], l, len(b))
			}
			b = b[l+1:]
		}
	})
}

// replayClient runs the client side of a session over in, with a sink for a client and a buffer for
// the server, and returns what would have been sent to the server.
func replayClient(in []byte, h Hook, maxMessage int) ([]byte, error) {
	c := &conn{
		srv:    NewServer(Config{MaxMessageSize: maxMessage}),
		hook:   h,
		client: sinkConn{},
	}
	c.ctx, c.stop = context.WithCancel(context.Background())
	defer c.stop()
	c.stmtCtx, c.stmtCancel = context.WithCancel(c.ctx)
	var up bytes.Buffer
	c.cr = newMsgReader(bytes.NewReader(in), c.srv.cfg.MaxMessageSize, c.flushUpstream)
	c.cr.known = frontendTypes
	c.uw.w = &up
	err := c.clientLoop()
	return up.Bytes(), err
}

// FuzzStartup drives the startup-phase parser.
func FuzzStartup(f *testing.F) {
	f.Add(startupBytes(map[string]string{"user": "u", "database": "d"}))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Fuzz(func(t *testing.T, in []byte) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(in), io.Discard}
		m, err := readStartupMessage(rw)
		if err == nil && m == nil {
			t.Fatal("nil message without error")
		}
	})
}

// TestRealTrafficReplay records what real clients (psql with the test script, pgbench in every
// mode) send to the proxy after startup, and replays each stream through the client-side parser with
// the pass-through hook: the server must receive exactly the client's bytes. With
// ENFORCER_CAPTURE_SEEDS=1 it also writes the streams as the fuzz seed corpus under testdata/fuzz.
func TestRealTrafficReplay(t *testing.T) {
	ensureDB()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := NewServer(Config{})
	streams := make(chan []byte, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				rc := &capturingConn{Conn: c}
				srv.Serve(context.Background(), rc, defaultSession())
				streams <- rc.in.Bytes()
			}()
		}
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	dsn := "host=" + host + " port=" + port + " user=agent dbname=postgres sslmode=disable"
	script := tempFile(t, "s.sql", psqlScript)
	db.Exec(t, "DROP DATABASE IF EXISTS replay_t")
	db.Exec(t, "CREATE DATABASE replay_t")
	bdsn := strings.Replace(dsn, "dbname=postgres", "dbname=replay_t", 1)
	runs := [][]string{
		{"psql", "-X", "-f", script, dsn},
		{"pgbench", "-i", "-s", "1", "-q", "-I", "dtg", bdsn},
		{"pgbench", "-n", "-M", "simple", "-t", "3", bdsn},
		{"pgbench", "-n", "-M", "extended", "-t", "3", bdsn},
		{"pgbench", "-n", "-M", "prepared", "-t", "3", bdsn},
	}
	for _, r := range runs {
		if out, err := exec.Command(r[0], r[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", r, err, out)
		}
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzClientStream")
	write := os.Getenv("ENFORCER_CAPTURE_SEEDS") == "1"
	if write {
		os.MkdirAll(dir, 0o755)
	}
	n := 0
	timeout := time.After(10 * time.Second)
	for n < len(runs) {
		var s []byte
		select {
		case s = <-streams:
		case <-timeout:
			t.Fatalf("captured %d sessions, want %d", n, len(runs))
		}
		s = stripStartup(s)
		if len(s) == 0 {
			continue // a connection that ended in startup
		}
		up, err := replayClient(s, PassThrough{}, defaultMaxMessage)
		if err != nil && !errors.Is(err, errTerminate) {
			t.Fatalf("replay of session %d: %v", n, err)
		}
		if !bytes.Equal(up, s) {
			t.Fatalf("session %d: pass-through forwarded %d bytes of %d, not the same", n, len(up), len(s))
		}
		if write {
			if len(s) > 16<<10 {
				s = s[:16<<10]
			}
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("real-%d", n)), []byte(content), 0o644)
		}
		n++
	}
}

// stripStartup removes the startup-phase messages (SSLRequest, StartupMessage) from a capture.
func stripStartup(b []byte) []byte {
	for len(b) >= 8 {
		l := int(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
		code := uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])
		if l < 8 || l > len(b) {
			return nil
		}
		b = b[l:]
		if code == pgproto3.ProtocolVersion30 {
			return b
		}
	}
	return nil
}

type capturingConn struct {
	net.Conn
	in bytes.Buffer
}

func (c *capturingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Write(b[:n])
	return n, err
}
