package pgguard

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fullTranscript is exchange showing every message: its type, and a DataRow's or CopyData's
// values (NULL as NULL), an error's code.
func fullTranscript(t *testing.T, fe *pgproto3.Frontend, n int, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	return exchange(t, fe, n, func(m pgproto3.BackendMessage) string {
		switch m := m.(type) {
		case *pgproto3.DataRow:
			var vs []string
			for _, v := range m.Values {
				if v == nil {
					vs = append(vs, "NULL")
				} else {
					vs = append(vs, strings.Trim(fmt.Sprintf("%q", v), `"`))
				}
			}
			return "D(" + strings.Join(vs, ",") + ")"
		case *pgproto3.CopyData:
			return "d(" + strings.TrimSpace(string(m.Data)) + ")"
		case *pgproto3.ErrorResponse:
			return "E(" + m.Code + ")"
		case *pgproto3.CommandComplete:
			return "C(" + string(m.CommandTag) + ")"
		case *pgproto3.ReadyForQuery:
			return "Z(" + string(m.TxStatus) + ")"
		}
		return strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3.")
	}, msgs...)
}

var secretInClear = regexp.MustCompile(`\bv[1-5]\b`) // t.secret's values

// transcriptShape is a transcript with row and COPY values dropped.
func transcriptShape(got []string) string {
	var out []string
	for _, g := range got {
		if i := strings.IndexByte(g, '('); i > 0 && (g[0] == 'D' || g[0] == 'd') && len(g) > 1 && g[1] == '(' {
			g = g[:1]
		}
		out = append(out, g)
	}
	return strings.Join(out, " ")
}

type flowStep struct {
	n    int // ReadyForQuery messages to wait for
	msgs []pgproto3.FrontendMessage
}

func queryStep(sql string) flowStep {
	return flowStep{1, []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}}
}

func extendedStep(msgs ...pgproto3.FrontendMessage) flowStep { return flowStep{1, msgs} }

