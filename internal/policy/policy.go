// Package policy loads and validates the policy file and answers the questions the proxy asks on
// the data path: which target a destination is, who may use it. It does no I/O after Load.
package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/rules"
	httpproto "github.com/enforcer-dev/enforcer/internal/proto/http"
)

// Protocols a target may speak.
const (
	ProtoTCP            = "tcp"
	ProtoTLSPassthrough = "tls-passthrough"
	ProtoPostgres       = "postgres"
	// ProtoHTTP is HTTP/1.1 in plain text from the agent: each request is judged by the rules,
	// forwarded with the target's credential, its response masked, and recorded.
	ProtoHTTP = "http"
)

// File is the policy file as written.
type File struct {
	Version int         `yaml:"version"`
	DNS     DNS         `yaml:"dns"`
	Targets []TargetDef `yaml:"targets"`
	Grants  []Grant     `yaml:"grants"`
	// Default decides statements and HTTP requests no rule matches: allow_reads (the default:
	// statements that only read, and GET, HEAD and OPTIONS requests), allow or block.
	Default string    `yaml:"default"`
	Rules   []RuleDef `yaml:"rules"`
	// Approvals configures held statements (rules with action: approve).
	Approvals Approvals `yaml:"approvals"`
	// Masking rewrites sensitive values in results before the agent sees them. Absent, every
	// detector is on with its default style.
	Masking *Masking `yaml:"masking"`
	// Recording says how sessions are recorded.
	Recording Recording `yaml:"recording"`
}

// Recording configures the session log.
type Recording struct {
	// Durability: "default" writes state-changing statements ahead (durable before they are
	// forwarded) and lets reads join the next group commit; "strict" writes every statement ahead.
	Durability string `yaml:"durability"`
	// MaxRows caps the masked rows kept per result (the total is always recorded); default 100.
	MaxRows int `yaml:"max_rows"`
	// Disabled stops recording new sessions (for measurements, or data that must not be kept);
	// it must be said explicitly and the daemon logs it at every load.
	Disabled bool `yaml:"disabled"`
}

// Strict reports whether every statement is written ahead.
func (r Recording) Strict() bool { return r.Durability == "strict" }

// Masking configures detectors, column rules and styles.
type Masking struct {
	// Detectors enables detectors by name (credit_card, iban, email, us_ssn, phone, ip_address,
	// secret, all…) with an optional style; absent = all detectors, default styles.
	Detectors []DetectorDef `yaml:"detectors"`
	// Columns force a style on columns by "table.column" globs ("users.email", "*.password_hash").
	Columns      []ColumnDef `yaml:"columns"`
	RedactFormat string      `yaml:"redact_format"` // default "[REDACTED:{kind}]"
	// TokenKeyFile holds the HMAC key of the token style (0600, at least 32 bytes).
	TokenKeyFile string `yaml:"token_key_file"`
	// Targets limits masking to these targets (default: every postgres and http target; a tcp
	// or tls-passthrough target carries nothing the enforcer can mask, and is refused here).
	Targets []string `yaml:"targets"`
	// ExemptGroups see values in clear (for example a data-protection team).
	ExemptGroups []string `yaml:"exempt_groups"`
	// Disabled turns masking off entirely; it must be said explicitly.
	Disabled bool `yaml:"disabled"`
}

// DetectorDef enables detectors with a style.
type DetectorDef struct {
	Detectors []string `yaml:"detectors"`
	Style     string   `yaml:"style"`
}

// ColumnDef forces a style on matching columns.
type ColumnDef struct {
	Match string `yaml:"match"`
	Style string `yaml:"style"`
}

// RuleDef is one rule: a CEL condition over identity, process, target and sql (then it judges
// statements) or http (then it judges HTTP requests), and what to do when it holds. A condition
// that reads neither judges both.
type RuleDef struct {
	Name      string   `yaml:"name"`
	When      string   `yaml:"when"`
	Action    string   `yaml:"action"` // allow | block | approve
	Message   string   `yaml:"message"`
	Approvers []string `yaml:"approvers"` // groups whose members may approve (action: approve)
	Quorum    int      `yaml:"quorum"`    // approvals needed (default 1)
}

