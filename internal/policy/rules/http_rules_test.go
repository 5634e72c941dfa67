package rules

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// aliceHTTP is alice on an http target.
var aliceHTTP = NewConn(
	Identity{Subject: "alice", Email: "alice@example.com", Groups: []string{"engineering"}, Provider: "https://idp"},
	Process{Comm: "curl", Exe: "/usr/bin/curl", PID: 4343, UID: 1000},
	Target{Name: "api", Protocol: "http"},
)

// TestRuleJudgesWhatItReads: a rule that reads sql judges statements only, one that reads http
// HTTP requests only, one that reads neither both. A block rule on !sql.reads that judged HTTP
// requests would block every request (sql would be empty), and one on http.method that judged
// statements would see no method.
func TestRuleJudgesWhatItReads(t *testing.T) {
	const (
		statement = "DELETE FROM orders WHERE id = 1"
		method    = "DELETE"
	)
	for _, c := range []struct {
		name, when       string
		scope            Scope
		blocksStatement  bool
		blocksHTTPDelete bool
	}{
		{"statement effects", `!sql.reads`, ScopeSQL, true, false},
		{"statement kind with has()", `has(sql.kind) && sql.kind == "DELETE"`, ScopeSQL, true, false},
		{"HTTP method", `http.method == "DELETE"`, ScopeHTTP, false, true},
		{"HTTP method in a comprehension", `["DELETE", "PUT"].exists(m, m == http.method)`, ScopeHTTP, false, true},
		// An error reading an absent header would block if the rule were evaluated on statements.
		{"HTTP header", `http.headers["x-force"] == "1"`, ScopeHTTP, false, true},
		{"identity only", `identity.subject == "alice"`, ScopeBoth, true, true},
		{"process and target", `process.comm in ["cursor", "curl"] && target.name in ["prod-db", "api"]`, ScopeBoth, true, true},
		{"constant", `true`, ScopeBoth, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := mustCompile(t, []Rule{{Name: "r", When: c.when, Action: "block", Line: 4}}, DefaultAllow)
			if got, ok := e.Scope("r"); !ok || got != c.scope {
				t.Errorf("scope %v (%v), want %v", got, ok, c.scope)
			}
			d := e.Decide(alice, sqlclass.Classify(statement), nil)
			if got := d.Verdict == Block; got != c.blocksStatement {
				t.Errorf("statement %q blocked: %v, want %v\n%s", statement, got, c.blocksStatement, Explain(&d))
			}
			hd := e.DecideHTTP(aliceHTTP, HTTP{Method: method, Path: "/v1/orders/1", Host: "api.internal"})
			if got := hd.Action == Block; got != c.blocksHTTPDelete {
				t.Errorf("HTTP DELETE blocked: %v, want %v\n%s", got, c.blocksHTTPDelete, ExplainHTTP(&hd))
			}
		})
	}
	e := mustCompile(t, []Rule{
		{Name: "a", When: `sql.writes`, Action: "block"},
		{Name: "b", When: `http.path == "/"`, Action: "block"},
		{Name: "c", When: `identity.email != ""`, Action: "allow"},
	}, DefaultAllow)
	if got := e.RuleNames(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("RuleNames = %v", got)
	}
	if _, ok := e.Scope("nope"); ok {
		t.Error("Scope found a rule the engine does not have")
	}
	for s, want := range map[Scope]string{ScopeBoth: "statements and HTTP requests", ScopeSQL: "statements", ScopeHTTP: "HTTP requests"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s, want)
		}
	}
}

// TestRuleThatCannotJudgeAnyRequestRefused: a rule reading sql and http would hold for no
// request, and a comprehension variable named sql or http would hide the request variable.
func TestRuleThatCannotJudgeAnyRequestRefused(t *testing.T) {
	for _, c := range []struct{ when, want string }{
		{`sql.writes || http.method == "POST"`, "reads sql or http, not both: split it"},
		{`sql.kind == "DELETE" && http.path.startsWith("/admin")`, "not both"},
		{`has(http.headers.authorization) && !sql.reads`, "not both"},
		{`identity.groups.exists(sql, sql == "dba")`, `comprehension variable "sql" hides the request variable sql`},
		{`identity.groups.all(http, http != "x")`, `comprehension variable "http"`},
		{`{"a": 1}.map(sql, sql + "x").size() > 0`, `comprehension variable "sql"`},
	} {
		_, err := Compile([]Rule{{Name: "mixed", When: c.when, Action: "block", Line: 9}}, DefaultAllowReads)
		var ce *CompileError
		if !errors.As(err, &ce) || len(ce.Errors) != 1 || ce.Errors[0].Line != 9 || !strings.Contains(ce.Errors[0].Err, c.want) {
			t.Errorf("%s: err %v, want one naming line 9 and %q", c.when, err, c.want)
		}
	}
}

