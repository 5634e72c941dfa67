package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// testHook refuses statements containing "forbidden", holds those containing "hold me" until its
// context ends, rewrites "rewrite me" to "SELECT 'rewritten'", masks cells equal to "secret" and
// "secret" in errors, notices and settings, and records what it saw.
type testHook struct {
	mu       sync.Mutex
	seen     []string // kind:known:sql
	tags     []string
	held     chan struct{}
	released chan struct{} // closed when a held statement's context ends
	masks    int
}

func (h *testHook) Statement(ctx context.Context, s *Statement) Verdict {
	h.mu.Lock()
	known := ""
	if s.Kind == KindExecute && !s.Known {
		known = "unknown:"
	}
	h.seen = append(h.seen, s.Kind.String()+":"+known+s.SQL)
	h.mu.Unlock()
	switch {
	case strings.Contains(s.SQL, "forbidden") && s.Kind != KindExecute:
		return Verdict{Action: Refuse, Error: &pgproto3.ErrorResponse{Message: "forbidden by test policy", Hint: "request id 42"}}
	case s.Kind == KindExecute && !s.Known:
		return Verdict{Action: Refuse, Error: &pgproto3.ErrorResponse{Code: "42501", Message: "statement not parsed through the enforcer"}}
	case strings.Contains(s.SQL, "hold me") && s.Kind != KindParse:
		s.Notice(&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: "held for approval"})
		if h.held != nil {
			close(h.held)
		}
		<-ctx.Done()
		if h.released != nil {
			close(h.released)
		}
		return Verdict{Action: Refuse, Error: &pgproto3.ErrorResponse{Code: "57014", Message: "canceling statement due to user request"}}
	case strings.Contains(s.SQL, "rewrite me"):
		return Verdict{Action: Rewrite, SQL: "SELECT 'rewritten'"}
	}
	return Verdict{Observe: true}
}

func (h *testHook) Result(ctx context.Context, r *Result) error {
	switch r.Kind {
	case ResultRow:
		for i, v := range r.Values {
			if string(v) == "secret" {
				r.SetValue(i, []byte("******"))
				h.mu.Lock()
				h.masks++
				h.mu.Unlock()
			}
		}
	case ResultCopyData:
		if bytes.Contains(r.Data, []byte("secret")) {
			r.SetData(bytes.ReplaceAll(r.Data, []byte("secret"), []byte("******")))
		}
	case ResultCommandComplete:
		h.mu.Lock()
		h.tags = append(h.tags, string(r.Tag))
		h.mu.Unlock()
	case ResultError, ResultNotice:
		if strings.Contains(r.Error.Message, "secret") {
			r.Error.Message = strings.ReplaceAll(r.Error.Message, "secret", "******")
			r.MarkChanged()
		}
	case ResultParameterStatus:
		if strings.Contains(r.Parameter.Value, "secret") {
			r.Parameter.Value = strings.ReplaceAll(r.Parameter.Value, "secret", "******")
			r.MarkChanged()
		}
	}
	return nil
}

func hookProxy(t *testing.T, h Hook) (*proxy, *pgconn.PgConn) {
	sess := defaultSession()
	sess.Hook = h
	p := startProxy(t, Config{}, sess)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, p.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return p, c
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	if err != nil {
		return "other:" + err.Error()
	}
	return ""
}

