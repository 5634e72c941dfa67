package pgguard

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/enforcer-dev/enforcer/internal/approval"
	"github.com/enforcer-dev/enforcer/internal/identity"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestMaskWithinTokens: what the detectors find is masked within the token it lies in. A private
// key's BEGIN line in one token and its END line in a later one mask neither the code between
// them nor the statements after; a key inside one literal is masked whole; a DO block's body is
// masked token by token as code. A text the scanner cannot split is masked as one text (the
// server runs none of it), and is not fit for a reviewer.
func TestMaskWithinTokens(t *testing.T) {
	const key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
	g := newGuard(t, nil)
	for _, c := range []struct {
		name, sql, want string
		whole           bool
	}{
		{"comments hide code",
			"UPDATE orders SET status = 'shipped' WHERE id = 7 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* -----END PRIVATE KEY----- */",
			"UPDATE orders SET status = 'shipped' WHERE id = 7 /* [REDACTED:private_key]*/ OR id > 0 /* -----END PRIVATE KEY----- */", true},
		{"line comments hide code",
			"SELECT * FROM orders WHERE id = 7 -- -----BEGIN PRIVATE KEY-----\nOR id > 0 -- -----END PRIVATE KEY-----",
			"SELECT * FROM orders WHERE id = 7 -- [REDACTED:private_key]\nOR id > 0 -- -----END PRIVATE KEY-----", true},
		{"string literals hide code",
			"UPDATE orders SET note = '-----BEGIN PRIVATE KEY-----' WHERE id = 7 OR id > 0 OR note = '-----END PRIVATE KEY-----'",
			"UPDATE orders SET note = '[REDACTED:private_key]' WHERE id = 7 OR id > 0 OR note = '-----END PRIVATE KEY-----'", true},
		{"nested comment",
			"UPDATE orders SET status = 'x' WHERE id = 7 /* a /* -----BEGIN PRIVATE KEY----- */ b */ OR id > 0 /* -----END PRIVATE KEY----- */",
			"UPDATE orders SET status = 'x' WHERE id = 7 /*REDACTED*/ OR id > 0 /* -----END PRIVATE KEY----- */", true},
		{"dollar quotes",
			"UPDATE orders SET note = $k$-----BEGIN PRIVATE KEY-----$k$ WHERE id = 7 OR id > 0 OR note = $$-----END PRIVATE KEY-----$$",
			"UPDATE orders SET note = $k$[REDACTED:private_key]$k$ WHERE id = 7 OR id > 0 OR note = $$-----END PRIVATE KEY-----$$", true},
		{"E strings",
			"UPDATE orders SET note = E'-----BEGIN PRIVATE KEY-----\\n' WHERE id = 7 OR id > 0 OR note = e'\\'-----END PRIVATE KEY-----'",
			"UPDATE orders SET note = E'[REDACTED:private_key]' WHERE id = 7 OR id > 0 OR note = e'\\'-----END PRIVATE KEY-----'", true},
		{"multiple statements",
			"SELECT 1 /* -----BEGIN PRIVATE KEY----- */; DELETE FROM orders; /* -----END PRIVATE KEY----- */",
			"SELECT 1 /* [REDACTED:private_key]*/; DELETE FROM orders; /* -----END PRIVATE KEY----- */", true},
		{"DO body",
			"DO $$ BEGIN UPDATE orders SET status = 'x' WHERE id = 7 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* -----END PRIVATE KEY----- */; END $$",
			"DO $$ BEGIN UPDATE orders SET status = 'x' WHERE id = 7 /* [REDACTED:private_key]*/ OR id > 0 /* -----END PRIVATE KEY----- */; END $$", true},
		{"function body in a standard string",
			"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'UPDATE orders SET note = ''-----BEGIN PRIVATE KEY-----'' WHERE id = 7 OR id > 0 OR note = ''-----END PRIVATE KEY-----'''",
			"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'UPDATE orders SET note = ''[REDACTED:private_key]'' WHERE id = 7 OR id > 0 OR note = ''-----END PRIVATE KEY-----'''", true},
		{"key inside one literal", "INSERT INTO keys VALUES (1, '" + key + "')", "INSERT INTO keys VALUES (1, '[REDACTED:private_key]')", true},
		{"key inside a body's literal", "DO $$ BEGIN INSERT INTO keys VALUES (1, '" + key + "'); END $$",
			"DO $$ BEGIN INSERT INTO keys VALUES (1, '[REDACTED:private_key]'); END $$", true},
		{"value named by the code before it", "UPDATE users SET password = 'hunter22' WHERE id = 1",
			"UPDATE users SET password = '[REDACTED:generic_secret]' WHERE id = 1", true},
		{"values, numbers and names", `SELECT 4111111111111111, 'a@example.com', "a@example.com" FROM t`,
			`SELECT ************1111, '[REDACTED:email]', "[REDACTED:email]" FROM t`, true},
		// The partial style's '*' after the comment's '/' would open a nested comment.
		{"style output that would read as SQL", "SELECT 1 /* /4111111111111111 */ OR id > 0 /* */",
			"SELECT 1 /*REDACTED*/ OR id > 0 /* */", true},
		{"unterminated comment", "SELECT 1 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* never closed",
			"SELECT 1 /* [REDACTED:private_key]", false},
		{"unterminated string in a body", "DO $$ BEGIN PERFORM '-----BEGIN PRIVATE KEY-----' || 'x; END $$",
			"DO $$ BEGIN PERFORM '[REDACTED:private_key]$$", false},
		{"clean", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, whole := g.maskWithinTokens(c.sql, 0)
			if got != c.want || whole != c.whole {
				t.Errorf("%s\n got %s (whole %v)\nwant %s (whole %v)", c.sql, got, whole, c.want, c.whole)
			}
			if got := g.maskDetected(c.sql); got != c.want {
				t.Errorf("maskDetected: %s", got)
			}
		})
	}
	const clean = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"
	if got := g.maskDetected(clean); unsafe.StringData(got) != unsafe.StringData(clean) {
		t.Error("a clean statement was copied")
	}
}