// TestDecideHTTPDefaults: with no rule matching, allow_reads allows GET, HEAD and OPTIONS and
// blocks the rest saying how to allow it; allow allows; block blocks.
func TestDecideHTTPDefaults(t *testing.T) {
	for _, c := range []struct {
		def    Default
		method string
		action Action
		reason string
	}{
		{DefaultAllowReads, "GET", Allow, "allows GET, HEAD and OPTIONS"},
		{DefaultAllowReads, "HEAD", Allow, "allow_reads"},
		{DefaultAllowReads, "OPTIONS", Allow, "allow_reads"},
		{DefaultAllowReads, "POST", Block, "no rule allows this POST request and default allow_reads allows only GET, HEAD and OPTIONS; a rule with action: allow can allow it"},
		{DefaultAllowReads, "DELETE", Block, "DELETE request"},
		{DefaultAllowReads, "PATCH", Block, "action: allow"},
		{DefaultAllowReads, "TRACE", Block, "TRACE request"},
		{"", "PUT", Block, "allow_reads"},
		{DefaultAllow, "DELETE", Allow, "default allow"},
		{DefaultBlock, "GET", Block, "default: block"},
	} {
		e := mustCompile(t, []Rule{{Name: "statements-only", When: `sql.reads`, Action: "allow"}}, c.def)
		d := e.DecideHTTP(aliceHTTP, HTTP{Method: c.method, Path: "/v1/refunds"})
		if d.Action != c.action || d.Rule != nil || !d.Default || d.Mode != e.Default() || len(d.Matches) != 0 {
			t.Errorf("default %q, %s: %s rule %+v default %v mode %q, want %s by default", c.def, c.method, d.Action, d.Rule, d.Default, d.Mode, c.action)
		}
		if !strings.Contains(d.Reason, c.reason) {
			t.Errorf("default %q, %s: reason %q lacks %q", c.def, c.method, d.Reason, c.reason)
		}
	}
}

// TestDecideHTTPRules: every rule that judges HTTP requests is evaluated, the strictest match
// decides, an approve rule holds, and a rule that fails to evaluate fails closed (an allow rule
// does not allow; a block or approve rule applies).
func TestDecideHTTPRules(t *testing.T) {
	rules := []Rule{
		{Name: "engineers-read", When: `"engineering" in identity.groups && http.method in ["GET", "HEAD"]`, Action: "allow", Line: 1},
		{Name: "refunds-reviewed", When: `http.method == "POST" && http.path.startsWith("/v1/refunds")`, Action: "approve", Approvers: []string{"finance"}, Message: "refunds are reviewed", Line: 2},
		{Name: "no-deletes", When: `http.method == "DELETE"`, Action: "block", Message: "no deletes", Line: 3},
		{Name: "big-refunds", When: `http.path.startsWith("/v1/refunds") && http.query.contains("amount=1000000")`, Action: "block", Message: "too large", Line: 4},
		{Name: "json-posts", When: `http.method == "POST" && http.headers["content-type"] == "application/json"`, Action: "allow", Line: 5},
		{Name: "forced-deletes", When: `http.headers["x-force"] == "1"`, Action: "approve", Approvers: []string{"sre"}, Line: 6},
		{Name: "no-sql-here", When: `sql.writes`, Action: "block", Line: 7},
	}
	e := mustCompile(t, rules, DefaultAllowReads)
	json := map[string]string{"content-type": "application/json", "x-force": "0"}
	for _, c := range []struct {
		name    string
		req     HTTP
		action  Action
		rule    string // "" = the default decided
		matched []string
	}{
		{"read allowed by rule", HTTP{Method: "GET", Path: "/v1/orders", Headers: map[string]string{"x-force": "0"}}, Allow, "engineers-read", []string{"engineers-read"}},
		{"approve beats allow", HTTP{Method: "POST", Path: "/v1/refunds", Headers: json}, Approve, "refunds-reviewed", []string{"refunds-reviewed", "json-posts"}},
		{"block beats approve and allow", HTTP{Method: "POST", Path: "/v1/refunds", Query: "amount=1000000", Headers: json}, Block, "big-refunds", []string{"refunds-reviewed", "big-refunds", "json-posts"}},
		{"block by method", HTTP{Method: "DELETE", Path: "/v1/orders/7", Headers: map[string]string{"x-force": "0"}}, Block, "no-deletes", []string{"no-deletes"}},
		// x-force absent: json-posts cannot allow (its header read is fine, but forced-deletes
		// errors and, being an approve rule, applies).
		{"erroring approve rule applies", HTTP{Method: "POST", Path: "/v1/orders", Headers: map[string]string{"content-type": "application/json"}}, Approve, "forced-deletes", []string{"json-posts", "forced-deletes"}},
		// content-type absent: the allow rule errors and does not allow; the default blocks.
		{"erroring allow rule does not allow", HTTP{Method: "POST", Path: "/v1/orders", Headers: map[string]string{"x-force": "0"}}, Block, "", []string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := e.DecideHTTP(aliceHTTP, c.req)
			got := ""
			if d.Rule != nil {
				got = d.Rule.Rule
			}
			if d.Action != c.action || got != c.rule || d.Default != (c.rule == "") {
				t.Errorf("%s by %q (default %v), want %s by %q\n%s", d.Action, got, d.Default, c.action, c.rule, ExplainHTTP(&d))
			}
			names := []string{}
			for _, m := range d.Matches {
				names = append(names, m.Rule)
			}
			if !slices.Equal(names, c.matched) {
				t.Errorf("matched %v, want %v", names, c.matched)
			}
		})
	}
	d := e.DecideHTTP(aliceHTTP, HTTP{Method: "POST", Path: "/v1/orders", Headers: map[string]string{"content-type": "application/json"}})
	if d.Rule == nil || d.Rule.Err == "" || d.Rule.Line != 6 || !slices.Equal(d.Rule.Approvers, []string{"sre"}) {
		t.Errorf("the erroring approve rule's match: %+v", d.Rule)
	}
	d = e.DecideHTTP(aliceHTTP, HTTP{Method: "POST", Path: "/v1/refunds", Headers: json})
	if d.Rule.Message != "refunds are reviewed" || !slices.Equal(d.Rule.Approvers, []string{"finance"}) {
		t.Errorf("the approve rule's match: %+v", d.Rule)
	}
}

