package pgguard

import (
	"context"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
)

// TestShownSQL: a statement naming a ruled column (or one the guard cannot parse) is shown with
// every literal masked by the rule; a text the lexer cannot split is hidden whole; other
// statements are left to the detectors.
func TestShownSQL(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	ctx := context.Background()
	if v := g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "prepare p as select * from t where secret = $1 and id = $2"}); v.Action != postgres.Allow {
		t.Fatal("PREPARE refused")
	}
	for _, c := range []struct{ sql, want string }{
		{"select * from t where secret = 'hunter2' and id = 7", "select * from t where secret = '[REDACTED:column]' and id = '[REDACTED:column]'"},
		{"select * from t where secret in ('a''b', 'c')", "select * from t where secret in ('[REDACTED:column]', '[REDACTED:column]')"},
		{"insert into t(secret) select x from (values ('hunter2')) v(x)", "insert into t(secret) select x from (values ('[REDACTED:column]')) v(x)"},
		{"select * from t where secret = ''\n'hunter2'", "select * from t where secret = '[REDACTED:column]'\n'[REDACTED:column]'"},
		{"execute p('hunter2', 5)", "execute p('[REDACTED:column]', '[REDACTED:column]')"},
		{"prepare q as insert into t(secret) values ($1); execute q('hunter2')", "prepare q as insert into t(secret) values ($1); execute q('[REDACTED:column]')"},
		{"update t set secret = 'hunter2' wher id = 1", "update t set secret = '[REDACTED:column]' wher id = '[REDACTED:column]'"},
		{"select * from t where secret = E'\\101'", "[REDACTED:unmaskable]"},
		{"select * from u where name = 'a@example.com' and n = 3", "select * from u where name = '[REDACTED:email]' and n = 3"},
	} {
		res := g.sh.Classifier.Classify(c.sql)
		if got := g.shownSQL(c.sql, g.ruledColumns(res)); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.sql, got, c.want)
		}
	}
}
