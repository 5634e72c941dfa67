package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawStartup connects to the proxy and completes startup by hand, returning the connection ready for
// queries.
func rawStartup(t *testing.T, addr string, params map[string]string) (net.Conn, *pgproto3.Frontend) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	if params == nil {
		params = map[string]string{"user": "agent", "database": "postgres"}
	}
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("startup: %v", err)
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			return c, fe
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup error: %s %s", m.Code, m.Message)
		}
	}
}

// expectError reads until an ErrorResponse and returns its code; then the connection must close.
func expectFatal(t *testing.T, c net.Conn) string {
	t.Helper()
	fe := pgproto3.NewFrontend(c, c)
	var code string
	for {
		m, err := fe.Receive()
		if err != nil {
			if code == "" {
				t.Fatalf("connection ended without an ErrorResponse: %v", err)
			}
			return code
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			code = e.Code
		}
	}
}

func msgBytes(typ byte, body ...byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

// TestBadClientMessages: every kind of bad input after startup gets an ErrorResponse with SQLSTATE
// 08P01 and ends only that session; nothing leaks and the proxy keeps serving.
func TestBadClientMessages(t *testing.T) {
	leakCheck(t)
	p := startProxy(t, Config{MaxMessageSize: 4096}, defaultSession())
	cases := []struct {
		name  string
		input []byte
	}{
		{"oversized", msgBytes('Q', append(bytes.Repeat([]byte("x"), 5000), 0)...)},
		{"oversized header only", []byte{'Q', 0x7f, 0, 0, 0}},
		{"length below 4", []byte{'Q', 0, 0, 0, 2}},
		{"negative length", []byte{'Q', 0xff, 0xff, 0xff, 0xff}},
		{"unknown type", msgBytes('z', 1, 2, 3)},
		{"startup message again", append([]byte{0, 0, 0, 8}, 0, 3, 0, 0)},
		{"query without terminator", msgBytes('Q', 'S', 'E', 'L')},
		{"query with trailing bytes", msgBytes('Q', 'x', 0, 'y')},
		{"parse truncated oids", msgBytes('P', 0, 'S', 0, 0, 5, 0, 0)},
		{"bind param beyond message", msgBytes('B', 0, 0, 0, 0, 0, 1, 0, 0, 1, 0)},
		{"bind negative param length", msgBytes('B', 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf0, 0, 0)},
		{"describe bad kind", msgBytes('D', 'X', 0)},
		{"close bad kind", msgBytes('C', 'Q', 0)},
		{"execute short", msgBytes('E', 0, 0)},
		{"function call malformed", msgBytes('F', 0, 0, 0, 1)},
		{"password message after startup", msgBytes('p', 's', 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := rawStartup(t, p.addr, nil)
			if _, err := c.Write(tc.input); err != nil {
				t.Fatal(err)
			}
			if code := expectFatal(t, c); code != "08P01" {
				t.Fatalf("code %s, want 08P01", code)
			}
		})
	}
	// The proxy still serves, and every session is gone.
	conn, err := pgconn.Connect(context.Background(), p.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	waitFor(t, func() bool { return p.srv.Sessions() == 0 })
}

// TestBadStartup covers the startup phase: timeouts, bad lengths, unsupported versions, SSL and GSS
// negotiation, replication.
func TestBadStartup(t *testing.T) {
	leakCheck(t)
	p := startProxy(t, Config{StartupTimeout: 300 * time.Millisecond}, defaultSession())
	t.Run("never completes", func(t *testing.T) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{0, 0, 0, 40, 0, 3}) // a startup packet cut short
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		if err != nil || time.Since(start) > 3*time.Second {
			t.Fatalf("connection not closed after the startup timeout: %v after %v", err, time.Since(start))
		}
	})
	cases := []struct {
		name  string
		input []byte
		code  string
	}{
		{"length too small", []byte{0, 0, 0, 4}, "08P01"},
		{"length too large", []byte{0, 1, 0, 0}, "08P01"},
		{"protocol 2", []byte{0, 0, 0, 8, 0, 2, 0, 0}, "0A000"},
		{"protocol 4", []byte{0, 0, 0, 8, 0, 4, 0, 0}, "0A000"},
		{"unterminated parameters", []byte{0, 0, 0, 12, 0, 3, 0, 0, 'u', 's', 'e', 'r'}, "08P01"},
		{"replication", startupBytes(map[string]string{"user": "a", "replication": "database"}), "42501"},
		// Must hold: a startup parameter is a server setting no statement shows the policy; role=
		// was a SET ROLE the policy never saw, search_path= changed what names resolve to.
		{"role", startupBytes(map[string]string{"user": "a", "role": "app_owner"}), "42501"},
		{"search_path", startupBytes(map[string]string{"user": "a", "search_path": "evil, pg_catalog"}), "42501"},
		{"preload", startupBytes(map[string]string{"user": "a", "session_preload_libraries": "x"}), "42501"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(tc.input)
			if code := expectFatal(t, c); code != tc.code {
				t.Fatalf("code %s, want %s", code, tc.code)
			}
		})
	}
	t.Run("settings drivers send", func(t *testing.T) {
		// What JDBC, npgsql and libpq send at startup is passed.
		c, fe := rawStartup(t, p.addr, map[string]string{"user": "a", "database": "postgres", "application_name": "jdbc",
			"client_encoding": "UTF8", "DateStyle": "ISO", "TimeZone": "UTC", "extra_float_digits": "2", "options": "-c role=x"})
		defer c.Close()
		fe.Send(&pgproto3.Query{String: "SHOW DateStyle"})
		fe.Flush()
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if r, ok := m.(*pgproto3.DataRow); ok && !strings.HasPrefix(string(r.Values[0]), "ISO") {
				t.Errorf("DateStyle %q", r.Values[0])
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
	})
	t.Run("gss then ssl then startup", func(t *testing.T) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		for _, code := range []uint32{gssEncRequestCode, sslRequestCode} {
			b := binary.BigEndian.AppendUint32([]byte{0, 0, 0, 8}, code)
			c.Write(b)
			ans := make([]byte, 1)
			if _, err := io.ReadFull(c, ans); err != nil || ans[0] != 'N' {
				t.Fatalf("answer to %d: %q %v", code, ans, err)
			}
		}
		c.Write(startupBytes(map[string]string{"user": "a", "database": "postgres"}))
		fe := pgproto3.NewFrontend(c, c)
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
	})
	t.Run("cancel with unknown key", func(t *testing.T) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, _ := (&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}).Encode(nil)
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.ReadAll(c); err != nil || len(n) != 0 {
			t.Fatalf("cancel got %q %v, want a silent close", n, err)
		}
	})
}

