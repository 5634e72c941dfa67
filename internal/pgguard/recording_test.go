package pgguard

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// eventsOf returns the records' events.
func eventsOf(t *testing.T, recs []record.Record) []record.Event {
	t.Helper()
	var evs []record.Event
	for _, r := range recs {
		ev, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// replayText renders the records as `enforcer replay` shows them.
func replayText(t *testing.T, recs []record.Record) string {
	t.Helper()
	var sb strings.Builder
	if err := record.RenderReplay(&sb, recs, record.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// TestPipelinedResultsKeepTheirStatements: with statements pipelined, the client side judges
// statement i+1 while the server side completes the result of statement i. A statement record
// must only ever carry its own result, and a result written on its own must follow its
// statement's record.
func TestPipelinedResultsKeepTheirStatements(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{})
	ctx := context.Background()
	const n = 20000
	var issued atomic.Int64
	sts := make([]postgres.Statement, n+1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= n; i++ {
			for issued.Load() < int64(i) {
				runtime.Gosched()
			}
			g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: &sts[i], Tag: fmt.Appendf(nil, "SELECT %d", i)})
			if i%3 == 0 {
				g.Delivered()
			}
		}
	}()
	for i := 1; i <= n; i++ {
		sts[i] = postgres.Statement{ID: uint64(i), Kind: postgres.KindQuery, SQL: fmt.Sprintf("select %d", i)}
		st := sts[i] // the guard sees a copy: results point at sts[i], with the same ID
		if v := g.Statement(ctx, &st); v.Action != postgres.Allow {
			t.Fatal(v.Error)
		}
		issued.Store(int64(i))
	}
	<-done
	g.End("done", 0, 0)
	recorded := map[string]bool{} // statements recorded so far
	byID := map[uint64]string{}   // the texts of statements recorded apart from their results
	results, bad := 0, 0
	for _, ev := range eventsOf(t, closeAndLoad(t, rec, dir, g.SessionID())) {
		var res *record.Result
		var of string
		switch {
		case ev.Statement != nil:
			recorded[ev.Statement.Text] = true
			res, of = ev.Statement.Result, ev.Statement.Text
			if id := ev.Statement.ID; id != 0 {
				byID[id] = ev.Statement.Text
			}
		case ev.Result != nil:
			res = ev.Result
		default:
			continue
		}
		if res == nil {
			continue
		}
		results++
		own := "select " + strings.TrimPrefix(res.CommandTag, "SELECT ")
		switch {
		case ev.Result != nil && byID[res.StatementID] != own:
			// A result recorded apart names its statement, for replays.
			if bad < 5 {
				t.Errorf("result %q names statement #%d (%q)", res.CommandTag, res.StatementID, byID[res.StatementID])
			}
			bad++
		case of != "" && of != own:
			if bad < 5 {
				t.Errorf("statement %q recorded with result %q", of, res.CommandTag)
			}
			bad++
		case !recorded[own]:
			if bad < 5 {
				t.Errorf("result %q recorded before its statement", res.CommandTag)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d results recorded with another statement or before their own", bad)
	}
	if results != n || len(recorded) != n {
		t.Errorf("%d statements and %d results recorded, want %d each", len(recorded), results, n)
	}
}

// TestPipelinedResultDurations: each result's duration runs from its own statement's start,
// not from the latest statement's.
func TestPipelinedResultDurations(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{})
	ctx := context.Background()
	const gap = 30 * time.Millisecond
	s1 := &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "select 1"}
	s2 := &postgres.Statement{ID: 2, Kind: postgres.KindQuery, SQL: "select 2"}
	g.Statement(ctx, s1)
	time.Sleep(gap)
	g.Statement(ctx, s2)
	g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: s1, Tag: []byte("SELECT 1")})
	g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: s2, Tag: []byte("SELECT 2")})
	g.End("done", 0, 0)
	durations := map[string]int64{}
	for _, ev := range eventsOf(t, closeAndLoad(t, rec, dir, g.SessionID())) {
		if ev.Result != nil {
			durations[ev.Result.CommandTag] = ev.Result.DurationUS
		}
	}
	if d := durations["SELECT 1"]; d < gap.Microseconds() {
		t.Errorf("the first statement's result took %d µs, want at least %d (from its own start)", d, gap.Microseconds())
	}
	if d1, d2 := durations["SELECT 1"], durations["SELECT 2"]; d2 >= d1 {
		t.Errorf("the second statement's result took %d µs, the first's %d: want less", d2, d1)
	}
}