// TestHTTPFields: what rules read of a request. Header names and the host are lower case
// whatever the handler gave; a field sent twice is its values joined with ", ".
func TestHTTPFields(t *testing.T) {
	req := HTTP{Method: "PATCH", Path: "/v1/users/7", Host: "API.Internal:8443", Query: "dry_run=1&x=%20",
		Headers: map[string]string{"Content-Type": "application/json", "accept": "text/plain, application/json", "X-Trace": "a", "x-trace": "b"}}
	for _, c := range []struct {
		when string
		want bool
	}{
		{`http.method == "PATCH"`, true},
		{`http.method in ["GET", "HEAD"]`, false},
		{`http.path == "/v1/users/7"`, true},
		{`http.path.matches("^/v1/users/[0-9]+$")`, true},
		{`http.host == "api.internal"`, true}, // the port is not part of the host rules see
		{`http.host == "api.internal:8443"`, false},
		{`http.query == "dry_run=1&x=%20"`, true},
		{`http.query.contains("dry_run=1")`, true},
		{`http.headers["content-type"] == "application/json"`, true},
		{`http.headers["accept"].contains("application/json")`, true},
		{`http.headers["x-trace"] == "a, b"`, true},
		{`has(http.headers.accept)`, true},
		{`has(http.headers.authorization)`, false},
		{`"content-type" in http.headers`, true},
		{`"authorization" in http.headers`, false},
		{`size(http.headers) == 3`, true},
		{`target.protocol == "http" && http.method != "DELETE"`, true},
	} {
		e := mustCompile(t, []Rule{{Name: "r", When: c.when, Action: "approve", Approvers: []string{"x"}, Line: 1}}, DefaultAllow)
		d := e.DecideHTTP(aliceHTTP, req)
		if got := d.Rule != nil && d.Rule.Err == ""; got != c.want {
			t.Errorf("%s: matched %v, want %v\n%s", c.when, got, c.want, ExplainHTTP(&d))
		}
	}
	// The handler's map is read, not changed, when it has to be lowered.
	if _, ok := req.Headers["Content-Type"]; !ok || len(req.Headers) != 4 {
		t.Errorf("DecideHTTP changed the caller's headers: %v", req.Headers)
	}
}

