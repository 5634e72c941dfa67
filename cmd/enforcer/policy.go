package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/enforcer-dev/enforcer/internal/httpguard"
	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
)

func cmdPolicy(ctx context.Context, fs *flag.FlagSet, args []string) error {
	if len(args) == 0 {
		fs.Usage()
		return exitCode(2)
	}
	switch args[0] {
	case "check":
		return policyCheck(fs, args[1:])
	case "explain":
		return policyExplain(fs, args[1:])
	}
	if isHelp(args[0]) {
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return nil
	}
	fs.Usage()
	return exitCode(2)
}

func policyCheck(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: enforcer policy check FILE")
	}
	if _, err := policy.Load(fs.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitCode(1)
	}
	fmt.Printf("%s: ok\n", fs.Arg(0))
	return nil
}

func policyExplain(fs *flag.FlagSet, args []string) error {
	file := fs.String("policy", "/etc/enforcer/policy.yaml", "policy file")
	target := fs.String("target", "", "target name")
	sql := fs.String("sql", "", "SQL text to judge")
	as := fs.String("as", "", "identity as SUBJECT or SUBJECT/GROUP1,GROUP2")
	value := fs.String("value", "", "a sample value: show what masking makes of it")
	column := fs.String("column", "", "with --value: the column it comes from, as [schema.]table.column or column")
	database := fs.String("database", "", "the database the client asks for (default: the target's upstream database)")
	email := fs.String("email", "", "the identity's email")
	comm := fs.String("comm", "", "the process's name (process.comm)")
	exe := fs.String("exe", "", "the process's executable (process.exe)")
	uid := fs.Int64("uid", -1, "the process's uid (process.uid)")
	method := fs.String("method", "", "an HTTP request to judge (http targets): its method, as sent (GET, POST…)")
	reqPath := fs.String("path", "", "with --method: the request's path (/v1/refunds)")
	query := fs.String("query", "", "with --method: the raw query string (a=1&b=2)")
	var headers headerFlags
	fs.Var(&headers, "header", "with --method: a request header as 'Name: value', repeated for more ('Host: …' is http.host)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	httpForm := *method != "" || *reqPath != "" || *query != "" || len(headers) > 0
	if *target == "" || (*sql == "" && *value == "" && !httpForm) || fs.NArg() > 0 {
		return errors.New(`usage: enforcer policy explain --target T (--sql "..." | --method M --path P [--query Q] [--header 'Name: value']... | --value SAMPLE [--column table.col]) [--as subject/group1,group2] [--email E] [--database D] [--comm C] [--exe PATH] [--uid N] [--policy FILE]`)
	}
	pol, err := policy.Load(*file)
	if err != nil {
		return err
	}
	var t *policy.Target
	for _, x := range pol.Targets {
		if x.Name == *target {
			t = x
		}
	}
	if t == nil {
		return fmt.Errorf("no target %q in %s", *target, *file)
	}
	switch {
	case t.Protocol == policy.ProtoHTTP && *sql != "":
		return fmt.Errorf("target %q is an http target: its rules judge HTTP requests, not SQL; give the request with --method and --path", t.Name)
	case t.Protocol == policy.ProtoHTTP && *database != "":
		return fmt.Errorf("target %q is an http target: --database is for postgres targets", t.Name)
	case t.Protocol != policy.ProtoHTTP && httpForm:
		return fmt.Errorf("target %q is a %s target: --method, --path, --query and --header judge HTTP requests on http targets", t.Name, t.Protocol)
	case t.Protocol != policy.ProtoPostgres && *sql != "":
		return fmt.Errorf("target %q is a %s target: the enforcer relays its bytes and judges no statement there", t.Name, t.Protocol)
	case httpForm && (*method == "" || *reqPath == ""):
		return errors.New("an HTTP request needs --method and --path")
	case strings.Contains(*reqPath, "?"):
		return errors.New("--path holds a query: give what follows '?' with --query")
	}
	var req rules.HTTP
	if httpForm {
		if req, err = headers.request(*method, *reqPath, strings.TrimPrefix(*query, "?")); err != nil {
			return err
		}
	}
	subject, groupList, _ := strings.Cut(*as, "/")
	var groups []string
	if groupList != "" {
		groups = strings.Split(groupList, ",")
	}
	if *as != "" {
		if ok, msg := pol.Granted(t.Name, subject, groups); !ok {
			fmt.Printf("grant: refused: %s\n", msg)
		} else {
			fmt.Printf("grant: %s may use %s\n", subject, t.Name)
		}
	}
	if *value != "" {
		plan := pol.MaskFor(t.Name, groups)
		if plan == nil {
			fmt.Printf("masking: none for %s on %s: the value passes in clear\n", orAnyone(subject), t.Name)
		} else {
			col := mask.Column{}
			parts := strings.Split(*column, ".")
			switch len(parts) {
			case 3:
				col.Schema, col.Table, col.Name = parts[0], parts[1], parts[2]
			case 2:
				col.Table, col.Name = parts[0], parts[1]
			default:
				col.Name = parts[0]
			}
			col.Field = col.Name
			fmt.Print(plan.Explain(*value, col))
		}
		if *sql == "" && !httpForm {
			return nil
		}
	}
	if httpForm {
		explainHTTP(pol, t, subject, groups, *email, *comm, *exe, *uid, req, headers)
		return nil
	}
	// The daemon's rules see the database the proxy logs in to: the target's, else the one the
	// client asked for. Rules on fields given no value here see them empty (uid -1).
	db := cmp.Or(t.Upstream.Database, *database)
	if t.Upstream.Database != "" && *database != "" && *database != t.Upstream.Database {
		fmt.Printf("note: %s always logs in to database %s; --database %s is not what rules see\n", t.Name, t.Upstream.Database, *database)
	}
	fmt.Printf("judged as: subject %q groups %q email %q; process comm %q exe %q uid %d; target %s database %q user %q\n",
		subject, groups, *email, *comm, *exe, *uid, t.Name, db, t.Upstream.User)
	conn := rules.NewConn(rules.Identity{Subject: subject, Email: *email, Groups: groups},
		rules.Process{Comm: *comm, Exe: *exe, UID: *uid}, rules.Target{Name: t.Name, Protocol: t.Protocol, Database: db, User: t.Upstream.User})
	res := sqlclass.New(sqlclass.Options{}).Classify(*sql)
	d := pol.Rules.Decide(conn, res, nil)
	fmt.Print(rules.Explain(&d))
	printSkipped(pol.Rules, rules.ScopeHTTP)
	return nil
}

// explainHTTP prints how the rules judge req on http target t, as the daemon's would.
func explainHTTP(pol *policy.Policy, t *policy.Target, subject string, groups []string, email, comm, exe string, uid int64, req rules.HTTP, raw headerFlags) {
	up := t.Upstream
	user := ""
	credential := "none (requests go as the agent sent them)"
	switch up.HTTPCredentialKind() {
	case policy.HTTPCredentialBearer:
		credential = "the secret as Authorization: Bearer"
	case policy.HTTPCredentialBasic:
		user = up.User
		credential = fmt.Sprintf("the secret as Authorization: Basic, user %q", up.User)
	case policy.HTTPCredentialHeader:
		credential = fmt.Sprintf("the secret in header %s", up.Header)
	}
	fmt.Printf("upstream: tls %s; credential: %s\n", up.HTTPTLS(), credential)
	fmt.Printf("judged as: subject %q groups %q email %q; process comm %q exe %q uid %d; target %s user %q\n",
		subject, groups, email, comm, exe, uid, t.Name, user)
	// The rules see the request as the proxy passes it on: after its own refusals, and without
	// the headers it drops (hop-by-hop, client addresses, the credential's).
	var cr *httpproto.Credential
	if kind := up.HTTPCredentialKind(); kind != "" {
		cr = &httpproto.Credential{Header: cmp.Or(up.Header, "Authorization"), Value: "explain"}
	}
	target := req.Path
	if req.Query != "" {
		target += "?" + req.Query
	}
	hdr := http.Header{}
	for _, v := range raw {
		name, value, _ := strings.Cut(v, ":")
		hdr.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	if req.Host == "" {
		hdr.Set("Host", "explain.invalid")
	}
	seen, err := httpproto.Inspect(req.Method, target, 1, hdr, nil, cr)
	if err != nil {
		fmt.Printf("verdict: refused by the proxy before any rule: %v\n", err)
		return
	}
	sent := up.HTTPHost(up.Address)
	if up.Address == "" && cr != nil && up.Host == "" {
		sent = "(the destination's address)"
		if up.ServerName != "" {
			sent = up.ServerName
		}
	}
	req = httpguard.RuleRequest(seen, sent)
	if req.Host == "explain.invalid" {
		req.Host = ""
	}
	conn := rules.NewConn(rules.Identity{Subject: subject, Email: email, Groups: groups},
		rules.Process{Comm: comm, Exe: exe, UID: uid}, rules.Target{Name: t.Name, Protocol: t.Protocol, User: user})
	d := pol.Rules.DecideHTTP(conn, req)
	fmt.Print(rules.ExplainHTTP(&d))
	printSkipped(pol.Rules, rules.ScopeSQL)
}

// printSkipped names the rules that judge only the other kind of request (scope), which the
// explanation above did not evaluate.
func printSkipped(e *rules.Engine, scope rules.Scope) {
	var names []string
	for _, n := range e.RuleNames() {
		if s, _ := e.Scope(n); s == scope {
			names = append(names, n)
		}
	}
	if len(names) > 0 {
		fmt.Printf("not evaluated (they judge %s only): %s\n", scope, strings.Join(names, ", "))
	}
}

// headerFlags collects --header values, "Name: value".
type headerFlags []string

func (h *headerFlags) String() string { return strings.Join(*h, "; ") }

func (h *headerFlags) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(strings.TrimSpace(name), " \t") {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	*h = append(*h, v)
	return nil
}

// request builds the request the rules see: header names lower case, a header given twice its
// values joined with ", " (as the daemon passes them), Host as the host.
func (h headerFlags) request(method, path, query string) (rules.HTTP, error) {
	req := rules.HTTP{Method: method, Path: path, Query: query, Headers: map[string]string{}}
	hostSet := false
	for _, v := range h {
		name, value, _ := strings.Cut(v, ":")
		name, value = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)
		if name == "host" {
			if hostSet {
				return req, errors.New("--header 'Host: …' given twice; a request has one Host")
			}
			req.Host, hostSet = value, true
			continue
		}
		if prev, ok := req.Headers[name]; ok {
			value = prev + ", " + value
		}
		req.Headers[name] = value
	}
	return req, nil
}

func orAnyone(s string) string {
	if s == "" {
		return "anyone"
	}
	return s
}