// TestAwaitedStarts: the ring of statements awaiting results finds each one's start, forgets
// the ones before a statement whose result came, keeps only the latest of statements not
// numbered in order, and forgets its oldest when a client pipelines deeper than it holds.
func TestAwaitedStarts(t *testing.T) {
	var q starts
	base := time.Unix(1000, 0)
	at := func(id uint64) time.Time { return base.Add(time.Duration(id) * time.Second) }
	check := func(id uint64, want bool) {
		t.Helper()
		got, ok := q.of(id)
		if ok != want || (ok && !got.Equal(at(id))) {
			t.Fatalf("start of %d: %v %v, want found=%v (%v)", id, got, ok, want, at(id))
		}
	}
	for id := uint64(1); id <= 3; id++ {
		q.push(id, at(id))
	}
	check(1, true)
	check(1, true) // a statement may have several results
	check(3, true) // 2 had none that came here
	check(2, false)
	check(3, true)
	// Not numbered by the proxy (all zero): the latest counts.
	q.push(0, at(0))
	q.push(0, at(0).Add(time.Second))
	if got, ok := q.of(0); !ok || !got.Equal(at(1)) {
		t.Fatalf("unnumbered statements: %v %v, want the latest", got, ok)
	}
	// Deeper than the ring: the oldest lose their start, every later one keeps its own.
	q = starts{}
	const n = maxAwaited + 10
	for id := uint64(1); id <= n; id++ {
		q.push(id, at(id))
	}
	for id := uint64(1); id <= n; id++ {
		check(id, id > n-maxAwaited)
	}
}

// TestResultColumnsFromRows: an Execute's row description went by with Describe, before the
// statement; its rows carry it, and the record must name the columns from them.
func TestResultColumnsFromRows(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{})
	ctx := context.Background()
	const sql = "select id, name from t where id < $1"
	if v := g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindParse, SQL: sql}); v.Action != postgres.Allow {
		t.Fatal(v.Error)
	}
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("id"), DataTypeOID: 23, Format: 1}, {Name: []byte("name"), DataTypeOID: 25}}}
	for id, n := range []uint64{2, 3} {
		st := &postgres.Statement{ID: n, Kind: postgres.KindExecute, Known: true, SQL: sql, Params: [][]byte{[]byte("3")}}
		if v := g.Statement(ctx, st); v.Action != postgres.Allow {
			t.Fatal(v.Error)
		}
		for i := range 2 {
			g.Result(ctx, &postgres.Result{Kind: postgres.ResultRow, Statement: st, Columns: rd, Formats: []int16{1, 0},
				Values: [][]byte{{0, 0, 0, byte(i)}, fmt.Appendf(nil, "n%d", id)}})
		}
		g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: st, Tag: []byte("SELECT 2")})
		g.Delivered()
	}
	g.End("done", 0, 0)
	recs := closeAndLoad(t, rec, dir, g.SessionID())
	var got int
	for _, ev := range eventsOf(t, recs) {
		if ev.Statement == nil || ev.Statement.Result == nil {
			continue
		}
		got++
		res := ev.Statement.Result
		if strings.Join(res.Columns, ",") != "id,name" || fmt.Sprint(res.ColumnTypes) != "[23 25]" || len(res.Rows) != 2 {
			t.Errorf("result recorded as columns %q, types %v, %d rows", res.Columns, res.ColumnTypes, len(res.Rows))
		}
	}
	if got != 2 {
		t.Fatalf("%d statements recorded with their result, want 2", got)
	}
	if out := replayText(t, recs); strings.Count(out, "(2 rows)") != 2 {
		t.Errorf("replay shows no result tables:\n%s", out)
	}
}