// TestRefusalTransactionAgreement: a refused statement inside BEGIN fails the transaction on the
// server too, so COMMIT rolls back, in the simple and the extended protocol; outside a transaction
// the session goes on normally.
func TestRefusalTransactionAgreement(t *testing.T) {
	leakCheck(t)
	h := &testHook{}
	_, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	simple := func(sql string) ([]*pgconn.Result, error) { return c.Exec(ctx, sql).ReadAll() }
	extended := func(sql string) ([]*pgconn.Result, error) {
		r := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
		return []*pgconn.Result{r}, r.Err
	}
	if _, err := simple("DROP TABLE IF EXISTS refuse_t; CREATE TABLE refuse_t (x int)"); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []struct {
		name string
		exec func(string) ([]*pgconn.Result, error)
	}{{"simple", simple}, {"extended", extended}} {
		t.Run(proto.name, func(t *testing.T) {
			steps := []struct {
				sql      string
				wantCode string
				wantTx   byte
			}{
				{"BEGIN", "", 'T'},
				{"INSERT INTO refuse_t VALUES (1)", "", 'T'},
				{"SELECT 'forbidden'", "42501", 'E'},
				{"SELECT 1", "25P02", 'E'}, // the server agrees: the transaction is aborted
				{"COMMIT", "", 'I'},
				{"SELECT 'forbidden' FROM refuse_t", "42501", 'I'},
				{"SELECT count(*) FROM refuse_t", "", 'I'},
			}
			for _, s := range steps {
				res, err := proto.exec(s.sql)
				if got := pgCode(err); got != s.wantCode {
					t.Fatalf("%s: error %q, want %q", s.sql, got, s.wantCode)
				}
				if got := c.TxStatus(); got != s.wantTx {
					t.Fatalf("%s: tx status %c, want %c", s.sql, got, s.wantTx)
				}
				if s.sql == "COMMIT" && string(res[0].CommandTag.String()) != "ROLLBACK" {
					t.Fatalf("COMMIT after refusal returned %q, want ROLLBACK", res[0].CommandTag)
				}
				if strings.HasPrefix(s.sql, "SELECT count") && string(res[0].Rows[0][0]) != "0" {
					t.Fatalf("rows after rolled-back transaction: %s", res[0].Rows[0][0])
				}
			}
		})
	}
	var pe *pgconn.PgError
	_, err := simple("SELECT 'forbidden'")
	if !errors.As(err, &pe) || pe.Message != "forbidden by test policy" || pe.Hint != "request id 42" || pe.Severity != "ERROR" {
		t.Fatalf("refusal error %+v", err)
	}
}

// TestRefusalInPipeline: a statement refused at Parse inside a pipeline makes the rest up to Sync
// skipped, like a server error; after Sync everything works and the unnamed statement is gone.
func TestRefusalInPipeline(t *testing.T) {
	h := &testHook{}
	_, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pl := c.StartPipeline(ctx)
	pl.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	pl.SendQueryParams("SELECT 'forbidden'", nil, nil, nil, nil)
	pl.SendQueryParams("SELECT 3", nil, nil, nil, nil)
	pl.SendPipelineSync()
	pl.SendPrepare("named", "SELECT $1::int + 1", nil)
	pl.SendQueryPrepared("named", [][]byte{[]byte("41")}, nil, nil)
	pl.SendPipelineSync()
	if s := pipelineResults(t, pl); s != "1,err:42501,sync,prepared,42,sync" {
		t.Fatalf("pipeline: %s", s)
	}
	// The hook saw the statement after the refused one? It must not: the proxy skipped to Sync.
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.seen {
		if strings.Contains(s, "SELECT 3") {
			t.Fatalf("hook was asked about a statement after a refusal before Sync: %v", h.seen)
		}
	}
}