// TestMisspeltHTTPLiteralRefused: methods are compared upper case (a request with a lower-case
// method is refused), hosts and header names lower case; a rule comparing them with a literal
// spelt otherwise could never hold (a block rule on http.method == "delete" would block nothing),
// so it must not compile.
func TestMisspeltHTTPLiteralRefused(t *testing.T) {
	for _, c := range []struct{ when, want string }{
		{`http.method == "get"`, `http.method is never "get": its values are spelt "GET"`},
		{`"Delete" == http.method`, `"DELETE"`},
		{`http.method != "post"`, "never"},
		{`http.method in ["GET", "delete"]`, `"delete"`},
		{`http.host == "API.internal"`, `http.host is never "API.internal"`},
		{`http.headers["Content-Type"] == "application/json"`, `http.headers has no key "Content-Type": header names are lower case ("content-type")`},
		{`"X-Api-Key" in http.headers`, `no key "X-Api-Key"`},
		{`has(http.headers.Authorization)`, `no key "Authorization"`},
		{`http.method == "GET" && http.headers["X-Force"] == "1"`, `no key "X-Force"`},
	} {
		_, err := Compile([]Rule{{Name: "r", When: c.when, Action: "block", Line: 3}}, DefaultAllow)
		var ce *CompileError
		if !errors.As(err, &ce) || ce.Errors[0].Line != 3 || !strings.Contains(ce.Errors[0].Err, c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.when, err, c.want)
		}
	}
	// Spelt as requests reach the rules, they compile and decide.
	e := mustCompile(t, []Rule{
		{Name: "no-delete", When: `http.method == "DELETE" || "x-force" in http.headers`, Action: "block"},
		{Name: "values-are-free", When: `http.path == "/Get" || "accept" in http.headers && http.headers["accept"] == "Text/HTML"`, Action: "block"},
	}, DefaultAllow)
	for _, c := range []struct {
		req  HTTP
		want Action
	}{
		{HTTP{Method: "DELETE", Path: "/x"}, Block},
		{HTTP{Method: "GET", Path: "/x", Headers: map[string]string{"X-Force": "1"}}, Block},
		{HTTP{Method: "GET", Path: "/Get"}, Block},
		{HTTP{Method: "GET", Path: "/get", Headers: map[string]string{"Accept": "Text/HTML"}}, Block},
		{HTTP{Method: "GET", Path: "/get", Headers: map[string]string{"Accept": "text/html"}}, Allow},
	} {
		if d := e.DecideHTTP(aliceHTTP, c.req); d.Action != c.want {
			t.Errorf("%+v: %s, want %s", c.req, d.Action, c.want)
		}
	}
}

// TestAmbiguousRequestRefused: a request whose method or path a server could read otherwise
// than the rules do is blocked before any rule, even one allowing everything: a block rule on
// "/admin" would miss "/api/../admin", "//admin", "/admin;x" on servers that resolve, merge or
// strip those, and one on DELETE would miss "delete" on a server that upper-cases methods.
func TestAmbiguousRequestRefused(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "anything", When: `true`, Action: "allow"},
		{Name: "no-admin", When: `http.path.startsWith("/admin")`, Action: "block"},
	}, DefaultAllow)
	for _, c := range []struct {
		method, path string
		refused      string // "" when it must reach the rules
	}{
		{"GET", "/v1/orders", ""},
		{"GET", "/", ""},
		{"GET", "/v1/orders/", ""},
		{"GET", "/files/a.b/..c/.d", ""},
		{"GET", "/v1/a%20b", ""},
		{"OPTIONS", "*", ""},
		{"M-SEARCH", "/", ""},
		{"delete", "/v1/orders/1", `method "delete" has lower-case letters`},
		{"Get", "/", `run it as "GET"`},
		{"", "/", "no method"},
		{"GE T", "/", "not an HTTP method"},
		{"GET", "", "does not start with /"},
		{"GET", "*", "does not start with /"},
		{"CONNECT", "api.internal:443", "does not start with /"},
		{"GET", "http://api.internal/admin", "does not start with /"},
		{"GET", "/api/../admin", `dot segment ("..")`},
		{"GET", "/api/./admin", `dot segment (".")`},
		{"GET", "/api/..", "dot segment"},
		{"GET", "/api/..;/admin", `dot segment ("..;")`},
		{"GET", "//admin", "empty segment"},
		{"GET", "/api//admin", "empty segment"},
		{"GET", "/api\\..\\admin", "backslash"},
		{"GET", "/api/%2e%2e/admin", "encodes a separator, dot or control byte (%2e)"},
		{"GET", "/admin%2Fusers", "(%2F)"},
		{"GET", "/api%5cadmin", "(%5c)"},
		{"GET", "/api%00", "(%00)"},
		{"GET", "/api\x00/admin", "control character"},
		{"GET", "/api\r\nX-Injected: 1", "control character"},
	} {
		d := e.DecideHTTP(aliceHTTP, HTTP{Method: c.method, Path: c.path})
		switch {
		case c.refused == "" && (d.Action != Allow || d.Rule == nil):
			t.Errorf("%q %q: %s (%s), want it allowed by rule\n%s", c.method, c.path, d.Action, d.Reason, ExplainHTTP(&d))
		case c.refused != "" && (d.Action != Block || d.Rule != nil || d.Default || len(d.Matches) != 0 || !strings.Contains(d.Reason, c.refused)):
			t.Errorf("%q %q: %s by %+v (%q), want a refusal before the rules saying %q", c.method, c.path, d.Action, d.Rule, d.Reason, c.refused)
		}
	}
	// What is blocked by rule stays so.
	if d := e.DecideHTTP(aliceHTTP, HTTP{Method: "GET", Path: "/admin/users"}); d.Action != Block || d.Rule == nil || d.Rule.Rule != "no-admin" {
		t.Errorf("/admin/users: %s by %+v", d.Action, d.Rule)
	}
}

