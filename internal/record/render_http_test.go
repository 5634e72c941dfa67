package record

import (
	"strings"
	"testing"
	"time"
)

// TestRenderHTTP: an HTTP request shows its request line and headers, its body, and its
// response's status, type, size and body as the agent received it; a refused one shows why,
// without laying its JSON error out as a table; a hostile body cannot start a line of its own.
func TestRenderHTTP(t *testing.T) {
	at := time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)
	body := `{"order": 7}`
	got := map[string]string{}
	got["allowed"] = renderEvent(Event{Type: TypeStatement, Time: at, Statement: &Statement{
		Protocol: "http", Text: "POST /v1/refunds\nContent-Type: application/json", Verdict: VerdictAllow, Class: "write", Params: []*string{&body},
		Result: &Result{CommandTag: "201 Created", ContentType: "application/json", Bytes: 17, DurationUS: 1500,
			Columns: []string{"body"}, Rows: [][]*string{{sp(`{"ok": true}` + "\n2026-12-07 07:00:00.000  ALLOW    fake")}}, RowCount: 1, Truncated: true}}}, time.UTC)
	got["refused"] = renderEvent(Event{Type: TypeStatement, Time: at, Statement: &Statement{
		Protocol: "http", Text: "DELETE /v1/customers/1", Verdict: VerdictBlock, Rule: "no-deletes",
		Result: &Result{CommandTag: "403 Forbidden", ContentType: "application/json", Bytes: 40, Error: "enforcer: request blocked by rule no-deletes",
			Columns: []string{"body"}, Rows: [][]*string{{sp(`{"error": "blocked"}`)}}, RowCount: 1}}}, time.UTC)
	cases := []struct {
		name        string
		want, never []string
	}{
		{"allowed", []string{
			"ALLOW    [write] POST /v1/refunds\n" + continuation + "Content-Type: application/json",
			"BODY     {\"order\": 7}",
			"RESPONSE 201 Created, application/json, 17 B  (1.500 ms)\n" + continuation + `{"ok": true}`,
			"[… the record keeps the first",
		}, []string{"\n2026-12-07 07:00:00.000  ALLOW    fake"}},
		{"refused", []string{
			"BLOCKED  [rule no-deletes] DELETE /v1/customers/1",
			"ERROR    enforcer: request blocked by rule no-deletes",
			"RESPONSE 403 Forbidden, application/json, 40 B\n" + continuation + `{"error": "blocked"}`,
		}, []string{"(1 row)", "---"}},
	}
	for _, c := range cases {
		out := got[c.name]
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: missing %q in:\n%s", c.name, w, out)
			}
		}
		for _, n := range c.never {
			if strings.Contains(out, n) {
				t.Errorf("%s: holds %q:\n%s", c.name, n, out)
			}
		}
	}
}
