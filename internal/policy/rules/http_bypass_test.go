package rules

import (
	"errors"
	"strings"
	"testing"
)

// reviewDecision is a decision's action and, for the message, what decided it.
func reviewDecision(d HTTPDecision) string {
	switch {
	case d.Rule != nil:
		return string(d.Action) + " by rule " + d.Rule.Rule
	case d.Default:
		return string(d.Action) + " by default"
	}
	return string(d.Action) + " before the rules: " + d.Reason
}

// TestPercentEncodedLettersCannotDodgePathRules: the proxy forwards the path byte for byte, and
// servers decode it before they route (Go's ServeMux, Express, Rails, Spring, nginx locations), so
// "/%61dmin" is "/admin" to them. RFC 3986 §2.3 makes an encoded letter, digit, "-", ".", "_" or
// "~" the same URI as the character itself. A rule on http.path sees the encoded text and misses
// it: the request must be blocked (by the rule, or refused before it) whatever the spelling.
func TestPercentEncodedLettersCannotDodgePathRules(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "no-admin", When: `http.path.startsWith("/admin")`, Action: "block", Line: 1},
		{Name: "no-ssn", When: `http.path.matches("^/v1/users/[0-9]+/ssn$")`, Action: "block", Line: 2},
		{Name: "no-user-deletes", When: `http.method == "DELETE" && http.path.startsWith("/v1/users/")`, Action: "block", Line: 3},
	}, DefaultAllow)
	for _, c := range []struct {
		method, path string
		blocked      bool
	}{
		{"GET", "/admin/users", true},
		{"GET", "/%61dmin/users", true},
		{"GET", "/adm%69n", true},
		{"GET", "/%61%64%6d%69%6e/keys", true},
		{"GET", "/v1/users/7/ssn", true},
		{"GET", "/v1/users/7/%73sn", true},
		{"GET", "/v1/users/%37/ssn", true},
		{"DELETE", "/v1/%75sers/7", true},
		// Encoded bytes that are not unreserved characters name other resources.
		{"GET", "/v1/a%20b", false},
		{"GET", "/v1/caf%C3%A9", false},
		{"GET", "/v1/orders", false},
	} {
		d := e.DecideHTTP(aliceHTTP, HTTP{Method: c.method, Path: c.path, Host: "api.internal"})
		if got := d.Action == Block; got != c.blocked {
			t.Errorf("%s %s: %s; want blocked %v", c.method, c.path, reviewDecision(d), c.blocked)
		}
	}
}

// TestMethodOverrideCannotDodgeMethodRules: Symfony and Laravel (X-HTTP-Method-Override on POST,
// and _method with Laravel's default), Rack::MethodOverride in Rails' default stack, ASP.NET Web
// API's handler and Google's APIs run a POST as the method such a header or parameter names. The
// proxy forwards both, and rules judge http.method: a POST that says DELETE must be judged as a
// DELETE, or refused as lower-case methods are.
func TestMethodOverrideCannotDodgeMethodRules(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "no-deletes", When: `http.method == "DELETE"`, Action: "block", Line: 1},
	}, DefaultAllow)
	for _, c := range []struct {
		name    string
		req     HTTP
		blocked bool
	}{
		{"plain POST", HTTP{Method: "POST", Path: "/v1/incidents/7"}, false},
		{"plain DELETE", HTTP{Method: "DELETE", Path: "/v1/incidents/7"}, true},
		{"X-HTTP-Method-Override", HTTP{Method: "POST", Path: "/v1/incidents/7", Headers: map[string]string{"x-http-method-override": "DELETE"}}, true},
		{"X-HTTP-Method", HTTP{Method: "POST", Path: "/v1/incidents/7", Headers: map[string]string{"x-http-method": "DELETE"}}, true},
		{"X-Method-Override, lower case", HTTP{Method: "POST", Path: "/v1/incidents/7", Headers: map[string]string{"X-Method-Override": "delete"}}, true},
		{"_method in the query", HTTP{Method: "POST", Path: "/v1/incidents/7", Query: "_method=DELETE"}, true},
		{"_method among other parameters", HTTP{Method: "POST", Path: "/v1/incidents/7", Query: "a=1&_method=delete"}, true},
	} {
		d := e.DecideHTTP(aliceHTTP, c.req)
		if got := d.Action == Block; got != c.blocked {
			t.Errorf("%s: %s; want blocked %v", c.name, reviewDecision(d), c.blocked)
		}
	}
}