// TestResultCutShortAtEnd: when the connection ends in the middle of a result, the rows that
// came so far (which the client may have seen) are recorded, marked as cut short, after their
// statement (with it, if that still waited) and before the session's end.
func TestResultCutShortAtEnd(t *testing.T) {
	for _, delivered := range []bool{false, true} {
		t.Run(fmt.Sprintf("delivered=%v", delivered), func(t *testing.T) {
			g, rec, dir := loggedGuard(t, record.Options{MaxResultRows: 2})
			ctx := context.Background()
			st := &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "select a from t"}
			if v := g.Statement(ctx, st); v.Action != postgres.Allow {
				t.Fatal(v.Error)
			}
			rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), DataTypeOID: 25}}}
			g.Result(ctx, &postgres.Result{Kind: postgres.ResultRowDescription, Statement: st, Columns: rd})
			for i := range 3 {
				g.Result(ctx, &postgres.Result{Kind: postgres.ResultRow, Statement: st, Columns: rd, Values: [][]byte{fmt.Appendf(nil, "row%d", i)}})
			}
			if delivered {
				g.Delivered() // the client has the rows so far: the statement is written alone
			}
			g.End("client closed", 0, 0)
			evs := eventsOf(t, closeAndLoad(t, rec, dir, g.SessionID()))
			var types []string
			for _, ev := range evs {
				types = append(types, string(ev.Type))
			}
			want, res := "session_start statement session_end", (*record.Result)(nil)
			if delivered {
				want = "session_start statement result session_end"
			}
			if strings.Join(types, " ") != want {
				t.Fatalf("records %v, want %s", types, want)
			}
			if delivered {
				res = evs[2].Result
			} else {
				res = evs[1].Statement.Result
			}
			if res == nil {
				t.Fatal("the rows that came are not recorded")
			}
			if res.RowCount != 3 || len(res.Rows) != 2 || *res.Rows[0][0] != "row0" || !res.Truncated || res.Error != errCutShort || res.CommandTag != "" {
				t.Errorf("cut-short result recorded as %+v", *res)
			}
		})
	}
}

// session waits for the connection to end and returns its records.
func (p *guardedProxy) session(t *testing.T) []record.Record {
	t.Helper()
	var g *Guard
	select {
	case g = <-p.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxied connection did not end")
	}
	return closeAndLoad(t, p.rec, p.dir, g.SessionID())
}