// TestReviewerAndRecordSeeCodeBetweenSecrets (from a review, 2026-12-07): a reviewer was shown
// "… WHERE id = 7 /* [REDACTED:private_key] */" for a statement whose masked span, from a BEGIN
// line in one comment to an END line in another, hid "OR id > 0"; the session log kept the same
// text. Must hold: the approval's display and the record show the code between the comments; a
// held statement that cannot be split into tokens is refused, not shown masked whole.
func TestReviewerAndRecordSeeCodeBetweenSecrets(t *testing.T) {
	pol := parsePolicy(t, strings.Replace(testPolicy, "rules:\n", "rules:\n  - {name: review, when: 'sql.kind in [\"UPDATE\", \"DO\", \"UNKNOWN\"]', action: approve, approvers: [ops]}\n", 1)+"default: allow\n")
	var mu sync.Mutex
	var shown []string
	var broker *approval.Broker
	broker = approval.NewBroker(approval.NewMemoryStore(), approval.Config{Timeout: 2 * time.Second, LateWindow: -1,
		OnEvent: func(e approval.Event) {
			if e.Type != approval.EventCreated || e.Request == nil {
				return
			}
			mu.Lock()
			shown = append(shown, e.Request.SQL)
			mu.Unlock()
			go broker.Approve(context.Background(), e.Request.ID, approval.Reviewer{Subject: "bob", Groups: []string{"ops"}}, "only order 7")
		}})
	dir := t.TempDir()
	rec, err := record.Open(record.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sh := testShared(func() *policy.Policy { return pol }, rec)
	sh.Approvals = broker
	g := sh.NewGuard(ConnInfo{ID: "1", Target: pol.Targets[0], Identity: identity.Session{Subject: "alice", Groups: []string{"eng"}}})

	const (
		held        = "UPDATE orders SET status = 'shipped' WHERE id = 7 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* -----END PRIVATE KEY----- */"
		allowed     = "SELECT * FROM orders WHERE id = 7 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* -----END PRIVATE KEY----- */"
		unsplit     = "UPDATE orders SET status = 'shipped' WHERE id = 7 /* -----BEGIN PRIVATE KEY----- */ OR id > 0 /* never closed"
		bodyUnsplit = "DO $$ BEGIN PERFORM '-----BEGIN PRIVATE KEY-----' || 'x; END $$"
		cleanWrite  = "UPDATE orders SET status = 'shipped' WHERE id = 8 /* never closed"
	)
	for _, c := range []struct {
		sql     string
		refused string // in the error's message; "" for a statement that runs
	}{
		{held, ""},
		{allowed, ""},
		{unsplit, "cannot be shown safely to a reviewer"},
		{bodyUnsplit, "cannot be shown safely to a reviewer"},
		{cleanWrite, ""}, // nothing to mask: shown as sent
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v := g.Statement(ctx, &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: c.sql, TxStatus: 'I'})
		cancel()
		switch {
		case c.refused == "" && v.Action == postgres.Refuse:
			t.Errorf("%s: refused: %s", c.sql, v.Error.Message)
		case c.refused != "" && (v.Action != postgres.Refuse || v.Error.Code != "42501" || !strings.Contains(v.Error.Message, c.refused)):
			t.Errorf("%s: verdict %+v, want 42501 with %q", c.sql, v, c.refused)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(shown) != 2 || !strings.Contains(shown[0], "OR id > 0") || strings.Contains(shown[0], "BEGIN PRIVATE KEY") || shown[1] != cleanWrite {
		t.Errorf("reviewers were shown %q; want the held statement with OR id > 0 and its key line masked, then the clean write as sent", shown)
	}
	var texts []string
	for _, ev := range eventsOf(t, closeAndLoad(t, rec, dir, g.SessionID())) {
		if ev.Statement != nil {
			texts = append(texts, ev.Statement.Text)
		}
	}
	for _, sql := range []string{held, allowed} {
		want := strings.Replace(sql, "-----BEGIN PRIVATE KEY----- ", "[REDACTED:private_key]", 1)
		if !strings.Contains(strings.Join(texts, "\n"), want) {
			t.Errorf("the record does not show %q; it has %q", want, texts)
		}
	}
}