// Digest identifies what an approval under r rests on: its condition, action, approver groups (as
// a set) and quorum (0 read as 1). A reload that changes any of them ends the requests pending
// under r and voids its late grants (approval.Broker.ApplyRules); the message is left out, since
// rewording it takes no approval away.
func (r RuleDef) Digest() string {
	approvers := slices.Clone(r.Approvers)
	slices.Sort(approvers)
	b, _ := json.Marshal(struct {
		When, Action string
		Approvers    []string
		Quorum       int
	}{r.When, r.Action, slices.Compact(approvers), max(r.Quorum, 1)})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ApprovalRules returns the rules that send statements for approval, by name, with their
// digests (see RuleDef.Digest).
func (p *Policy) ApprovalRules() map[string]string {
	out := map[string]string{}
	for name, r := range p.RuleDefs {
		if r.Action == "approve" {
			out[name] = r.Digest()
		}
	}
	return out
}

// Approvals configures how long statements wait for a reviewer.
type Approvals struct {
	// Timeout is how long a held statement waits (default 60s); inside a transaction, where the
	// held statement keeps locks, TransactionTimeout applies (default 20s).
	Timeout            Duration `yaml:"timeout"`
	TransactionTimeout Duration `yaml:"transaction_timeout"`
	// LateWindow is how long after a timeout an approval still lets the same identity run the
	// same statement once (default 15m).
	LateWindow Duration  `yaml:"late_window"`
	Webhooks   []Webhook `yaml:"webhooks"`
}

// Webhook receives approval events (JSON with a Slack-compatible text field).
type Webhook struct {
	Name       string   `yaml:"name"`
	URL        string   `yaml:"url"`
	SecretFile string   `yaml:"secret_file"` // HMAC key for the X-Enforcer-Signature header
	Rules      []string `yaml:"rules"`       // only these rules (default all)
}

// Duration is a time.Duration written as "60s", "15m".
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(b []byte) error {
	s := strings.Trim(strings.TrimSpace(string(b)), `"'`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration (like 30s or 5m): %q", s)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// DNS names the only resolvers enforced processes may query (UDP and TCP port 53).
type DNS struct {
	Resolvers []string `yaml:"resolvers"`
}

// TargetDef is one destination the policy knows.
type TargetDef struct {
	Name     string    `yaml:"name"`
	Match    Match     `yaml:"match"`
	Protocol string    `yaml:"protocol"`
	Upstream *Upstream `yaml:"upstream"`
}

// Match selects connections by original destination. Addresses are IPs or CIDRs; SNI patterns
// (exact names or "*.example.com") apply to tls-passthrough targets.
type Match struct {
	Addresses []string `yaml:"addresses"`
	Ports     []uint16 `yaml:"ports"`
	SNI       []string `yaml:"sni"`
}

// Upstream says how the proxy reaches and authenticates to the real service. The agent never sees
// any of it.
type Upstream struct {
	Address  string `yaml:"address"`  // host:port; empty = the original destination
	Database string `yaml:"database"` // postgres only
	// User is the role the proxy logs in as (postgres), or with a secret the user of HTTP Basic
	// authentication (http: user:secret).
	User string `yaml:"user"`
	// PasswordFile and PasswordEnv hold the secret: the password (postgres), or the credential
	// an http target injects (optional there: without one, requests go as the agent sent them).
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// TLS is disable | require | verify-ca | verify-full (postgres; default verify-full), or
	// disable | verify-ca | verify-full (http; default HTTPTLS).
	TLS string `yaml:"tls"`
	// CAFile holds the roots the server's certificate must chain to; without one, verify-full
	// checks against the system's roots (verify-ca needs one).
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
	// Auth lists the methods the server may ask the proxy to log in with: scram-sha-256 (the
	// default and only one when empty), md5, password. Each extra one lets whoever answers at
	// the upstream's address collect a hash to relay, or the password itself. Postgres only.
	Auth []string `yaml:"auth"`
	// Header names the header that carries an http target's secret verbatim (X-Api-Key: SECRET).
	// Without it (and without User) the secret goes as Authorization: Bearer SECRET. Http only.
	Header string `yaml:"header"`
	// Host is the Host header sent upstream in place of the agent's (an http target behind a
	// virtual host). Http only.
	Host string `yaml:"host"`
}

// Credential kinds of an http target (HTTPCredentialKind).
const (
	HTTPCredentialBearer = "bearer" // Authorization: Bearer SECRET
	HTTPCredentialBasic  = "basic"  // Authorization: Basic base64(user:SECRET)
	HTTPCredentialHeader = "header" // HEADER: SECRET
)

// hasSecret says whether the upstream names a secret to inject.
func (u Upstream) hasSecret() bool { return u.PasswordFile != "" || u.PasswordEnv != "" }

// HTTPTLS is the TLS mode of an http target's upstream: tls if written; else verify-full when it
// injects a secret (a credential never travels in clear unless tls: disable is written), and
// disable when it does not (the agent's own plain request, to its own destination).
func (u Upstream) HTTPTLS() string {
	switch {
	case u.TLS != "":
		return u.TLS
	case u.hasSecret():
		return "verify-full"
	}
	return "disable"
}

// HTTPHost is the Host header sent upstream for requests to addr (the upstream's host:port),
// or "" when the agent's own is forwarded: host when written; with a credential, server_name,
// else addr's host (its port unless the scheme's default), since the agent's Host would pick the
// virtual host the credential goes to (behind a shared ingress, "Host: billing.internal" would
// hand the token to another service); without one, the agent's.
func (u Upstream) HTTPHost(addr string) string {
	if u.Host != "" || u.HTTPCredentialKind() == "" {
		return u.Host
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if u.ServerName != "" {
		host = u.ServerName
	}
	tlsOn := u.HTTPTLS() != "disable"
	if (tlsOn && port == "443") || (!tlsOn && port == "80") {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}

// HTTPCredentialKind says how an http target's secret is sent: HTTPCredentialBasic with a user,
// HTTPCredentialHeader with a header, else HTTPCredentialBearer; "" when it has no secret.
func (u Upstream) HTTPCredentialKind() string {
	switch {
	case !u.hasSecret():
		return ""
	case u.User != "":
		return HTTPCredentialBasic
	case u.Header != "":
		return HTTPCredentialHeader
	}
	return HTTPCredentialBearer
}

// Grant gives groups or individual subjects access to targets.
type Grant struct {
	Groups   []string `yaml:"groups"`
	Subjects []string `yaml:"subjects"`
	Targets  []string `yaml:"targets"`
}

// Policy is a validated, compiled policy.
type Policy struct {
	Source    string
	Resolvers []netip.Addr
	Targets   []*Target
	// Rules decides statements; never nil after Parse.
	Rules     *rules.Engine
	RuleDefs  map[string]RuleDef
	Approvals Approvals
	Recording Recording
	// Mask is the compiled masking plan; nil when masking is disabled.
	Mask *mask.Plan
	// maskTargets are the targets whose traffic is masked; maskSkips the postgres and http
	// targets masking.targets leaves out.
	maskTargets map[string]bool
	maskSkips   map[string]bool
	maskExempt  []string
	// maskDigest identifies the masking section as written (see SameMasking).
	maskDigest [sha256.Size]byte
	grants     []Grant
}

// SameMasking reports whether p's masking section is q's: sessions whose masking plan was taken
// from q mask as p would. The token key is named by its file, not read.
func (p *Policy) SameMasking(q *Policy) bool { return p.maskDigest == q.maskDigest }

// MaskFor returns the masking plan for an identity's connection to a target, or nil when its
// values pass in clear (masking disabled, target not covered, identity exempt). Only postgres and
// http targets are covered: masking.targets, or all of them when it names none.
func (p *Policy) MaskFor(target string, groups []string) *mask.Plan {
	if !p.maskTargets[target] {
		return nil
	}
	return p.MaskForProcess(target, groups)
}

// MaskForProcess returns the plan for what the session log keeps of the agent's process on a
// connection to target (its command line): MaskFor's, and on a tcp or tls-passthrough target,
// whose traffic cannot be masked, the policy's plan all the same: a password in `psql
// postgres://…` or a token in `curl -H …` is no less a secret there. Nil when masking is
// disabled, the identity exempt, or target a postgres or http target masking does not cover.
func (p *Policy) MaskForProcess(target string, groups []string) *mask.Plan {
	if p.Mask == nil || p.maskSkips[target] {
		return nil
	}
	for _, g := range groups {
		if contains(p.maskExempt, g) {
			return nil
		}
	}
	return p.Mask
}

// Target is a compiled TargetDef.
type Target struct {
	Name     string
	Protocol string
	Upstream Upstream
	prefixes []netip.Prefix
	ports    map[uint16]bool
	sni      []string
}

// Error is a validation error that names the file, line and field.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Msg)
}

// Load reads and validates a policy file.
func Load(file string) (*Policy, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(file, data)
}

// Parse validates policy text; name is used in error messages.
func Parse(name string, data []byte) (*Policy, error) {
	var f File
	if err := yaml.UnmarshalWithOptions(data, &f, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("%s: %s", name, yaml.FormatError(err, false, true))
	}
	astFile, _ := parser.ParseBytes(data, 0)
	v := validator{name: name, ast: astFile}
	v.oneDocument()
	p := v.compile(&f)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	p.Source = name
	return p, nil
}

type validator struct {
	name string
	ast  *ast.File
	errs []error
}

// oneDocument refuses a file of several YAML documents: the decoder reads the first and drops
// the rest without a word, so rules or targets after a stray "---" would not apply while
// `enforcer policy check` said the file is fine.
func (v *validator) oneDocument() {
	if v.ast == nil {
		return
	}
	n := 0
	for _, doc := range v.ast.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if n++; n > 1 {
			line := 0
			if tk := doc.Body.GetToken(); tk != nil {
				line = tk.Position.Line
			}
			v.errs = append(v.errs, &Error{File: v.name, Line: line, Field: "---", Msg: "a second YAML document; a policy is one document (everything after the first would be ignored)"})
			return
		}
	}
}

func (v *validator) fail(field, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.name, Line: v.line(field), Field: strings.TrimPrefix(field, "$."), Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) compile(f *File) *Policy {
	p := &Policy{grants: f.Grants}
	if f.Version != 1 {
		v.fail("$.version", "unsupported version %d (this enforcer reads version 1)", f.Version)
	}
	for i, r := range f.DNS.Resolvers {
		a, err := netip.ParseAddr(r)
		if err != nil {
			v.fail(fmt.Sprintf("$.dns.resolvers[%d]", i), "not an IP address: %q", r)
			continue
		}
		p.Resolvers = append(p.Resolvers, a.Unmap())
	}
	names := map[string]bool{}
	for i, td := range f.Targets {
		at := fmt.Sprintf("$.targets[%d]", i)
		t := &Target{Name: td.Name, Protocol: td.Protocol, ports: map[uint16]bool{}}
		if td.Name == "" {
			v.fail(at+".name", "missing")
		} else if names[td.Name] {
			v.fail(at+".name", "duplicate target name %q", td.Name)
		}
		names[td.Name] = true
		switch td.Protocol {
		case ProtoTCP, ProtoPostgres, ProtoTLSPassthrough, ProtoHTTP:
		case "":
			v.fail(at+".protocol", "missing (one of tcp, tls-passthrough, postgres, http)")
		default:
			v.fail(at+".protocol", "unknown protocol %q (one of tcp, tls-passthrough, postgres, http)", td.Protocol)
		}
		for j, a := range td.Match.Addresses {
			pfx, err := parsePrefix(a)
			if err != nil {
				v.fail(fmt.Sprintf("%s.match.addresses[%d]", at, j), "%v", err)
				continue
			}
			t.prefixes = append(t.prefixes, pfx)
		}
		for j, port := range td.Match.Ports {
			if port == 0 {
				v.fail(fmt.Sprintf("%s.match.ports[%d]", at, j), "port 0")
			}
			t.ports[port] = true
		}
		for j, s := range td.Match.SNI {
			// Names are compared lower case and without a root dot (TargetForSNI), patterns too:
			// "api.example.com." would otherwise match nothing.
			pat := strings.TrimSuffix(strings.ToLower(s), ".")
			if !validSNIPattern(pat) {
				v.fail(fmt.Sprintf("%s.match.sni[%d]", at, j), "bad host name pattern %q (use a name or *.domain)", s)
			}
			t.sni = append(t.sni, pat)
		}
		if len(t.prefixes) == 0 && len(t.sni) == 0 {
			v.fail(at+".match", "needs addresses or sni")
		}
		if len(t.sni) > 0 && td.Protocol != ProtoTLSPassthrough && td.Protocol != ProtoHTTP {
			v.fail(at+".match.sni", "only tls-passthrough and http targets match on SNI")
		}
		if len(t.sni) > 0 && len(t.ports) == 0 {
			v.fail(at+".match.ports", "needed with sni (443, say): a name alone would open every port of its hosts")
		}
		if td.Upstream != nil {
			t.Upstream = *td.Upstream
			wildcard := slices.ContainsFunc(t.sni, func(p string) bool { return strings.HasPrefix(p, "*.") })
			v.checkUpstream(at+".upstream", td.Protocol, td.Upstream, agentPicksHost(t.prefixes), len(t.sni) > 0, wildcard)
		} else if td.Protocol == ProtoPostgres {
			v.fail(at+".upstream", "postgres targets need upstream credentials (user and password_file or password_env)")
		}
		p.Targets = append(p.Targets, t)
	}
	v.checkShadowing(p.Targets)
	v.compileRules(p, f)
	v.compileMasking(p, f)
	p.Recording = f.Recording
	switch f.Recording.Durability {
	case "", "default", "strict":
	default:
		v.fail("$.recording.durability", "want default or strict, got %q", f.Recording.Durability)
	}
	if p.Recording.MaxRows == 0 {
		p.Recording.MaxRows = 100
	}
	if p.Recording.MaxRows < 0 {
		// The guard would collect every row of a result in memory (it reads a negative cap as
		// none), and the recorder would then keep none of them.
		v.fail("$.recording.max_rows", "must be positive (rows kept per result; default 100)")
	}
	for i, g := range f.Grants {
		at := fmt.Sprintf("$.grants[%d]", i)
		if len(g.Groups) == 0 && len(g.Subjects) == 0 {
			v.fail(at, "needs groups or subjects")
		}
		v.noEmptyNames(at+".groups", g.Groups)
		v.noEmptyNames(at+".subjects", g.Subjects)
		for j, tn := range g.Targets {
			if !names[tn] {
				v.fail(fmt.Sprintf("%s.targets[%d]", at, j), "unknown target %q", tn)
			}
		}
	}
	return p
}

func (v *validator) compileRules(p *Policy, f *File) {
	def, err := rules.ParseDefault(f.Default)
	if err != nil {
		v.fail("$.default", "%v", err)
	}
	p.Approvals = f.Approvals
	if p.Approvals.Timeout == 0 {
		p.Approvals.Timeout = Duration(60 * time.Second)
	}
	if p.Approvals.TransactionTimeout == 0 {
		p.Approvals.TransactionTimeout = Duration(20 * time.Second)
	}
	if p.Approvals.LateWindow == 0 {
		p.Approvals.LateWindow = Duration(15 * time.Minute)
	}
	p.RuleDefs = map[string]RuleDef{}
	var specs []rules.Rule
	lines := map[int]int{} // rule line → index
	for i, r := range f.Rules {
		at := fmt.Sprintf("$.rules[%d]", i)
		if r.Name == "" {
			v.fail(at+".name", "missing")
		} else if _, dup := p.RuleDefs[r.Name]; dup {
			v.fail(at+".name", "duplicate rule name %q", r.Name)
		}
		if r.Action == "approve" && len(r.Approvers) == 0 {
			v.fail(at+".approvers", "an approve rule needs approver groups")
		}
		if r.Action != "approve" && (len(r.Approvers) > 0 || r.Quorum != 0) {
			v.fail(at+".approvers", "approvers and quorum only apply to action: approve")
		}
		v.noEmptyNames(at+".approvers", r.Approvers)
		if r.Quorum < 0 {
			v.fail(at+".quorum", "must be positive")
		}
		p.RuleDefs[r.Name] = r
		line := v.line(at)
		lines[line] = i
		specs = append(specs, rules.Rule{Name: r.Name, When: r.When, Action: r.Action, Message: r.Message, Approvers: r.Approvers, Line: line})
	}
	for i, w := range f.Approvals.Webhooks {
		at := fmt.Sprintf("$.approvals.webhooks[%d]", i)
		if !strings.HasPrefix(w.URL, "https://") && !strings.HasPrefix(w.URL, "http://") {
			v.fail(at+".url", "want an http(s) URL")
		}
		for j, rn := range w.Rules {
			if _, ok := p.RuleDefs[rn]; !ok {
				v.fail(fmt.Sprintf("%s.rules[%d]", at, j), "unknown rule %q", rn)
			}
		}
	}
	eng, err := rules.Compile(specs, def)
	if err != nil {
		var ce *rules.CompileError
		if errors.As(err, &ce) {
			for _, re := range ce.Errors {
				field := "$.rules"
				if i, ok := lines[re.Line]; ok {
					field = fmt.Sprintf("$.rules[%d].when", i)
				}
				e := &Error{File: v.name, Line: re.Line, Field: strings.TrimPrefix(field, "$."), Msg: fmt.Sprintf("rule %q: %s", re.Rule, re.Err)}
				v.errs = append(v.errs, e)
			}
			return
		}
		v.fail("$.rules", "%v", err)
		return
	}
	p.Rules = eng
}

// MaskStats is shared by every compiled plan so masking counters stay monotonic across reloads.
var MaskStats = &mask.Stats{}

// masksTraffic says whether the enforcer reads a protocol's results, and so can mask them.
func masksTraffic(protocol string) bool { return protocol == ProtoPostgres || protocol == ProtoHTTP }

func (v *validator) compileMasking(p *Policy, f *File) {
	m := f.Masking
	if m == nil {
		m = &Masking{}
	}
	if b, err := json.Marshal(m); err == nil {
		p.maskDigest = sha256.Sum256(b)
	}
	if m.Disabled {
		if len(m.Detectors)+len(m.Columns) > 0 {
			v.fail("$.masking.disabled", "masking is disabled but detectors or columns are configured")
		}
		return
	}
	cfg := mask.Config{RedactFormat: m.RedactFormat, Stats: MaskStats}
	for i, d := range m.Detectors {
		at := fmt.Sprintf("$.masking.detectors[%d]", i)
		dr := mask.DetectorRule{Detectors: d.Detectors}
		if d.Style != "" {
			st, err := mask.ParseStyle(d.Style)
			if err != nil {
				v.fail(at+".style", "%v", err)
			}
			dr.Style = st
		}
		cfg.Detectors = append(cfg.Detectors, dr)
	}
	if m.Detectors != nil && len(m.Detectors) == 0 {
		cfg.Detectors = []mask.DetectorRule{}
	}
	var cols []mask.ColumnRule
	for i, c := range m.Columns {
		at := fmt.Sprintf("$.masking.columns[%d]", i)
		st, err := mask.ParseStyle(c.Style)
		if err != nil {
			v.fail(at+".style", "%v", err)
		}
		if c.Match == "" {
			v.fail(at+".match", "missing (table.column, globs allowed)")
		}
		cols = append(cols, mask.ColumnRule{Pattern: c.Match, Style: st})
	}
	if m.TokenKeyFile != "" {
		k, err := mask.LoadKey(m.TokenKeyFile)
		if err != nil {
			v.fail("$.masking.token_key_file", "%v", err)
		}
		cfg.Key = k
	}
	protocols := map[string]string{}
	for _, t := range p.Targets {
		protocols[t.Name] = t.Protocol
	}
	named := map[string]bool{}
	for i, t := range m.Targets {
		switch proto, ok := protocols[t]; {
		case !ok:
			v.fail(fmt.Sprintf("$.masking.targets[%d]", i), "unknown target %q", t)
		case !masksTraffic(proto):
			v.fail(fmt.Sprintf("$.masking.targets[%d]", i), "target %q is %s: the enforcer relays its bytes and can mask nothing there (only postgres and http targets are masked)", t, proto)
		}
		named[t] = true
	}
	p.maskTargets, p.maskSkips = map[string]bool{}, map[string]bool{}
	for name, proto := range protocols {
		switch {
		case !masksTraffic(proto):
		case len(m.Targets) == 0 || named[name]:
			p.maskTargets[name] = true
		default:
			p.maskSkips[name] = true
		}
	}
	v.noEmptyNames("$.masking.exempt_groups", m.ExemptGroups)
	p.maskExempt = m.ExemptGroups
	if len(v.errs) > 0 {
		return
	}
	plan, err := mask.NewPlan(cols, cfg)
	if err != nil {
		v.fail("$.masking", "%v", err)
		return
	}
	p.Mask = plan
}

// line returns the line of the node at a YAML path; for a missing field, the line of the
// nearest enclosing node that exists; 0 if none.
func (v *validator) line(path string) int {
	for v.ast != nil && path != "$" && path != "" {
		if p, err := yaml.PathString(path); err == nil {
			if n, err := p.FilterFile(v.ast); err == nil && n != nil && n.GetToken() != nil {
				return n.GetToken().Position.Line
			}
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// noEmptyNames refuses empty group and subject names (a YAML null in a list reads as ""): a
// token whose subject is missing, or whose groups claim is an empty string, would carry it.
func (v *validator) noEmptyNames(at string, names []string) {
	for i, n := range names {
		if strings.TrimSpace(n) == "" {
			v.fail(fmt.Sprintf("%s[%d]", at, i), "empty name")
		}
	}
}

// checkShadowing refuses targets that an earlier or address-only target would take connections
// from. The proxy takes the first address target (in file order) that matches a destination, and
// address targets before any target that needs a ClientHello; so a narrower target listed after a
// broader one (a postgres target inside a network a tcp target relays) would never see its
// connections, which would reach the service without its statement rules, masking or grants.
// A broader target after a narrower one (a catch-all last) is what the order is for.
func (v *validator) checkShadowing(targets []*Target) {
	for j, tj := range targets {
		if len(tj.prefixes) == 0 {
			// SNI alone: address targets on its ports are other hosts', unless one takes every
			// address there; then no connection would ever reach this one.
			for i, ti := range targets {
				if len(ti.sni) == 0 && portsOverlap(ti.ports, tj.ports) && slices.ContainsFunc(ti.prefixes, func(p netip.Prefix) bool { return p.Bits() == 0 }) {
					v.fail(fmt.Sprintf("$.targets[%d].match", j), "target %q (targets[%d]) takes every connection to %s first (address targets are matched before names), so this target would never see one; narrow its addresses", ti.Name, i, portsText(ti.ports, tj.ports))
					break
				}
			}
			continue
		}
		for i, ti := range targets {
			if i == j || len(ti.sni) > 0 || (i > j && len(tj.sni) == 0) {
				continue
			}
			if where, ok := shadows(ti, tj, i > j); ok {
				v.fail(fmt.Sprintf("$.targets[%d].match", j), "target %q (targets[%d]) takes connections to %s first, so this target would never see them; list the narrower target first, or make them disjoint", ti.Name, i, where)
				break
			}
		}
	}
}

// shadows says whether connections that target b names would go to a instead, given that a is
// consulted first: somewhere they overlap, a's network is wider than b's, or is as wide and b's
// ports are not a strict superset of a's (b is then no catch-all behind a), or a is listed after
// b (an address target before a target that reads SNI: the file's order does not say so). It
// names such a place. A narrower a listed before b is the order asked for, SNI or not.
func shadows(a, b *Target, listedAfter bool) (string, bool) {
	if !portsOverlap(a.ports, b.ports) {
		return "", false
	}
	for _, pa := range a.prefixes {
		for _, pb := range b.prefixes {
			if !pa.Overlaps(pb) {
				continue
			}
			narrower := pb
			if pa.Bits() > pb.Bits() {
				narrower = pa
			}
			where := narrower.String() + portsText(a.ports, b.ports)
			sameNet := pa.Bits() == pb.Bits()
			if listedAfter || pa.Bits() < pb.Bits() || sameNet && (!portsWithin(a.ports, b.ports) || portsWithin(b.ports, a.ports)) {
				return where, true
			}
		}
	}
	return "", false
}

// portsOverlap says whether two port sets share a port (an empty set is every port).
func portsOverlap(a, b map[uint16]bool) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for p := range a {
		if b[p] {
			return true
		}
	}
	return false
}

// portsWithin says whether every port of a is one of b's (an empty set is every port).
func portsWithin(a, b map[uint16]bool) bool {
	if len(b) == 0 {
		return true
	}
	if len(a) == 0 {
		return false
	}
	for p := range a {
		if !b[p] {
			return false
		}
	}
	return true
}

// portsText names the ports two targets share, for messages.
func portsText(a, b map[uint16]bool) string {
	var ps []int
	switch {
	case len(a) == 0 && len(b) == 0:
		return " (any port)"
	case len(a) == 0:
		a = b
	}
	for p := range a {
		if len(b) == 0 || b[p] {
			ps = append(ps, int(p))
		}
	}
	slices.Sort(ps)
	return fmt.Sprintf(" port %v", ps)
}

// agentPicksHost says whether a match lets the agent choose among hosts: a network wider than one
// address. Without an upstream address the proxy then logs in wherever the agent connected.
func agentPicksHost(prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Bits() < p.Addr().BitLen() {
			return true
		}
	}
	return false
}

// byName says the target matches on SNI: an http target's agents then speak TLS; wildcard that
// one of its patterns is "*.domain".
func (v *validator) checkUpstream(at, proto string, u *Upstream, agentPicksHost, byName, wildcard bool) {
	if u.Address != "" {
		if msg := checkHostPort(u.Address); msg != "" {
			v.fail(at+".address", "want host:port (db.internal:5432, [2001:db8::7]:443), got %q: %s", u.Address, msg)
		}
	}
	if proto != ProtoHTTP {
		if u.Header != "" {
			v.fail(at+".header", "only http targets inject a credential in a header")
		}
		if u.Host != "" {
			v.fail(at+".host", "only http targets send a Host header")
		}
	}
	switch proto {
	case ProtoHTTP:
		v.checkHTTPUpstream(at, u, agentPicksHost, byName, wildcard)
		return
	case ProtoPostgres:
	default:
		v.checkRelayUpstream(at, proto, u)
		return
	}
	if u.User == "" {
		v.fail(at+".user", "missing")
	}
	switch {
	case u.PasswordFile == "" && u.PasswordEnv == "":
		v.fail(at, "needs password_file or password_env")
	case u.PasswordFile != "" && u.PasswordEnv != "":
		v.fail(at, "password_file and password_env are both set: name one secret")
	}
	if u.PasswordFile != "" && !path.IsAbs(u.PasswordFile) {
		v.fail(at+".password_file", "must be an absolute path")
	}
	switch u.TLS {
	case "", "disable", "require", "verify-ca", "verify-full":
	default:
		v.fail(at+".tls", "unknown mode %q (disable, require, verify-ca, verify-full)", u.TLS)
	}
	if u.TLS == "verify-ca" && u.CAFile == "" {
		v.fail(at+".ca_file", "required with tls: verify-ca (verify-full without one checks against the system's roots)")
	}
	tlsMode := cmp.Or(u.TLS, "verify-full") // the daemon's default (with the system's roots)
	weak := false
	for i, m := range u.Auth {
		switch m {
		case "scram-sha-256":
		case "md5", "password":
			weak = true
		default:
			v.fail(fmt.Sprintf("%s.auth[%d]", at, i), "unknown method %q (scram-sha-256, md5, password)", m)
		}
	}
	if agentPicksHost && u.Address == "" {
		// Any host of the network could be the agent's own, relaying the proxy's login to the real
		// server (SCRAM without TLS, or MD5) or asking for the password in clear. TLS with SCRAM
		// binds the login to the channel; verify-ca and verify-full also check who answers.
		switch {
		case u.TLS == "disable":
			v.fail(at+".tls", "the target matches a network, so the agent picks the host the proxy logs in to; set upstream.address, or tls: require (SCRAM with channel binding) or verify-full with server_name")
		case tlsMode == "verify-ca", tlsMode == "verify-full" && u.ServerName == "":
			// Any host of the network holding a certificate of the CA (for its own address, with
			// verify-full) would pass, and could relay a SCRAM login without channel binding.
			v.fail(at+".tls", "the target matches a network, so the agent picks the host the proxy logs in to; a certificate check of that host proves nothing: use tls: require (SCRAM with channel binding), verify-full with server_name, or set upstream.address")
		}
		if weak {
			v.fail(at+".auth", "the target matches a network, so the agent picks the host the proxy logs in to; allow only scram-sha-256, or set upstream.address")
		}
	}
}

// checkRelayUpstream checks the upstream of a target the proxy relays without reading (tcp,
// tls-passthrough): only its address is used, so anything else written there is a mistake the
// file's author should hear of (a password_file there injects nothing).
func (v *validator) checkRelayUpstream(at, proto string, u *Upstream) {
	unused := []struct{ name, value string }{
		{"database", u.Database}, {"user", u.User}, {"password_file", u.PasswordFile}, {"password_env", u.PasswordEnv},
		{"tls", u.TLS}, {"ca_file", u.CAFile}, {"server_name", u.ServerName}, {"auth", strings.Join(u.Auth, ",")},
	}
	for _, f := range unused {
		if f.value != "" {
			v.fail(at+"."+f.name, "a %s target relays the bytes as they are and uses only upstream.address", proto)
		}
	}
}

// checkHTTPUpstream checks an http target's upstream. Its secret is optional (without one the
// agent's requests go as sent, to where it sent them); with one it travels only as the file says:
// verified TLS unless tls: disable is written, in one header, to a host the agent cannot pick.
// wildcard says the target's SNI patterns include one with "*.".
func (v *validator) checkHTTPUpstream(at string, u *Upstream, agentPicksHost, byName, wildcard bool) {
	secret := u.hasSecret()
	if u.Database != "" {
		v.fail(at+".database", "only postgres targets have a database")
	}
	if len(u.Auth) > 0 {
		v.fail(at+".auth", "only postgres targets choose login methods; an http target's secret goes as HTTP Basic (with user), in header, or as a bearer token")
	}
	if u.PasswordFile != "" && u.PasswordEnv != "" {
		v.fail(at, "password_file and password_env are both set: name one secret")
	}
	if u.PasswordFile != "" && !path.IsAbs(u.PasswordFile) {
		v.fail(at+".password_file", "must be an absolute path")
	}
	switch u.TLS {
	case "", "disable", "verify-ca", "verify-full":
	case "require":
		v.fail(at+".tls", "require is not offered for http targets: it encrypts without checking who answers, so the credential and the agent's requests would go to whoever does; use verify-full (or verify-ca with ca_file), or disable")
	default:
		v.fail(at+".tls", "unknown mode %q (disable, verify-ca, verify-full)", u.TLS)
	}
	mode := u.HTTPTLS()
	if byName && secret && wildcard && u.Address == "" && u.ServerName == "" && u.Host == "" {
		// The agent picks the name among the pattern's (a tenant's own under *.blob.core.windows.net),
		// and its holder would get the credential.
		v.fail(at, "the target matches a wildcard name, so the agent picks the host the proxy sends the credential to; set server_name (or host) to the name the credential is for, or upstream.address")
	}
	if byName && secret && u.TLS == "verify-ca" && u.Address == "" {
		v.fail(at+".tls", "verify-ca checks no name, so any server the name leads to with a certificate of the CA would get the credential; use verify-full, or set upstream.address")
	}
	if byName {
		// Matched by the name of a TLS ClientHello: the agent speaks TLS, and the daemon keeps
		// it upstream (verify-full of that name unless tls says otherwise).
		if u.TLS == "disable" {
			v.fail(at+".tls", "the target matches on SNI, so its agents speak TLS; disable would send their requests (and any credential) on in clear")
		}
		mode = cmp.Or(u.TLS, "verify-full")
	}
	if u.TLS == "verify-ca" && u.CAFile == "" {
		// The system's roots would accept any public certificate, for any name.
		v.fail(at+".ca_file", "required with tls: verify-ca (it checks the chain, not the name)")
	}
	if mode == "disable" {
		off := "tls: disable"
		if u.TLS == "" {
			off = "no tls written and no secret to protect"
		}
		for _, f := range [...]struct{ name, val string }{{"ca_file", u.CAFile}, {"server_name", u.ServerName}} {
			if f.val != "" {
				v.fail(at+"."+f.name, "set, but TLS to the server is off (%s); write tls: verify-full to check the server with it", off)
			}
		}
	}
	switch {
	case u.User != "" && !secret:
		v.fail(at+".user", "a user without a secret: HTTP Basic needs password_file or password_env")
	case strings.ContainsRune(u.User, ':'):
		v.fail(at+".user", "an HTTP Basic user name cannot hold ':' (it separates user and secret)")
	case hasControl(u.User):
		v.fail(at+".user", "holds a control character")
	}
	if u.Header != "" {
		switch {
		case !secret:
			v.fail(at+".header", "a header without a secret: name password_file or password_env, the value it carries")
		case u.User != "":
			v.fail(at+".header", "header and user together: the secret goes in that header or as HTTP Basic with user, not both")
		case !validHeaderName(u.Header):
			v.fail(at+".header", "%q is not a header name (a token of letters, digits and !#$%%&'*+-.^_`|~)", u.Header)
		case httpproto.ReservedCredentialHeader(u.Header):
			v.fail(at+".header", "the proxy sets or removes %s itself (hop-by-hop, framing, encoding, range or client-address headers); name the header the service reads the credential from (X-Api-Key, Authorization…)", u.Header)
		}
	}
	if u.Host != "" && !validHostHeader(u.Host) {
		v.fail(at+".host", "%q is not a Host header (a name or address, with an optional :port)", u.Host)
	}
	if secret && agentPicksHost && u.Address == "" {
		// Any host of the network could be the agent's own, and would collect the credential.
		switch {
		case mode == "disable":
			v.fail(at+".tls", "the target matches a network, so the agent picks the host the proxy sends the credential to; set upstream.address, or tls: verify-full with server_name")
		case mode == "verify-ca", mode == "verify-full" && u.ServerName == "" && (!byName || wildcard):
			// Matched on an exact name too, verify-full checks the name the ClientHello gave,
			// which the policy lists: only its holder passes.
			v.fail(at+".tls", "the target matches a network, so the agent picks the host the proxy sends the credential to; a certificate check of that host proves nothing: use verify-full with server_name, or set upstream.address")
		}
	}
}

// checkHostPort says what is wrong with a host:port upstream address, or "". The host is a DNS
// name or an IP address (":8080" would dial this machine, "http://…" is not an address).
func checkHostPort(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err.Error()
	}
	if !validPort(port) {
		return "the port must be a number from 1 to 65535"
	}
	if host == "" {
		return "no host"
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "the host is not a DNS name or IP address"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "the host is not a DNS name or IP address"
			}
		}
	}
	return ""
}

// validHeaderName says whether s is a field name: an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHostHeader says whether s is a Host header: a name of letters, digits, '-', '.', '_' and
// '~', an IPv4 address or a bracketed IPv6 one, with an optional :port.
func validHostHeader(s string) bool {
	host, port, hasPort := s, "", false
	if rest, ok := strings.CutPrefix(s, "["); ok {
		addr, after, ok := strings.Cut(rest, "]")
		if a, err := netip.ParseAddr(addr); !ok || err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		if after == "" {
			return true
		}
		port, hasPort = strings.CutPrefix(after, ":")
		return hasPort && validPort(port)
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if !validPort(port) {
			return false
		}
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~':
		default:
			return false
		}
	}
	return true
}

