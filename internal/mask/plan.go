package mask

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

// DetectorRule enables detectors and says how their findings are rewritten.
type DetectorRule struct {
	// Detectors are kind names (Kind.String), "secret" for all secret detectors, or "all".
	Detectors []string
	// Style for these kinds; zero means the kind's default (DefaultStyle).
	Style Style
}

// Config configures detectors and styles.
type Config struct {
	// Detectors lists the enabled detectors; nil enables all with their default styles. Later
	// rules override the style of kinds named earlier. Context-needing kinds (us_ssn, phone,
	// ip_address) fire only with a matching column/key name or a context word before the value.
	Detectors []DetectorRule
	// RedactFormat is the StyleRedact replacement; "{kind}" is replaced by the kind or rule
	// label. Default "[REDACTED:{kind}]".
	RedactFormat string
	// KeepLast is how many trailing letters/digits StylePartial keeps; default 4.
	KeepLast int
	// MaskChar replaces masked characters; default '*'.
	MaskChar byte
	// Key is required when any rule uses StyleToken.
	Key *Key
	// ExtraTLDs are additional top-level domains accepted in e-mail addresses.
	ExtraTLDs []string
	// Stats receives the plan's counters; share one across policy reloads to keep metrics
	// monotonic. Nil: the plan gets its own.
	Stats *Stats
	// MaxValueBytes bounds one value (cell, message, COPY line, JSON document); a larger value is
	// an error, so the caller drops it. Default 64 MiB.
	MaxValueBytes int
}

// DefaultStyle is the style a detector kind gets when its rule names none: checksum-validated
// personal data keeps the last four characters (what receipts print), everything else is
// redacted.
func DefaultStyle(k Kind) Style {
	switch k {
	case CreditCard, IBAN:
		return StylePartial
	}
	return StyleRedact
}

// ColumnRule forces a style on result columns, whatever their content.
type ColumnRule struct {
	// Pattern is "column", "table.column" or "schema.table.column"; each part is a glob
	// ('*', '?') matched case-insensitively: "users.email", "*.password_hash", "users.*",
	// "*_token". A bare column pattern also matches computed columns and JSON keys.
	Pattern string
	Style   Style
	// Label replaces {kind} in the redact format; default "column".
	Label string
}

// Column describes one result column.
type Column struct {
	// Schema and Table name the source table (resolved from the RowDescription table OID);
	// empty for computed columns.
	Schema, Table string
	// Name is the source attribute name (resolved from the attribute number), or the field name
	// when there is no source column.
	Name string
	// Field is the name the result gives the column (an alias); optional.
	Field   string
	TypeOID uint32
	// Format is the wire format code: 0 text, 1 binary.
	Format int16
	// Sources are the table columns a computed column derives from, when the caller knows them
	// from the statement's parse tree (upper(email), password_hash || '', row_to_json(u)): a
	// column rule covering any source covers the column.
	Sources []Source
	// AnySource says the column is computed from something the caller cannot tell (a FETCH
	// from a cursor it did not see declared): every column rule covers it, the first applies.
	AnySource bool
}

// Source names a table column an expression reads; an empty Name is the whole row, which
// holds every column of the table.
type Source struct {
	Schema, Table, Name string
	// Any stands for a column that cannot be told: every column rule covers it.
	Any bool
}

type columnRule struct {
	schema, table, column string // lower-case globs; schema/table empty = any
	bare                  bool   // pattern named only a column
	style                 Style
	label                 []byte
}

// Plan is a compiled masking configuration: detectors, styles and column rules. It is immutable
// and safe for concurrent use; build one per policy (identity × target) and reuse it.
type Plan struct {
	det      detectors
	styles   [numKinds]Style
	sty      *styler
	rules    []columnRule
	maxValue int
	stats    *Stats
}

