package pgguard

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// writesNeedReview holds every write for a reviewer. The guards here have no approval service,
// so a held statement is refused.
var writesNeedReview = strings.Replace(testPolicy, "rules:\n  - {name: no-drop, when: 'sql.kind == \"DROP\"', action: block, message: no drops}\n",
	"rules:\n  - {name: writes-need-review, when: 'sql.writes', action: approve, approvers: [dba]}\n", 1)

// guardedProxy is the proxy in front of a real PostgreSQL server (table t, ids 1 to 5), with a
// recording guard on the given policy for every connection.
type guardedProxy struct {
	db     *pgtest.Server
	addr   string
	dir    string
	rec    *record.Recorder
	guards chan *Guard // each connection's guard, when it starts
	ended  chan *Guard // each connection's guard, once End returned
	// log holds what the guard and the wire proxy said (why a session was closed), shown when
	// the test fails.
	log lockedBuffer
}

// lockedBuffer is a bytes.Buffer for several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startGuardedProxy(t *testing.T, policyText string) *guardedProxy {
	t.Helper()
	return startGuardedProxyWith(t, policyText, nil)
}

// startGuardedProxyWith is startGuardedProxy with what its guards share set up further by
// configure (an approval broker), when not nil.
func startGuardedProxyWith(t *testing.T, policyText string, configure func(*Shared)) *guardedProxy {
	t.Helper()
	db := pgtest.Start(t)
	db.Exec(t, "create table t (id int primary key, secret text)")
	db.Exec(t, "insert into t select g, 'v'||g from generate_series(1,5) g")
	dir := t.TempDir()
	rec, err := record.Open(record.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pol := parsePolicy(t, policyText)
	p := &guardedProxy{db: db, dir: dir, rec: rec, guards: make(chan *Guard, 4), ended: make(chan *Guard, 4)}
	sh := &Shared{
		Policy:     func() *policy.Policy { return pol },
		Classifier: sqlclass.New(sqlclass.Options{}),
		Log:        slog.New(slog.NewTextHandler(&p.log, nil)),
		Recorder:   rec,
	}
	if configure != nil {
		configure(sh)
	}
	srv := postgres.NewServer(postgres.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the proxy's log:\n%s", p.log.String())
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}},
				Connect: func(ctx context.Context, database string) (*pgconn.PgConn, error) {
					return pgconn.Connect(ctx, db.DSN(pgtest.SuperUser, database))
				}})
			select {
			case p.guards <- g:
			default: // nobody waits for it
			}
			go func() {
				if err := srv.Serve(context.Background(), c, postgres.Session{ID: "1", Upstream: db.Addr.String(), User: pgtest.SuperUser, Password: db.Password, Hook: g}); err != nil {
					fmt.Fprintf(&p.log, "session ended: %v\n", err)
				}
				g.End("closed", 0, 0)
				select {
				case p.ended <- g:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		rec.Close()
	})
	return p
}

func (p *guardedProxy) dsn() string {
	host, port, _ := net.SplitHostPort(p.addr)
	return "host=" + host + " port=" + port + " user=agent dbname=postgres sslmode=disable"
}

