package pgguard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	dto "github.com/prometheus/client_model/go"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/metrics"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

const testPolicy = `version: 1
targets:
  - name: db
    match: {addresses: [198.18.0.2], ports: [5432]}
    protocol: postgres
    upstream: {user: u, password_file: /nonexistent, tls: disable}
grants:
  - {groups: [eng], targets: [db]}
rules:
  - {name: no-drop, when: 'sql.kind == "DROP"', action: block, message: no drops}
`

// allowAllPolicy is testPolicy with writes allowed.
const allowAllPolicy = "default: allow\n" + testPolicy

// secretRule is allowAllPolicy with t.secret (startGuardedProxy's table) under a column rule.
const secretRule = allowAllPolicy + "masking:\n  columns:\n    - {match: t.secret, style: redact}\n"

func newGuard(t testing.TB, rec *record.Recorder) *Guard {
	t.Helper()
	pol := parsePolicy(t, testPolicy)
	return guardFor(func() *policy.Policy { return pol }, rec)
}

// loggedGuard returns a guard on the test policy recording into a new log in a temporary
// directory (opts.Dir is set).
func loggedGuard(t *testing.T, opts record.Options) (*Guard, *record.Recorder, string) {
	t.Helper()
	opts.Dir = t.TempDir()
	rec, err := record.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return newGuard(t, rec), rec, opts.Dir
}