func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n >= 1 && n <= 65535
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not an address or CIDR: %q", s)
		}
		if p.Addr().Is4In6() {
			// Destinations are matched unmapped, so a v4-mapped network is the IPv4 network it
			// maps; its length counts the 96 bits of the mapping prefix.
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: a v4-mapped network needs /96 or longer (or write the IPv4 network)", s)
			}
			return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked(), nil
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an address or CIDR: %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func validSNIPattern(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || strings.ContainsAny(s, "*/: ") {
		return false
	}
	return true
}

// TargetFor returns the target whose address and port match dst, or nil. Targets with SNI
// patterns are matched by TargetForSNI after reading the ClientHello, addresses or not: a target
// that names both must see both.
func (p *Policy) TargetFor(dst netip.AddrPort) *Target {
	for _, t := range p.Targets {
		if len(t.sni) == 0 && t.matchesAddr(dst) {
			return t
		}
	}
	return nil
}

// matchesAddr says whether dst is on one of t's ports (any, if it names none) and, when t names
// addresses, within one of them.
func (t *Target) matchesAddr(dst netip.AddrPort) bool {
	if len(t.ports) > 0 && !t.ports[dst.Port()] {
		return false
	}
	if len(t.prefixes) == 0 {
		return true
	}
	a := dst.Addr().Unmap()
	host := hostOnly(a)
	for _, pfx := range t.prefixes {
		if pfx.Contains(a) && (!host.IsValid() || host.Bits() <= pfx.Bits() && host.Contains(pfx.Addr())) {
			return true
		}
	}
	return false
}

