package pgguard

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestLateReads: a delivered read waits for the connection's next statement to be forwarded,
// unless another connection recorded a statement meanwhile; whatever the connection records
// next, or the sweep, writes it first, so the log keeps the order.
func TestLateReads(t *testing.T) {
	cases := []struct {
		name     string
		others   bool   // another connection records a statement while the read runs
		next     string // the statement that follows the read ("" for none)
		wantLate bool   // the read waits once delivered
		want     []string
	}{
		{name: "written after the next forward", next: "select 2", wantLate: true,
			want: []string{"select 1 + SELECT 1", "select 2 + SELECT 2"}},
		{name: "written by the sweep", wantLate: true, want: []string{"select 1 + SELECT 1"}},
		{name: "written at delivery when another connection works", others: true, next: "select 2",
			want: []string{"select 1 + SELECT 1", "select 2 + SELECT 2"}},
		{name: "written before a refused statement", next: "drop table t", wantLate: true,
			want: []string{"select 1 + SELECT 1", "drop table t"}},
		{name: "written before a write", next: "insert into t values (1)", wantLate: true,
			want: []string{"select 1 + SELECT 1", "insert into t values (1)"}},
	}
	pol := parsePolicy(t, allowAllPolicy)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			rec, err := record.Open(record.Options{Dir: dir, AsyncWindow: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			current := func() *policy.Policy { return pol }
			sh := testShared(current, rec)
			g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
			other := sh.NewGuard(ConnInfo{ID: "2", Target: pol.Targets[0], Identity: identity.Session{Subject: "bob", Groups: []string{"eng"}}})
			ctx := context.Background()
			s1 := &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "select 1"}
			g.Statement(ctx, s1)
			g.Forwarded()
			if c.others {
				other.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "select 3"})
			}
			g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: s1, Tag: []byte("SELECT 1")})
			g.Delivered()
			if got := g.rec.hasLate.Load(); got != c.wantLate {
				t.Fatalf("the read waits after delivery: %v, want %v", got, c.wantLate)
			}
			switch {
			case c.next == "":
				for deadline := time.Now().Add(10 * time.Second); g.rec.hasLate.Load(); {
					if time.Now().After(deadline) {
						t.Fatal("the sweep did not write the late read")
					}
					time.Sleep(time.Millisecond)
				}
				if g.rec.listed.Load() {
					t.Fatal("the connection is still listed after the sweep")
				}
			default:
				s2 := &postgres.Statement{ID: 2, Kind: postgres.KindQuery, SQL: c.next}
				v := g.Statement(ctx, s2)
				if c.next == "select 2" {
					// A read judged keeps the last one waiting until it is forwarded.
					if got := g.rec.hasLate.Load(); got != c.wantLate {
						t.Fatalf("the read waits while the next read is judged: %v, want %v", got, c.wantLate)
					}
				} else if g.rec.hasLate.Load() {
					t.Fatalf("the read still waits after %q was judged (%v)", c.next, v.Action)
				}
				if v.Action == postgres.Allow {
					g.Forwarded()
					if g.rec.hasLate.Load() {
						t.Fatal("the read still waits once the next statement is forwarded")
					}
					g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: s2, Tag: []byte("SELECT 2")})
					g.Delivered()
				}
			}
			g.End("done", 0, 0)
			if g.rec.hasLate.Load() {
				t.Fatal("a read still waits after the end")
			}
			other.End("done", 0, 0)
			var got []string
			for _, ev := range loggedStatements(t, rec, dir, g.SessionID()) {
				s := ev.Statement.Text
				if res := ev.Statement.Result; res != nil {
					s += " + " + res.CommandTag
				}
				got = append(got, s)
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Fatalf("statement records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// TestLateReadKeepsItsValues: a read that waits keeps its own text, rows, identity and times
// while the next read is collected in the storage it gave up.
func TestLateReadKeepsItsValues(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{})
	ctx := context.Background()
	run := func(id uint64, sql, value string) {
		s := &postgres.Statement{ID: id, Kind: postgres.KindQuery, SQL: sql}
		g.Statement(ctx, s)
		g.Forwarded()
		rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("v"), DataTypeOID: 25}}}
		g.Result(ctx, &postgres.Result{Kind: postgres.ResultRowDescription, Statement: s, Columns: rd})
		g.Result(ctx, &postgres.Result{Kind: postgres.ResultRow, Statement: s, Columns: rd, Values: [][]byte{[]byte(value)}})
		g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: s, Tag: []byte("SELECT 1")})
		g.Delivered()
	}
	run(1, "select 'a'", "a")
	time.Sleep(2 * time.Millisecond)
	run(2, "select 'bb'", "bb")
	g.End("done", 0, 0)
	var got []string
	var times []time.Time
	for _, ev := range loggedStatements(t, rec, dir, g.SessionID()) {
		st := ev.Statement
		if st.Result == nil || len(st.Result.Rows) != 1 || st.Result.Rows[0][0] == nil {
			t.Fatalf("statement %q has no row: %+v", st.Text, st.Result)
		}
		got = append(got, st.Text+" "+*st.Result.Rows[0][0]+" "+strings.Join(st.Result.Columns, ",")+" #"+strconv.FormatUint(st.ID, 10))
		times = append(times, ev.Time)
	}
	want := []string{"select 'a' a v #1", "select 'bb' bb v #2"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !times[1].After(times[0]) {
		t.Fatalf("record times %v: the late read kept the next one's", times)
	}
}

// TestFlushLate: a daemon about to close the log writes the reads that wait for their
// connection's next statement (they would otherwise meet a closed log).
func TestFlushLate(t *testing.T) {
	g, rec, dir := loggedGuard(t, record.Options{AsyncWindow: time.Hour})
	ctx := context.Background()
	s := &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "select 1"}
	g.Statement(ctx, s)
	g.Forwarded()
	g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: s, Tag: []byte("SELECT 1")})
	g.Delivered()
	if !g.rec.hasLate.Load() {
		t.Fatal("the read does not wait")
	}
	g.sh.FlushLate()
	if g.rec.hasLate.Load() {
		t.Fatal("the read still waits")
	}
	found := false
	for _, ev := range loggedStatements(t, rec, dir, g.SessionID()) {
		found = found || ev.Statement.Text == "select 1" && ev.Statement.Result != nil
	}
	if !found {
		t.Fatal("the read is not in the log")
	}
}

// loggedStatements closes the recorder and returns the session's statement events in order.
func loggedStatements(t *testing.T, rec *record.Recorder, dir, session string) []record.Event {
	t.Helper()
	var out []record.Event
	for _, r := range closeAndLoad(t, rec, dir, session) {
		ev, err := r.Event()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == record.TypeStatement {
			out = append(out, ev)
		}
	}
	return out
}
