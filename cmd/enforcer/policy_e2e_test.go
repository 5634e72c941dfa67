package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/control"
	"github.com/enforcer-dev/enforcer/internal/identity/devidp"
	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

const agentRules = `rules:
  - name: no-destructive-ddl
    when: 'sql.kind in ["DROP", "TRUNCATE"]'
    action: block
    message: destructive DDL is not allowed on production
  - name: no-unbounded-writes
    when: 'sql.writes && (!sql.has_where || sql.where_is_constant)'
    action: block
    message: writes must name the rows they change
  - name: writes-need-review
    when: 'sql.writes && sql.has_where && !sql.where_is_constant'
    action: approve
    approvers: [dba]
approvals: {timeout: 20s, transaction_timeout: 20s}
`

func seed(t *testing.T, pg *pgtest.Server) {
	pg.Exec(t, `CREATE TABLE customers (id int PRIMARY KEY, email text, card text);
INSERT INTO customers SELECT g, 'user'||g||'@example.com', '4111 1111 1111 1111' FROM generate_series(1, 20) g;
CREATE TABLE orders (id int PRIMARY KEY, customer int, status text);
INSERT INTO orders SELECT g, g, 'new' FROM generate_series(1, 20) g;
GRANT SELECT, UPDATE, DELETE, INSERT ON customers, orders TO agent_ro;`)
}