// closeAndLoad closes the recorder and returns the session's records.
func closeAndLoad(t *testing.T, rec *record.Recorder, dir, session string) []record.Record {
	t.Helper()
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := record.LoadSession(dir, session)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func parsePolicy(t testing.TB, text string) *policy.Policy {
	t.Helper()
	pol, err := policy.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// guardFor returns alice's guard on the policy's first target, with the policy current returns.
func guardFor(current func() *policy.Policy, rec *record.Recorder) *Guard {
	return testShared(current, rec).NewGuard(ConnInfo{ID: "1", Target: current().Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
}

func testShared(current func() *policy.Policy, rec *record.Recorder) *Shared {
	return &Shared{
		Policy:     current,
		Classifier: sqlclass.New(sqlclass.Options{}),
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		Recorder:   rec,
	}
}

func TestStatementVerdicts(t *testing.T) {
	g := newGuard(t, nil)
	cases := []struct {
		name   string
		st     postgres.Statement
		refuse bool
		msg    string
	}{
		{"read", postgres.Statement{Kind: postgres.KindQuery, SQL: "select 1"}, false, ""},
		{"rule block", postgres.Statement{Kind: postgres.KindQuery, SQL: "drop table t"}, true, `blocked by rule "no-drop": no drops`},
		{"default blocks writes", postgres.Statement{Kind: postgres.KindQuery, SQL: "delete from t where id = 1"}, true, "blocked by the policy default (allow_reads)"},
		{"parse of a read", postgres.Statement{Kind: postgres.KindParse, SQL: "select $1::int", StatementName: "s1"}, false, ""},
		{"execute of a parsed read", postgres.Statement{Kind: postgres.KindExecute, SQL: "select $1::int", StatementName: "s1", Known: true, Params: [][]byte{[]byte("1")}}, false, ""},
		{"execute of an unknown statement", postgres.Statement{Kind: postgres.KindExecute, StatementName: "nope", Known: false}, true, "not prepared through the enforcer"},
		{"parse of a drop", postgres.Statement{Kind: postgres.KindParse, SQL: "drop table t", StatementName: "s2"}, true, "no-drop"},
		{"function call", postgres.Statement{Kind: postgres.KindFunctionCall, FunctionOID: 1234}, true, "fast-path function calls"},
		{"PREPARE is judged by its body", postgres.Statement{Kind: postgres.KindQuery, SQL: "prepare p as delete from t where id = $1"}, true, "policy default"},
		{"EXECUTE of a name never prepared here", postgres.Statement{Kind: postgres.KindQuery, SQL: "execute q(1)"}, true, "blocked"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := c.st
			v := g.Statement(context.Background(), &st)
			if (v.Action == postgres.Refuse) != c.refuse {
				t.Fatalf("action %v, want refuse=%v (%+v)", v.Action, c.refuse, v.Error)
			}
			if c.refuse && (v.Error == nil || v.Error.Code != "42501" || !strings.Contains(v.Error.Message, c.msg)) {
				t.Errorf("error %+v, want 42501 with %q", v.Error, c.msg)
			}
		})
	}
}

// TestPreparedSurvivesNextQuery: the classification of a simple-protocol query is built in storage
// the next query reuses, so a PREPARE must keep a copy of its body. Here the second PREPARE of r has
// the shape of the first (so it is built in that storage) and the next query, a write of a cached
// shape, is built in the same place; EXECUTE r must still be judged as the read it prepared.
func TestPreparedSurvivesNextQuery(t *testing.T) {
	g := newGuard(t, nil)
	run := func(sql string) postgres.Verdict {
		st := postgres.Statement{Kind: postgres.KindQuery, SQL: sql}
		return g.Statement(context.Background(), &st)
	}
	for _, q := range []struct {
		sql    string
		refuse bool
	}{
		{"DELETE FROM t WHERE id = 1", true}, // caches the DELETE shape
		{"PREPARE r AS SELECT * FROM t WHERE id = 1", false},
		{"PREPARE q AS SELECT * FROM t WHERE id = 2", false}, // same shape: built in the storage
		{"DELETE FROM t WHERE id = 2", true},                 // same shape as the first: reuses it
		{"EXECUTE r", false},
	} {
		if v := run(q.sql); (v.Action == postgres.Refuse) != q.refuse {
			t.Fatalf("%q: action %v, want refuse=%v (%+v)", q.sql, v.Action, q.refuse, v.Error)
		}
	}
}

// TestRecordingFailureRefuses: when the session log cannot be written, statements do not run.
func TestRecordingFailureRefuses(t *testing.T) {
	rec, err := record.Open(record.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(t, rec)
	st := postgres.Statement{Kind: postgres.KindQuery, SQL: "select 1"}
	if v := g.Statement(context.Background(), &st); v.Action != postgres.Allow {
		t.Fatalf("with a working log: %+v", v.Error)
	}
	rec.Close()
	st = postgres.Statement{Kind: postgres.KindQuery, SQL: "select 2"}
	v := g.Statement(context.Background(), &st)
	if v.Action != postgres.Refuse || !strings.Contains(v.Error.Message, "session log") {
		t.Fatalf("with a closed log: %+v", v)
	}
	// A session that cannot even record its start refuses everything.
	g2 := newGuard(t, rec)
	st = postgres.Statement{Kind: postgres.KindQuery, SQL: "select 3"}
	if v := g2.Statement(context.Background(), &st); v.Action != postgres.Refuse {
		t.Fatalf("unrecorded session ran a statement")
	}
}

// TestRecordedResults: rows, NULLs, binary cells, the row cap and changing columns are recorded as
// the client saw them, although the guard reuses its storage from one result to the next.
func TestRecordedResults(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{MaxResultRows: 2})
	ctx := context.Background()
	var rd *pgproto3.RowDescription // rows carry their description, as the proxy sends them
	desc := func(names ...string) *postgres.Result {
		rd = &pgproto3.RowDescription{}
		for _, n := range names {
			rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(n), DataTypeOID: 25})
		}
		return &postgres.Result{Kind: postgres.ResultRowDescription, Columns: rd}
	}
	row := func(formats []int16, vals ...[]byte) *postgres.Result {
		return &postgres.Result{Kind: postgres.ResultRow, Columns: rd, Formats: formats, Values: vals}
	}
	tag := func(s string) *postgres.Result {
		return &postgres.Result{Kind: postgres.ResultCommandComplete, Tag: []byte(s)}
	}
	run := func(sql string, results ...*postgres.Result) {
		t.Helper()
		st := postgres.Statement{Kind: postgres.KindQuery, SQL: sql}
		if v := g.Statement(ctx, &st); v.Action != postgres.Allow {
			t.Fatalf("%s: %+v", sql, v.Error)
		}
		for _, r := range results {
			// The proxy reuses its message buffers too: scribble over every cell afterwards.
			if err := g.Result(ctx, r); err != nil {
				t.Fatal(err)
			}
			for _, v := range r.Values {
				for i := range v {
					v[i] = '#'
				}
			}
		}
	}
	run("select a, b from t",
		desc("a", "b"),
		row(nil, []byte("x1"), nil),
		row([]int16{0, 1}, []byte(""), []byte{1, 2, 3}),
		row(nil, []byte("dropped"), []byte("by cap")),
		tag("SELECT 3"))
	run("select c from u", desc("c"), row(nil, []byte("only")), tag("SELECT 1"))
	run("select 1", tag("SELECT 0"))
	g.End("client closed", 1, 2)
	recs := closeAndLoad(t, rec, dir, g.SessionID())
	var got []string
	for _, r := range recs {
		if r.Type == record.TypeResult {
			got = append(got, string(r.Data))
		}
	}
	want := []string{
		`{"column_types":[25,25],"columns":["a","b"],"command_tag":"SELECT 3",`, // duration_us may be 0, so absent
		`,"row_count":3,"rows":[["x1",null],["","[binary, 3 bytes]"]],"truncated":true}`,
		`{"column_types":[25],"columns":["c"],"command_tag":"SELECT 1",`,
		`,"row_count":1,"rows":[["only"]]}`,
		`{"command_tag":"SELECT 0",`,
		`"row_count":0}`,
	}
	if len(got) != 3 {
		t.Fatalf("got %d result records, want 3: %q", len(got), got)
	}
	for i, g := range got {
		if !strings.HasPrefix(g, want[2*i]) || !strings.HasSuffix(g, want[2*i+1]) {
			t.Errorf("result %d:\n got %s\nwant %s…%s", i, g, want[2*i], want[2*i+1])
		}
	}
}

// TestReadsRecordedWithTheirResult: a read waits for its first result and is written with it as
// one record; anything else that happens first (a second statement, a notice) writes it alone,
// and the log keeps the order things happened in.
func TestReadsRecordedWithTheirResult(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{})
	ctx := context.Background()
	var ids uint64
	stmt := func(sql string) *postgres.Statement {
		t.Helper()
		ids++
		st := &postgres.Statement{ID: ids, Kind: postgres.KindQuery, SQL: sql}
		if v := g.Statement(ctx, st); v.Action != postgres.Allow {
			t.Fatalf("%s: %+v", sql, v.Error)
		}
		return st
	}
	done := func(st *postgres.Statement, tag string) {
		t.Helper()
		if err := g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: st, Tag: []byte(tag)}); err != nil {
			t.Fatal(err)
		}
	}
	// One read, delivered: one record.
	s1 := stmt("select 1")
	done(s1, "SELECT 1")
	g.Delivered()
	// Two statements in one message's worth (a multi-statement query): both results follow.
	s2 := stmt("select 2; select 3")
	done(s2, "SELECT 2")
	done(s2, "SELECT 3")
	g.Delivered()
	// Pipelined: the second statement arrives before the first one's result.
	s4 := stmt("select 4")
	s5 := stmt("select 5")
	done(s4, "SELECT 4")
	done(s5, "SELECT 5")
	// A notice while a read waits.
	s6 := stmt("select 6")
	if err := g.Result(ctx, &postgres.Result{Kind: postgres.ResultNotice, Statement: s6, Error: &pgproto3.ErrorResponse{Severity: "NOTICE", Message: "hello"}}); err != nil {
		t.Fatal(err)
	}
	done(s6, "SELECT 6")
	g.End("done", 0, 0)
	recs := closeAndLoad(t, rec, dir, g.SessionID())
	var got []string
	for _, r := range recs {
		ev, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Type {
		case record.TypeStatement:
			s := "stmt " + ev.Statement.Text
			if ev.Statement.Result != nil {
				s += " + " + ev.Statement.Result.CommandTag
			}
			got = append(got, s)
		case record.TypeResult:
			got = append(got, "result "+ev.Result.CommandTag)
		case record.TypeNotice:
			got = append(got, "notice "+ev.Notice.Message)
		}
	}
	want := []string{
		"stmt select 1 + SELECT 1",
		"stmt select 2; select 3 + SELECT 2", "result SELECT 3",
		"stmt select 4", "stmt select 5", "result SELECT 4", "result SELECT 5",
		"stmt select 6", "notice hello", "result SELECT 6",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStatementsCounted: statements are counted by target and verdict (each verdict's counter is
// cached per connection, so a second connection must count into the same series).
func TestStatementsCounted(t *testing.T) {
	m := metrics.New()
	for range 2 {
		g := newGuard(t, nil)
		g.sh.Metrics = m
		for _, sql := range []string{"select 1", "select 2", "drop table t"} {
			st := postgres.Statement{Kind: postgres.KindQuery, SQL: sql}
			g.Statement(context.Background(), &st)
		}
	}
	for verdict, want := range map[string]float64{"allow": 4, "block": 2} {
		var got dto.Metric
		if err := m.Statements.WithLabelValues("db", verdict).Write(&got); err != nil || got.GetCounter().GetValue() != want {
			t.Errorf("%s: counted %v (%v), want %v", verdict, got.GetCounter().GetValue(), err, want)
		}
	}
}

// TestParseDecisionReuse: a Parse of the same text reuses the last decision only while nothing
// it depends on changed: a policy reload and a PREPARE or DEALLOCATE make the guard decide again.
func TestParseDecisionReuse(t *testing.T) {
	// default: allow, so that DEALLOCATE runs
	pol := parsePolicy(t, allowAllPolicy)
	noReads := parsePolicy(t, "default: allow\n"+testPolicy+"  - {name: no-reads, when: 'sql.reads', action: block, message: no reads}\n")
	current := pol
	g := guardFor(func() *policy.Policy { return current }, nil)
	run := func(kind postgres.Kind, sql string) bool {
		st := postgres.Statement{Kind: kind, SQL: sql}
		return g.Statement(context.Background(), &st).Action != postgres.Refuse
	}
	steps := []struct {
		name    string
		do      func()
		kind    postgres.Kind
		sql     string
		allowed bool
	}{
		{"read", nil, postgres.KindParse, "select 1", true},
		{"same read again", nil, postgres.KindParse, "select 1", true},
		{"after a reload that blocks reads", func() { current = noReads }, postgres.KindParse, "select 1", false},
		{"after the reload back", func() { current = pol }, postgres.KindParse, "select 1", true},
		{"EXECUTE of nothing prepared", nil, postgres.KindParse, "execute p(1)", false},
		{"EXECUTE once PREPAREd", func() { run(postgres.KindQuery, "prepare p as select $1::int") }, postgres.KindParse, "execute p(1)", true},
		{"EXECUTE after DEALLOCATE", func() {
			if !run(postgres.KindQuery, "deallocate p") {
				t.Fatal("DEALLOCATE refused")
			}
		}, postgres.KindParse, "execute p(1)", false},
	}
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		if got := run(s.kind, s.sql); got != s.allowed {
			t.Fatalf("%s: allowed=%v, want %v", s.name, got, s.allowed)
		}
	}
}

// TestMaskingPlanReuse: the plan of a result set is reused only for a description with the same
// columns; another description, or rows with none, get their own plan.
func TestMaskingPlanReuse(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: secret, style: redact}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	if g.mask == nil {
		t.Fatal("no masking plan for this identity")
	}
	column := func(name string) *pgproto3.RowDescription {
		return &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte(name), DataTypeOID: 25}}}
	}
	ctx := context.Background()
	var id uint64
	row := func(rd *pgproto3.RowDescription) string {
		id++
		st := &postgres.Statement{ID: id, Kind: postgres.KindQuery, SQL: "select x"}
		if v := g.Statement(ctx, st); v.Action != postgres.Allow {
			t.Fatalf("statement refused: %+v", v.Error)
		}
		if rd != nil {
			if err := g.Result(ctx, &postgres.Result{Kind: postgres.ResultRowDescription, Statement: st, Columns: rd}); err != nil {
				t.Fatal(err)
			}
		}
		r := &postgres.Result{Kind: postgres.ResultRow, Statement: st, Columns: rd, Values: [][]byte{[]byte("hunter2")}}
		if err := g.Result(ctx, r); err != nil {
			t.Fatal(err)
		}
		return string(r.Values[0])
	}
	steps := []struct {
		name  string
		desc  *pgproto3.RowDescription
		clear bool
	}{
		{"ruled column", column("secret"), false},
		{"other column", column("public"), true},
		{"ruled column again", column("secret"), false},
		{"same description, new statement", column("secret"), false},
		{"rows without a description fail closed", nil, false},
		{"other column after those", column("public"), true},
		{"rows without a description again", nil, false},
		{"the same other column: not the undescribed rows' plan", column("public"), true},
		{"ruled column at the end", column("secret"), false},
	}
	for _, s := range steps {
		got := row(s.desc)
		if (got == "hunter2") != s.clear {
			t.Errorf("%s: got %q, want clear=%v", s.name, got, s.clear)
		}
	}
}