func startupBytes(params map[string]string) []byte {
	b, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}).Encode(nil)
	return b
}

// TestDisconnectMidCopy: a client that goes away in the middle of COPY FROM STDIN leaves no backend,
// goroutine or descriptor behind.
func TestDisconnectMidCopy(t *testing.T) {
	leakCheck(t)
	p := startProxy(t, Config{}, defaultSession())
	db.Exec(t, "DROP TABLE IF EXISTS midcopy_t; CREATE TABLE midcopy_t (x text)")
	c, fe := rawStartup(t, p.addr, map[string]string{"user": "agent", "database": "postgres", "application_name": "midcopy"})
	fe.Send(&pgproto3.Query{String: "COPY midcopy_t FROM STDIN"})
	fe.Flush()
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.CopyInResponse); ok {
			break
		}
	}
	fe.Send(&pgproto3.CopyData{Data: []byte("row 1\nrow 2\n")})
	fe.Flush()
	c.Close()
	waitFor(t, func() bool { return p.srv.Sessions() == 0 })
	waitFor(t, func() bool {
		conn, err := pgconn.Connect(context.Background(), db.DSN("postgres", "postgres"))
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		r, err := conn.Exec(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'midcopy'").ReadAll()
		return err == nil && string(r[0].Rows[0][0]) == "0"
	})
	if err := db.ExecContext(context.Background(), "DROP TABLE midcopy_t"); err != nil {
		t.Fatal(err)
	}
}

