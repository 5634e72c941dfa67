package pgguard

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
)

// TestExecuteJudgedByPolicyInForce: a statement parsed before a policy reload (drivers such as
// pgx keep prepared statements for the connection's life) is judged at each Execute by the policy
// in force then, not by the one its Parse saw.
func TestExecuteJudgedByPolicyInForce(t *testing.T) {
	const update = "update t set a = 1 where id = $1"
	for _, tc := range []struct {
		name     string
		reloaded string
		refused  string // in the refusal; "" when the Execute runs
	}{
		{"policy unchanged", "default: allow\n" + testPolicy, ""},
		{"writes now blocked", strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: frozen, when: 'sql.writes', action: block, message: writes are frozen}\n", 1), "writes are frozen"},
		{"writes now need approval", strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: review, when: 'sql.writes', action: approve, approvers: [dba]}\n", 1), "needs approval"},
		{"writes now left to the default", testPolicy, "policy default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var current atomic.Pointer[policy.Policy]
			current.Store(parsePolicy(t, "default: allow\n"+testPolicy))
			g := guardFor(current.Load, nil)
			ctx := context.Background()
			if v := g.Statement(ctx, &postgres.Statement{Kind: postgres.KindParse, SQL: update, StatementName: "s1"}); v.Action == postgres.Refuse {
				t.Fatalf("parse refused: %s", v.Error.Message)
			}
			current.Store(parsePolicy(t, tc.reloaded))
			v := g.Statement(ctx, &postgres.Statement{Kind: postgres.KindExecute, SQL: update, StatementName: "s1", Known: true, Params: [][]byte{[]byte("1")}})
			switch {
			case tc.refused == "" && v.Action == postgres.Refuse:
				t.Errorf("refused: %s", v.Error.Message)
			case tc.refused != "" && (v.Action != postgres.Refuse || !strings.Contains(v.Error.Message, tc.refused)):
				t.Errorf("verdict %+v, want refused saying %q", v.Error, tc.refused)
			}
		})
	}
}
