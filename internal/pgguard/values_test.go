package pgguard

import (
	"context"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
)

// TestShownSQL: literals going to a ruled column are shown masked by the rule wherever the
// statement is shown; a literal the lexer cannot place hides the whole text; the rest is left
// to the detectors.
func TestShownSQL(t *testing.T) {
	pol := parsePolicy(t, testPolicy+"masking:\n  columns:\n    - {match: t.secret, style: redact}\n")
	g := guardFor(func() *policy.Policy { return pol }, nil)
	ctx := context.Background()
	if v := g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "prepare p as select * from t where secret = $1 and id = $2"}); v.Action != postgres.Allow {
		t.Fatal("PREPARE refused")
	}
	for _, c := range []struct{ sql, want string }{
		{"select * from t where secret = 'hunter2' and id = 7", "select * from t where secret = '[REDACTED:column]' and id = 7"},
		{"select * from t where secret in ('a''b', 'c') and name = 'x'", "select * from t where secret in ('[REDACTED:column]', '[REDACTED:column]') and name = 'x'"},
		{"select 1; select * from u join t on u.id = t.id where t.secret = 42", "select 1; select * from u join t on u.id = t.id where t.secret = '[REDACTED:column]'"},
		{"execute p('hunter2', 5)", "execute p('[REDACTED:column]', 5)"},
		{"select * from t where secret = E'\\101'", "[REDACTED:unmaskable]"},
		{"select * from t where name = 'a@example.com'", "select * from t where name = '[REDACTED:email]'"},
	} {
		res := g.sh.Classifier.Classify(c.sql)
		if got := g.shownSQL(c.sql, res); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.sql, got, c.want)
		}
	}
}
