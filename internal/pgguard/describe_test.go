package pgguard

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestUndescribedPortalsAreDescribed: a client may bind and execute a statement it never had
// described (no Describe of the statement or the portal). The proxy then asks the server itself,
// so that a column rule masks the ruled column and only it, and the session log names the
// columns. The client sees exactly the messages it would have seen without the proxy.
func TestUndescribedPortalsAreDescribed(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	ctx := context.Background()
	c := p.connect(t)
	<-p.guards
	fe := c.Frontend()
	type step struct {
		name string
		send []pgproto3.FrontendMessage
		want string // the messages the client gets, as fullTranscript shows them
	}
	steps := []step{
		{"no describe at all", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "select id, secret from t where id < 3 order by id"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete D(1,[REDACTED:column]) D(2,[REDACTED:column]) C(SELECT 2) Z(I)"},
		{"binary id, row limit, the portal executed again", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "s", Query: "select secret, id from t where id > $1 order by id"},
			&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s", Parameters: [][]byte{[]byte("3")}, ResultFormatCodes: []int16{0, 1}},
			&pgproto3.Execute{Portal: "p", MaxRows: 1},
			&pgproto3.Execute{Portal: "p"},
		}, `ParseComplete BindComplete D([REDACTED:column],\x00\x00\x00\x04) PortalSuspended D([REDACTED:column],\x00\x00\x00\x05) C(SELECT 1) Z(I)`},
		{"a statement without rows: the server's NoData is not shown either", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "update t set secret = secret where id = 0"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete C(UPDATE 0) Z(I)"},
		{"the client's own Describe is answered as usual", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "select secret from t where id = 1"},
			&pgproto3.Bind{},
			&pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete RowDescription D([REDACTED:column]) C(SELECT 1) Z(I)"},
		{"an error at Execute reaches the client once", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "select 1/(id-1) from t where id = 1"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
		}, "ParseComplete BindComplete E(22012) Z(I)"},
	}
	for _, s := range steps {
		got := fullTranscript(t, fe, 1, append(s.send, &pgproto3.Sync{})...)
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