func (p *guardedProxy) connect(t *testing.T) *pgconn.PgConn {
	t.Helper()
	c, err := pgconn.Connect(context.Background(), p.dsn())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// allowAllSession starts a guarded proxy with writes allowed and returns it with a function
// that runs a simple query on one connection through it.
func allowAllSession(t *testing.T) (*guardedProxy, func(sql string) error) {
	p := startGuardedProxy(t, allowAllPolicy)
	conn := p.connect(t)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return p, func(sql string) error {
		_, err := conn.Exec(context.Background(), sql).ReadAll()
		return err
	}
}

// rowsLeft counts t's rows, directly on the server.
func (p *guardedProxy) rowsLeft(t *testing.T) string {
	t.Helper()
	return p.direct(t, "select count(*) from t")
}

// connectDirect opens a connection straight to the server, as its superuser, closed when the
// test ends.
func (p *guardedProxy) connectDirect(t *testing.T) *pgconn.PgConn {
	t.Helper()
	c, err := pgconn.Connect(context.Background(), p.db.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// direct returns the first value sql returns, run directly on the server.
func (p *guardedProxy) direct(t *testing.T, sql string) string {
	t.Helper()
	res := p.connectDirect(t).ExecParams(context.Background(), sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	return string(res.Rows[0][0])
}

// untilReady returns the errors and command tags of one exchange, up to ReadyForQuery.
func untilReady(t *testing.T, fe *pgproto3.Frontend) []string {
	t.Helper()
	var got []string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			got = append(got, "E:"+m.Code+":"+m.Message)
		case *pgproto3.CommandComplete:
			got = append(got, "C:"+string(m.CommandTag))
		case *pgproto3.ReadyForQuery:
			return got
		}
	}
}

// TestExecuteJudgesWhatThePortalRuns: a portal runs the statement it was bound to, as the server
// holds it. Parsing the name again afterwards (the unnamed statement re-parsed before Execute, or
// a named one the server refuses to replace) must not lend the portal that Parse's verdict: a
// write that needs review ran without it.
func TestExecuteJudgesWhatThePortalRuns(t *testing.T) {
	cases := []struct {
		name      string
		exchanges [][]pgproto3.FrontendMessage
	}{
		{"unnamed statement parsed again after the bind", [][]pgproto3.FrontendMessage{{
			&pgproto3.Parse{Query: "delete from t where id = 1"},
			&pgproto3.Bind{},
			&pgproto3.Parse{Query: "select 1"},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
		}}},
		{"named statement the server keeps", [][]pgproto3.FrontendMessage{
			{&pgproto3.Parse{Name: "s1", Query: "delete from t where id = 2"}, &pgproto3.Sync{}},
			{&pgproto3.Parse{Name: "s1", Query: "select 1"}, &pgproto3.Sync{}},
			{&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startGuardedProxy(t, writesNeedReview)
			conn := p.connect(t)
			fe := conn.Frontend()
			var got []string
			for _, ex := range c.exchanges {
				for _, m := range ex {
					fe.Send(m)
				}
				if err := fe.Flush(); err != nil {
					t.Fatal(err)
				}
				got = append(got, untilReady(t, fe)...)
			}
			conn.Close(context.Background())
			if n := p.rowsLeft(t); n != "5" {
				t.Fatalf("a delete that needs review ran: %s rows left; the client saw %v", n, got)
			}
			if len(got) == 0 || !strings.Contains(got[len(got)-1], "E:") {
				t.Errorf("the client was not told the delete was refused: %v", got)
			}
			// The refusal is recorded with the text that was refused.
			time.Sleep(100 * time.Millisecond) // the connection's End
			p.rec.Close()
			recs, err := record.LoadAll(p.dir)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range recs {
				if ev, err := r.Event(); err == nil && ev.Statement != nil && strings.HasPrefix(ev.Statement.Text, "delete") && ev.Statement.Verdict == record.VerdictBlock {
					found = true
				}
			}
			if !found {
				t.Error("no record of the refused delete")
			}
		})
	}
}

// TestPrepareAgainUnderUsedName: PREPARE of a name in use fails on the server, which keeps the
// statement it has (or succeeds, if the first PREPARE had failed); either way the guard cannot
// know what EXECUTE of the name runs, so it refuses it until the name is deallocated.
func TestPrepareAgainUnderUsedName(t *testing.T) {
	p, exec := allowAllSession(t)
	if err := exec("PREPARE p AS DELETE FROM t WHERE id = 3"); err != nil {
		t.Fatal(err)
	}
	if err := exec("PREPARE p AS SELECT 1"); err == nil {
		t.Fatal("the server replaced a prepared statement")
	}
	err := exec("EXECUTE p")
	if err == nil || !strings.Contains(err.Error(), "not prepared through the proxy") {
		t.Fatalf("EXECUTE of a name prepared twice: %v", err)
	}
	if n := p.rowsLeft(t); n != "5" {
		t.Fatalf("%s rows left", n)
	}
	if err := exec("DEALLOCATE p"); err != nil {
		t.Fatal(err)
	}
	if err := exec("PREPARE p AS SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := exec("EXECUTE p"); err != nil {
		t.Fatalf("EXECUTE after DEALLOCATE and PREPARE: %v", err)
	}
}

// TestDeallocateThatDidNotRun: a DEALLOCATE after a failing statement of the same query never
// runs, so the server keeps the statement; an EXECUTE of the name must not be judged as a
// statement prepared under it later (which the server refuses as a duplicate).
func TestDeallocateThatDidNotRun(t *testing.T) {
	p, exec := allowAllSession(t)
	for _, q := range []string{"PREPARE q AS DELETE FROM t WHERE id = 3", "PREPARE r AS DELETE FROM t WHERE id = 4"} {
		if err := exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := exec("SELECT 1/0; DEALLOCATE q"); err == nil {
		t.Fatal("division by zero succeeded")
	}
	if err := exec("SELECT 1/0; DEALLOCATE ALL"); err == nil {
		t.Fatal("division by zero succeeded")
	}
	for _, name := range []string{"q", "r"} {
		if err := exec("PREPARE " + name + " AS SELECT 1"); err == nil {
			t.Fatalf("the server replaced prepared statement %s", name)
		}
		if err := exec("EXECUTE " + name); err == nil || !strings.Contains(err.Error(), "not prepared through the proxy") {
			t.Fatalf("EXECUTE %s after a DEALLOCATE that did not run: %v", name, err)
		}
	}
	if n := p.rowsLeft(t); n != "5" {
		t.Fatalf("%s rows left", n)
	}
}

// TestParseAndPrepareShareANamespace: the server keeps Parse'd and PREPAREd statements under one
// namespace (a PREPARE of a Parse'd name fails, a DEALLOCATE drops a Parse'd statement), so a
// name the two used in turn may run a statement the guard did not judge (an update judged, held
// or masked as a select): the guard refuses such a name until it is known again (probes of a
// review, 2026-12-06).
func TestParseAndPrepareShareANamespace(t *testing.T) {
	pol := parsePolicy(t, allowAllPolicy)
	parse := func(sql string) *postgres.Statement {
		return &postgres.Statement{Kind: postgres.KindParse, SQL: sql, StatementName: "p"}
	}
	query := func(sql string) *postgres.Statement { return &postgres.Statement{Kind: postgres.KindQuery, SQL: sql} }
	aborted := func(s *postgres.Statement) *postgres.Statement { s.TxStatus = 'E'; return s }
	// execParsed is an Execute of a portal bound to "p", as the relay reports it: the text of
	// p's last Parse.
	execParsed := &postgres.Statement{Kind: postgres.KindExecute, SQL: "select $1::text", StatementName: "p", Known: true, Params: [][]byte{[]byte("x")}}
	for _, c := range []struct {
		name  string
		steps []*postgres.Statement
		last  postgres.Action
	}{
		{"PREPARE of a Parse'd name, then EXECUTE", []*postgres.Statement{parse("update t set a = $1"), query("prepare p as select $1::text"), query("execute p('x')")}, postgres.Refuse},
		{"DEALLOCATE of a Parse'd name, PREPARE, then Execute", []*postgres.Statement{parse("select $1::text"), query("deallocate p"), query("prepare p as update t set a = $1"), execParsed}, postgres.Refuse},
		{"DISCARD ALL, PREPARE, then Execute", []*postgres.Statement{parse("select $1::text"), query("discard all"), query("prepare p as update t set a = $1"), execParsed}, postgres.Refuse},
		{"Parse of a PREPAREd name", []*postgres.Statement{query("prepare p as update t set a = $1"), parse("select $1::text")}, postgres.Refuse},
		// A DEALLOCATE that may not have run (after a failing statement, in a failed
		// transaction) leaves the Parse'd statement: a PREPARE of its name fails.
		{"DEALLOCATE after a statement that fails, PREPARE, EXECUTE", []*postgres.Statement{parse("update t set a = $1"), query("select 1/0; deallocate p; prepare p as select $1::text"), query("execute p('x')")}, postgres.Refuse},
		{"DEALLOCATE in a failed transaction, PREPARE, EXECUTE", []*postgres.Statement{parse("update t set a = $1"), aborted(query("deallocate p")), query("prepare p as select $1::text"), query("execute p('x')")}, postgres.Refuse},
		// Parsing a deallocated name again: the proxy expects the server to refuse it and keeps
		// the old text, but the server takes the new one.
		{"DEALLOCATE, Parse again, Execute", []*postgres.Statement{parse("select $1::text"), query("deallocate p"), parse("update t set a = $1"), execParsed}, postgres.Refuse},
		// Controls: what is known stays allowed.
		{"Parse, DEALLOCATE, Parse again, Execute", []*postgres.Statement{parse("select $1::text"), query("deallocate p"), parse("select $1::text"), execParsed}, postgres.Allow},
		{"Parse, Execute", []*postgres.Statement{parse("select $1::text"), execParsed}, postgres.Allow},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := guardFor(func() *policy.Policy { return pol }, nil)
			var v postgres.Verdict
			for i, s := range c.steps {
				st := *s
				st.ID = uint64(i + 1)
				v = g.Statement(context.Background(), &st)
				if i < len(c.steps)-1 && v.Action != postgres.Allow {
					t.Fatalf("step %d (%s) refused: %s", i, st.SQL, v.Error.Message)
				}
			}
			if v.Action != c.last {
				t.Errorf("last step: action %v, want %v (%+v)", v.Action, c.last, v.Error)
			}
		})
	}
}

// TestPortalsTheServerMayNotHold: the proxy judges an Execute by what its portal was bound to.
// A Bind that failed leaves the server with the portal the name had before (kept by a savepoint
// rolled back to), and a portal whose transaction ended may since be a cursor an SQL DECLARE
// opened under its name: an Execute of either is refused, and so is the DECLARE. A portal is a
// cursor at the server, which an SQL FETCH or MOVE runs: refused too. With a real server (probes of a review,
// 2026-12-06). Writes need a review here, and with no reviewer a held statement is refused.
func TestPortalsTheServerMayNotHold(t *testing.T) {
	p := startGuardedProxy(t, writesNeedReview)
	c := p.connect(t)
	<-p.guards
	defer c.Close(context.Background())
	fe := c.Frontend()
	// exchange sends msgs (a Sync after extended-protocol ones) and returns the SQLSTATEs of the
	// errors that came back.
	exchange := func(msgs ...pgproto3.FrontendMessage) []string {
		t.Helper()
		for _, m := range msgs {
			fe.Send(m)
		}
		if _, query := msgs[0].(*pgproto3.Query); !query {
			fe.Send(&pgproto3.Sync{})
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var codes []string
		for _, r := range untilReady(t, fe) {
			if code, ok := strings.CutPrefix(r, "E:"); ok {
				codes = append(codes, code[:5])
			}
		}
		return codes
	}
	query := func(sql string) []string { return exchange(&pgproto3.Query{String: sql}) }
	// A Bind that failed: x stays bound to the update at the server.
	query("begin")
	if codes := exchange(&pgproto3.Parse{Name: "w", Query: "update t set secret = 'pwned' where id = 1"}, &pgproto3.Bind{DestinationPortal: "x", PreparedStatement: "w"}); len(codes) > 0 {
		t.Fatalf("Parse and Bind of the update: %v", codes)
	}
	query("savepoint s")
	if codes := exchange(&pgproto3.Parse{Name: "r", Query: "select 1"}, &pgproto3.Bind{DestinationPortal: "x", PreparedStatement: "r"}); !slices.Equal(codes, []string{"42P03"}) {
		t.Fatalf("second Bind of x: %v, want the server's 42P03", codes)
	}
	query("rollback to savepoint s")
	if codes := exchange(&pgproto3.Execute{Portal: "x"}); !slices.Equal(codes, []string{"34000"}) {
		t.Errorf("Execute of a portal whose last Bind failed: %v, want the enforcer's 34000", codes)
	}
	query("rollback")
	if got := p.direct(t, "select secret from t where id = 1"); got != "v1" {
		t.Fatalf("the update ran: secret is %q", got)
	}

	// A portal whose transaction ended; a cursor declared under its name.
	query("begin")
	if codes := exchange(&pgproto3.Bind{DestinationPortal: "y", PreparedStatement: "r"}); len(codes) > 0 {
		t.Fatalf("Bind of y: %v", codes)
	}
	query("commit")
	query("begin")
	if codes := query("declare y cursor for select upper(secret) from t"); !slices.Equal(codes, []string{"42501"}) {
		t.Errorf("DECLARE of a protocol portal's name: %v, want the enforcer's 42501", codes)
	}
	if codes := exchange(&pgproto3.Execute{Portal: "y"}); !slices.Equal(codes, []string{"34000"}) {
		t.Errorf("Execute of a portal whose transaction ended: %v, want the enforcer's 34000", codes)
	}
	query("rollback")
	// A portal is a cursor at the server: an SQL FETCH or MOVE of it runs its statement.
	query("begin")
	if codes := exchange(&pgproto3.Parse{Name: "u", Query: "update t set secret = 'pwned' where id = 1 returning id"}, &pgproto3.Bind{DestinationPortal: "f", PreparedStatement: "u"}); len(codes) > 0 {
		t.Fatalf("Parse and Bind of the update: %v", codes)
	}
	for _, sql := range []string{"fetch all from f", "move all in f"} {
		if codes := query(sql); !slices.Equal(codes, []string{"42501"}) {
			t.Errorf("%s of a protocol portal: %v, want the enforcer's 42501", sql, codes)
		}
	}
	query("rollback")
	if got := p.direct(t, "select secret from t where id = 1"); got != "v1" {
		t.Fatalf("the update ran: secret is %q", got)
	}
	// Control: a portal bound and executed in one transaction, across Syncs, runs.
	query("begin")
	exchange(&pgproto3.Bind{DestinationPortal: "z", PreparedStatement: "r"})
	if codes := exchange(&pgproto3.Execute{Portal: "z"}); len(codes) > 0 {
		t.Errorf("Execute of a portal bound earlier in its transaction: %v", codes)
	}
	query("commit")

	// Names the server would cut to 63 bytes (after converting them from the client's
	// encoding), where two names the proxy tells apart become one.
	long := strings.Repeat("n", 63)
	for _, msgs := range [][]pgproto3.FrontendMessage{
		{&pgproto3.Parse{Name: long + "a", Query: "select 1"}},
		{&pgproto3.Close{ObjectType: 'S', Name: long + "c"}},
		{&pgproto3.Bind{DestinationPortal: "é", PreparedStatement: "r"}},
		{&pgproto3.Describe{ObjectType: 'S', Name: long + "d"}},
		{&pgproto3.Execute{Portal: long + "e"}},
	} {
		if codes := exchange(msgs...); !slices.Equal(codes, []string{"42602"}) {
			t.Errorf("%T with a name the server would cut: %v, want the enforcer's 42602", msgs[0], codes)
		}
	}
	if codes := exchange(&pgproto3.Parse{Name: long, Query: "select 1"}); len(codes) > 0 {
		t.Errorf("a 63-byte name: %v", codes)
	}
}

// TestProxyProbeNamesRefused (from a review, 2026-12-06): a refusal makes the proxy send an
// Execute of a portal named "\x01enforcer refused N" that the server must fail. A client that
// bound a portal of that name first (N counts refusals) had the server run it under the
// proxy's probe, whose rows are not observed: t.secret reached it in clear. Names with control
// characters are refused.
func TestProxyProbeNamesRefused(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	c := p.connect(t)
	defer c.Close(context.Background())
	fe := c.Frontend()
	got := transcript(t, fe, 1, &pgproto3.Query{String: "begin"})
	got = append(got, transcript(t, fe, 1,
		&pgproto3.Parse{Name: "s", Query: "select secret from t order by id"},
		&pgproto3.Bind{DestinationPortal: "\x01enforcer refused 1", PreparedStatement: "s"},
		&pgproto3.Parse{Query: "drop table t"}, // refused by the no-drop rule
		&pgproto3.Sync{})...)
	got = append(got, transcript(t, fe, 1, &pgproto3.Query{String: "rollback"})...)
	if j := strings.Join(got, " "); secretInClear.MatchString(j) {
		t.Errorf("t.secret in clear: %v", got)
	} else {
		t.Logf("client saw %v", got)
	}
}

// TestDeclaredCursorCannotStandInForARefusal (from a review, 2026-12-07): the proxy's stand-in
// for a refused statement was an Execute of a portal named "\x01enforcer refused N", and SQL
// DECLARE accepts that name: the refusal then ran the client's cursor, its rows unobserved
// (t.secret in clear), and no error failed the transaction. Must hold for any name the client
// declares: the refusal fails the transaction and nothing the cursor holds is shown.
func TestDeclaredCursorCannotStandInForARefusal(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	for _, name := range []string{"\x01enforcer refused 1", "\x01enforcer refused", "enforcer refused"} {
		t.Run(strings.TrimPrefix(name, "\x01"), func(t *testing.T) {
			c := p.connect(t)
			defer c.Close(context.Background())
			fe := c.Frontend()
			got := transcript(t, fe, 1, &pgproto3.Query{String: "begin"})
			got = append(got, transcript(t, fe, 1, &pgproto3.Query{String: `declare "` + name + `" cursor for select secret from t order by id`})...)
			refused := transcript(t, fe, 1, &pgproto3.Query{String: "drop table t"}) // refused by the no-drop rule
			got = append(got, refused...)
			if j := strings.Join(got, " "); secretInClear.MatchString(j) {
				t.Errorf("t.secret in clear: %v", got)
			}
			if j := strings.Join(refused, " "); j != "E:42501 Z:E" {
				t.Errorf("the refused statement: %v, want its error and a failed transaction", refused)
			}
		})
	}
}
