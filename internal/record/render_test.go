package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
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
		// The table is on continuation lines: a cell's lines cannot pass for events.
		strings.ReplaceAll(" id |       email       \n----+-------------------\n  1 | a****@example.com\n  2 | \n(2 rows)", "\n", "\n"+continuation) + "\n",
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

	// The agent names its process (prctl(PR_SET_NAME)): one session stays one line, escaped.
	ss[1].Process = hostile
	out.Reset()
	RenderSessions(&out, ss, nil)
	if bad := terminalControl(out.String(), false); bad != "" {
		t.Errorf("sessions table prints %s:\n%s", bad, out.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 5 {
		t.Errorf("sessions table has %d lines for 2 sessions, want 5:\n%s", n, out.String())
	}
}

func TestFollowSession(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir, SegmentBytes: 1500})
	evs := sessionEvents("live")
	// Written, not just queued, before the follow starts: a session must be in the log to be
	// followed (see TestFollowSessionUnknown).
	appendAll(t, r, evs[:2], WriteAhead)
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

// hostile is what an agent or a server can put in any field it controls: cursor movement and
// line erasure, an OSC that retitles the terminal (ended by BEL), a screen clear, a C1 CSI, DEL,
// NUL, backspace, and a newline followed by a forged event line.
const hostile = "x /*\x1b[1A\x1b[2K\r fake */ \x1b]0;PWNED\x07\x1b[2J \u009b31m \x7f\x00\b \u202e\u2066\n2026-11-27 14:00:09.000  ALLOW    forged"

// TestEscapeControls: what a value from the session turns into, on a line of its own or as
// text that may span lines.
func TestEscapeControls(t *testing.T) {
	cases := []struct{ in, line, text string }{
		{"select 1", "select 1", "select 1"},
		{"select 1 /*\x1b[1A\x1b[2K\r fake */", `select 1 /*\x1B[1A\x1B[2K\r fake */`, `select 1 /*\x1B[1A\x1B[2K\r fake */`},
		{"select * from \"\x1b]0;PWNED\x07\x1b[2J\"", `select * from "\x1B]0;PWNED\x07\x1B[2J"`, `select * from "\x1B]0;PWNED\x07\x1B[2J"`},
		{"\u009b31m\u0085\u009d", `\u009B31m\u0085\u009D`, `\u009B31m\u0085\u009D`},
		{"\x9b31m \xff", `\x9B31m \xFF`, `\x9B31m \xFF`},
		{"\x00\x7f\b\f\v", `\x00\x7F\x08\x0C\x0B`, `\x00\x7F\x08\x0C\x0B`},
		{"a\tb", `a\tb`, "a\tb"},
		{"select\n  1", `select\n  1`, "select\n" + continuation + "  1"},
		{"ünï 日本 \ufffd \u00a0", "ünï 日本 \ufffd \u00a0", "ünï 日本 \ufffd \u00a0"},
	}
	for _, c := range cases {
		if got := EscapeLine(c.in); got != c.line {
			t.Errorf("EscapeLine(%q) = %q, want %q", c.in, got, c.line)
		}
		if got := escapeText(c.in); got != c.text {
			t.Errorf("escapeText(%q) = %q, want %q", c.in, got, c.text)
		}
	}
}

// terminalControl returns a description of the first character in s that a terminal would act
// on rather than print (with crlf, a \r is allowed before \n), or "" if there is none.
func terminalControl(s string, crlf bool) string {
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for i, r := range s {
		switch {
		case r == '\n' || r == '\t':
		case r == '\r' && crlf && strings.HasPrefix(s[i:], "\r\n"):
		case r < 0x20 || r == 0x7f || 0x80 <= r && r < 0xa0 || isBidiControl(r):
			return fmt.Sprintf("%U at byte %d: %q", r, i, s[max(0, i-20):min(len(s), i+20)])
		}
	}
	return ""
}

// eventLine matches a line that starts an event of the timeline, or reads like one: an indent
// of a few spaces is easily overlooked.
var eventLine = regexp.MustCompile(`(?m)^\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  `)