// TestExtendedResultColumnsWithPostgres: drivers use the extended protocol, where the row
// description comes with Describe; results recorded through it name their columns and replay
// shows their table.
func TestExtendedResultColumnsWithPostgres(t *testing.T) {
	p := startGuardedProxy(t, allowAllPolicy)
	ctx := context.Background()
	// pgx prepares (Parse, Describe statement) and then binds and executes.
	c, err := pgx.Connect(ctx, p.dsn())
	if err != nil {
		t.Fatal(err)
	}
	<-p.guards
	rows, _ := c.Query(ctx, "select id, secret from t where id <= $1 order by id", 2)
	got, err := pgx.CollectRows(rows, pgx.RowToMap)
	if err != nil || len(got) != 2 {
		t.Fatalf("pgx query: %v rows, %v", len(got), err)
	}
	// pgconn's ExecParams describes the portal instead.
	res := c.PgConn().ExecParams(ctx, "select secret as s from t where id = $1", [][]byte{[]byte("3")}, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 {
		t.Fatalf("ExecParams: %v rows, %v", len(res.Rows), res.Err)
	}
	c.Close(ctx)
	recs := p.session(t)
	want := map[string]string{"id,secret": "v2", "s": "v3"}
	for _, ev := range eventsOf(t, recs) {
		// A result is in its statement's record, or in one of its own when the statement's
		// record was written first (it may be, under load, while the result is on its way).
		r := ev.Result
		if ev.Statement != nil && ev.Statement.Protocol == "extended" {
			r = ev.Statement.Result
		}
		if r == nil {
			continue
		}
		cols := strings.Join(r.Columns, ",")
		if v, ok := want[cols]; ok && len(r.Rows) > 0 && *r.Rows[len(r.Rows)-1][len(r.Columns)-1] == v {
			delete(want, cols)
		}
	}
	out := replayText(t, recs)
	if len(want) > 0 {
		t.Errorf("results with columns %v not recorded; replay:\n%s", want, out)
	}
	if !strings.Contains(out, "(2 rows)") || !strings.Contains(out, "(1 row)") {
		t.Errorf("replay shows no result table:\n%s", out)
	}
}

// TestResultCutShortWithPostgres: a client reads part of a large result and disconnects; the
// rows it saw are in the record, marked as cut short.
func TestResultCutShortWithPostgres(t *testing.T) {
	p := startGuardedProxy(t, allowAllPolicy)
	c := p.connect(t)
	<-p.guards
	fe := c.Frontend()
	fe.Send(&pgproto3.Query{String: "select g, 'row'||g as secret from generate_series(1,2000000) g"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for seen < 1000 {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.DataRow); ok {
			seen++
		}
	}
	c.Conn().Close()
	var res *record.Result
	for _, ev := range eventsOf(t, p.session(t)) {
		if ev.Statement != nil && ev.Statement.Result != nil {
			res = ev.Statement.Result
		}
		if ev.Result != nil {
			res = ev.Result
		}
	}
	if res == nil {
		t.Fatal("the rows the client saw are not recorded")
	}
	if res.RowCount < int64(seen) || len(res.Rows) == 0 || *res.Rows[0][1] != "row1" || !res.Truncated || res.Error != errCutShort {
		t.Errorf("client saw %d rows; recorded %d (%d kept, first %v), truncated %v, error %q",
			seen, res.RowCount, len(res.Rows), res.Rows[:min(1, len(res.Rows))], res.Truncated, res.Error)
	}
}

// TestSuspendedPortalWithPostgres: a driver that fetches a portal a few rows at a time (JDBC's
// fetch size: Execute with a row limit, PortalSuspended, Execute again) gets one record per
// Execute, each with the rows that Execute returned, the suspended ones marked so.
func TestSuspendedPortalWithPostgres(t *testing.T) {
	p := startGuardedProxy(t, allowAllPolicy)
	ctx := context.Background()
	c := p.connect(t)
	<-p.guards
	fe := c.Frontend()
	fe.Send(&pgproto3.Parse{Query: "select id, secret from t order by id"})
	fe.Send(&pgproto3.Bind{DestinationPortal: "p"})
	fe.Send(&pgproto3.Describe{ObjectType: 'P', Name: "p"})
	fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	fe.Send(&pgproto3.Execute{Portal: "p", MaxRows: 2})
	fe.Send(&pgproto3.Execute{Portal: "p"})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var seen []string // what the client got, in order: row values and ends
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			seen = append(seen, string(m.Values[1]))
		case *pgproto3.PortalSuspended:
			seen = append(seen, "suspended")
		case *pgproto3.CommandComplete:
			seen = append(seen, string(m.CommandTag))
		case *pgproto3.ErrorResponse:
			t.Fatalf("server error: %s", m.Message)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if got, want := strings.Join(seen, " "), "v1 v2 suspended v3 v4 suspended v5 SELECT 1"; got != want {
		t.Fatalf("client got %q, want %q", got, want)
	}
	c.Close(ctx)
	recs := p.session(t)
	var got []string
	for _, ev := range eventsOf(t, recs) {
		res := ev.Result
		if ev.Statement != nil && ev.Statement.Result != nil {
			res = ev.Statement.Result
		}
		if res == nil {
			continue
		}
		var vals []string
		for _, row := range res.Rows {
			vals = append(vals, *row[1])
		}
		got = append(got, fmt.Sprintf("%s rows=%d suspended=%v tag=%q", strings.Join(vals, ","), res.RowCount, res.Suspended, res.CommandTag))
	}
	want := []string{
		`v1,v2 rows=2 suspended=true tag=""`,
		`v3,v4 rows=2 suspended=true tag=""`,
		`v5 rows=1 suspended=false tag="SELECT 1"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("results recorded:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if out := replayText(t, recs); strings.Count(out, "portal suspended") != 2 {
		t.Errorf("replay does not show the two suspended Executes:\n%s", out)
	}
}

// TestRecordMasksTextAndArguments: what the detectors find in a statement's text (a literal, a
// comment), in the process's arguments and in the parameters the client started with is
// recorded masked, as the results of the same identity are; the statement text still reaches
// the server as sent. An identity exempt from masking is recorded in clear.
func TestRecordMasksTextAndArguments(t *testing.T) {
	const (
		uri    = "postgres://app:S3cretPass@db/prod"
		insert = "insert into t values ('" + fuzzCard + "') -- a@example.com"
	)
	for _, c := range []struct {
		name   string
		policy string
		masked bool
	}{
		{"masked", testPolicy, true},
		{"exempt", testPolicy + "masking: {exempt_groups: [eng]}\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rec, err := record.Open(record.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			pol := parsePolicy(t, c.policy)
			g := testShared(func() *policy.Policy { return pol }, rec).NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}},
				Argv: []string{"psql", uri}, Cmdline: "psql " + uri})
			g.ClientStarted("prod", map[string]string{
				"application_name": "sync " + uri,
				"options":          "-c app.card=" + fuzzCard,
			})
			st := &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: insert}
			g.Statement(context.Background(), st)
			if st.SQL != insert {
				t.Fatalf("the statement was changed: %q", st.SQL)
			}
			g.End("done", 0, 0)
			evs := eventsOf(t, closeAndLoad(t, rec, dir, g.SessionID()))
			start, stmt := evs[0].Start, evs[1].Statement
			if start == nil || stmt == nil {
				t.Fatalf("records %+v", evs)
			}
			clear := strings.Contains(stmt.Text, fuzzCard) || strings.Contains(stmt.Text, "a@example.com") ||
				strings.Contains(strings.Join(start.Process.Cmdline, " "), "S3cretPass") || strings.Contains(g.info.Cmdline, "S3cretPass")
			if clear == c.masked {
				t.Errorf("masked %v: text %q, cmdline %q, reviewers' cmdline %q", c.masked, stmt.Text, start.Process.Cmdline, g.info.Cmdline)
			}
			params := start.ClientParams
			if clear := strings.Contains(params["application_name"], "S3cretPass") || strings.Contains(params["options"], fuzzCard); clear == c.masked || len(params) != 2 {
				t.Errorf("masked %v: client parameters %q", c.masked, params)
			}
			if c.masked && !strings.Contains(stmt.Text, fuzzCardMasked) {
				t.Errorf("text %q", stmt.Text)
			}
		})
	}
}

// TestStartupParametersRecordedMasked: the parameters a client connects with reach the record
// through the proxy's startup; a password in application_name is masked there as it is in a
// statement.
func TestStartupParametersRecordedMasked(t *testing.T) {
	const uri = "postgres://app:S3cretPass@db/prod"
	p := startGuardedProxy(t, testPolicy)
	conn, err := pgconn.Connect(context.Background(), p.dsn()+" application_name='etl "+uri+"'")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), "select 1 -- "+uri).ReadAll(); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	evs := eventsOf(t, p.session(t))
	start := evs[0].Start
	if start == nil {
		t.Fatalf("records %+v", evs)
	}
	if v := start.ClientParams["application_name"]; v == "" || strings.Contains(v, "S3cretPass") {
		t.Errorf("application_name recorded as %q", v)
	}
}

// TestSkippedStatementsRecorded: statements the server skipped after an error earlier in their
// batch were judged, and a write recorded ahead, when they were sent. Their records end as
// skipped, so an auditor does not take them for statements that ran; the replay says so.
func TestSkippedStatementsRecorded(t *testing.T) {
	p := startGuardedProxy(t, allowAllPolicy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := p.connect(t)
	pl := c.StartPipeline(ctx)
	pl.SendQueryParams("select 1/(select 0)", nil, nil, nil, nil)
	pl.SendQueryParams("update t set secret = 'changed' where id = 1", nil, nil, nil, nil)
	pl.SendQueryParams("select 2", nil, nil, nil, nil)
	pl.SendPipelineSync()
	if err := pl.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if r, err := pl.GetResults(); err == nil && r == nil {
			break
		} else if rr, ok := r.(*pgconn.ResultReader); ok {
			rr.Close()
		} else if _, ok := r.(*pgconn.PipelineSync); ok {
			break
		}
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if res := c.ExecParams(ctx, "select 3", nil, nil, nil, nil).Read(); res.Err != nil {
		t.Fatal(res.Err)
	}
	c.Close(ctx)
	if got := p.direct(t, "select secret from t where id = 1"); got != "v1" {
		t.Fatalf("the skipped update ran: secret is %q", got)
	}
	recs := p.session(t)
	ends := map[string]string{} // statement text → how the record says it ended
	texts := map[uint64]string{}
	for _, ev := range eventsOf(t, recs) {
		var res *record.Result
		switch {
		case ev.Statement != nil:
			texts[ev.Statement.ID] = ev.Statement.Text
			ends[ev.Statement.Text] = "none"
			res = ev.Statement.Result
			if res != nil {
				res.StatementID = ev.Statement.ID
			}
		case ev.Result != nil:
			res = ev.Result
		}
		if res == nil {
			continue
		}
		end := res.CommandTag
		switch {
		case res.Skipped:
			end = "skipped"
		case res.Error != "":
			end = "error " + res.ErrorCode
		}
		text := texts[res.StatementID]
		if ev.Statement != nil {
			text = ev.Statement.Text
		}
		ends[text] = end
	}
	want := map[string]string{
		"select 1/(select 0)":                          "error 22012",
		"update t set secret = 'changed' where id = 1": "skipped",
		"select 2": "skipped",
		"select 3": "SELECT 1",
	}
	for text, end := range want {
		if ends[text] != end {
			t.Errorf("%q recorded as ending %q, want %q (all: %q)", text, ends[text], end, ends)
		}
	}
	if out := replayText(t, recs); strings.Count(out, "SKIPPED") != 2 {
		t.Errorf("the replay does not show two skipped statements:\n%s", out)
	}
}