func scalar(t *testing.T, pg *pgtest.Server, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var s string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// TestPolicyBlocksThroughPsqlAndPgx: blocked statements get 42501 with the rule's name and
// message and never change the database; reads pass; a refused statement inside a transaction
// makes COMMIT roll back, as the server would.
func TestPolicyBlocksThroughPsqlAndPgx(t *testing.T) {
	e := newEnv(t, "bpf")
	pg, _, dsn := e.addPostgres()
	seed(t, pg)
	e.tailYAML = agentRules
	e.setPolicy()

	cases := []struct {
		name, sql string
		want      []string
		ok        bool
	}{
		{"read", "select count(*) from customers", []string{"20"}, true},
		{"drop", "DROP TABLE customers", []string{`blocked by rule "no-destructive-ddl"`, "destructive DDL"}, false},
		{"truncate hidden in comments", "/* hi */ TrUnCaTe -- x\n orders", []string{"no-destructive-ddl"}, false},
		{"unbounded delete", "DELETE FROM orders", []string{`"no-unbounded-writes"`, "name the rows"}, false},
		{"constant where", "UPDATE orders SET status = 'x' WHERE 1 = 1", []string{"no-unbounded-writes"}, false},
		{"delete in a CTE", "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d", []string{"no-unbounded-writes"}, false},
		{"multi-statement string", "SELECT 1; DROP TABLE orders", []string{"no-destructive-ddl"}, false},
		{"unparseable", "SELEC * FROM", []string{"blocked"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := e.run("psql", dsn, "-XAtc", c.sql)
			if (code == 0) != c.ok {
				t.Fatalf("exit %d: %q", code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output %q lacks %q", out, w)
				}
			}
		})
	}
	if n := scalar(t, pg, "select count(*)::text from orders where status = 'new'"); n != "20" {
		t.Fatalf("orders changed by blocked statements: %s new rows", n)
	}

	// Transaction agreement: after the refused DROP the transaction is failed on both sides.
	out, _ := e.run("sh", "-c", fmt.Sprintf(`printf 'BEGIN;\nUPDATE orders SET status = $$t$$ WHERE id = 1 AND false;\nDROP TABLE orders;\nSELECT 1;\nCOMMIT;\n' | psql %q -X`, dsn))
	if !strings.Contains(out, "current transaction is aborted") || !strings.Contains(out, "ROLLBACK") {
		t.Errorf("transaction after a refused statement: %q", out)
	}

	// pgbench with a custom script: the blocked DELETE fails every transaction, the table stays.
	script := filepath.Join(e.dir, "bad.sql")
	os.WriteFile(script, []byte("DELETE FROM orders;\n"), 0o644)
	out, _ = e.run("pgbench", "-n", "-t", "5", "-f", script, dsn)
	if !strings.Contains(out, "no-unbounded-writes") {
		t.Errorf("pgbench with a blocked script: %s", out)
	}
	if n := scalar(t, pg, "select count(*)::text from orders"); n != "20" {
		t.Fatalf("orders deleted through pgbench: %s left", n)
	}

	// A bad policy reload is refused and the running policy keeps enforcing.
	os.WriteFile(filepath.Join(e.dir, "policy.yaml"), []byte("version: 1\nrules:\n  - {name: x, when: 'sql.nope', action: block}\n"), 0o644)
	if err := control.NewClient(e.socket).Do(t.Context(), "POST", "/v1/policy/reload", nil, nil); err == nil || !strings.Contains(err.Error(), "policy.yaml:3") {
		t.Errorf("bad reload: %v", err)
	}
	if out, _ := e.run("psql", dsn, "-XAtc", "DROP TABLE customers"); !strings.Contains(out, "no-destructive-ddl") {
		t.Errorf("after a bad reload the old policy must still block: %q", out)
	}
	e.setPolicy()

	// pgx over the extended protocol: judged at Parse, same SQLSTATE; allowed reads work.
	if got := e.pgxAgent(dsn, "DELETE FROM orders WHERE $1::int > 0", "1"); !strings.HasPrefix(got, "err 42501") || !strings.Contains(got, "no-unbounded-writes") {
		t.Errorf("pgx extended delete: %q", got)
	}
	if got := e.pgxAgent(dsn, "SELECT count(*) FROM customers WHERE id > $1", "10"); got != "ok 10" {
		t.Errorf("pgx extended select: %q", got)
	}
}

// TestApprovalFlow: a bounded UPDATE is held until a reviewer in group dba approves it, a
// requester cannot approve their own statement, a denial reaches the agent with its reason.
func TestApprovalFlow(t *testing.T) {
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Users: []devidp.User{
			{Subject: "alice", Email: "alice@example.test", Groups: []string{"engineering"}},
			{Subject: "carol", Email: "carol@example.test", Groups: []string{"dba"}},
			{Subject: "bob", Email: "bob@example.test", Groups: []string{"engineering"}},
		},
		PollInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	e := newEnvWith(t, "bpf", fmt.Sprintf("identity: {issuer: %q, client_id: %q}\n", idp.Issuer(), idp.ClientID()))
	pg, _, dsn := e.addPostgres()
	seed(t, pg)
	e.tailYAML = agentRules
	e.setPolicy()
	loginAs(t, e, idp, "alice")
	reviewer := reviewerCLI(t, e, idp, "carol", 65534)
	outsider := reviewerCLI(t, e, idp, "bob", 1000)

	// Approve.
	done := make(chan string, 1)
	go func() {
		o, _ := e.run("psql", dsn, "-Xc", "UPDATE orders SET status = 'shipped' WHERE id = 7")
		done <- o
	}()
	id := waitPending(t, e)
	if out, err := exec.Command(enforcerBin, "approve", id, "--socket", e.socket).CombinedOutput(); err == nil || !strings.Contains(string(out), "own") {
		t.Errorf("self-approval must be refused: %v %s", err, out)
	}
	if out, err := outsider("approve", id).CombinedOutput(); err == nil || !strings.Contains(string(out), "dba") {
		t.Errorf("an approver outside the rule's groups must be refused: %v %s", err, out)
	}
	if out, err := reviewer("approve", id, "--reason", "looks right").CombinedOutput(); err != nil {
		t.Fatalf("approve: %v %s", err, out)
	}
	out := <-done
	if !strings.Contains(out, "UPDATE 1") || !strings.Contains(out, id) {
		t.Errorf("approved statement: %q", out)
	}
	if s := scalar(t, pg, "select status from orders where id = 7"); s != "shipped" {
		t.Errorf("approved update not applied: %s", s)
	}

	// Deny.
	go func() {
		o, _ := e.run("psql", dsn, "-Xc", "UPDATE orders SET status = 'lost' WHERE id = 8")
		done <- o
	}()
	id = waitPending(t, e)
	if out, err := reviewer("deny", id, "--reason", "not during the freeze").CombinedOutput(); err != nil {
		t.Fatalf("deny: %v %s", err, out)
	}
	out = <-done
	if !strings.Contains(out, "not during the freeze") || strings.Contains(out, "UPDATE 1") {
		t.Errorf("denied statement: %q", out)
	}
	if s := scalar(t, pg, "select status from orders where id = 8"); s != "new" {
		t.Errorf("denied update applied: %s", s)
	}
	// The denied client's hint names `enforcer approvals ID`, which shows the decided request.
	if !strings.Contains(out, "enforcer approvals "+id) {
		t.Errorf("denied statement's hint: %q", out)
	}
	if o, err := reviewer("approvals", id).CombinedOutput(); err != nil || !strings.Contains(string(o), "DENIED") || !strings.Contains(string(o), "not during the freeze") {
		t.Errorf("enforcer approvals %s: %v %s", id, err, o)
	}

	// Ctrl-C while held withdraws the request.
	out, _ = e.run("sh", "-c", fmt.Sprintf(`psql %q -X -c "UPDATE orders SET status = 'x' WHERE id = 9" & p=$!; sleep 1.5; kill -INT $p; wait $p`, dsn))
	all, _ := exec.Command(enforcerBin, "approvals", "--all", "--json", "--socket", e.socket).Output()
	if !strings.Contains(string(all), `"withdrawn"`) {
		t.Errorf("cancel while pending: %q; requests: %s", out, all)
	}

	// Approval after the timeout: the identical statement passes once on retry; another literal
	// does not.
	e.tailYAML = strings.Replace(agentRules, "timeout: 20s, transaction_timeout: 20s", "timeout: 2s, transaction_timeout: 1s", 1)
	e.setPolicy()
	const late = "UPDATE orders SET status = 'late' WHERE id = 10"
	out, _ = e.run("psql", dsn, "-Xc", late)
	m := regexp.MustCompile(`apr_[a-z0-9]+`).FindString(out)
	if m == "" || !strings.Contains(out, "ERROR") {
		t.Fatalf("timed-out statement: %q", out)
	}
	if o, err := reviewer("approve", m, "--reason", "late but fine").CombinedOutput(); err != nil || !strings.Contains(string(o), "pass once on retry") {
		t.Fatalf("late approve: %v %s", err, o)
	}
	if out, _ := e.run("psql", dsn, "-Xc", "UPDATE orders SET status = 'late' WHERE id = 11"); strings.Contains(out, "UPDATE 1") {
		t.Errorf("a different literal used the grant: %q", out)
	}
	if out, _ := e.run("psql", dsn, "-Xc", late); !strings.Contains(out, "UPDATE 1") {
		t.Errorf("retry after late approval: %q", out)
	}
	if out, _ := e.run("psql", dsn, "-Xc", late); strings.Contains(out, "UPDATE 1") {
		t.Errorf("the grant was used twice: %q", out)
	}

	// Logging out while a statement is held ends the hold and the connection at once, long before
	// the approval times out, and nothing runs.
	e.tailYAML = agentRules
	e.setPolicy()
	go func() {
		o, _ := e.run("psql", dsn, "-Xc", "UPDATE orders SET status = 'revoked' WHERE id = 12")
		done <- o
	}()
	id = waitPending(t, e)
	start := time.Now()
	if out, err := exec.Command(enforcerBin, "logout", "--socket", e.socket).CombinedOutput(); err != nil {
		t.Fatalf("logout: %v %s", err, out)
	}
	select {
	case out := <-done:
		if strings.Contains(out, "UPDATE 1") {
			t.Errorf("held statement ran after logout: %q", out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a held statement outlived its session's logout")
	}
	// The approval times out after 20 s; anything near that means the hold was not ended.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("logout and the end of the held statement took %v", d)
	}
	all, _ = exec.Command(enforcerBin, "approvals", "--all", "--json", "--socket", e.socket).Output()
	var reqs []*approval.Request
	json.Unmarshal(all, &reqs)
	if i := slices.IndexFunc(reqs, func(r *approval.Request) bool { return r.ID == id }); i < 0 || reqs[i].State != approval.StateWithdrawn {
		t.Errorf("request %s after logout: want withdrawn; requests: %s", id, all)
	}
	if s := scalar(t, pg, "select status from orders where id = 12"); s == "revoked" {
		t.Error("held update applied after logout")
	}
}

func waitPending(t *testing.T, e *env) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		out, err := exec.Command(enforcerBin, "approvals", "--json", "--socket", e.socket).Output()
		if err == nil {
			var reqs []*approval.Request
			json.Unmarshal(out, &reqs)
			if len(reqs) > 0 {
				return reqs[0].ID
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no pending approval request appeared")
	return ""
}

// reviewerCLI logs a second person in under another uid and returns a runner of CLI commands as
// that uid.
func reviewerCLI(t *testing.T, e *env, idp *devidp.Server, subject string, uid uint32) func(args ...string) *exec.Cmd {
	as := func(args ...string) *exec.Cmd {
		cmd := exec.Command(enforcerBin, append(args, "--socket", e.socket)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
		return cmd
	}
	loginWith(t, as("login"), idp, subject)
	return as
}

// pgxAgentEnv makes the test binary a pgx client: it runs one statement over the extended
// protocol with text parameters and prints "ok VALUE" or "err SQLSTATE MESSAGE". With SQL
// "@seq" it runs each argument as a statement, in order, on the one connection, and prints
// "STATEMENT => " before each result.
const pgxAgentEnv = "ENFORCER_PGX_AGENT"

func pgxAgent(dsn, sql string, args []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		fmt.Println("connect", err)
		return 0
	}
	defer c.Close(ctx)
	switch sql {
	case "@pipeline":
		// 50 queries sent in one pipeline (pgx batches), results read after all were sent.
		b := &pgx.Batch{}
		for i := 0; i < 50; i++ {
			b.Queue("SELECT $1::int * 2", i)
		}
		br := c.SendBatch(ctx, b)
		sum := 0
		for i := 0; i < 50; i++ {
			var v int
			if err := br.QueryRow().Scan(&v); err != nil {
				fmt.Println("err", err)
				return 0
			}
			sum += v
		}
		if err := br.Close(); err != nil {
			fmt.Println("err", err)
			return 0
		}
		fmt.Println("ok", sum)
		return 0
	case "@copy":
		// COPY FROM STDIN with pgx's CopyFrom, then COPY TO STDOUT through pgconn.
		n, err := c.CopyFrom(ctx, pgx.Identifier{args[0]}, []string{"n", "s"}, pgx.CopyFromSlice(1000, func(i int) ([]any, error) {
			return []any{i, fmt.Sprintf("row %d", i)}, nil
		}))
		if err != nil {
			fmt.Println("err", err)
			return 0
		}
		var buf strings.Builder
		tag, err := c.PgConn().CopyTo(ctx, &buf, "COPY "+args[0]+" TO STDOUT")
		if err != nil {
			fmt.Println("err", err)
			return 0
		}
		fmt.Println("ok", n, tag.RowsAffected(), strings.Count(buf.String(), "\n"))
		return 0
	}
	if sql == "@script" {
		pgconnScript(ctx, c, args)
		return 0
	}
	if sql == "@seq" {
		for _, s := range args {
			fmt.Print(s, " => ")
			printResult(c.Query(ctx, s))
		}
		return 0
	}
	var params []any
	for _, a := range args {
		params = append(params, a)
	}
	printResult(c.Query(ctx, sql, params...))
	return 0
}

// printResult prints a query's rows as "ok V1,V2" or its error as "err SQLSTATE MESSAGE".
func printResult(rows pgx.Rows, err error) {
	var out []string
	if err == nil {
		for rows.Next() {
			vals, _ := rows.Values()
			out = append(out, fmt.Sprint(vals...))
		}
		rows.Close()
		err = rows.Err()
	}
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		fmt.Println("err", pe.Code, pe.Message, pe.Detail)
	case err != nil:
		fmt.Println("err", err)
	default:
		fmt.Println("ok", strings.Join(out, ","))
	}
}

func (e *env) pgxAgent(dsn, sql string, args ...string) string {
	e.t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(enforcerBin, append([]string{"run", "--socket", e.socket, "--", self, "-test.run=^$", dsn, sql}, args...)...)
	cmd.Env = append(os.Environ(), pgxAgentEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("pgx agent: %v %s", err, out)
	}
	return strings.TrimSpace(string(out))
}