// NewPlan compiles column rules and detector configuration.
func NewPlan(rules []ColumnRule, cfg Config) (*Plan, error) {
	p := &Plan{stats: cfg.Stats, maxValue: cfg.MaxValueBytes}
	if p.stats == nil {
		p.stats = &Stats{}
	}
	if p.maxValue <= 0 {
		p.maxValue = 64 << 20
	}
	keep := cfg.KeepLast
	if keep == 0 {
		keep = 4
	}
	sty, err := newStyler(cfg.RedactFormat, keep, cfg.MaskChar, cfg.Key)
	if err != nil {
		return nil, err
	}
	p.sty = sty
	p.styles[EchoedValue] = StyleRedact
	needKey := false
	if cfg.Detectors == nil {
		p.det.on = allKinds
		for k := CreditCard; k < ColumnKind; k++ {
			p.styles[k] = DefaultStyle(k)
		}
	}
	for i, r := range cfg.Detectors {
		set, err := parseKinds(r.Detectors)
		if err != nil {
			return nil, fmt.Errorf("masking detector rule %d: %w", i+1, err)
		}
		if r.Style > StyleToken {
			return nil, fmt.Errorf("masking detector rule %d: invalid style %v", i+1, r.Style)
		}
		p.det.on |= set
		for k := CreditCard; k < ColumnKind; k++ {
			if set.has(k) {
				p.styles[k] = r.Style
				if r.Style == styleNone {
					p.styles[k] = DefaultStyle(k)
				}
				needKey = needKey || p.styles[k] == StyleToken
			}
		}
	}
	if len(cfg.ExtraTLDs) > 0 {
		p.det.extraTLDs = make(map[string]struct{})
		for _, t := range cfg.ExtraTLDs {
			p.det.extraTLDs[strings.ToLower(strings.TrimPrefix(t, "."))] = struct{}{}
		}
	}
	for i, r := range rules {
		cr, err := compileColumnRule(r, cfg.RedactFormat)
		if err != nil {
			return nil, fmt.Errorf("masking column rule %d: %w", i+1, err)
		}
		needKey = needKey || r.Style == StyleToken
		p.rules = append(p.rules, cr)
	}
	if needKey && cfg.Key == nil {
		return nil, errNoKey
	}
	return p, nil
}

func compileColumnRule(r ColumnRule, format string) (columnRule, error) {
	pat := strings.ToLower(strings.TrimSpace(r.Pattern))
	if pat == "" {
		return columnRule{}, errors.New("empty column pattern")
	}
	if r.Style < StyleRedact || r.Style > StylePass {
		return columnRule{}, fmt.Errorf("column %q: missing or invalid style", r.Pattern)
	}
	parts := strings.Split(pat, ".")
	var cr columnRule
	switch len(parts) {
	case 1:
		cr = columnRule{column: parts[0], bare: true}
	case 2:
		cr = columnRule{table: parts[0], column: parts[1]}
	case 3:
		cr = columnRule{schema: parts[0], table: parts[1], column: parts[2]}
	default:
		return columnRule{}, fmt.Errorf("column pattern %q has more than three parts", r.Pattern)
	}
	for _, g := range parts {
		if g == "" {
			return columnRule{}, fmt.Errorf("column pattern %q has an empty part", r.Pattern)
		}
	}
	cr.style = r.Style
	label := r.Label
	if label == "" {
		label = "column"
	}
	if format == "" {
		format = "[REDACTED:{kind}]"
	}
	cr.label = []byte(strings.ReplaceAll(format, "{kind}", label))
	return cr, nil
}

// match reports whether the rule covers a column. A rule naming a table never matches a column
// without one (computed columns only match bare patterns); a rule naming a schema matches a
// column whose schema is unknown (fail towards masking).
func (r *columnRule) match(schema, table, name string) bool {
	if !r.bare {
		if table == "" || !glob(r.table, table) {
			return false
		}
		if r.schema != "" && schema != "" && !glob(r.schema, schema) {
			return false
		}
	}
	return glob(r.column, name)
}

// coversRow reports whether r covers a column of the whole row src: a rule naming its table
// does, and so does a column-only rule, whose column the row may have (the table's columns are
// not known here), unless the row is JSON: its keys name the columns, and MaskJSON applies
// column-only rules to them.
func (r *columnRule) coversRow(src Source, json bool) bool {
	if r.bare {
		return !json
	}
	return src.Table != "" && glob(r.table, src.Table) && (r.schema == "" || src.Schema == "" || glob(r.schema, src.Schema))
}

// glob matches a lower-case pattern with '*' and '?' against s case-insensitively.
func glob(pat, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := -1, -1
	for px < len(pat) || sx < len(s) {
		if px < len(pat) {
			switch c := pat[px]; c {
			case '*':
				nextPx, nextSx = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) && lower(s[sx]) == c {
					px++
					sx++
					continue
				}
			}
		}
		if nextSx > 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}

// HasColumnRules reports whether the plan has column rules: only then do a computed column's
// sources matter.
func (p *Plan) HasColumnRules() bool { return len(p.rules) > 0 }

