package sqlclass_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// TestSettingMillisAgreesWithTheServer: wherever SettingMillis reads a timeout (ok), PostgreSQL
// sets exactly that many milliseconds. A rule bounding timeouts by sql.setting_ms would
// otherwise pass a value the server reads as 0 (off) or as more than the bound.
func TestSettingMillisAgreesWithTheServer(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, db.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	values := []string{"5000", "'5s'", "' 5 s '", "'\t5s\n'", "'1.5s'", "'2min'", "'1h'", "'1d'", "'24d'",
		"'1500us'", "'2500us'", "'3500us'", "0", "'0.4ms'", "'0.5ms'", "'0.6ms'", "'1.0001min'", "'0.0001h'",
		"'0.009s'", "'0.0005s'", "'1.'", "1.5", "2.5", "'999999999'", "'2147483647'", "'1.25min'", "'0.5d'"}
	read := 0
	// statement_timeout is read by the same code (its unit is the millisecond too), but set to a
	// millisecond it could cancel the read-back itself on a busy host.
	for _, setting := range []string{"lock_timeout", "idle_in_transaction_session_timeout", "idle_session_timeout"} {
		for _, v := range values {
			sql := fmt.Sprintf("SET %s = %s", setting, v)
			res := sqlclass.Classify(sql)
			ms, ok := res.Statements[0].SettingMillis()
			if !ok {
				continue
			}
			read++
			// One message: a timeout as short as these closes an idle session (or an idle
			// transaction) between two queries.
			rs, err := c.Exec(ctx, "BEGIN; "+sql+"; SELECT setting FROM pg_settings WHERE name = '"+setting+"'; ROLLBACK").ReadAll()
			if err != nil {
				c.Exec(ctx, "ROLLBACK").ReadAll()
				t.Errorf("%s: read as %d ms, but the server refused it: %v", sql, ms, err)
				continue
			}
			if len(rs) != 4 || len(rs[2].Rows) != 1 {
				t.Fatalf("read %s back: %d results", setting, len(rs))
			}
			got, err := strconv.ParseInt(string(rs[2].Rows[0][0]), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			if got != ms {
				t.Errorf("%s: read as %d ms, the server set %d ms", sql, ms, got)
			}
		}
	}
	if read < 2*len(values) {
		t.Fatalf("only %d of the values were read: the comparison covers too little", read)
	}
}