// TestCellsKeepEarlierRows: the rows of one record share a buffer that grows as rows are added;
// a row built earlier keeps its values however many come after it.
func TestCellsKeepEarlierRows(t *testing.T) {
	var c cells
	plain := func(dst []byte, _ int, _ []byte) ([]byte, bool) { return dst, false }
	var rows [][]*string
	var want [][]string
	for i := range 200 {
		vals := [][]byte{[]byte(fmt.Sprint(i)), nil, []byte(strings.Repeat("v", i%37)), {}}
		row, cut, fits := c.row(vals, plain, 1<<20, math.MaxInt)
		if cut || !fits {
			t.Fatalf("row %d: cut %v, fits %v", i, cut, fits)
		}
		rows = append(rows, row)
		want = append(want, []string{fmt.Sprint(i), "<null>", strings.Repeat("v", i%37), ""})
	}
	for i, row := range rows {
		for j, p := range row {
			got := "<null>"
			if p != nil {
				got = *p
			}
			if got != want[i][j] {
				t.Fatalf("row %d cell %d: %q, want %q", i, j, got, want[i][j])
			}
		}
	}
}

// TestRecordedParams: an Execute's parameters are recorded as reviewers see them: text masked
// like results, binary values by size, NULL as null, clean text as sent.
func TestRecordedParams(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{})
	ctx := context.Background()
	const sql = "select $1::text, $2::bytea, $3::text, $4::text"
	parse := postgres.Statement{Kind: postgres.KindParse, SQL: sql, StatementName: "p"}
	if v := g.Statement(ctx, &parse); v.Action != postgres.Allow {
		t.Fatalf("parse: %+v", v.Error)
	}
	secret := []byte("mail alice@example.com please")
	exec := postgres.Statement{Kind: postgres.KindExecute, SQL: sql, StatementName: "p", Known: true,
		ParamFormats: []int16{0, 1, 0, 0}, Params: [][]byte{secret, {1, 2, 3, 4}, nil, []byte("plain")}}
	if v := g.Statement(ctx, &exec); v.Action != postgres.Allow {
		t.Fatalf("execute: %+v", v.Error)
	}
	if err := g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: &exec, Tag: []byte("SELECT 0")}); err != nil {
		t.Fatal(err)
	}
	g.End("client closed", 1, 2)
	masked, changed, err := g.mask.plan.MaskText(secret, nil)
	if err != nil || !changed {
		t.Fatalf("the test policy does not mask %q: %v", secret, err)
	}
	want := `"params":["` + string(masked) + `","[binary, 4 bytes]",null,"plain"]`
	for _, r := range closeAndLoad(t, rec, dir, g.SessionID()) {
		if r.Type == record.TypeStatement && strings.Contains(string(r.Data), `"params"`) {
			if !strings.Contains(string(r.Data), want) {
				t.Fatalf("recorded %s\nwant it to hold %s", r.Data, want)
			}
			return
		}
	}
	t.Fatal("no statement record with parameters")
}