// hostOnlyRanges are destinations that do not leave the host or its link: loopback, "this
// network" (a connect to 0.0.0.0 reaches loopback), link-local (a cloud's metadata service at
// 169.254.169.254 hands out the machine's credentials) and multicast.
var hostOnlyRanges = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("ff00::/8"),
}

// hostOnly returns the host-only range a is in, if any. Such a destination matches only a
// target network inside that range, one the policy names on purpose: never 0.0.0.0/0 or ::/0,
// which would hand the agent the host's own services (the daemon's metrics and profiler, the
// developer's databases and debuggers) through a proxy that dials them as root.
func hostOnly(a netip.Addr) netip.Prefix {
	for _, r := range hostOnlyRanges {
		if r.Contains(a) {
			return r
		}
	}
	return netip.Prefix{}
}

// NamesOwnAddress says whether t names a, an address of this host, on purpose: as a network of
// one address, or within a host-only range (see hostOnly, which matchesAddr already applied).
// A wider network (0.0.0.0/0, the LAN the host is on) that only happens to hold the host's own
// address does not: the proxy would reach the host's services through it.
func (t *Target) NamesOwnAddress(a netip.Addr) bool {
	a = a.Unmap()
	for _, pfx := range t.prefixes {
		if pfx.Contains(a) && (pfx.IsSingleIP() || hostOnly(a).IsValid()) {
			return true
		}
	}
	return false
}