// TestExecuteOfUnknownStatement: a statement created with SQL PREPARE, executed through the extended
// protocol, reaches the hook with Known=false, and this hook refuses it.
func TestExecuteOfUnknownStatement(t *testing.T) {
	h := &testHook{}
	_, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, "PREPARE sqlprep AS SELECT 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
	r := c.ExecPrepared(ctx, "sqlprep", nil, nil, nil).Read()
	if pgCode(r.Err) != "42501" {
		t.Fatalf("execute of SQL-prepared statement: %v", r.Err)
	}
	// A statement prepared through the protocol is known.
	if _, err := c.Prepare(ctx, "protoprep", "SELECT 2", nil); err != nil {
		t.Fatal(err)
	}
	r = c.ExecPrepared(ctx, "protoprep", nil, nil, nil).Read()
	if r.Err != nil || string(r.Rows[0][0]) != "2" {
		t.Fatalf("execute of protocol-prepared statement: %v", r.Err)
	}
	// A refused Parse creates nothing: its name is free afterwards, as on the server.
	if _, err := c.Prepare(ctx, "p2", "SELECT 'forbidden'", nil); pgCode(err) != "42501" {
		t.Fatalf("refused prepare: %v", err)
	}
	if _, err := c.Prepare(ctx, "p2", "SELECT 3", nil); err != nil {
		t.Fatal(err)
	}
	// A duplicate name fails on the server and keeps the old statement for the hook too.
	if _, err := c.Prepare(ctx, "p2", "SELECT 'other'", nil); pgCode(err) != "42P05" {
		t.Fatalf("duplicate prepare: %v", err)
	}
	r = c.ExecPrepared(ctx, "p2", nil, nil, nil).Read()
	if r.Err != nil || string(r.Rows[0][0]) != "3" {
		t.Fatalf("execute p2: %v %v", r.Err, r.Rows)
	}
	h.mu.Lock()
	last := h.seen[len(h.seen)-1]
	h.mu.Unlock()
	if last != "execute:SELECT 3" {
		t.Fatalf("hook saw %q for the Execute of p2", last)
	}
}

