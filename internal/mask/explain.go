package mask

import (
	"fmt"
	"strings"
)

// Explain describes what a sample value in a column becomes and why, for
// `enforcer policy explain`. A zero Column explains free text (error messages, COPY CSV).
func (p *Plan) Explain(sample string, col Column) string {
	var b strings.Builder
	in := []byte(sample)
	name := col.Name
	if col.Table != "" {
		name = col.Table + "." + name
		if col.Schema != "" {
			name = col.Schema + "." + name
		}
	}
	if name == "" {
		name = "(free text)"
	}
	fmt.Fprintf(&b, "column %s", name)
	if col.Field != "" && col.Field != col.Name {
		fmt.Fprintf(&b, " (as %s)", col.Field)
	}
	if col.TypeOID != 0 {
		fmt.Fprintf(&b, ", type oid %d, format %s", col.TypeOID, map[bool]string{false: "text", true: "binary"}[col.Format == 1])
	}
	b.WriteString("\n")
	var rp *ResultPlan
	var cp *colPlan
	if name != "(free text)" || col.TypeOID != 0 {
		rp = p.ForColumns([]Column{col})
		cp = &rp.cols[0]
	}
	switch {
	case cp != nil && cp.act == actNull:
		fmt.Fprintf(&b, "column rule %s (style %v) covers it; binary cell of a non-text type → sent as NULL\n", cp.rule.pattern(), cp.rule.style)
		return b.String()
	case cp != nil && cp.act == actForce:
		fmt.Fprintf(&b, "column rule %s applies style %v to the whole value (no detection)\n", cp.rule.pattern(), cp.rule.style)
	case cp != nil && cp.act == actPass && cp.rule != nil:
		fmt.Fprintf(&b, "column rule %s exempts it from detection (style pass)\n", cp.rule.pattern())
	case cp != nil && cp.act == actPass:
		b.WriteString("no column rule; this type cannot hold what detectors find → passed unchanged\n")
	case cp != nil && cp.act == actInspect:
		b.WriteString("no column rule; binary cell read as its type's text (numbers decoded, records, arrays and lexemes element by element); any finding → sent as NULL\n")
	default:
		b.WriteString("no column rule; detectors scan the value")
		if cp != nil && cp.cx != 0 {
			fmt.Fprintf(&b, " with column context %s", cp.cx)
		}
		if cp != nil && cp.json {
			b.WriteString(" as JSON (keys give context)")
		}
		b.WriteString("\n")
		cx := ctxFlags(0)
		if cp != nil {
			cx = cp.cx
		}
		var buf [maxSpans]span
		for _, s := range p.det.find(in, cx, buf[:0]) {
			v, err := p.sty.apply(nil, p.styles[s.Kind], s.Kind, in[s.Start:s.End])
			if err != nil {
				fmt.Fprintf(&b, "  %v at bytes %d-%d: cannot mask (%v) → value dropped\n", s.Kind, s.Start, s.End, err)
				continue
			}
			fmt.Fprintf(&b, "  %v at bytes %d-%d, style %v → %q\n", s.Kind, s.Start, s.End, p.styles[s.Kind], v)
		}
	}
	var out []byte
	var changed, null bool
	var err error
	if rp != nil {
		out, changed, null, err = rp.MaskCell(0, in, nil)
	} else {
		out, changed, err = p.MaskText(in, nil)
	}
	switch {
	case err != nil:
		fmt.Fprintf(&b, "result: cannot mask (%v) → value dropped\n", err)
	case null:
		b.WriteString("result: NULL\n")
	case !changed:
		fmt.Fprintf(&b, "result: unchanged %q\n", sample)
	default:
		fmt.Fprintf(&b, "result: %q\n", out)
	}
	return b.String()
}

func (r *columnRule) pattern() string {
	parts := []string{r.column}
	if !r.bare {
		parts = append([]string{r.table}, parts...)
		if r.schema != "" {
			parts = append([]string{r.schema}, parts...)
		}
	}
	return strings.Join(parts, ".")
}

func (c ctxFlags) String() string {
	var names []string
	for _, f := range []struct {
		f ctxFlags
		n string
	}{{ctxSSN, "us_ssn"}, {ctxPhone, "phone"}, {ctxIP, "ip_address"}, {ctxSecret, "secret"}, {ctxPassword, "password"}} {
		if c&f.f != 0 {
			names = append(names, f.n)
		}
	}
	return strings.Join(names, ",")
}