// TestHostRulesSeeTheHostServersRoute: virtual hosts are chosen by the Host's name, without its
// port and its root dot (nginx's server_name, Apache's ServerName, Go's ServeMux host patterns).
// http.host keeps both as the agent wrote them, so a block rule on a name misses
// "admin.internal:8080" and "admin.internal.", which reach the same virtual host.
func TestHostRulesSeeTheHostServersRoute(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "no-admin-vhost", When: `http.host == "admin.internal"`, Action: "block", Line: 1},
	}, DefaultAllow)
	for _, c := range []struct {
		host    string
		blocked bool
	}{
		{"admin.internal", true},
		{"ADMIN.Internal", true},
		{"admin.internal.", true},
		{"admin.internal:8080", true},
		{"Admin.Internal.:80", true},
		{"api.internal", false},
		{"api.internal:8080", false},
		{"admin.internal.example", false},
	} {
		d := e.DecideHTTP(aliceHTTP, HTTP{Method: "GET", Path: "/", Host: c.host})
		if got := d.Action == Block; got != c.blocked {
			t.Errorf("Host %q: %s; want blocked %v", c.host, reviewDecision(d), c.blocked)
		}
	}
}

// TestMisspeltLiteralInStringFunctionRefused: a host or a header name is never upper case and a
// method never lower case, so a string function comparing one with such a literal can never
// hold: http.host.endsWith(".Internal") in a block rule blocks nothing, as http.host ==
// "API.internal" would, which does not compile.
func TestMisspeltLiteralInStringFunctionRefused(t *testing.T) {
	for _, when := range []string{
		`http.host.endsWith(".Internal")`,
		`http.host.startsWith("Admin.")`,
		`http.method.startsWith("del")`,
		`http.host.contains("PROD")`,
		`http.headers.exists(k, k == "X-Force")`,
	} {
		_, err := Compile([]Rule{{Name: "r", When: when, Action: "block", Line: 5}}, DefaultAllow)
		var ce *CompileError
		if !errors.As(err, &ce) || len(ce.Errors) != 1 || ce.Errors[0].Line != 5 {
			t.Errorf("%s: compiled (err %v); a rule that can never hold must not load", when, err)
		}
	}
	// Spelt as requests reach the rules, they compile.
	for _, when := range []string{
		`http.host.endsWith(".internal")`,
		`http.method.startsWith("DEL")`,
		`http.path.startsWith("/Admin")`,
		`http.headers.exists(k, k == "x-force")`,
	} {
		if _, err := Compile([]Rule{{Name: "r", When: when, Action: "block", Line: 5}}, DefaultAllow); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
}

// TestRuleReadingNeitherFailsClosedOnHTTP: a rule that reads only identity, process or target
// judges HTTP requests too, and when it cannot be evaluated it fails closed there as on
// statements: a block or approve rule applies, an allow rule does not allow.
func TestRuleReadingNeitherFailsClosedOnHTTP(t *testing.T) {
	for _, c := range []struct {
		name   string
		rule   Rule
		def    Default
		method string
		want   Action
		rule2  string // the rule that decides; "" for the default
	}{
		{"erroring block rule applies", Rule{Name: "fifth-group", When: `identity.groups[4] == "x"`, Action: "block"}, DefaultAllow, "GET", Block, "fifth-group"},
		{"erroring approve rule holds", Rule{Name: "fifth-group", When: `identity.groups[4] == "x"`, Action: "approve", Approvers: []string{"sre"}}, DefaultAllow, "GET", Approve, "fifth-group"},
		{"erroring allow rule does not allow", Rule{Name: "fifth-group", When: `identity.groups[4] == "x"`, Action: "allow"}, DefaultAllowReads, "DELETE", Block, ""},
		{"allow rule on identity allows a DELETE", Rule{Name: "engineers", When: `"engineering" in identity.groups`, Action: "allow"}, DefaultAllowReads, "DELETE", Allow, "engineers"},
		{"block rule on the target blocks a GET", Rule{Name: "api-closed", When: `target.name == "api"`, Action: "block"}, DefaultAllow, "GET", Block, "api-closed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.rule.Line = 1
			e := mustCompile(t, []Rule{c.rule}, c.def)
			if s, _ := e.Scope(c.rule.Name); s != ScopeBoth {
				t.Fatalf("scope %v, want %v", s, ScopeBoth)
			}
			d := e.DecideHTTP(aliceHTTP, HTTP{Method: c.method, Path: "/v1/orders/1", Host: "api.internal"})
			got := ""
			if d.Rule != nil {
				got = d.Rule.Rule
			}
			if d.Action != c.want || got != c.rule2 {
				t.Errorf("%s; want %s by %q\n%s", reviewDecision(d), c.want, c.rule2, ExplainHTTP(&d))
			}
			if c.rule2 != "" && strings.Contains(c.rule.When, "[4]") && d.Rule.Err == "" {
				t.Errorf("the match does not carry its evaluation error: %+v", d.Rule)
			}
		})
	}
}
