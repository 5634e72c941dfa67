package postgres

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// copyStep is what a client sends at once, and what it gets back: up to a CopyInResponse when
// readys is 0, else up to that many ReadyForQuery.
type copyStep struct {
	send   []pgproto3.FrontendMessage
	readys int
	want   []string
}

// copyTranscript is the form of a server message a COPY test compares ("" leaves it out).
func copyTranscript(m pgproto3.BackendMessage) string {
	switch m := m.(type) {
	case *pgproto3.CopyInResponse:
		return "G"
	case *pgproto3.CommandComplete:
		return "C:" + string(m.CommandTag)
	case *pgproto3.DataRow:
		var vs []string
		for _, v := range m.Values {
			vs = append(vs, string(v))
		}
		return "D:" + strings.Join(vs, ",")
	case *pgproto3.ErrorResponse:
		return "E:" + m.Code
	case *pgproto3.ReadyForQuery:
		return "Z"
	}
	return ""
}

// TestCopyInKeepsTheQueueInStep: during COPY FROM STDIN the server reads the client's messages
// as the COPY's data, ignoring Sync and ending the COPY with an error at anything else. The
// proxy's op queue must follow: a Sync it took for a batch's end, or a Query it took to be run,
// would take the answers of the statements after, which then reach the client unobserved (the
// hook masks "secret"). Every case ends with such a statement, whose row must come masked.
func TestCopyInKeepsTheQueueInStep(t *testing.T) {
	copyIn := &pgproto3.Query{String: "copy inbox from stdin"}
	data := &pgproto3.CopyData{Data: []byte("1\n")}
	done, sync := &pgproto3.CopyDone{}, &pgproto3.Sync{}
	extended := func(sql string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, sync}
	}
	cases := []struct {
		name  string
		steps []copyStep
		// raced: whether the proxy holds back the Sync sent with the COPY depends on whether
		// the server's error reaches it before or after the client side looks; either way the
		// queue matches what the server answers, and the client may get one ReadyForQuery more.
		raced bool
	}{
		{"Syncs during the COPY are not answered", []copyStep{
			{send: []pgproto3.FrontendMessage{copyIn}, want: []string{"G"}},
			{send: []pgproto3.FrontendMessage{sync, sync, data, sync, done}, readys: 1, want: []string{"C:COPY 1", "Z"}},
		}, false},
		{"a Query during the COPY fails it and does not run", []copyStep{
			{send: []pgproto3.FrontendMessage{copyIn}, want: []string{"G"}},
			{send: []pgproto3.FrontendMessage{data, &pgproto3.Query{String: "select 'secret'"}}, readys: 1, want: []string{"E:57014", "Z"}},
			{send: []pgproto3.FrontendMessage{data, done, &pgproto3.Query{String: "select count(*) from inbox"}}, readys: 1, want: []string{"D:0", "C:SELECT 1", "Z"}},
		}, false},
		{"an extended batch during an extended COPY fails it", []copyStep{
			{send: extended("copy inbox from stdin"), want: []string{"G"}},
			{send: extended("select 'secret'"), readys: 1, want: []string{"E:57014", "Z"}},
		}, false},
		{"an extended COPY as libpq runs it: Sync after Execute and after CopyDone", []copyStep{
			{send: extended("copy inbox from stdin"), want: []string{"G"}},
			{send: []pgproto3.FrontendMessage{data, data, done, sync}, readys: 1, want: []string{"C:COPY 2", "Z"}},
		}, false},
		{"data and its end sent before the CopyInResponse, as pgx does, then a Sync", []copyStep{
			{send: []pgproto3.FrontendMessage{copyIn, data, done, sync}, readys: 2, want: []string{"G", "C:COPY 1", "Z", "Z"}},
		}, false},
		{"a COPY and a SELECT in one Query, Syncs during the COPY", []copyStep{
			{send: []pgproto3.FrontendMessage{&pgproto3.Query{String: "copy inbox from stdin; select 'secret'"}}, want: []string{"G"}},
			{send: []pgproto3.FrontendMessage{sync, data, sync, done}, readys: 1, want: []string{"C:COPY 1", "D:******", "C:SELECT 1", "Z"}},
		}, false},
		{"two COPYs in one Query, both ended before they started", []copyStep{
			{send: []pgproto3.FrontendMessage{&pgproto3.Query{String: "copy inbox from stdin; copy inbox from stdin"}, data, done, data, data, done}, readys: 1,
				want: []string{"G", "C:COPY 1", "G", "C:COPY 2", "Z"}},
		}, false},
		{"data the server rejects ends the COPY; a Sync after is answered", []copyStep{
			{send: []pgproto3.FrontendMessage{copyIn}, want: []string{"G"}},
			{send: []pgproto3.FrontendMessage{&pgproto3.CopyData{Data: []byte("not a number\n")}}, readys: 1, want: []string{"E:22P02", "Z"}},
			{send: []pgproto3.FrontendMessage{done, sync}, readys: 1, want: []string{"Z"}},
		}, false},
		{"a COPY the server fails before reading it, and the Sync sent with it", []copyStep{
			{send: extended("copy inbox_view from stdin"), want: []string{"G"}},
			{send: []pgproto3.FrontendMessage{data, done, sync}, readys: 1, want: []string{"E:42809", "Z"}},
		}, true},
		{"CopyDone and CopyFail with no COPY are ignored", []copyStep{
			{send: []pgproto3.FrontendMessage{done, &pgproto3.CopyFail{Message: "none"}, sync}, readys: 1, want: []string{"Z"}},
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, c := hookProxy(t, &testHook{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.Exec(ctx, "create temp table inbox (x int); create temp view inbox_view as select x from inbox").ReadAll(); err != nil {
				t.Fatal(err)
			}
			fe := c.Frontend()
			steps := append(slices.Clone(tc.steps), copyStep{send: []pgproto3.FrontendMessage{&pgproto3.Query{String: "select 'secret'"}}, readys: 1,
				want: []string{"D:******", "C:SELECT 1", "Z"}})
			for i, s := range steps {
				for _, m := range s.send {
					fe.Send(m)
				}
				if err := fe.Flush(); err != nil {
					t.Fatal(err)
				}
				readys := s.readys
				if tc.raced && i == len(steps)-1 {
					readys++ // read past the extra ReadyForQuery, if any
				}
				var got []string
				for seen := 0; ; {
					m, err := fe.Receive()
					if err != nil {
						t.Fatalf("step %d: %v (got %q)", i, err, got)
					}
					if s := copyTranscript(m); s != "" {
						got = append(got, s)
					}
					if _, ok := m.(*pgproto3.ReadyForQuery); ok {
						seen++
					}
					if _, ok := m.(*pgproto3.CopyInResponse); ok && readys == 0 || seen == readys && readys > 0 {
						break
					}
					if _, ok := m.(*pgproto3.ReadyForQuery); ok && readys > s.readys && len(got) > 1 {
						break // the answer ended, with no extra ReadyForQuery before it
					}
				}
				if tc.raced && i == len(steps)-1 && got[0] == "Z" {
					got = got[1:]
				}
				if !slices.Equal(got, s.want) {
					t.Fatalf("step %d got %q, want %q", i, got, s.want)
				}
			}
		})
	}
}

// captureConn is a client connection that keeps what the proxy writes to it.
type captureConn struct {
	sinkConn
	out bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error) { return c.out.Write(b) }

// TestUnexpectedCopyInEndsTheSession: a CopyInResponse to a statement that cannot run COPY FROM
// STDIN, or to none, means the proxy no longer knows how the server reads the client's messages:
// the session ends, with an error that says so, rather than pass what follows unobserved.
func TestUnexpectedCopyInEndsTheSession(t *testing.T) {
	for _, tc := range []struct {
		name  string
		queue []op
	}{
		{"to a statement that spells no COPY", []op{{kind: opQuery, st: &Statement{SQL: "select 1"}}}},
		{"to no statement", nil},
		{"during a COPY", []op{{kind: opQuery, st: &Statement{SQL: "copy t from stdin; copy t from stdin"}, mayCopy: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newBenchConn(PassThrough{})
			defer c.stop()
			client := &captureConn{}
			c.client = client
			for _, o := range tc.queue {
				c.ops.push(o)
			}
			copyIn, _ := (&pgproto3.CopyInResponse{}).Encode(nil)
			var err error
			for range 2 {
				if err = c.onServerMessage(copyIn[0], copyIn); err != nil {
					break
				}
			}
			if err == nil {
				t.Fatal("the session goes on")
			}
			fe := pgproto3.NewFrontend(bytes.NewReader(client.out.Bytes()), io.Discard)
			m, ferr := fe.Receive()
			if e, ok := m.(*pgproto3.ErrorResponse); !ok || e.Code != "08P01" || !strings.Contains(e.Message, "COPY FROM STDIN") {
				t.Fatalf("the client got %#v, %v; want a 08P01 error about the COPY", m, ferr)
			}
		})
	}
}
