package pgguard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestServerTextsMasked: every text of the server's that a statement can fill reaches the client
// masked (a review, 2026-12-07): each field of an error or a notice that RAISE … USING sets (the
// names of a schema, table, column, type and constraint, not only the message), the settings the
// server reports (set_config('application_name', …)), and notification payloads, strictly under
// column rules as errors are.
func TestServerTextsMasked(t *testing.T) {
	const card, email = "4111111111111111", "ada.lovelace@example.com"
	// raise sets every text field of an error or notice RAISE can set to v, a value of sql.
	raise := func(level, sql string) string {
		return `do $$ declare v text; begin select (` + sql + `) into v; raise ` + level + ` 'msg %', v using detail = v, hint = v,
			column = v, constraint = v, datatype = v, table = v, schema = v; end $$`
	}
	cards := `select card from cards limit 1`
	cases := []struct {
		name, policy, sql string
		leaks             []string // what must not reach the client
	}{
		{"error fields", allowAllPolicy, raise("exception", cards), []string{card}},
		{"error fields, an e-mail", allowAllPolicy, raise("exception", `select email from cards limit 1`), []string{"ada.lovelace"}},
		{"notice fields", allowAllPolicy, raise("notice", cards), []string{card}},
		{"a reported setting", allowAllPolicy, `select set_config('application_name', card, false) is not null from cards`, []string{card}},
		{"a notification", allowAllPolicy, `select pg_notify('c', card) from cards`, []string{card}},
		{"error fields under a column rule", secretRule, raise("exception", `select secret from t where id = 1`), []string{"v1"}},
		{"a reported setting under a column rule", secretRule, `select set_config('application_name', secret, false) is not null from t where id = 1`, []string{"v1"}},
		{"a notification under a column rule", secretRule, `select pg_notify('c', secret) from t where id = 1`, []string{"v1"}},
	}
	proxies := map[string]*guardedProxy{} // by policy: each starts a server
	for _, c := range cases {
		p := proxies[c.policy]
		if p == nil {
			p = startGuardedProxy(t, c.policy)
			p.db.Exec(t, "create table cards (card text, email text); insert into cards values ('"+card+"', '"+email+"')")
			proxies[c.policy] = p
		}
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			cfg, err := pgconn.ParseConfig(p.dsn())
			if err != nil {
				t.Fatal(err)
			}
			var texts []string
			fields := func(n *pgconn.Notice) {
				texts = append(texts, n.Message, n.Detail, n.Hint, n.Where, n.SchemaName, n.TableName, n.ColumnName, n.DataTypeName, n.ConstraintName)
			}
			cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { fields(n) }
			cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { texts = append(texts, n.Payload) }
			conn, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "listen c").ReadAll(); err != nil {
				t.Fatal(err)
			}
			_, err = conn.Exec(ctx, c.sql).ReadAll()
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				fields((*pgconn.Notice)(pe))
			} else if err != nil {
				t.Fatal(err)
			}
			texts = append(texts, conn.ParameterStatus("application_name"))
			all := fmt.Sprintf("%q", texts)
			for _, l := range c.leaks {
				for _, s := range texts {
					if strings.Contains(s, l) {
						t.Errorf("%q reached the client: %s", l, all)
					}
				}
			}
		})
	}
}
