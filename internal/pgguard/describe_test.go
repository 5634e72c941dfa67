package pgguard

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestUndescribedPortalsAreDescribed: a client may bind and execute a statement it never had
// described (no Describe of the statement or the portal). The proxy then asks the server itself,
// so that a column rule masks the ruled column and only it, and the session log names the
// columns. The client sees exactly the messages it would have seen without the proxy.
func TestUndescribedPortalsAreDescribed(t *testing.T) {
	p := startGuardedProxy(t, allowAllPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	ctx := context.Background()
	c := p.connect(t)
	<-p.guards
	fe := c.Frontend()
	type step struct {
		name string
		send []pgproto3.FrontendMessage
		want string // the messages the client gets up to ReadyForQuery, rows as their values
	}
	steps := []step{
		{"no describe at all", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "select id, secret from t where id < 3 order by id"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete row(1,[REDACTED:column]) row(2,[REDACTED:column]) SELECT 2"},
		{"binary id, row limit, the portal executed again", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "s", Query: "select secret, id from t where id > $1 order by id"},
			&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s", Parameters: [][]byte{[]byte("3")}, ResultFormatCodes: []int16{0, 1}},
			&pgproto3.Execute{Portal: "p", MaxRows: 1},
			&pgproto3.Execute{Portal: "p"},
		}, "ParseComplete BindComplete row([REDACTED:column],\x00\x00\x00\x04) PortalSuspended row([REDACTED:column],\x00\x00\x00\x05) SELECT 1"},
		{"a statement without rows: the server's NoData is not shown either", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "update t set secret = secret where id = 0"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete UPDATE 0"},
		{"the client's own Describe is answered as usual", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "select secret from t where id = 1"},
			&pgproto3.Bind{},
			&pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete RowDescription row([REDACTED:column]) SELECT 1"},
		{"an error at Execute reaches the client once", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "select 1/(id-1) from t where id = 1"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete error(22012)"},
	}
	for _, s := range steps {
		for _, m := range s.send {
			fe.Send(m)
		}
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
			switch m := m.(type) {
			case *pgproto3.DataRow:
				var vs []string
				for _, v := range m.Values {
					vs = append(vs, string(v))
				}
				got = append(got, "row("+strings.Join(vs, ",")+")")
			case *pgproto3.CommandComplete:
				got = append(got, string(m.CommandTag))
			case *pgproto3.ErrorResponse:
				got = append(got, "error("+m.Code+")")
			default:
				got = append(got, strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3."))
			}
		}
		if g := strings.Join(got, " "); g != s.want {
			t.Errorf("%s: client got %q, want %q", s.name, g, s.want)
		}
	}
	c.Close(ctx)
	// The log names the columns of results no Describe was sent for.
	var cols []string
	for _, ev := range eventsOf(t, p.session(t)) {
		res := ev.Result
		if ev.Statement != nil && ev.Statement.Result != nil {
			res = ev.Statement.Result
		}
		if res != nil && len(res.Rows) > 0 {
			cols = append(cols, strings.Join(res.Columns, ","))
		}
	}
	if got, want := strings.Join(cols, " "), "id,secret secret,id secret,id secret"; got != want {
		t.Errorf("recorded columns %q, want %q", got, want)
	}
}
