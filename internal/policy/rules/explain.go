package rules

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// Explain renders a decision for people: each statement's classification,
// every rule that matched, and the verdict (enforcer policy explain).
func Explain(d *Decision) string {
	var b strings.Builder
	if d.Result != nil && d.Result.ParseError != "" {
		fmt.Fprintf(&b, "parse error: %s\n", d.Result.ParseError)
	}
	n := len(d.Statements)
	if n == 0 {
		fmt.Fprintf(&b, "no statements\nverdict: %s (%s)\n", d.Verdict, d.Message)
		return b.String()
	}
	for i := range d.Statements {
		sd := &d.Statements[i]
		fmt.Fprintf(&b, "statement %d of %d: %s\n", i+1, n, oneLine(shownText(sd.Statement), 200))
		writeClass(&b, "  ", sd.Statement)
		if sd.Prepared != nil {
			fmt.Fprintf(&b, "  prepared %q is:\n", sd.Statement.Execute)
			writeClass(&b, "    ", sd.Prepared)
		}
		writeMatches(&b, sd.Matches, sd.Statement.Execute)
		switch {
		case sd.Rule != nil:
			fmt.Fprintf(&b, "  verdict: %s by rule %s\n", sd.Verdict, sd.Rule.Rule)
		case sd.Default:
			fmt.Fprintf(&b, "  verdict: %s by default %s: %s\n", sd.Verdict, d.Default, sd.Reason)
		default:
			fmt.Fprintf(&b, "  verdict: %s: %s\n", sd.Verdict, sd.Reason)
		}
	}
	switch {
	case d.Rule != nil:
		fmt.Fprintf(&b, "verdict: %s by rule %s", d.Verdict, d.Rule.Rule)
	case d.Statements[d.Statement].Default:
		fmt.Fprintf(&b, "verdict: %s by default %s", d.Verdict, d.Default)
	default:
		fmt.Fprintf(&b, "verdict: %s", d.Verdict)
	}
	if n > 1 {
		fmt.Fprintf(&b, " (statement %d decides; the strictest verdict wins)", d.Statement+1)
	}
	b.WriteByte('\n')
	if d.Message != "" {
		fmt.Fprintf(&b, "message: %s\n", d.Message)
	}
	return b.String()
}

// shownText is a statement's text as the session log shows it with masking off: without the
// credentials it gives (ALTER ROLE … PASSWORD '…'), which an explanation pasted into a ticket
// must not carry either.
func shownText(st *sqlclass.Statement) string {
	if !st.Credentials && !st.Unknown {
		return st.Text
	}
	var noMasking *mask.Plan
	label := noMasking.CredentialLabel()
	shown, ok := sqlclass.RedactCredentials(st.Text, label)
	if !ok {
		return label
	}
	return shown
}

// ExplainHTTP renders an HTTP decision for people: the request as judged, every rule that
// matched, and the verdict (enforcer policy explain).
func ExplainHTTP(d *HTTPDecision) string {
	var b strings.Builder
	r := &d.Request
	target := r.Path
	if r.Query != "" {
		target += "?" + r.Query
	}
	fmt.Fprintf(&b, "request: %s %s\n", oneLine(r.Method, 40), oneLine(target, 200))
	fmt.Fprintf(&b, "  host: %q\n", r.Host)
	for _, k := range slices.Sorted(maps.Keys(r.Headers)) {
		fmt.Fprintf(&b, "  header %s: %s\n", oneLine(k, 80), oneLine(r.Headers[k], 200))
	}
	switch {
	case d.Rule == nil && !d.Default:
		// Refused before any rule was evaluated.
		b.WriteString("  rules evaluated: none\n")
	default:
		writeMatches(&b, d.Matches, "")
	}
	switch {
	case d.Rule != nil:
		fmt.Fprintf(&b, "verdict: %s by rule %s\n", d.Action, d.Rule.Rule)
		if d.Rule.Message != "" {
			fmt.Fprintf(&b, "message: %s\n", d.Rule.Message)
		}
	case d.Default:
		fmt.Fprintf(&b, "verdict: %s by default %s: %s\n", d.Action, d.Mode, d.Reason)
	default:
		fmt.Fprintf(&b, "verdict: %s: %s\n", d.Action, d.Reason)
	}
	return b.String()
}

// writeMatches lists the rules that matched; execute names the prepared statement an
// EXECUTE ran, for matches on it.
func writeMatches(b *strings.Builder, matches []Match, execute string) {
	if len(matches) == 0 {
		b.WriteString("  rules matched: none\n")
		return
	}
	b.WriteString("  rules matched:\n")
	for _, m := range matches {
		fmt.Fprintf(b, "    %-7s %s", m.Action, m.Rule)
		if m.Prepared {
			fmt.Fprintf(b, " (on prepared %q)", execute)
		}
		if m.Line > 0 {
			fmt.Fprintf(b, " (line %d)", m.Line)
		}
		if m.Message != "" {
			fmt.Fprintf(b, ": %s", m.Message)
		}
		if len(m.Approvers) > 0 {
			fmt.Fprintf(b, " [approvers: %s]", strings.Join(m.Approvers, ", "))
		}
		if m.Err != "" {
			fmt.Fprintf(b, " [evaluation error, applied strictly: %s]", m.Err)
		}
		b.WriteByte('\n')
	}
}

func writeClass(b *strings.Builder, indent string, st *sqlclass.Statement) {
	kind := string(st.Kind)
	if st.Object != "" {
		kind += " " + st.Object
	}
	fmt.Fprintf(b, "%skind: %s", indent, kind)
	if len(st.Kinds) > 1 {
		fmt.Fprintf(b, " (contains %s)", strings.Join(st.Kinds[1:], ", "))
	}
	if st.Wrapper != "" {
		fmt.Fprintf(b, " via %s", st.Wrapper)
	}
	if !st.Executes {
		b.WriteString(", not executed now")
	}
	b.WriteByte('\n')
	fmt.Fprintf(b, "%seffects: %s\n", indent, effects(st))
	if len(st.Tables) > 0 {
		fmt.Fprintf(b, "%stables: read [%s] written [%s]\n", indent,
			strings.Join(st.TablesRead, ", "), strings.Join(st.TablesWritten, ", "))
	}
	if len(st.Functions) > 0 {
		fmt.Fprintf(b, "%sfunctions: %s\n", indent, strings.Join(st.Functions, ", "))
	}
	where := "none"
	if st.HasWhere {
		where = "present"
		if st.WhereIsConstant {
			where = "present but constant (matches every row)"
		}
	} else if st.WhereIsConstant {
		where = "missing on some statement, constant on another"
	}
	fmt.Fprintf(b, "%swhere: %s\n", indent, where)
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		for max > 0 && !utf8.RuneStart(s[max]) {
			max--
		}
		s = s[:max] + "…"
	}
	return s
}