// TestRefuseStartup: the daemon's polite refusal reaches psql with its SQLSTATE, message and hint,
// also when psql first asks for TLS.
func TestRefuseStartup(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- RefuseStartup(c, "28000", "not logged in", "run `enforcer login`")
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	out, err := exec.Command("psql", "-X", "-c", "select 1", "host="+host+" port="+port+" user=x sslmode=prefer").CombinedOutput()
	if err == nil {
		t.Fatal("psql succeeded against RefuseStartup")
	}
	if !strings.Contains(string(out), "not logged in") || !strings.Contains(string(out), "enforcer login") {
		t.Fatalf("psql output: %s", out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPasswordNeverReachesClient records every byte the proxy sends to psql during a full script,
// errors included, and looks for the upstream password.
func TestPasswordNeverReachesClient(t *testing.T) {
	p := startProxy(t, Config{}, defaultSession())
	p.mu.Lock()
	p.record = true
	p.mu.Unlock()
	script := tempFile(t, "s.sql", psqlScript+"SELECT * FROM pg_stat_activity;\nSELECT current_setting('password_encryption');\nSELECT 'x' FROM nope;\n")
	out, _ := exec.Command("psql", "-X", "-f", script, p.dsn("postgres")).CombinedOutput()
	if !strings.Contains(string(out), "psql_t") {
		t.Fatalf("psql did not run: %s", out)
	}
	p.ln.Close()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sent.Len() < 1000 {
		t.Fatalf("recorded only %d bytes", p.sent.Len())
	}
	if bytes.Contains(p.sent.Bytes(), []byte(db.Password)) {
		t.Fatal("the upstream password reached the client")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeContextCancel: cancelling Serve's context (daemon shutdown) ends a live session.
func TestServeContextCancel(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := NewServer(Config{})
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		done <- srv.Serve(ctx, c, defaultSession())
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	conn, err := pgconn.Connect(context.Background(), "host="+host+" port="+port+" user=a dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	if _, err := conn.Exec(context.Background(), "SELECT 1").ReadAll(); err == nil {
		t.Fatal("session still works after shutdown")
	}
}

// fakeUpstream is a PostgreSQL server stand-in on loopback: it accepts any startup without a
// password and answers each Query with answer(query), raw bytes. A real server cannot be made to
// send malformed messages; this one stands for a broken or hostile one.
func fakeUpstream(t *testing.T, answer func(query string) []byte) string {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		be := pgproto3.NewBackend(c, c)
		if _, err := be.ReceiveStartupMessage(); err != nil {
			return
		}
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		for be.Flush() == nil {
			m, err := be.Receive()
			if err != nil {
				return
			}
			if q, ok := m.(*pgproto3.Query); ok {
				if _, err := c.Write(answer(q.String)); err != nil {
					return
				}
			}
		}
	})
}

// TestBadServerMessages: a malformed message from the upstream server ends that session with
// SQLSTATE 08P01 for the client, and the proxy keeps serving the next one. (FuzzSession found the
// first case: an empty CommandComplete crashed the daemon.)
func TestBadServerMessages(t *testing.T) {
	leakCheck(t)
	ready := msgBytes('Z', 'I')
	good := append(append(msgBytes('T', 0, 0), msgBytes('C', append([]byte("SELECT 0"), 0)...)...), ready...)
	cases := map[string][]byte{
		"empty CommandComplete":        msgBytes('C'),
		"unterminated CommandComplete": msgBytes('C', 'S', 'E', 'L'),
		"DataRow beyond its message":   append(msgBytes('T', 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0), msgBytes('D', 0, 1, 0, 0, 0, 9, '1')...),
		"unterminated ErrorResponse":   msgBytes('E', 'S', 'E', 'R'),
		"unterminated NoticeResponse":  msgBytes('N', 'M', 'h'),
	}
	upstream := fakeUpstream(t, func(q string) []byte {
		if bad, ok := cases[q]; ok {
			return bad
		}
		return good
	})
	p := startProxy(t, Config{}, Session{ID: "test", Upstream: upstream, User: "agent", Hook: observeHook{}})
	for name := range cases {
		t.Run(name, func(t *testing.T) {
			c, fe := rawStartup(t, p.addr, nil)
			fe.Send(&pgproto3.Query{String: name})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			if code := expectFatal(t, c); code != "08P01" {
				t.Fatalf("code %s, want 08P01", code)
			}
		})
	}
	c, fe := rawStartup(t, p.addr, nil)
	fe.Send(&pgproto3.Query{String: "SELECT 0"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("the proxy no longer serves: %v", err)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	c.Close()
	waitFor(t, func() bool { return p.srv.Sessions() == 0 })
}

// TestMessageBudget: large messages that would take one owner past its share of the proxy's
// budget end the session that sent (or asked for) the one over it, with SQLSTATE 53200; another
// owner's large messages pass meanwhile, every session goes on, and the budget is whole again
// once they end.
func TestMessageBudget(t *testing.T) {
	leakCheck(t)
	sessA, sessB := defaultSession(), defaultSession()
	sessA.Owner, sessB.Owner = "uid 1000", "uid 1001"
	p := startProxy(t, Config{MaxBufferedMessages: 8 << 20}, sessA) // 6 MiB a owner
	q := startProxyOn(t, p.srv, sessB)
	ctx := context.Background()
	other, err := pgconn.Connect(ctx, p.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	inUse := func() (all, a int64) { return p.srv.messages.InUse(sessA.Owner) }

	// A client holds about 4 MiB of its owner's share (the reader's buffer doubles as bytes
	// come): a Query it has sent 3 MiB of.
	holder, _ := rawStartup(t, p.addr, nil)
	big := msgBytes('Q', append(bytes.Repeat([]byte("x"), 8<<20), 0)...)
	if _, err := holder.Write(big[:3<<20]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, a := inUse(); return a >= 3<<20 })

	t.Run("a client's message", func(t *testing.T) {
		c, _ := rawStartup(t, p.addr, nil)
		if _, err := c.Write(msgBytes('Q', append([]byte("select '"+strings.Repeat("y", 3<<20)+"'"), 0)...)); err != nil {
			t.Fatal(err)
		}
		if code := expectFatal(t, c); code != "53200" {
			t.Fatalf("code %s, want 53200", code)
		}
	})
	t.Run("a server's result", func(t *testing.T) {
		c, err := pgconn.Connect(ctx, p.dsn("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "select repeat('z', 3 << 20)").ReadAll()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "53200" || pgErr.Hint == "" {
			t.Fatalf("a result over the budget: %v, want 53200 with a hint", err)
		}
	})
	t.Run("another owner's result", func(t *testing.T) {
		c, err := pgconn.Connect(ctx, q.dsn("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		res, err := c.Exec(ctx, "select repeat('z', 3 << 20)").ReadAll()
		if err != nil || len(res[0].Rows[0][0]) != 3<<20 {
			t.Fatalf("another owner's large result: %v", err)
		}
	})
	// The other session is served, and so are large messages once the holder is gone.
	if _, err := other.Exec(ctx, "select 1").ReadAll(); err != nil {
		t.Fatalf("another session: %v", err)
	}
	holder.Close()
	waitFor(t, func() bool { all, _ := inUse(); return all == 0 })
	res, err := other.Exec(ctx, "select repeat('z', 3 << 20)").ReadAll()
	if err != nil || len(res[0].Rows[0][0]) != 3<<20 {
		t.Fatalf("a large result once the budget is free: %v", err)
	}
	other.Close(ctx)
	waitFor(t, func() bool { all, _ := inUse(); return p.srv.Sessions() == 0 && all == 0 })
}
