package pgguard

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
)

// TestRuledValueShownToReviewers: a held statement that writes 'hunter2' to customers.tel
// through a VALUES subquery reaches reviewers (and the NOTICE, built from the same request)
// with the value masked by the rule.
func TestRuledValueShownToReviewers(t *testing.T) {
	pol := parsePolicy(t, strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: review-inserts, when: 'sql.kind == \"INSERT\"', action: approve, approvers: [ops]}\n", 1)+
		"default: allow\nmasking:\n  columns:\n    - {match: customers.tel, style: redact}\n")
	var mu sync.Mutex
	var shown []string
	broker := approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: 200 * time.Millisecond, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type == approval.EventCreated && e.Request != nil {
				mu.Lock()
				shown = append(shown, e.Request.SQL)
				mu.Unlock()
			}
		}})
	sh := testShared(func() *policy.Policy { return pol }, nil)
	sh.Approvals = broker
	g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
	for _, sql := range []string{
		"insert into customers(tel) values ('hunter2')", // control: masked
		"insert into customers(tel) select x from (values ('hunter2')) v(x)",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: sql})
		cancel()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(shown) != 2 {
		t.Fatalf("%d approval requests, want 2: %q", len(shown), shown)
	}
	for _, s := range shown {
		if strings.Contains(s, "hunter2") {
			t.Errorf("shown to reviewers in clear: %s", s)
		}
	}
}

// TestExecuteShowsWhatWasPrepared (from a review, 2026-12-07): an approval of "EXECUTE p(1)"
// showed reviewers only that text, and its binding covered only that text, so a late grant let
// p prepared anew as another write through. Must hold: the request carries what p was prepared
// as, for reviewers and for the binding.
func TestExecuteShowsWhatWasPrepared(t *testing.T) {
	pol := parsePolicy(t, strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: review-writes, when: 'sql.writes', action: approve, approvers: [ops]}\n", 1)+"default: allow\n")
	var mu sync.Mutex
	var shown []*approval.Request
	var broker *approval.Broker
	broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: 2 * time.Second, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type != approval.EventCreated || e.Request == nil {
				return
			}
			mu.Lock()
			shown = append(shown, e.Request)
			mu.Unlock()
			// Each statement is approved, so that p exists for the EXECUTEs.
			go broker.Approve(context.Background(), e.Request.ID, approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}, "")
		}})
	sh := testShared(func() *policy.Policy { return pol }, nil)
	sh.Approvals = broker
	g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
	run := func(sql string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if v := g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: sql, TxStatus: 'I'}); v.Action == postgres.Refuse {
			t.Fatalf("%s: refused: %s", sql, v.Error.Message)
		}
	}
	run("prepare p(int) as update customers set tel = 'x' where id = $1")
	run("execute p(1)")
	run("deallocate p")
	run("prepare p(int) as delete from customers where id = $1")
	run("execute p(1)")
	mu.Lock()
	defer mu.Unlock()
	var execs []*approval.Request
	for _, r := range shown {
		if strings.HasPrefix(r.SQL, "execute p(1)") {
			execs = append(execs, r)
		}
	}
	if len(execs) != 2 {
		t.Fatalf("%d approval requests for execute p(1), want 2", len(execs))
	}
	if !strings.Contains(execs[0].SQL, "update customers") || !strings.Contains(execs[1].SQL, "delete from customers") {
		t.Errorf("reviewers see %q and %q: not what p was prepared as", execs[0].SQL, execs[1].SQL)
	}
	if execs[0].Hash == execs[1].Hash {
		t.Error("one binding for two different statements prepared as p")
	}
}

// TestOverApprovalLimitsRefused: a statement that would put its person over the broker's bound
// on pending requests, or over its rate of new ones, is refused at once (42501), saying why,
// whose and what to do, while the one already pending stays held.
func TestOverApprovalLimitsRefused(t *testing.T) {
	tests := []struct {
		name string
		cfg  approval.Config
		want []string // in the refusal's message
	}{
		{"too many pending", approval.Config{MaxPendingPerPerson: 1}, []string{"await review", "alice", "wait until reviewers decide"}},
		{"too many new", approval.Config{RequestBurst: 1, RequestEvery: time.Hour}, []string{"too many approval requests", "alice", "try again in 1h0m0s"}},
	}
	pol := parsePolicy(t, strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: review-inserts, when: 'sql.kind == \"INSERT\"', action: approve, approvers: [ops]}\n", 1)+"default: allow\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			created := make(chan string, 2)
			cfg := tt.cfg
			cfg.Timeout, cfg.LateWindow = time.Minute, -1
			cfg.OnEvent = func(e approval.Event) {
				if e.Type == approval.EventCreated {
					created <- e.Request.ID
				}
			}
			broker := approval.NewBroker(approval.NewMemoryStore(), cfg)
			sh := testShared(func() *policy.Policy { return pol }, nil)
			sh.Approvals = broker
			conn := func(id string) *Guard {
				return sh.NewGuard(ConnInfo{ID: id, Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := make(chan postgres.Verdict, 1)
			go func() {
				first <- conn("1").Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "insert into customers(tel) values ('1')"})
			}()
			select {
			case <-created:
			case <-time.After(10 * time.Second):
				t.Fatal("the first statement was not held")
			}
			v := conn("2").Statement(context.Background(), &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "insert into customers(tel) values ('2')"})
			if v.Action != postgres.Refuse || v.Error == nil || v.Error.Code != "42501" {
				t.Fatalf("second statement: %+v; want refused with 42501", v.Error)
			}
			for _, w := range tt.want {
				if !strings.Contains(v.Error.Message, w) {
					t.Errorf("refusal %q does not say %q", v.Error.Message, w)
				}
			}
			select {
			case v := <-first:
				t.Fatalf("the held statement ended: %+v", v)
			default:
			}
			cancel()
			<-first
		})
	}
}