// TestDescribeFlows (from a review of the proxy's own Describe, 2026-12-06): flows with Describe in odd places, portals re-bound, closed or
// executed in parts, through the proxy (t.secret redacted) and directly: the client must get
// the same messages, and no value of t.secret.
func TestDescribeFlows(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	sel := "select id, secret from t where id < 3 order by id"
	flows := []struct {
		name    string
		steps   []flowStep
		want    string // if set, the proxied rows (D values) in order
		refused bool   // the proxy refuses part of it by design (a portal or statement it does not know)
	}{
		{"Describe P after Execute", []flowStep{extendedStep(&pgproto3.Parse{Query: sel}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Sync{})}, "", false},
		{"Describe S between Bind and Execute", []flowStep{extendedStep(&pgproto3.Parse{Name: "s1", Query: sel}, &pgproto3.Bind{PreparedStatement: "s1"},
			&pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Execute{}, &pgproto3.Sync{})}, "", false},
		{"unnamed portal re-bound before the first answer", []flowStep{extendedStep(&pgproto3.Parse{Query: sel}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1},
			&pgproto3.Parse{Query: "select secret, id from t where id = 4"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Bind{ResultFormatCodes: []int16{0, 1}}, &pgproto3.Execute{}, &pgproto3.Sync{})},
			"D(1,[REDACTED:column]) D([REDACTED:column],4) D([REDACTED:column],\\x00\\x00\\x00\\x04)", false},
		{"row limit, client Describe P, rest", []flowStep{extendedStep(&pgproto3.Parse{Query: sel}, &pgproto3.Bind{DestinationPortal: "p"}, &pgproto3.Execute{Portal: "p", MaxRows: 1},
			&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{})}, "", false},
		{"Close of the portal right after Execute", []flowStep{extendedStep(&pgproto3.Parse{Query: sel}, &pgproto3.Bind{DestinationPortal: "p"}, &pgproto3.Execute{Portal: "p"},
			&pgproto3.Close{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{})}, "", true},
		{"statement PREPAREd in SQL, bound with the protocol", []flowStep{queryStep("prepare q1 as " + sel),
			extendedStep(&pgproto3.Bind{PreparedStatement: "q1"}, &pgproto3.Execute{}, &pgproto3.Sync{})}, "", true},
		{"COPY TO STDOUT in the extended protocol", []flowStep{extendedStep(&pgproto3.Parse{Query: "copy (" + sel + ") to stdout"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})}, "", false},
		{"pipeline of three Syncs, error in the second", []flowStep{{3, []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: sel}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Parse{Query: "select 1/(id-1), secret from t where id = 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Execute{}, &pgproto3.Sync{}}}}, "", false},
		// The portal's Describe fails where its Execute would have (aborted transaction).
		{"Execute in an aborted transaction", []flowStep{queryStep("begin"), extendedStep(&pgproto3.Parse{Query: sel}, &pgproto3.Bind{DestinationPortal: "p"}, &pgproto3.Sync{}),
			queryStep("select 1/0"), extendedStep(&pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{}), queryStep("rollback")}, "", false},
		// A Describe S skipped after an error earlier in its pipeline does not count as sent.
		{"Describe S skipped after an error", []flowStep{extendedStep(&pgproto3.Parse{Name: "s2", Query: sel}, &pgproto3.Sync{}),
			extendedStep(&pgproto3.Parse{Query: "select 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Describe{ObjectType: 'S', Name: "s2"}, &pgproto3.Sync{}),
			extendedStep(&pgproto3.Bind{PreparedStatement: "s2"}, &pgproto3.Execute{}, &pgproto3.Sync{})}, "D(1,[REDACTED:column]) D(2,[REDACTED:column])", false},
		// A statement parsed again under its name after an SQL DEALLOCATE, bound before its
		// ParseComplete: the portal's statement is still the old one, described.
		{"re-Parse after DEALLOCATE, Bind pipelined", []flowStep{
			extendedStep(&pgproto3.Parse{Name: "s3", Query: "select secret, id from t where id < 3 order by id"}, &pgproto3.Describe{ObjectType: 'S', Name: "s3"}, &pgproto3.Sync{}),
			queryStep("deallocate s3"),
			extendedStep(&pgproto3.Parse{Name: "s3", Query: sel}, &pgproto3.Bind{PreparedStatement: "s3"}, &pgproto3.Execute{}, &pgproto3.Sync{})}, "", true},
		// A refused Parse after an Execute the proxy described, the rest skipped to Sync, then
		// the next pipeline.
		{"refusal after an injected Describe", []flowStep{{2, []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sel}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "drop table if exists zz"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}}}},
			"D(1,[REDACTED:column]) D(2,[REDACTED:column])", true},
		{"Flush after Execute", []flowStep{extendedStep(&pgproto3.Parse{Query: sel}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Flush{},
			&pgproto3.Execute{}, &pgproto3.Sync{})}, "", false},
		{"Describe P of the old unnamed portal just before its re-Bind", []flowStep{extendedStep(&pgproto3.Parse{Query: sel}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1},
			&pgproto3.Parse{Query: "select secret, id from t where id = 4"}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})},
			"D(1,[REDACTED:column]) D([REDACTED:column],4)", false},
		{"empty query", []flowStep{extendedStep(&pgproto3.Parse{Query: ""}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})}, "", false},
		{"COPY FROM STDIN in the extended protocol", []flowStep{queryStep("create temp table tt (a int, b text)"),
			extendedStep(&pgproto3.Parse{Query: "copy tt from stdin"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.CopyData{Data: []byte("1\tx\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{}),
			extendedStep(&pgproto3.Parse{Query: "select * from tt"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})}, "", false},
		// A cursor DECLAREd in SQL, fetched with a protocol Execute (no portal the proxy knows).
		{"SQL cursor run by Execute", []flowStep{queryStep("begin"), queryStep("declare c1 cursor for " + sel),
			extendedStep(&pgproto3.Execute{Portal: "c1"}, &pgproto3.Sync{}), queryStep("rollback")}, "", true},
	}
	run := func(fe *pgproto3.Frontend, steps []flowStep) []string {
		var out []string
		for _, s := range steps {
			out = append(out, fullTranscript(t, fe, s.n, s.msgs...)...)
		}
		return out
	}
	for _, f := range flows {
		t.Run(f.name, func(t *testing.T) {
			want := run(p.connectDirect(t).Frontend(), f.steps)
			c := p.connect(t)
			defer c.Close(context.Background())
			got := run(c.Frontend(), f.steps)
			if !f.refused && transcriptShape(got) != transcriptShape(want) {
				t.Errorf("messages differ\n proxy:  %v\n direct: %v", got, want)
			}
			if j := strings.Join(got, " "); secretInClear.MatchString(j) {
				t.Errorf("t.secret in clear: %v", got)
			}
			if f.want != "" {
				var rows []string
				for _, g := range got {
					if strings.HasPrefix(g, "D(") {
						rows = append(rows, g)
					}
				}
				if r := strings.Join(rows, " "); r != f.want {
					t.Errorf("rows %s, want %s", r, f.want)
				}
			}
			t.Logf("proxy: %v", got)
		})
	}
}

// TestInjectedDescribeUnderPipelining: TestOpQueueUnderPipelining without the client's
// Describe, under a column rule (every Execute gets the proxy's Describe), messages flushed one
// by one while answers flow back, Bind failures every 7th round. Run with -race. Each row must
// show its id and have its secret redacted.
func TestInjectedDescribeUnderPipelining(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	c := p.connect(t)
	defer c.Close(context.Background())
	fe := c.Frontend()
	bad := pipelineRounds(t, fe, 2000, func(i int) []pgproto3.FrontendMessage {
		sql := "select id, secret from t where id = $1::int"
		if i%7 == 0 {
			sql = "select id, secret from t where id = 1/($1::int - 2)" // fails at Bind
		}
		msgs := []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{Parameters: [][]byte{[]byte("2")}}, &pgproto3.Execute{}}
		if i%3 == 0 {
			msgs = append(msgs, &pgproto3.Bind{DestinationPortal: "C_1", Parameters: [][]byte{[]byte("3")}, ResultFormatCodes: []int16{1, 0}},
				&pgproto3.Execute{Portal: "C_1", MaxRows: 1}, &pgproto3.Execute{Portal: "C_1"})
		}
		return msgs
	}, func(m pgproto3.BackendMessage) string {
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			if m.Code != "22012" {
				return m.Code + " " + m.Message
			}
		case *pgproto3.RowDescription, *pgproto3.NoData:
			return fmt.Sprintf("%T reached the client", m)
		case *pgproto3.DataRow:
			if len(m.Values) != 2 || string(m.Values[1]) != "[REDACTED:column]" || (string(m.Values[0]) != "2" && string(m.Values[0]) != "\x00\x00\x00\x03") {
				return fmt.Sprintf("row %q", m.Values)
			}
		}
		return ""
	})
	if len(bad) > 0 {
		t.Errorf("%d unexpected messages, first: %v", len(bad), bad[0])
	}
}

// TestInjectedDescribeBeforeFlush: Bind, Execute, Flush, and the client waits for the rows before it
// sends Sync (pgx pipelines, asyncpg): the proxy's Describe must go out with the Execute.
func TestInjectedDescribeBeforeFlush(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	c := p.connect(t)
	defer c.Close(context.Background())
	fe := c.Frontend()
	for _, m := range []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "select id, secret from t where id = 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{}} {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	done := make(chan []string, 1)
	go func() {
		var got []string
		for {
			m, err := fe.Receive()
			if err != nil {
				done <- append(got, err.Error())
				return
			}
			got = append(got, fmt.Sprintf("%T", m))
			if _, ok := m.(*pgproto3.CommandComplete); ok {
				done <- got
				return
			}
		}
	}()
	select {
	case got := <-done:
		if strings.Join(got, " ") != "*pgproto3.ParseComplete *pgproto3.BindComplete *pgproto3.DataRow *pgproto3.CommandComplete" {
			t.Errorf("got %v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to Execute + Flush within 5s")
	}
}

// TestInjectedDescribeErrorRecorded: when the proxy's Describe fails where the Execute would
// have (aborted transaction), the error is recorded as the Execute's result.
func TestInjectedDescribeErrorRecorded(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	c := p.connect(t)
	<-p.guards
	fe := c.Frontend()
	transcript(t, fe, 1, &pgproto3.Query{String: "begin"})
	transcript(t, fe, 1, &pgproto3.Parse{Query: "select secret from t"}, &pgproto3.Bind{DestinationPortal: "p"}, &pgproto3.Sync{})
	transcript(t, fe, 1, &pgproto3.Query{String: "select 1/0"})
	transcript(t, fe, 1, &pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{})
	transcript(t, fe, 1, &pgproto3.Query{String: "rollback"})
	c.Close(context.Background())
	var execID uint64
	for _, ev := range eventsOf(t, p.session(t)) {
		if st := ev.Statement; st != nil && st.Protocol == "extended" && st.Text == "select secret from t" {
			if st.Result != nil && st.Result.ErrorCode == "25P02" {
				return // recorded with its statement
			}
			execID = st.ID
		}
		if r := ev.Result; r != nil && r.ErrorCode == "25P02" {
			if r.StatementID == 0 || r.StatementID != execID {
				t.Errorf("25P02 recorded for statement %d, the Execute is %d", r.StatementID, execID)
			}
			return
		}
	}
	t.Error("no 25P02 recorded")
}
