package pgguard

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestSkippedDescribeBeforeAPipelinedExecute (from a review, 2026-12-06): a Describe of a portal
// that the server skips after an error, and a pipelined Execute of the portal after the Sync,
// which the client side judges before the error comes back: the proxy must still describe the
// portal, or the rows come without a description (every cell withheld: NULL). The portal
// outlives the error: it was bound before a savepoint the client rolls back to.
func TestSkippedDescribeBeforeAPipelinedExecute(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	sel := "select id, secret from t where id = 1"
	flow := func(t *testing.T, fe *pgproto3.Frontend) []string {
		var got []string
		got = append(got, fullTranscript(t, fe, 1, &pgproto3.Query{String: "begin"})...)
		got = append(got, fullTranscript(t, fe, 1, &pgproto3.Parse{Name: "s", Query: sel}, &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s"}, &pgproto3.Sync{})...)
		got = append(got, fullTranscript(t, fe, 4,
			&pgproto3.Query{String: "savepoint a"},
			&pgproto3.Parse{Query: "select 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Sync{},
			&pgproto3.Query{String: "rollback to savepoint a"},
			&pgproto3.Execute{Portal: "p"}, &pgproto3.Sync{})...)
		got = append(got, fullTranscript(t, fe, 1, &pgproto3.Query{String: "rollback"})...)
		return got
	}
	direct := flow(t, p.connectDirect(t).Frontend())
	c := p.connect(t)
	defer c.Close(context.Background())
	proxied := flow(t, c.Frontend())
	t.Logf("direct:  %v\nproxied: %v", direct, proxied)
	j := strings.Join(proxied, " ")
	if strings.Contains(j, "D(1,NULL)") || strings.Contains(j, "D(NULL,NULL)") {
		t.Errorf("rows of the portal without a description (withheld): %v", proxied)
	}
	if secretInClear.MatchString(j) {
		t.Errorf("ruled value in clear: %v", proxied)
	}
}