// TestHoldNoticeAndCancel: a held statement sends its notice at once; the client's CancelRequest
// cancels the hook's context, and the session goes on.
func TestHoldNoticeAndCancel(t *testing.T) {
	leakCheck(t)
	h := &testHook{held: make(chan struct{})}
	sess := defaultSession()
	sess.Hook = h
	p := startProxy(t, Config{}, sess)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	notices := make(chan string, 4)
	cfg, _ := pgconn.ParseConfig(p.dsn("postgres"))
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n.Message }
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "SELECT 'hold me'").ReadAll()
		errc <- err
	}()
	select {
	case <-h.held:
	case <-ctx.Done():
		t.Fatal("statement never held")
	}
	select {
	case n := <-notices:
		if n != "held for approval" {
			t.Fatalf("notice %q", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notice while held")
	}
	time.Sleep(2 * holdWatchAfter) // long enough for the disconnect watch to start
	if err := c.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; pgCode(err) != "57014" {
		t.Fatalf("held statement after cancel: %v", err)
	}
	r, err := c.Exec(ctx, "SELECT 'after'").ReadAll()
	if err != nil || string(r[0].Rows[0][0]) != "after" {
		t.Fatalf("session after cancel: %v", err)
	}
}

// TestRewriteAndMask: the hook rewrites a query and masks cells, COPY data, error text and
// settings the server reports, in both protocols; unmasked results stay byte-identical.
func TestRewriteAndMask(t *testing.T) {
	h := &testHook{}
	_, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct {
		name string
		run  func() (string, error)
		want string
	}{
		{"simple rewrite", func() (string, error) {
			r, err := c.Exec(ctx, "SELECT 'rewrite me'").ReadAll()
			if err != nil {
				return "", err
			}
			return string(r[0].Rows[0][0]), nil
		}, "rewritten"},
		{"extended rewrite", func() (string, error) {
			r := c.ExecParams(ctx, "SELECT 'rewrite me'", nil, nil, nil, nil).Read()
			if r.Err != nil {
				return "", r.Err
			}
			return string(r.Rows[0][0]), nil
		}, "rewritten"},
		{"simple mask", func() (string, error) {
			r, err := c.Exec(ctx, "SELECT 'secret', 'public', NULL::text").ReadAll()
			if err != nil {
				return "", err
			}
			row := r[0].Rows[0]
			return string(row[0]) + "," + string(row[1]) + "," + boolStr(row[2] == nil), nil
		}, "******,public,true"},
		{"extended mask", func() (string, error) {
			r := c.ExecParams(ctx, "SELECT $1::text, 'public'", [][]byte{[]byte("secret")}, nil, nil, nil).Read()
			if r.Err != nil {
				return "", r.Err
			}
			return string(r.Rows[0][0]) + "," + string(r.Rows[0][1]), nil
		}, "******,public"},
		{"copy mask", func() (string, error) {
			var buf bytes.Buffer
			_, err := c.CopyTo(ctx, &buf, "COPY (SELECT 'secret', 'x') TO STDOUT")
			return buf.String(), err
		}, "******\tx\n"},
		{"error mask", func() (string, error) {
			_, err := c.Exec(ctx, "SELECT 'secret'::int").ReadAll()
			var pe *pgconn.PgError
			errors.As(err, &pe)
			return pe.Message, nil
		}, `invalid input syntax for type integer: "******"`},
		{"setting mask", func() (string, error) {
			// The server reports the new application_name after the statement: a setting any
			// statement can set to any value.
			_, err := c.Exec(ctx, "SELECT set_config('application_name', 'a secret', false)").ReadAll()
			return c.ParameterStatus("application_name"), err
		}, "a ******"},
	}
	for _, tc := range cases {
		got, err := tc.run()
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !strings.Contains(strings.Join(h.tags, ","), "SELECT 1") {
		t.Errorf("hook saw no CommandComplete tags: %v", h.tags)
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// failingHook cannot check results: the data must not pass.
type failingHook struct{ PassThrough }

func (failingHook) Statement(context.Context, *Statement) Verdict { return Verdict{Observe: true} }

func (failingHook) Result(_ context.Context, r *Result) error {
	if r.Kind == ResultRow && string(r.Values[0]) == "boom" {
		return errors.New("masking failed")
	}
	return nil
}

// TestResultHookFailureFailsClosed: when the result hook fails, the row does not reach the client,
// which gets an ErrorResponse, and the session ends.
func TestResultHookFailureFailsClosed(t *testing.T) {
	leakCheck(t)
	p, c := hookProxy(t, failingHook{})
	p.mu.Lock()
	p.record = true
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A new connection so it is recorded.
	c.Close(ctx)
	c, err := pgconn.Connect(ctx, p.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if r, err := c.Exec(ctx, "SELECT 'fine'").ReadAll(); err != nil || string(r[0].Rows[0][0]) != "fine" {
		t.Fatalf("clean row: %v", err)
	}
	_, err = c.Exec(ctx, "SELECT 'boom'").ReadAll()
	if pgCode(err) != "XX000" {
		t.Fatalf("got %v, want XX000", err)
	}
	p.mu.Lock()
	leaked := bytes.Contains(p.sent.Bytes(), []byte("boom"))
	p.mu.Unlock()
	if leaked {
		t.Fatal("the row the hook could not check reached the client")
	}
}

// infoHook records the session facts a statement carries.
type infoHook struct {
	PassThrough
	mu   sync.Mutex
	last Statement
}

func (h *infoHook) Statement(_ context.Context, s *Statement) Verdict {
	h.mu.Lock()
	h.last = *s
	h.mu.Unlock()
	return Verdict{}
}

func TestStatementFacts(t *testing.T) {
	h := &infoHook{}
	_, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, "BEGIN").ReadAll(); err != nil {
		t.Fatal(err)
	}
	r := c.ExecParams(ctx, "SELECT $1::int", [][]byte{[]byte("7")}, nil, []int16{0}, []int16{1}).Read()
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	h.mu.Lock()
	s := h.last
	h.mu.Unlock()
	// IDs count the BEGIN, the Parse and this Execute.
	want := Statement{ID: 3, Kind: KindExecute, ConnID: "test", Database: "postgres", ClientUser: "agent", SQL: "SELECT $1::int",
		Known: true, TxStatus: 'T', ParamFormats: []int16{0}, Params: [][]byte{[]byte("7")}, ResultFormats: []int16{1}}
	s.c = nil
	if fmt.Sprintf("%+v", s) != fmt.Sprintf("%+v", want) {
		t.Fatalf("statement\n got %+v\nwant %+v", s, want)
	}
	if s.Kind.Protocol() != "extended" {
		t.Fatalf("protocol %s", s.Kind.Protocol())
	}
}

// TestHoldClientDisconnect: a client that goes away while its statement is held cancels the hook's
// context, and the session is cleaned up.
func TestHoldClientDisconnect(t *testing.T) {
	leakCheck(t)
	h := &testHook{held: make(chan struct{}), released: make(chan struct{})}
	sess := defaultSession()
	sess.Hook = h
	p := startProxy(t, Config{}, sess)
	c, fe := rawStartup(t, p.addr, nil)
	fe.Send(&pgproto3.Query{String: "SELECT 'hold me'"})
	fe.Flush()
	<-h.held
	// Pipelined input while held is not a disconnect.
	fe.Send(&pgproto3.Query{String: "SELECT 2"})
	fe.Flush()
	time.Sleep(3 * holdWatchAfter)
	select {
	case <-h.released:
		t.Fatal("pipelined input taken for a disconnect")
	default:
	}
	c.Close()
	select {
	case <-h.released:
	case <-time.After(5 * time.Second):
		t.Fatal("hook context not cancelled after the client disconnected")
	}
	waitFor(t, func() bool { return p.srv.Sessions() == 0 })
}

// deliveryHook logs statements, completions and deliveries in the order they come.
type deliveryHook struct {
	PassThrough
	mu     sync.Mutex
	events []string
}

func (h *deliveryHook) log(e string) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

func (h *deliveryHook) Statement(_ context.Context, s *Statement) Verdict {
	h.log("statement " + s.SQL)
	return Verdict{}
}

func (h *deliveryHook) Result(_ context.Context, r *Result) error {
	if r.Kind == ResultCommandComplete {
		h.log("result " + string(r.Tag))
	}
	return nil
}

func (h *deliveryHook) Delivered() { h.log("delivered") }
func (h *deliveryHook) Forwarded() { h.log("forwarded") }

// TestDelivered: the proxy tells a Deliverer once it has written a statement's results to the
// client (on the goroutine that saw them, so after each of them), and a Forwarder once it has
// written a statement to the server.
func TestDelivered(t *testing.T) {
	h := &deliveryHook{}
	_, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, q := range []string{"SELECT 1", "SELECT 2"} {
		if _, err := c.Exec(ctx, q).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	// Both tags are SELECT 1 (one row each).
	var events string
	waitFor(t, func() bool {
		h.mu.Lock()
		events = strings.Join(h.events, "\n")
		h.mu.Unlock()
		last, s2 := strings.LastIndex(events, "result SELECT 1"), strings.Index(events, "statement SELECT 2")
		// The second forward is logged once the write returns, which may be after the server
		// answered and the answer was delivered.
		return s2 >= 0 && last > s2 && strings.Contains(events[last:], "delivered") && strings.Contains(events[s2:], "forwarded")
	})
	first, last := strings.Index(events, "result SELECT 1"), strings.LastIndex(events, "result SELECT 1")
	if first < 0 || !strings.Contains(events[first:last], "delivered") {
		t.Fatalf("the first result was never delivered:\n%s", events)
	}
	// Forwarded comes on the client's goroutine once a statement is written to the server,
	// before the proxy reads the client's next one.
	s1, s2 := strings.Index(events, "statement SELECT 1"), strings.Index(events, "statement SELECT 2")
	if s1 < 0 || s2 < s1 || !strings.Contains(events[s1:s2], "forwarded") {
		t.Fatalf("a statement was not followed by a forward:\n%s", events)
	}
}

// pipelineResults flushes pl, reads every result up to the end of what was sent, closes pl and
// returns what the client got: each result's first value or "err:SQLSTATE", "prepared" for a
// description, "sync" for each Sync's end.
func pipelineResults(t *testing.T, pl *pgconn.Pipeline) string {
	t.Helper()
	if err := pl.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 20 {
		r, err := pl.GetResults()
		if err != nil {
			got = append(got, "err:"+pgCode(err))
			continue
		}
		if r == nil {
			break
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			if res := r.Read(); res.Err != nil {
				got = append(got, "err:"+pgCode(res.Err))
			} else {
				got = append(got, string(res.Rows[0][0]))
			}
		case *pgconn.StatementDescription:
			got = append(got, "prepared")
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		}
	}
	if err := pl.Close(); err != nil {
		t.Fatalf("%v after %v", err, got)
	}
	return strings.Join(got, ",")
}

// endsHook records how each statement ended: "done", "error" or "skipped", with its text.
type endsHook struct {
	PassThrough
	mu   sync.Mutex
	ends []string
}

func (h *endsHook) Statement(context.Context, *Statement) Verdict { return Verdict{Observe: true} }

func (h *endsHook) Result(_ context.Context, r *Result) error {
	end := map[ResultKind]string{ResultCommandComplete: "done", ResultError: "error", ResultSkipped: "skipped"}[r.Kind]
	if end == "" || r.Statement == nil {
		return nil
	}
	h.mu.Lock()
	h.ends = append(h.ends, end+":"+r.Statement.SQL)
	h.mu.Unlock()
	return nil
}

func (h *endsHook) take() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := strings.Join(h.ends, ", ")
	h.ends = nil
	return s
}

// TestSkippedStatements: after an error in an extended-protocol batch the server runs nothing up
// to the client's Sync. Every statement it so skipped reaches the hook as skipped, after the
// error, whether the proxy had queued it when the error came (a pipeline) or it was sent after
// (a client that waits for the error first); the batch after the Sync runs as usual.
func TestSkippedStatements(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Run("pipelined", func(t *testing.T) {
		h := &endsHook{}
		_, c := hookProxy(t, h)
		pl := c.StartPipeline(ctx)
		pl.SendQueryParams("SELECT 1/(SELECT 0)", nil, nil, nil, nil) // fails in Execute, not in Bind
		pl.SendQueryParams("SELECT 2", nil, nil, nil, nil)
		pl.SendQueryParams("SELECT 3", nil, nil, nil, nil)
		pl.SendPipelineSync()
		pl.SendQueryParams("SELECT 4", nil, nil, nil, nil)
		pl.SendPipelineSync()
		if s := pipelineResults(t, pl); s != "err:22012,sync,4,sync" {
			t.Errorf("client got %s", s)
		}
		want := "error:SELECT 1/(SELECT 0), skipped:SELECT 2, skipped:SELECT 3, done:SELECT 4"
		if got := h.take(); got != want {
			t.Fatalf("hook saw %q, want %q", got, want)
		}
	})
	t.Run("sent after the error", func(t *testing.T) {
		h := &endsHook{}
		_, c := hookProxy(t, h)
		fe := c.Frontend()
		send := func(msgs ...pgproto3.FrontendMessage) {
			t.Helper()
			for _, m := range msgs {
				fe.Send(m)
			}
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		receiveUntil := func(want string) {
			t.Helper()
			for {
				m, err := fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprintf("%T", m) == want {
					return
				}
			}
		}
		send(&pgproto3.Parse{Query: "SELECT 1/(SELECT 0)"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
		receiveUntil("*pgproto3.ErrorResponse")
		send(&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Query{String: "SELECT 5"}, &pgproto3.Sync{})
		receiveUntil("*pgproto3.ReadyForQuery")
		send(&pgproto3.Query{String: "SELECT 6"})
		receiveUntil("*pgproto3.ReadyForQuery")
		want := "error:SELECT 1/(SELECT 0), skipped:SELECT 1/(SELECT 0), skipped:SELECT 5, done:SELECT 6"
		if got := h.take(); got != want {
			t.Fatalf("hook saw %q, want %q", got, want)
		}
	})
}