// columnStyle returns the first column rule covering the column.
func (p *Plan) columnStyle(c Column) *columnRule {
	if c.AnySource && len(p.rules) > 0 {
		return &p.rules[0]
	}
	for i := range p.rules {
		r := &p.rules[i]
		if r.match(c.Schema, c.Table, c.Name) || (c.Field != "" && c.Field != c.Name && r.bare && r.match("", "", c.Field)) {
			return r
		}
		for _, src := range c.Sources {
			if src.Any {
				return r
			}
			if src.Name == "" && r.coversRow(src, c.TypeOID == oidJSON || c.TypeOID == oidJSONB) {
				return r
			}
			if src.Name != "" && r.match(src.Schema, src.Table, src.Name) {
				return r
			}
		}
	}
	return nil
}

// keyStyle returns the first bare column rule covering a JSON key.
func (p *Plan) keyStyle(key []byte) *columnRule {
	if len(p.rules) == 0 {
		return nil
	}
	var buf [64]byte
	if len(key) > len(buf) {
		return nil
	}
	k := buf[:len(key)]
	copy(k, key)
	for i := range p.rules {
		if r := &p.rules[i]; r.bare && globBytes(r.column, k) {
			return r
		}
	}
	return nil
}

func globBytes(pat string, b []byte) bool { return glob(pat, string(b)) }

// nameContext derives context flags from a column or key name: its words (split at '_', '-',
// '.', digits and lower→upper case changes) are looked up in the context word lists, and
// secret-like names enable whole-value secret detection.
func nameContext(name []byte) ctxFlags {
	var cx ctxFlags
	switch classifyKey(name) {
	case keyPassword:
		cx |= ctxPassword
	case keySecret:
		cx |= ctxSecret
	}
	var buf [24]byte
	for i := 0; i < len(name); {
		for i < len(name) && !isAlpha(name[i]) {
			i++
		}
		s := i
		for i < len(name) && isAlpha(name[i]) && (i == s || !(isUpper(name[i]) && isLower(name[i-1]))) {
			i++
		}
		if i == s || i-s > len(buf) {
			continue
		}
		for k, c := range name[s:i] {
			buf[k] = lower(c)
		}
		w := buf[:i-s]
		switch string(w) {
		case "ssn", "ssns", "social", "tin", "taxpayer", "itin":
			cx |= ctxSSN
		case "phone", "phones", "telephone", "tel", "mobile", "cell", "cellphone", "fax", "msisdn", "whatsapp", "sms", "contact":
			cx |= ctxPhone
		case "ip", "ips", "ipv", "ipaddr", "ipaddress", "inet", "cidr":
			// Narrower than the free-text words: a column named "address" holds street addresses.
			cx |= ctxIP
		}
	}
	return cx
}

// Stats counts findings and failures. All fields are updated atomically; read them with
// Snapshot.
type Stats struct {
	hits     [numKinds]atomic.Uint64
	nulled   atomic.Uint64
	failures atomic.Uint64
}

// StatsSnapshot is a copy of the counters.
type StatsSnapshot struct {
	// Hits counts masked values per kind name ("column" for column rules).
	Hits map[string]uint64
	// Nulled counts binary cells replaced by NULL because no text style could apply.
	Nulled uint64
	// Failures counts values that could not be masked (the caller dropped them).
	Failures uint64
}

// Stats returns the plan's counters (shared by every ResultPlan built from it).
func (p *Plan) Stats() StatsSnapshot { return p.stats.Snapshot() }

// Snapshot copies the counters.
func (st *Stats) Snapshot() StatsSnapshot {
	s := StatsSnapshot{Hits: make(map[string]uint64), Nulled: st.nulled.Load(), Failures: st.failures.Load()}
	for k := CreditCard; k < numKinds; k++ {
		s.Hits[k.String()] = st.hits[k].Load()
	}
	return s
}

// Redacted returns the value that stands in for a text value that could not be masked.
func (p *Plan) Redacted() []byte {
	return p.sty.labels[kindNone][:len(p.sty.labels[kindNone]):len(p.sty.labels[kindNone])]
}

// CredentialLabel returns what stands in for a credential found by its place in a statement
// (ALTER ROLE … PASSWORD '…'): generic_secret's redaction label, whatever style the plan gives
// that detector, since every other style shows something of a password (its last characters,
// its length, a token equal for equal passwords). Credentials are withheld with masking off
// too: a nil plan gives the label of the default format.
func (p *Plan) CredentialLabel() string {
	if p == nil {
		return strings.ReplaceAll(defaultRedactFormat, "{kind}", GenericSecret.String())
	}
	return string(p.sty.labels[GenericSecret])
}
