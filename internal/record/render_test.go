package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPsqlTable: the first two expectations are psql 15's output for the same values, copied from
// `psql -c "select * from (values (1,'a****@example.com'),(10,null)) v(id,email)" -c 'select 1'`.
func TestPsqlTable(t *testing.T) {
	cases := []struct {
		name  string
		cols  []string
		rows  [][]*string
		total int64
		want  string
	}{
		{"numbers right, text left, null empty", []string{"id", "email"}, [][]*string{{str("1"), str("a****@example.com")}, {str("10"), nil}}, 2,
			" id |       email       \n----+-------------------\n  1 | a****@example.com\n 10 | \n(2 rows)\n"},
		{"one row", []string{"?column?"}, [][]*string{{str("1")}}, 1,
			" ?column? \n----------\n        1\n(1 row)\n"},
		{"capped", []string{"n"}, [][]*string{{str("a")}}, 1000,
			" n \n---\n a\n(1000 rows, 1 recorded)\n"},
		{"no rows", []string{"a", "b"}, nil, 0,
			" a | b \n---+---\n(0 rows)\n"},
		{"unicode width", []string{"name"}, [][]*string{{str("ünï")}, {str("line\nbreak")}}, 2,
			" name  \n-------\n ünï\n line +\n break\n(2 rows)\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := PsqlTable(c.cols, nil, c.rows, c.total); got != c.want {
				t.Fatalf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

func TestRenderReplayAndExports(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	for _, id := range []string{"s-1", "s-2"} {
		evs := sessionEvents(id)
		for i := range evs {
			evs[i].Time = time.Date(2026, 11, 27, 14, 0, 0, 500_000_000, time.UTC).Add(time.Duration(i) * 250 * time.Millisecond)
		}
		appendAll(t, r, evs, Async)
	}
	r.Close()
	recs, err := LoadSession(dir, "s-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 10 {
		t.Fatalf("%d records for s-1", len(recs))
	}
	var out bytes.Buffer
	if err := RenderReplay(&out, recs, ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"START    session s-1: alice@example.com (eng) on prod-db database app as agent_ro (postgres, 198.18.0.2:5432)",
		"process psql pid 99 uid 1000 exe /usr/bin/psql",
		"ALLOW    [read] SELECT id, email FROM users ORDER BY id LIMIT 2",
		"RESULT   SELECT 2  (1.234 ms)",
		" id |       email       \n----+-------------------\n  1 | a****@example.com\n  2 | \n(2 rows)\n",
		"BLOCKED  [ddl, rule no-destructive-ddl] DROP TABLE users",
		"HELD     [write, rule writes-need-review, approval ap-1] DELETE FROM orders WHERE id = $1",
		"params $1='7'",
		"APPROVAL ap-1 requested; approvers: dba",
		"APPROVAL ap-1 approved by bob@example.com",
		"END      client closed after 2.5s, 321 B from client, 4.5 KiB to client",
		"2026-11-27 14:00:00.500  START",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("replay lacks %q:\n%s", want, text)
		}
	}

	var one bytes.Buffer
	for _, rec := range recs {
		if err := RenderRecord(&one, rec, ReplayOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if one.String() != text {
		t.Fatal("RenderRecord one by one differs from RenderReplay")
	}
	out.Reset()
	if err := RenderReplayJSON(&out, recs); err != nil {
		t.Fatal(err)
	}
	var js []ReplayJSON
	if err := json.Unmarshal(out.Bytes(), &js); err != nil || len(js) != 10 || js[2].Type != TypeResult {
		t.Fatalf("replay json: %v %d", err, len(js))
	}

	// jsonl export reproduces the stored lines byte for byte.
	out.Reset()
	all, _ := LoadAll(dir)
	if err := ExportJSONL(&out, all); err != nil {
		t.Fatal(err)
	}
	stored, _ := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if !bytes.Equal(out.Bytes(), stored) {
		t.Fatalf("jsonl export differs from the log")
	}
	out.Reset()
	if err := ExportLog(&out, dir, 1); err != nil || !bytes.Equal(out.Bytes(), stored) {
		t.Fatalf("ExportLog differs from the log (%v)", err)
	}

	// asciicast v2: header, then [time, "o", text] with non-decreasing times.
	out.Reset()
	if err := ExportAsciicast(&out, recs, AsciicastOptions{}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&out)
	sc.Scan()
	var hdr struct {
		Version, Width, Height int
		Timestamp              int64
	}
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || hdr.Version != 2 || hdr.Width != 120 || hdr.Timestamp == 0 {
		t.Fatalf("asciicast header %s: %v", sc.Bytes(), err)
	}
	last, n := -1.0, 0
	for sc.Scan() {
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 || ev[1] != "o" {
			t.Fatalf("asciicast event %s", sc.Bytes())
		}
		ts := ev[0].(float64)
		if ts < last {
			t.Fatalf("time goes back: %v after %v", ts, last)
		}
		if strings.Contains(strings.ReplaceAll(ev[2].(string), "\r\n", ""), "\n") {
			t.Fatalf("bare newline in terminal output %q", ev[2])
		}
		last = ts
		n++
	}
	if n != 10 || last != 2.25 {
		t.Fatalf("%d events ending at %v, want 10 ending at 2.25", n, last)
	}
}

func TestSessionsList(t *testing.T) {
	dir := t.TempDir()
	clock := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	r := openT(t, Options{Dir: dir})
	alice := sessionEvents("a")
	for i := range alice {
		alice[i].Time = clock.Add(time.Duration(i) * time.Second)
	}
	appendAll(t, r, alice, Async)
	bob := sessionEvents("b")
	bob[0].Start.Identity.Email = "bob@example.com"
	bob[0].Start.Target.Name = "staging-db"
	appendAll(t, r, bob[:3], Async) // still open
	r.Close()
	cases := []struct {
		name string
		f    SessionFilter
		want []string
	}{
		{"all", SessionFilter{}, []string{"a", "b"}},
		{"user email", SessionFilter{User: "BOB@example.com"}, []string{"b"}},
		{"user subject", SessionFilter{User: "u-1"}, []string{"a", "b"}},
		{"target", SessionFilter{Target: "prod-db"}, []string{"a"}},
		{"since keeps open ones", SessionFilter{Since: clock.Add(time.Hour)}, []string{"b"}},
	}
	for _, c := range cases {
		ss, err := Sessions(dir, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range ss {
			ids = append(ids, s.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.name, ids, c.want)
		}
	}
	ss, _ := Sessions(dir, SessionFilter{})
	a := ss[0]
	if a.Open || a.Statements != 3 || a.Blocked != 1 || a.Held != 1 || a.BytesOut != 4567 || a.Process != "psql" || !ss[1].Open {
		t.Fatalf("summary %+v", a)
	}
	var out bytes.Buffer
	RenderSessions(&out, ss, nil)
	if !strings.Contains(out.String(), "psql[99]") || !strings.Contains(out.String(), "(2 rows)") || !strings.Contains(out.String(), "live") {
		t.Fatalf("sessions table:\n%s", out.String())
	}
	if _, err := LoadSession(dir, "nope"); err == nil {
		t.Fatal("unknown session loaded")
	}
}

func TestFollowSession(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 1500})
	evs := sessionEvents("live")
	appendAll(t, r, evs[:2], Async)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan Type, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- FollowSession(ctx, dir, "live", func(rec Record) error { got <- rec.Type; return nil })
	}()
	for i := 2; i < len(evs); i++ {
		time.Sleep(20 * time.Millisecond)
		appendAll(t, r, sessionEvents(fmt.Sprintf("other%d", i)), WriteAhead) // forces rotations in between
		appendAll(t, r, evs[i:i+1], Async)
	}
	if err := <-errc; err != nil {
		t.Fatalf("follow: %v", err)
	}
	r.Close()
	if len(got) != len(evs) {
		t.Fatalf("followed %d records, want %d", len(got), len(evs))
	}
	for _, ev := range evs {
		if g := <-got; g != ev.Type {
			t.Fatalf("followed %s, want %s", g, ev.Type)
		}
	}
	if r.Stats().Rotations == 0 {
		t.Fatal("no rotation while following")
	}
}

func TestRenderVerify(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	appendAll(t, r, sessionEvents("s"), Async)
	r.Close()
	rep := mustVerify(t, dir, nil)
	var out bytes.Buffer
	RenderVerify(&out, rep)
	if !strings.Contains(out.String(), "OK: head seq 12") {
		t.Fatalf("%s", out.String())
	}
	b, _ := json.Marshal(rep)
	if !strings.Contains(string(b), `"ok":true`) {
		t.Fatalf("%s", b)
	}
}

// TestStatementWithResult: a statement recorded with its result renders as a statement record
// followed by a result record would (the result stamped when it completed), and the row cap
// applies to the embedded result.
func TestStatementWithResult(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, MaxResultRows: 1})
	at := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	res := &Result{Columns: []string{"n"}, ColumnTypes: []uint32{23}, CommandTag: "SELECT 2", DurationUS: 1500, RowCount: 2, Rows: [][]*string{{str("1")}, {str("2")}}}
	st := Statement{Class: "read", Protocol: "simple", Text: "select n from t", Verdict: VerdictAllow}
	merged := st
	merged.Result = res
	appendAll(t, r, []Event{
		{Type: TypeStatement, Session: "merged", Time: at, Statement: &merged},
		{Type: TypeStatement, Session: "apart", Time: at, Statement: &st},
		{Type: TypeResult, Session: "apart", Time: at.Add(1500 * time.Microsecond), Result: res},
	}, Async)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	render := func(id string) string {
		recs, err := LoadSession(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := RenderReplay(&b, recs, ReplayOptions{}); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	got, want := render("merged"), render("apart")
	if got != want {
		t.Fatalf("merged record renders\n%s\nseparate records render\n%s", got, want)
	}
	if !strings.Contains(got, "(2 rows, 1 recorded)") || !strings.Contains(got, "14:00:00.001") {
		t.Fatalf("row cap or result time missing:\n%s", got)
	}
	if rep := mustVerify(t, dir, nil); !rep.OK() {
		t.Fatalf("verify: %+v", rep.Problem)
	}
}