// TestRenderEscapesHostileFields puts hostile text in each field the agent, the server or the
// log controls and checks that the replay and the asciicast export show it escaped: no raw ESC,
// BEL, CR, C1 or other control reaches the terminal, and a newline in it starts no event line.
func TestRenderEscapesHostileFields(t *testing.T) {
	escaped := `\x1B]0;PWNED\x07\x1B[2J`
	cases := []struct {
		field string
		set   func(evs []Event)
		want  string // how the hostile text's OSC shows, when not as escaped
	}{
		{"session id", func(evs []Event) {
			for i := range evs {
				evs[i].Session = hostile
			}
		}, ""},
		{"identity email", func(evs []Event) { evs[0].Start.Identity.Email = hostile }, ""},
		{"identity subject", func(evs []Event) { evs[0].Start.Identity.Subject = hostile }, ""},
		{"identity groups", func(evs []Event) { evs[0].Start.Identity.Groups = []string{hostile} }, ""},
		{"identity provider", func(evs []Event) { evs[0].Start.Identity.Provider = hostile }, ""},
		{"target name", func(evs []Event) { evs[0].Start.Target.Name = hostile }, ""},
		{"target database", func(evs []Event) { evs[0].Start.Target.Database = hostile }, ""},
		{"target user", func(evs []Event) { evs[0].Start.Target.User = hostile }, ""},
		{"target address", func(evs []Event) { evs[0].Start.Target.Address = hostile }, ""},
		{"protocol", func(evs []Event) { evs[0].Start.Protocol = hostile }, ""},
		{"comm", func(evs []Event) { evs[0].Start.Process.Comm = hostile }, ""},
		{"exe", func(evs []Event) { evs[0].Start.Process.Exe = hostile }, ""},
		{"cmdline", func(evs []Event) { evs[0].Start.Process.Cmdline = []string{"psql", hostile} }, `\x1b]0;PWNED\a\x1b[2J`},
		{"cgroup", func(evs []Event) { evs[0].Start.CgroupPath = hostile }, ""},
		{"origin", func(evs []Event) { evs[0].Start.Origin = hostile }, ""},
		{"application_name", func(evs []Event) { evs[0].Start.ClientParams["application_name"] = hostile }, ""},
		{"client parameter name", func(evs []Event) { evs[0].Start.ClientParams[hostile] = "1" }, ""},
		{"statement text", func(evs []Event) { evs[1].Statement.Text = hostile }, ""},
		{"statement class", func(evs []Event) { evs[1].Statement.Class = hostile }, ""},
		{"statement rule", func(evs []Event) { evs[3].Statement.Rule = hostile }, ""},
		{"statement verdict", func(evs []Event) { evs[1].Statement.Verdict = hostile }, ""},
		{"statement approval id", func(evs []Event) { evs[5].Statement.ApprovalID = hostile }, ""},
		{"parameter", func(evs []Event) { evs[5].Statement.Params = []*string{str(hostile)} }, ""},
		{"statement's own result", func(evs []Event) {
			evs[1].Statement.Result = &Result{Error: hostile, ErrorCode: "42P01"}
		}, ""},
		{"error", func(evs []Event) { evs[2].Result = &Result{Error: hostile, ErrorCode: hostile} }, ""},
		{"command tag", func(evs []Event) { evs[2].Result.CommandTag = hostile }, ""},
		{"column name", func(evs []Event) { evs[2].Result.Columns[1] = hostile }, ""},
		{"result cell", func(evs []Event) { evs[2].Result.Rows[0][1] = str(hostile) }, ""},
		{"notice message", func(evs []Event) { evs[4].Notice.Message = hostile }, ""},
		{"notice severity", func(evs []Event) { evs[4].Notice.Severity = hostile }, ""},
		{"notice code", func(evs []Event) { evs[4].Notice.Code = hostile }, ""},
		{"approval id", func(evs []Event) { evs[6].Approval.ID = hostile }, ""},
		{"approvers", func(evs []Event) { evs[6].Approval.Approvers = []string{"dba", hostile} }, ""},
		{"approved by", func(evs []Event) { evs[7].Approval.By = hostile }, ""},
		{"approval reason", func(evs []Event) { evs[7].Approval.Reason = hostile }, ""},
		{"approval state", func(evs []Event) { evs[7].Approval.State = hostile }, ""},
		{"end reason", func(evs []Event) { evs[9].End.Reason = hostile }, ""},
	}
	for _, c := range cases {
		t.Run(c.field, func(t *testing.T) {
			evs := sessionEvents("s-1")
			c.set(evs)
			dir := t.TempDir()
			r := openT(t, Options{Dir: dir})
			appendAll(t, r, evs, Async)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			recs, err := LoadSession(dir, evs[0].Session)
			if err != nil {
				t.Fatal(err)
			}
			events := len(recs)
			if evs[1].Statement.Result != nil {
				events++ // rendered as a statement and a result
			}
			want := c.want
			if want == "" {
				want = escaped
			}

			var out bytes.Buffer
			if err := RenderReplay(&out, recs, ReplayOptions{}); err != nil {
				t.Fatal(err)
			}
			text := out.String()
			if bad := terminalControl(text, false); bad != "" {
				t.Errorf("replay prints %s:\n%s", bad, text)
			}
			if !strings.Contains(text, want) {
				t.Errorf("replay lacks %s as %q:\n%s", c.field, want, text)
			}
			if n := len(eventLine.FindAllString(text, -1)); n != events {
				t.Errorf("replay has %d event lines, want %d:\n%s", n, events, text)
			}

			out.Reset()
			if err := ExportAsciicast(&out, recs, AsciicastOptions{}); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(&out)
			sc.Buffer(nil, 1<<20)
			sc.Scan()
			var hdr struct{ Title string }
			if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
				t.Fatal(err)
			}
			if bad := terminalControl(hdr.Title, false); bad != "" {
				t.Errorf("asciicast title has %s", bad)
			}
			var played strings.Builder
			for sc.Scan() {
				var ev []any
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
					t.Fatalf("asciicast event %s: %v", sc.Bytes(), err)
				}
				s := ev[2].(string)
				if bad := terminalControl(s, true); bad != "" {
					t.Errorf("asciicast plays %s", bad)
				}
				played.WriteString(strings.ReplaceAll(s, "\r\n", "\n"))
			}
			if played.String() != text {
				t.Errorf("asciicast plays\n%s\nreplay prints\n%s", played.String(), text)
			}
		})
	}
}