// TestComputedColumnOrigins: a computed column is masked by the rules covering the columns the
// statement computes it from, and by every rule when its statement was never seen judged.
func TestComputedColumnOrigins(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	ctx := context.Background()
	computed := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 25}}}
	for i, c := range []struct {
		sql    string
		judged bool
		clear  bool
	}{
		{"select upper(name) from t", true, true},
		{"select upper(secret) from t", true, false},
		{"select s.secret || '' from t as s", true, false},
		{"select upper(name) from t", false, false},
		{"select x from (select secret as x from t) q", true, false},
		{"declare k cursor for select upper(name) from t", true, true},
		{"fetch all k", true, true},
		// Declared again: the server keeps the first, unless it was closed unseen.
		{"declare k cursor for select upper(secret) from t", true, true},
		{"fetch all k", true, false},
		{"select x from table_to_xml('t', false, false, '') x", true, false},
		// Closed for certain, then declared again: known.
		{"close k", true, true},
		{"declare k cursor with hold for select upper(secret) from t", true, true},
		{"fetch all k", true, false},
		// A WITH HOLD cursor outlives COMMIT: the DECLARE after it may be refused.
		{"commit", true, true},
		{"declare k cursor with hold for select upper(name) from t", true, true},
		{"fetch all k", true, false},
		// A CLOSE after a query's first statement may not run.
		{"close k", true, true},
		{"declare j cursor with hold for select upper(secret) from t", true, true},
		{"select 1/0; close j", true, true},
		{"declare j cursor with hold for select upper(name) from t", true, true},
		{"fetch all j", true, false},
	} {
		st := &postgres.Statement{ID: uint64(i + 1), Kind: postgres.KindQuery, SQL: c.sql}
		if c.judged {
			if v := g.Statement(ctx, st); v.Action != postgres.Allow {
				t.Fatalf("%s: refused", c.sql)
			}
		}
		r := &postgres.Result{Kind: postgres.ResultRow, Statement: st, Columns: computed, Values: [][]byte{[]byte("hunter2")}}
		if err := g.Result(ctx, &postgres.Result{Kind: postgres.ResultRowDescription, Statement: st, Columns: computed}); err != nil {
			t.Fatal(err)
		}
		if err := g.Result(ctx, r); err != nil {
			t.Fatal(err)
		}
		if got := string(r.Values[0]); (got == "hunter2") != c.clear {
			t.Errorf("%s (judged %v): got %q, want clear=%v", c.sql, c.judged, got, c.clear)
		}
	}
}