// ByNameOnly says whether t matches by SNI alone: where its traffic goes is then the name's
// addresses, not wherever the agent connected.
func (t *Target) ByNameOnly() bool { return len(t.sni) > 0 && len(t.prefixes) == 0 }

// NeedsSNI reports whether some target (tls-passthrough or http) matches by SNI at dst, so the
// proxy should read a ClientHello before deciding.
func (p *Policy) NeedsSNI(dst netip.AddrPort) bool {
	for _, t := range p.Targets {
		if len(t.sni) > 0 && t.matchesAddr(dst) {
			return true
		}
	}
	return false
}

// TargetForSNI returns the target (tls-passthrough or http) whose SNI patterns match name and
// whose addresses (if it names any) and ports match dst.
func (p *Policy) TargetForSNI(name string, dst netip.AddrPort) *Target {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, t := range p.Targets {
		if !t.matchesAddr(dst) {
			continue
		}
		for _, pat := range t.sni {
			if matchSNI(pat, name) {
				return t
			}
		}
	}
	return nil
}

func matchSNI(pattern, name string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		// One label only, as in certificates: *.openai.com matches api.openai.com, not a.b.openai.com.
		head, tail, found := strings.Cut(name, ".")
		return found && head != "" && tail == rest
	}
	return pattern == name
}

// Granted reports whether a person with this subject and groups may use the target, and if not,
// a message that names the target and what is missing.
func (p *Policy) Granted(target, subject string, groups []string) (bool, string) {
	for _, g := range p.grants {
		if !contains(g.Targets, target) {
			continue
		}
		if contains(g.Subjects, subject) {
			return true, ""
		}
		for _, gr := range groups {
			if contains(g.Groups, gr) {
				return true, ""
			}
		}
	}
	var need []string
	for _, g := range p.grants {
		if contains(g.Targets, target) {
			need = append(need, g.Groups...)
		}
	}
	if len(need) == 0 {
		return false, fmt.Sprintf("no grant in the policy gives anyone access to target %q", target)
	}
	return false, fmt.Sprintf("access to target %q needs membership in one of the groups %v; %s has none of them", target, need, subject)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
