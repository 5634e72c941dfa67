package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// explainPolicy has a target of each protocol explain tells apart, and rules of each scope.
const explainPolicy = `version: 1
targets:
  - name: api
    match: {addresses: [198.18.1.3], ports: [8080]}
    protocol: http
    upstream: {header: X-Api-Key, password_file: /etc/enforcer/secrets/api, tls: disable}
  - name: db
    match: {addresses: [198.18.1.2], ports: [5432]}
    protocol: postgres
    upstream: {user: agent, password_file: /etc/enforcer/secrets/db, tls: disable}
  - name: relay
    match: {addresses: [198.18.1.4], ports: [7000]}
    protocol: tcp
grants:
  - {groups: [engineering], targets: [api, db]}
default: allow_reads
rules:
  - name: refunds-reviewed
    when: 'http.method == "POST" && http.path.startsWith("/v1/refunds") && http.headers["content-type"] == "application/json"'
    action: approve
    approvers: [finance]
    message: refunds are reviewed by finance
  - name: no-deletes
    when: 'http.method == "DELETE"'
    action: block
  - name: no-ddl
    when: 'sql.ddl'
    action: block
  - name: interns-read-only
    when: '"interns" in identity.groups'
    action: block
`

// TestPolicyExplainHTTP: explain judges an HTTP request on an http target with the rules that
// judge requests, as the daemon would, and says which rules it did not evaluate; the SQL form
// says the same of rules on requests; flags of one form on a target of the other are refused
// with what to give instead.
func TestPolicyExplainHTTP(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(explainPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		args   []string
		status int
		stdout []string
		stderr string
	}{
		{"request held for review", []string{"--target", "api", "--as", "alice/engineering", "--method", "POST", "--path", "/v1/refunds",
			"--query", "?amount=10", "--header", "Content-Type: application/json", "--header", "Host: API.internal"}, 0, []string{
			"grant: alice may use api\n",
			"upstream: tls disable; credential: the secret in header X-Api-Key\n",
			`judged as: subject "alice" groups ["engineering"] email ""; process comm "" exe "" uid -1; target api user ""`,
			"request: POST /v1/refunds?amount=10\n",
			// With a credential the proxy sends the upstream's own Host, not the agent's.
			`host: "(the destination's address)"`,
			"header content-type: application/json\n",
			"approve refunds-reviewed (line 18): refunds are reviewed by finance [approvers: finance]\n",
			"verdict: approve by rule refunds-reviewed\n",
			"not evaluated (they judge statements only): no-ddl\n",
		}, ""},
		{"identity rule judges requests", []string{"--target", "api", "--as", "ivy/interns", "--method", "GET", "--path", "/v1/orders"}, 0, []string{
			"grant: refused",
			"block   interns-read-only (line 29)",
			"verdict: block by rule interns-read-only\n",
		}, ""},
		{"default allow_reads on a write", []string{"--target", "api", "--method", "PUT", "--path", "/v1/orders/1", "--header", "Accept: text/plain", "--header", "accept: application/json"}, 0, []string{
			"header accept: text/plain, application/json\n",
			"rules matched: none\n",
			"verdict: block by default allow_reads: no rule allows this PUT request and default allow_reads allows only GET, HEAD and OPTIONS; a rule with action: allow can allow it\n",
		}, ""},
		{"ambiguous path refused", []string{"--target", "api", "--method", "GET", "--path", "/v1/../admin"}, 0, []string{
			`verdict: refused by the proxy before any rule: 400 request target refused: ".." segment in the path`,
		}, ""},
		// What the proxy drops, rules never see: explain must not judge on it either.
		{"a header the proxy drops", []string{"--target", "api", "--method", "GET", "--path", "/v1/orders", "--header", "X-Forwarded-For: 10.0.0.1"}, 0, []string{
			"rules matched: none\n",
		}, ""},
		{"a header sent twice", []string{"--target", "api", "--method", "GET", "--path", "/v1/orders", "--header", "X-A: 1", "--header", "x-a: 2"}, 0, []string{
			`verdict: refused by the proxy before any rule: 400 the header "X-A" is sent 2 times`,
		}, ""},
		{"statement skips request rules", []string{"--target", "db", "--sql", "DROP TABLE orders"}, 0, []string{
			"verdict: block by rule no-ddl",
			"not evaluated (they judge HTTP requests only): refunds-reviewed, no-deletes\n",
		}, ""},
		{"SQL on an http target", []string{"--target", "api", "--sql", "SELECT 1"}, 1, nil,
			`target "api" is an http target: its rules judge HTTP requests, not SQL; give the request with --method and --path`},
		{"database on an http target", []string{"--target", "api", "--method", "GET", "--path", "/", "--database", "app"}, 1, nil,
			"--database is for postgres targets"},
		{"request on a postgres target", []string{"--target", "db", "--method", "GET", "--path", "/"}, 1, nil,
			`target "db" is a postgres target: --method, --path, --query and --header judge HTTP requests on http targets`},
		{"SQL on a tcp target", []string{"--target", "relay", "--sql", "SELECT 1"}, 1, nil,
			`target "relay" is a tcp target: the enforcer relays its bytes and judges no statement there`},
		{"method without a path", []string{"--target", "api", "--method", "GET"}, 1, nil, "an HTTP request needs --method and --path"},
		{"query in the path", []string{"--target", "api", "--method", "GET", "--path", "/v1?a=b"}, 1, nil, "--path holds a query: give what follows '?' with --query"},
		{"header without a colon", []string{"--target", "api", "--method", "GET", "--path", "/", "--header", "Content-Type application/json"}, 1, nil, "want 'Name: value'"},
		{"Host twice", []string{"--target", "api", "--method", "GET", "--path", "/", "--header", "Host: a", "--header", "host: b"}, 1, nil, "a request has one Host"},
		{"nothing to judge", []string{"--target", "api"}, 1, nil, "--method M --path P"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(enforcerBin, append([]string{"policy", "explain", "--policy", file}, c.args...)...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			status := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				status = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != c.status {
				t.Errorf("exit status %d, want %d (stderr: %s)", status, c.status, &stderr)
			}
			for _, w := range c.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, &stdout)
				}
			}
			if !strings.Contains(stderr.String(), c.stderr) {
				t.Errorf("stderr %q does not contain %q", &stderr, c.stderr)
			}
		})
	}
}