// TestRenderEscapesInvalidUTF8: bytes that are not UTF-8 (which the recorder stores as U+FFFD,
// but a log can be edited) show as \xNN; a lone 0x9B is CSI to a terminal in 8-bit mode.
func TestRenderEscapesInvalidUTF8(t *testing.T) {
	at := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	out := renderEvent(Event{Type: TypeStatement, Session: "s\xff", Time: at, Statement: &Statement{
		Text: "select '\x9b2J' \xc2", Verdict: VerdictAllow, Params: []*string{str("\x9b")},
	}}, time.UTC)
	if bad := terminalControl(out, false); bad != "" {
		t.Fatalf("rendered %s: %q", bad, out)
	}
	want := "2026-11-27 14:00:00.000  ALLOW    select '\\x9B2J' \\xC2\n" + strings.Repeat(" ", 28) + "params $1='\\x9B'\n"
	if out != want {
		t.Fatalf("got %q\nwant %q", out, want)
	}
}

// TestRenderContinuation: a statement over several lines continues on marked, indented lines, so
// text made to look like an event inside it cannot pass for one.
func TestRenderContinuation(t *testing.T) {
	at := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	out := renderEvent(Event{Type: TypeStatement, Session: "s", Time: at, Statement: &Statement{
		Class: "read", Text: "select 1\n2026-11-27 14:00:01.000  BLOCKED  DROP TABLE users\n\tfrom t", Verdict: VerdictAllow,
	}}, time.UTC)
	want := "2026-11-27 14:00:00.000  ALLOW    [read] select 1\n" +
		"                                  | 2026-11-27 14:00:01.000  BLOCKED  DROP TABLE users\n" +
		"                                  | \tfrom t\n"
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}

