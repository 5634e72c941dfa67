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
	"slices"
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
	// COPY FROM STDIN, with a Sync and a Query sent during its data.
	f.Add(slices.Concat(msgBytes('Q', append([]byte("COPY t FROM STDIN"), 0)...), msgBytes('S'), msgBytes('d', []byte("1\n")...),
		msgBytes('Q', append([]byte("SELECT 1"), 0)...), msgBytes('c'), msgBytes('S')))
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
		if err := wholeMessages(up); err != nil {
			t.Fatalf("forwarded %v", err)
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
	// Where the client side waits for the server's answers (a COPY that may run), the server
	// has answered everything sent so far, starting no COPY.
	c.serverTurn = func(<-chan struct{}) error {
		for c.ops.front() != nil {
			c.ops.pop()
		}
		c.releaseDone()
		return nil
	}
	err := c.clientLoop()
	return up.Bytes(), err
}

// FuzzStartup drives the startup-phase parser.
func FuzzStartup(f *testing.F) {
	f.Add(startupBytes(map[string]string{"user": "u", "database": "d"}))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	for _, v := range []uint32{pgproto3.ProtocolVersion32, 3<<16 | 0xffff} {
		b, _ := (&pgproto3.StartupMessage{ProtocolVersion: v, Parameters: map[string]string{"user": "u", "_pq_.x": "1"}}).Encode(nil)
		f.Add(b)
	}
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
	srv := NewServer(Config{})
	streams := make(chan []byte, 100)
	addr := serveLoopback(t, func(c net.Conn) {
		rc := &capturingConn{Conn: c}
		srv.Serve(context.Background(), rc, defaultSession())
		streams <- rc.in.Bytes()
	})
	host, port, _ := net.SplitHostPort(addr)
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

// sessionHook observes everything and remembers the statements it judged, so results can be
// checked against them.
type sessionHook struct {
	fuzzHook
	judged map[uint64]string // Statement.ID → SQL
	bad    []string
}

func (h *sessionHook) Statement(ctx context.Context, s *Statement) Verdict {
	h.judged[s.ID] = s.SQL
	return h.fuzzHook.Statement(ctx, s)
}

func (h *sessionHook) Result(_ context.Context, r *Result) error {
	if s := r.Statement; s != nil {
		if sql, ok := h.judged[s.ID]; !ok || sql != s.SQL {
			h.bad = append(h.bad, fmt.Sprintf("a result of statement %d %q, judged as %q (%v)", s.ID, s.SQL, sql, ok))
		}
	}
	return nil
}

// FuzzSession drives both sides of one session with arbitrary bytes, interleaved as the two relay
// goroutines could see them: the input is a series of frames (a byte whose low bit says client
// or server, two bytes of length, the bytes), each handed to its side whole. The server is
// trusted less than it seems (a compromised database must not crash the daemon), and the
// interleaving is what exercises the reference counts that let portals, prepared statements and
// Statements be reused. After every frame the counts must match the holders exactly, and every
// result must come with a Statement the hook judged.
func FuzzSession(f *testing.F) {
	enc := func(side byte, msgs ...any) []byte {
		var b []byte
		for _, m := range msgs {
			switch m := m.(type) {
			case pgproto3.FrontendMessage:
				b, _ = m.Encode(b)
			case pgproto3.BackendMessage:
				b, _ = m.Encode(b)
			}
		}
		return append([]byte{side, byte(len(b) >> 8), byte(len(b))}, b...)
	}
	row := &pgproto3.DataRow{Values: [][]byte{[]byte("1")}}
	tag := &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}
	ready := &pgproto3.ReadyForQuery{TxStatus: 'I'}
	// pgbench -M extended, answered late: the next transaction is sent before the first's rows.
	f.Add(slices.Concat(
		enc(0, &pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		enc(0, &pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		enc(1, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 23}}}, row, tag, ready),
		enc(1, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, row, tag, ready)))
	// Named statement and portal, a suspended portal executed twice, closes, an error.
	f.Add(slices.Concat(
		enc(0, &pgproto3.Parse{Name: "s", Query: "SELECT g FROM generate_series(1, 3) g"}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s"},
			&pgproto3.Execute{Portal: "p", MaxRows: 1}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Close{ObjectType: 'P', Name: "p"},
			&pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.Sync{}),
		enc(1, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, row, &pgproto3.PortalSuspended{}),
		enc(1, row, row, tag, &pgproto3.CloseComplete{}, &pgproto3.CloseComplete{}, ready),
		enc(0, &pgproto3.Query{String: "SELECT 1; SELECT forbidden"}, &pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		enc(1, &pgproto3.RowDescription{}, row, tag, ready, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
			&pgproto3.ErrorResponse{Severity: "ERROR", Code: "22012", Message: "division by zero"}, ready)))
	// COPY out and in, with a notice, a notification and a parameter change between.
	f.Add(slices.Concat(
		enc(0, &pgproto3.Query{String: "COPY t TO STDOUT"}),
		enc(1, &pgproto3.CopyOutResponse{ColumnFormatCodes: []uint16{0}}, &pgproto3.CopyData{Data: []byte("1\ta@example.com\n")}, &pgproto3.CopyDone{},
			&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, ready),
		enc(0, &pgproto3.Query{String: "COPY t FROM STDIN"}),
		enc(1, &pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}, &pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "n"},
			&pgproto3.NotificationResponse{PID: 1, Channel: "c", Payload: "p"}, &pgproto3.ParameterStatus{Name: "TimeZone", Value: "UTC"}),
		enc(0, &pgproto3.CopyData{Data: []byte("2\tb@example.com\n")}, &pgproto3.CopyDone{}),
		enc(1, &pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, ready)))
	// COPY in with a Sync and a Query sent during its data; an extended COPY as libpq runs it (a
	// Sync after Execute, another after CopyDone); one whose data and end come before the server
	// started it, as pgx sends them, and a Sync after.
	copyIn := &pgproto3.CopyInResponse{ColumnFormatCodes: []uint16{0}}
	f.Add(slices.Concat(
		enc(0, &pgproto3.Query{String: "COPY t FROM STDIN"}),
		enc(1, copyIn),
		enc(0, &pgproto3.Sync{}, &pgproto3.CopyData{Data: []byte("3\tc@example.com\n")}, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.CopyDone{}),
		enc(1, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "COPY from stdin failed"}, ready),
		enc(0, &pgproto3.Parse{Query: "COPY t FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		enc(1, &pgproto3.ParseComplete{}, &pgproto3.BindComplete{}, &pgproto3.NoData{}, copyIn),
		enc(0, &pgproto3.CopyData{Data: []byte("4\td@example.com\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{}),
		enc(1, &pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}),
		enc(1, ready),
		enc(0, &pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("5\te@example.com\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{}),
		enc(1, copyIn, &pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}, ready),
		enc(1, ready)))
	f.Fuzz(func(t *testing.T, in []byte) {
		done := make(chan struct{})
		var h *sessionHook
		var err error
		var up, down bytes.Buffer
		go func() {
			defer close(done)
			h, err = replaySession(in, &up, &down)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			stacks := make([]byte, 1<<20)
			t.Fatalf("the session hung on %q:\n%s", in, stacks[:runtime.Stack(stacks, true)])
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range h.bad {
			t.Error(b)
		}
		for name, b := range map[string][]byte{"to the server": up.Bytes(), "to the client": down.Bytes()} {
			if err := wholeMessages(b); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})
}

// replaySession runs the frames of in (see FuzzSession) through one conn until they end or a
// side fails, checking the reference counts after each frame. up and down receive what would
// have gone to the server and to the client. The error is a reference count that is wrong.
func replaySession(in []byte, up, down io.Writer) (*sessionHook, error) {
	h := &sessionHook{judged: map[uint64]string{}}
	c := newBenchConn(h)
	defer c.stop()
	c.uw.w, c.cw.w = up, down
	c.client = sinkConn{} // where the proxy tells the client why it ends the session
	type frame struct {
		side byte
		b    []byte
	}
	var frames []frame
	for len(in) >= 3 {
		side, n := in[0]&1, int(in[1])<<8|int(in[2])
		in = in[3:]
		n = min(n, len(in))
		frames = append(frames, frame{side, in[:n]})
		in = in[n:]
	}
	serverFrame := func(b []byte) error {
		c.sr = newMsgReader(bytes.NewReader(b), maxServerMessage, c.flushClientLocked)
		return replayMessages(c.sr, c.onServerMessage)
	}
	// Where the client side waits for the server side (a COPY that may run), the server's next
	// frames run until it wakes, as they would on the other goroutine meanwhile.
	c.serverTurn = func(wake <-chan struct{}) error {
		for {
			select {
			case <-wake:
				return nil
			default:
			}
			i := slices.IndexFunc(frames, func(f frame) bool { return f.side == 1 })
			if i < 0 {
				return errors.New("the server sent nothing more")
			}
			f := frames[i]
			frames = slices.Delete(frames, i, i+1)
			if err := serverFrame(f.b); err != nil {
				return err
			}
		}
	}
	for len(frames) > 0 {
		f := frames[0]
		frames = frames[1:]
		side := f.side
		var err error
		if side == 0 {
			c.cr = newMsgReader(bytes.NewReader(f.b), 1<<16, c.flushUpstream)
			c.cr.known = frontendTypes
			err = replayMessages(c.cr, c.onClientMessage)
		} else {
			err = serverFrame(f.b)
		}
		if err := c.checkRefs(); err != nil {
			return h, fmt.Errorf("after a %s frame: %w", [2]string{"client", "server"}[side], err)
		}
		if err != nil {
			break // the proxy ends the session here
		}
	}
	return h, nil
}

// replayMessages hands every message of r to handle; a reader that runs out between messages
// ends without error.
func replayMessages(r *msgReader, handle func(typ byte, msg []byte) error) error {
	for {
		typ, msg, err := r.next()
		if errors.Is(err, io.EOF) && r.start == r.end {
			return nil
		}
		if err != nil {
			return err
		}
		if err := handle(typ, msg); err != nil {
			return err
		}
	}
}

// checkRefs compares every reference count with the holders the conn has: table entries, portals
// (of their statement), and queued ops. Spares must be free and held by nothing.
func (c *conn) checkRefs() error {
	stmts, portals := map[*stmtInfo]int32{}, map[*portalInfo]int32{}
	var live []*portalInfo
	addPortal := func(p *portalInfo) {
		if _, seen := portals[p]; !seen {
			live = append(live, p)
		}
		portals[p]++
	}
	if s := c.stmts.unnamed; s != nil {
		stmts[s]++
	}
	for _, s := range c.stmts.named {
		stmts[s]++
	}
	if p := c.portals.unnamed; p != nil {
		addPortal(p)
	}
	for _, p := range c.portals.named {
		addPortal(p)
	}
	owned := map[*Statement]bool{}
	for i := c.ops.head; i < len(c.ops.ops); i++ {
		o := c.ops.ops[i]
		if o.stmt != nil {
			stmts[o.stmt]++
		}
		if o.portal != nil {
			addPortal(o.portal)
		}
		if o.ownSt {
			if owned[o.st] {
				return fmt.Errorf("two queued ops own Statement %d", o.st.ID)
			}
			owned[o.st] = true
		}
	}
	if len(c.ops.done) > 0 {
		return fmt.Errorf("%d popped ops still hold references", len(c.ops.done))
	}
	for _, p := range live {
		if p.stmt != nil {
			stmts[p.stmt]++
		}
	}
	for s, n := range stmts {
		if got := s.refs.Load(); got != n {
			return fmt.Errorf("prepared statement %q has %d references, %d holders", s.sql, got, n)
		}
	}
	for p, n := range portals {
		if got := p.refs.Load(); got != n {
			return fmt.Errorf("portal of %q has %d references, %d holders", p.stmtName, got, n)
		}
	}
	if s := c.spareStmt.Load(); s != nil && (stmts[s] > 0 || s.refs.Load() != 0) {
		return fmt.Errorf("the spare prepared statement %q is still held (%d references)", s.sql, s.refs.Load())
	}
	if p := c.sparePortal.Load(); p != nil && (portals[p] > 0 || p.refs.Load() != 0) {
		return fmt.Errorf("the spare portal is still held (%d references)", p.refs.Load())
	}
	if st := c.spareStatement.Load(); st != nil && owned[st] {
		return fmt.Errorf("the spare Statement %d is owned by a queued op", st.ID)
	}
	return nil
}

// wholeMessages reports whether b is a sequence of whole messages.
func wholeMessages(b []byte) error {
	for len(b) > 0 {
		if len(b) < 5 {
			return fmt.Errorf("a truncated header: %x", b)
		}
		l := int(uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4]))
		if l < 4 || l+1 > len(b) {
			return fmt.Errorf("a truncated message: type %q length %d, %d bytes left", b[0], l, len(b))
		}
		b = b[l+1:]
	}
	return nil
}