// TestStatementPathSkipsHTTPRules: rules that judge HTTP requests only are not evaluated for
// statements at all, so they cost the statement path nothing: with only such rules,
// DecideInto allocates nothing once warm (evaluating a CEL rule allocates) and the statement's
// verdict is the default's.
func TestStatementPathSkipsHTTPRules(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "no-deletes", When: `http.method == "DELETE"`, Action: "block"},
		{Name: "forced", When: `http.headers["x-force"] == "1"`, Action: "block"}, // would error, so block, if evaluated
	}, DefaultAllowReads)
	res := sqlclass.Classify("SELECT * FROM orders WHERE id = 1")
	var d Decision
	e.DecideInto(&d, alice, res, nil)
	if d.Verdict != Allow || d.Rule != nil || len(d.Matches()) != 0 {
		t.Fatalf("statement judged by HTTP rules: %s\n%s", d.Verdict, Explain(&d))
	}
	if n := testing.AllocsPerRun(100, func() { e.DecideInto(&d, alice, res, nil) }); n != 0 {
		t.Errorf("DecideInto allocates %.1f times with HTTP-only rules", n)
	}
	if sd := e.DecideStatement(alice, &res.Statements[0], nil); sd.Verdict != Allow || len(sd.Matches) != 0 {
		t.Errorf("DecideStatement judged by HTTP rules: %s %+v", sd.Verdict, sd.Matches)
	}
}

// TestExplainHTTP: the explanation shows the request as judged, every match, the verdict and
// its message or reason.
func TestExplainHTTP(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "refunds-reviewed", When: `http.method == "POST" && http.path.startsWith("/v1/refunds")`, Action: "approve", Approvers: []string{"finance"}, Message: "refunds are reviewed", Line: 12},
		{Name: "json-posts", When: `http.headers["content-type"] == "application/json"`, Action: "allow", Line: 13},
	}, DefaultAllowReads)
	for _, c := range []struct {
		req  HTTP
		want []string
	}{
		{HTTP{Method: "POST", Path: "/v1/refunds", Query: "a=b", Host: "API.internal", Headers: map[string]string{"Content-Type": "application/json"}}, []string{
			"request: POST /v1/refunds?a=b\n",
			`host: "api.internal"`,
			"header content-type: application/json\n",
			"approve refunds-reviewed (line 12): refunds are reviewed [approvers: finance]\n",
			"allow   json-posts (line 13)\n",
			"verdict: approve by rule refunds-reviewed\n",
			"message: refunds are reviewed\n",
		}},
		{HTTP{Method: "PUT", Path: "/v1/orders/1"}, []string{
			"request: PUT /v1/orders/1\n",
			"[evaluation error, applied strictly", // the allow rule's error is not a match: absent
			"rules matched: none\n",
			"verdict: block by default allow_reads: no rule allows this PUT request",
		}},
		{HTTP{Method: "GET", Path: "/a/../b"}, []string{
			"rules evaluated: none\n",
			`verdict: block: path "/a/../b" has a dot segment`,
		}},
	} {
		d := e.DecideHTTP(aliceHTTP, c.req)
		out := ExplainHTTP(&d)
		for _, w := range c.want {
			absent := strings.HasPrefix(w, "[evaluation error")
			if strings.Contains(out, w) == absent {
				t.Errorf("explanation of %+v: contains %q is %v:\n%s", c.req, w, !absent, out)
			}
		}
	}
}
