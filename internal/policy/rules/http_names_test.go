package rules

import (
	"errors"
	"strings"
	"testing"
)

// TestUnderscoreHeaderNamesJudgedBothWays: Puma (Rails), PHP and CGI servers read '_' in a field
// name as '-', so "X_Tenant: prod" is X-Tenant to them; Go and Node keep it a field of its own.
// A block or approve rule on a '-' name must apply to the '_' spelling (the service may read it
// as that field), and an allow rule must not be satisfied by it (the service may not): such a
// request is judged with the name as sent and as spelt with '-', and the stricter verdict wins.
func TestUnderscoreHeaderNamesJudgedBothWays(t *testing.T) {
	e := mustCompile(t, []Rule{
		{Name: "no-prod-tenant", When: `"x-tenant" in http.headers && http.headers["x-tenant"] == "prod"`, Action: "block", Line: 1},
		{Name: "force-needs-review", When: `"x-force" in http.headers`, Action: "approve", Approvers: []string{"sre"}, Line: 2},
		{Name: "dry-runs", When: `http.method == "POST" && http.headers.exists(k, k == "x-dry-run") && http.headers["x-dry-run"] == "true"`, Action: "allow", Line: 3},
	}, DefaultAllowReads)
	for _, c := range []struct {
		name    string
		method  string
		headers map[string]string
		want    Action
		rule    string // "" for the default
	}{
		{"tenant, dashes", "GET", map[string]string{"x-tenant": "prod"}, Block, "no-prod-tenant"},
		{"tenant, underscore", "GET", map[string]string{"x_tenant": "prod"}, Block, "no-prod-tenant"},
		{"tenant, underscore, canonical case", "GET", map[string]string{"X_tenant": "prod"}, Block, "no-prod-tenant"},
		{"other tenant, underscore", "GET", map[string]string{"x_tenant": "eu"}, Allow, ""},
		{"force, underscore", "GET", map[string]string{"x_force": "1"}, Approve, "force-needs-review"},
		{"dry run, dashes", "POST", map[string]string{"x-dry-run": "true"}, Allow, "dry-runs"},
		{"dry run, underscores: a Go service never sees X-Dry-Run", "POST", map[string]string{"x_dry_run": "true"}, Block, ""},
		{"dry run, mixed", "POST", map[string]string{"x-dry_run": "true"}, Block, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := e.DecideHTTP(aliceHTTP, HTTP{Method: c.method, Path: "/v1/orders", Host: "api.internal", Headers: c.headers})
			got := ""
			if d.Rule != nil {
				got = d.Rule.Rule
			}
			if d.Action != c.want || got != c.rule || (c.rule == "" && !d.Default) {
				t.Errorf("%s; want %s by %q\n%s", reviewDecision(d), c.want, c.rule, ExplainHTTP(&d))
			}
			for k := range c.headers {
				if _, ok := d.Request.Headers[strings.ToLower(k)]; !ok {
					t.Errorf("the decision shows headers %v, want the names as sent", d.Request.Headers)
				}
			}
		})
	}

	// A rule on the names as sent still reads them so.
	e = mustCompile(t, []Rule{
		{Name: "no-underscores", When: `http.headers.exists(k, k.contains("_"))`, Action: "block", Line: 1},
	}, DefaultAllow)
	if d := e.DecideHTTP(aliceHTTP, HTTP{Method: "GET", Path: "/", Headers: map[string]string{"x_tenant": "eu"}}); d.Action != Block {
		t.Errorf("X_Tenant under a rule on '_' names: %s", reviewDecision(d))
	}
}

// TestHeaderKeyWithUnderscoreRefused: rules read a header name with '_' as sent and as spelt
// with '-' and keep the stricter verdict, so a literal name with '_' can make a rule that blocks
// but never one that allows: it does not compile, with the '-' spelling to write instead.
func TestHeaderKeyWithUnderscoreRefused(t *testing.T) {
	for _, when := range []string{
		`http.headers["x_tenant"] == "prod"`,
		`"x_force" in http.headers`,
		`has(http.headers.x_force)`,
		`http.headers.exists(k, k == "x_force")`,
	} {
		_, err := Compile([]Rule{{Name: "r", When: when, Action: "allow", Line: 7}}, DefaultAllow)
		var ce *CompileError
		if !errors.As(err, &ce) || len(ce.Errors) != 1 || ce.Errors[0].Line != 7 || !strings.Contains(ce.Errors[0].Err, `"x-`) {
			t.Errorf("%s: compiled (err %v); it must not load, and must say how to spell it", when, err)
		}
	}
}

// TestPathLiteralWithPercentRefused: http.path is percent-decoded ("/files/a%20b" reaches rules as
// "/files/a b"), and the proxy refuses an encoded '%', so a path never holds '%': a rule comparing
// it with an encoded literal never holds, and a block rule written so would block nothing.
func TestPathLiteralWithPercentRefused(t *testing.T) {
	for _, when := range []string{
		`http.path == "/files/a%20b"`,
		`http.path.startsWith("/reports%2Farchive")`,
		`http.path.endsWith("%3F")`,
		`http.path.contains("caf%C3%A9")`,
		`http.path in ["/a", "/b%40c"]`,
		`"/x%20y" == http.path`,
	} {
		_, err := Compile([]Rule{{Name: "r", When: when, Action: "block", Line: 3}}, DefaultAllow)
		var ce *CompileError
		if !errors.As(err, &ce) || len(ce.Errors) != 1 || ce.Errors[0].Line != 3 || !strings.Contains(ce.Errors[0].Err, "decoded") {
			t.Errorf("%s: compiled (err %v); a rule that never holds must not load", when, err)
		}
	}
	for _, when := range []string{
		`http.path == "/files/a b"`,
		`http.path.contains("café")`,
		`http.query.contains("q=%20")`,
	} {
		if _, err := Compile([]Rule{{Name: "r", When: when, Action: "block", Line: 3}}, DefaultAllow); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
}

// TestHostNameOfOddHosts: http.host drops a port only where there is one; an unbracketed value
// with several colons (an IPv6 address a caller did not bracket, or no host at all) is kept
// whole rather than cut into another name.
func TestHostNameOfOddHosts(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "",
		"api.internal":          "api.internal",
		"API.Internal.:8443":    "api.internal",
		"api.internal..":        "api.internal",
		"[::1]:8080":            "[::1]",
		"[FE80::1]":             "[fe80::1]",
		"[::1":                  "[::1",
		"fe80::1":               "fe80::1",
		"a:b:c":                 "a:b:c",
		"198.18.0.2:8080":       "198.18.0.2",
		"[::ffff:198.18.0.2]:1": "[::ffff:198.18.0.2]",
	} {
		if got := hostName(in); got != want {
			t.Errorf("hostName(%q) = %q, want %q", in, got, want)
		}
	}
}