// TestRenderRecordJSON: `replay --follow --json` prints each record as one line that decodes to
// the element `replay --json` prints for it, with C1 controls escaped rather than raw.
func TestRenderRecordJSON(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	evs := sessionEvents("s-1")
	evs[4].Notice.Message = "held \u009b2J\x1b[1A \u0085"
	appendAll(t, r, evs, Async)
	r.Close()
	recs, err := LoadSession(dir, "s-1")
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	if err := RenderReplayJSON(&all, recs); err != nil {
		t.Fatal(err)
	}
	var array []ReplayJSON
	if err := json.Unmarshal(all.Bytes(), &array); err != nil {
		t.Fatal(err)
	}
	var lines bytes.Buffer
	for _, rec := range recs {
		if err := RenderRecordJSON(&lines, rec); err != nil {
			t.Fatal(err)
		}
	}
	for name, out := range map[string]string{"array": all.String(), "lines": lines.String()} {
		if bad := terminalControl(out, false); bad != "" {
			t.Errorf("%s prints %s", name, bad)
		}
		if !strings.Contains(out, `held \u009b2J\u001b[1A \u0085`) {
			t.Errorf("%s lacks the escaped notice:\n%s", name, out)
		}
	}
	rows := strings.Split(strings.TrimSuffix(lines.String(), "\n"), "\n")
	if len(rows) != len(recs) {
		t.Fatalf("%d lines for %d records", len(rows), len(recs))
	}
	for i, row := range rows {
		var got ReplayJSON
		if err := json.Unmarshal([]byte(row), &got); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		var gotData, wantData any
		json.Unmarshal(got.Data, &gotData)
		json.Unmarshal(array[i].Data, &wantData)
		got.Data, array[i].Data = nil, nil
		if fmt.Sprint(got, gotData) != fmt.Sprint(array[i], wantData) {
			t.Errorf("line %d: %+v %v, array has %+v %v", i, got, gotData, array[i], wantData)
		}
	}
	var notice struct{ Data Notice }
	json.Unmarshal([]byte(rows[4]), &notice)
	if notice.Data.Message != evs[4].Notice.Message {
		t.Errorf("notice decodes to %q, want %q", notice.Data.Message, evs[4].Notice.Message)
	}
}

// TestRenderCutShortResult: rows the client received before an error, or before the connection
// went away, are shown under the error.
func TestRenderCutShortResult(t *testing.T) {
	ev := Event{Type: TypeResult, Session: "s", Time: time.Unix(0, 0), Result: &Result{
		Columns: []string{"secret"}, ColumnTypes: []uint32{25}, Rows: [][]*string{{str("row0")}, {str("row1")}},
		RowCount: 2, Truncated: true, Error: "connection closed before the result completed"}}
	out := renderEvent(ev, time.UTC)
	if !strings.Contains(out, "ERROR") || !strings.Contains(out, "row1") {
		t.Fatalf("cut-short result rendered as:\n%s", out)
	}
	ev.Result = &Result{Error: "division by zero", ErrorCode: "22012"}
	if out := renderEvent(ev, time.UTC); strings.Count(out, "\n") != 1 {
		t.Fatalf("an error without rows rendered as:\n%s", out)
	}
}

// TestRenderNamesStatementOfResult: a statement recorded apart from its results shows its number,
// and each of its results names it, since other records can come between them.
func TestRenderNamesStatementOfResult(t *testing.T) {
	st := renderEvent(Event{Type: TypeStatement, Session: "s", Time: time.Unix(0, 0),
		Statement: &Statement{ID: 7, Class: "write", Text: "update t set v = 1", Verdict: VerdictAllow}}, time.UTC)
	res := renderEvent(Event{Type: TypeResult, Session: "s", Time: time.Unix(0, 0),
		Result: &Result{StatementID: 7, CommandTag: "UPDATE 1", RowCount: 1}}, time.UTC)
	if !strings.Contains(st, "[write, #7] update t") || !strings.Contains(res, "RESULT   (of #7) UPDATE 1") {
		t.Fatalf("statement:\n%sresult:\n%s", st, res)
	}
}

// TestRenderSkipped: a statement the server skipped reads as not run, alone or with its
// statement, never as a result.
func TestRenderSkipped(t *testing.T) {
	for _, c := range []struct {
		name string
		ev   Event
		want string
	}{
		{"apart", Event{Type: TypeResult, Result: &Result{StatementID: 7, Skipped: true}},
			"SKIPPED  (of #7) not run: an error earlier in its batch made the server skip it\n"},
		{"with its statement", Event{Type: TypeStatement, Statement: &Statement{Text: "select 1", Verdict: VerdictAllow,
			Result: &Result{Skipped: true}}}, "SKIPPED  not run: an error earlier in its batch made the server skip it\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.ev.Session, c.ev.Time = "s", time.Unix(0, 0)
			out := renderEvent(c.ev, time.UTC)
			if !strings.HasSuffix(out, c.want) || strings.Contains(out, "RESULT") {
				t.Fatalf("rendered as:\n%s", out)
			}
		})
	}
}
