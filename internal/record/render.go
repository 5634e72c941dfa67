package record

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/width"
)

// ReplayOptions shape RenderReplay's output.
type ReplayOptions struct {
	Location *time.Location // timestamps' zone, default UTC
}

// RenderReplay writes a session's records as a timeline: timestamps, the session's identity and
// process, statements with verdicts and rules, approvals, notices, masked result tables in psql
// style with row counts and timings, and the session's end.
func RenderReplay(w io.Writer, recs []Record, opts ReplayOptions) error {
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	for _, rec := range recs {
		ev, err := rec.Event()
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, renderEvent(ev, loc)); err != nil {
			return err
		}
	}
	return nil
}

// RenderRecord writes one record of the timeline, for `enforcer replay --follow`, which prints
// records as FollowSession delivers them.
func RenderRecord(w io.Writer, rec Record, opts ReplayOptions) error {
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	ev, err := rec.Event()
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, renderEvent(ev, loc))
	return err
}

// renderResult writes a result: its tag or error, then its rows as psql shows them.
func renderResult(r *Result, line func(tag, format string, args ...any), b *strings.Builder) {
	// A result recorded apart from its statement names it: with pipelining, other statements'
	// records can come between the two.
	of := ""
	if r.StatementID != 0 {
		of = fmt.Sprintf("(of #%d) ", r.StatementID)
	}
	if r.ContentType != "" || r.Bytes != 0 {
		renderHTTPResponse(r, of, line)
		return
	}
	if r.Skipped {
		line("SKIPPED", "%snot run: an error earlier in its batch made the server skip it", of)
		return
	}
	if r.Error != "" {
		line("ERROR", "%s%s%s", of, r.Error, codeSuffix(r.ErrorCode))
		// Rows that reached the client before the error (or before it went away) are what it saw.
		if len(r.Columns) > 0 && len(r.Rows) > 0 {
			writeTable(b, PsqlTable(r.Columns, r.ColumnTypes, r.Rows, r.RowCount))
		}
		return
	}
	tag := r.CommandTag
	if r.Suspended {
		// The client asked for at most this many rows; the portal has more.
		tag = "portal suspended: more rows follow"
	}
	line("RESULT", "%s%s%s", of, tag, durationSuffix(r.DurationUS))
	if len(r.Columns) > 0 {
		writeTable(b, PsqlTable(r.Columns, r.ColumnTypes, r.Rows, r.RowCount))
	}
}

// writeTable writes a result table on continuation lines. A cell's newline starts a table line
// (as in psql), and the agent chooses the cells: at the margin, a line of a cell could read as
// an event of its own.
func writeTable(b *strings.Builder, table string) {
	for line := range strings.Lines(table) {
		b.WriteString(continuation)
		b.WriteString(line)
	}
}

// renderHTTPResponse writes an HTTP response: why it failed or was refused, if it was, its
// status, type and size, then its body as the agent received it (masked), on continuation lines.
func renderHTTPResponse(r *Result, of string, line func(tag, format string, args ...any)) {
	if r.Error != "" {
		line("ERROR", "%s%s", of, r.Error)
	}
	what := r.CommandTag
	if r.ContentType != "" {
		what += ", " + r.ContentType
	}
	what += ", " + humanBytes(r.Bytes)
	if len(r.Rows) > 0 && len(r.Rows[0]) > 0 && r.Rows[0][0] != nil {
		// A body's last newline would show as an empty continuation line.
		body := strings.TrimSuffix(*r.Rows[0][0], "\n")
		if r.Truncated {
			body += fmt.Sprintf("\n[… the record keeps the first %s]", humanBytes(int64(len(*r.Rows[0][0]))))
		}
		line("RESPONSE", "%s%s%s\n%s", of, what, durationSuffix(r.DurationUS), body)
		return
	}
	line("RESPONSE", "%s%s%s", of, what, durationSuffix(r.DurationUS))
}

// renderEvent is the text of one event in the timeline; the first line starts with the time.
//
// Everything in it but the tables (which PsqlTable escapes as psql does) comes from the agent,
// the server or the log itself, so it passes through escapeText or EscapeLine on its way out: a
// replay must show an auditor what was sent, not let it move the cursor, rewrite earlier lines or
// retitle the terminal, nor start a line that reads as an event of its own.
func renderEvent(ev Event, loc *time.Location) string {
	var b strings.Builder
	stamp := ev.Time.In(loc).Format("2006-01-02 15:04:05.000")
	line := func(tag, format string, args ...any) {
		fmt.Fprintf(&b, "%s  %-8s %s\n", stamp, EscapeLine(tag), escapeText(fmt.Sprintf(format, args...)))
	}
	// detail lines belong to the event above them; their values are short, so a newline in one is
	// shown as \n rather than starting a continuation.
	detail := func(format string, args ...any) {
		fmt.Fprintf(&b, "%27s %s\n", "", EscapeLine(fmt.Sprintf(format, args...)))
	}
	switch ev.Type {
	case TypeSessionStart:
		s := ev.Start
		who := s.Identity.Email
		if who == "" {
			who = s.Identity.Subject
		}
		line("START", "session %s: %s (%s) on %s", ev.Session, who, strings.Join(s.Identity.Groups, ","), describeTarget(s))
		proc := fmt.Sprintf("process %s pid %d uid %d exe %s", s.Process.Comm, s.Process.PID, s.Process.UID, s.Process.Exe)
		if len(s.Process.Cmdline) > 0 {
			proc += fmt.Sprintf(" cmdline %q", strings.Join(s.Process.Cmdline, " "))
		}
		detail("%s", proc)
		if s.CgroupPath != "" || s.Origin != "" {
			detail("cgroup %s origin %s subject %s provider %s", s.CgroupPath, s.Origin, s.Identity.Subject, s.Identity.Provider)
		}
		if len(s.ClientParams) > 0 {
			keys := slices.Sorted(maps.Keys(s.ClientParams))
			ps := make([]string, len(keys))
			for i, k := range keys {
				ps[i] = k + "=" + quoteParam(s.ClientParams[k])
			}
			detail("client %s", strings.Join(ps, " "))
		}
	case TypeStatement:
		s := ev.Statement
		tag := strings.ToUpper(s.Verdict)
		switch s.Verdict {
		case VerdictApprove:
			tag = "HELD"
		case VerdictAllow:
			tag = "ALLOW"
		case VerdictBlock:
			tag = "BLOCKED"
		}
		var meta []string
		if s.Class != "" {
			meta = append(meta, s.Class)
		}
		if s.Rule != "" {
			meta = append(meta, "rule "+s.Rule)
		}
		if s.ApprovalID != "" {
			meta = append(meta, "approval "+s.ApprovalID)
		}
		if s.ID != 0 {
			meta = append(meta, fmt.Sprintf("#%d", s.ID))
		}
		m := ""
		if len(meta) > 0 {
			m = "[" + strings.Join(meta, ", ") + "] "
		}
		line(tag, "%s%s", m, s.Text)
		if s.Protocol == "http" && len(s.Params) == 1 && s.Params[0] != nil {
			line("BODY", "%s", *s.Params[0])
		} else if len(s.Params) > 0 {
			ps := make([]string, len(s.Params))
			for i, p := range s.Params {
				if p == nil {
					ps[i] = fmt.Sprintf("$%d=NULL", i+1)
				} else {
					ps[i] = fmt.Sprintf("$%d=%s", i+1, quoteParam(*p))
				}
			}
			detail("params %s", strings.Join(ps, " "))
		}
		if r := s.Result; r != nil {
			// Stamped when it completed, as a result record would be.
			stamp = ev.Time.Add(time.Duration(r.DurationUS) * time.Microsecond).In(loc).Format("2006-01-02 15:04:05.000")
			renderResult(r, line, &b)
		}
	case TypeResult:
		renderResult(ev.Result, line, &b)
	case TypeNotice:
		n := ev.Notice
		sev := n.Severity
		if sev == "" {
			sev = "NOTICE"
		}
		line(sev, "%s%s", n.Message, codeSuffix(n.Code))
	case TypeApproval:
		a := ev.Approval
		switch a.State {
		case ApprovalRequested:
			line("APPROVAL", "%s requested; approvers: %s", a.ID, strings.Join(a.Approvers, ", "))
		default:
			by := ""
			if a.By != "" {
				by = " by " + a.By
			}
			reason := ""
			if a.Reason != "" {
				reason = ": " + a.Reason
			}
			line("APPROVAL", "%s %s%s%s", a.ID, a.State, by, reason)
		}
	case TypeSessionEnd:
		e := ev.End
		line("END", "%s after %s, %s from client, %s to client", orDash(e.Reason), time.Duration(e.DurationUS)*time.Microsecond, humanBytes(e.BytesIn), humanBytes(e.BytesOut))
	default:
		line(strings.ToUpper(string(ev.Type)), "")
	}
	return b.String()
}

func describeTarget(s *SessionStart) string {
	t := s.Target.Name
	if s.Target.Database != "" {
		t += " database " + s.Target.Database
	}
	if s.Target.User != "" {
		t += " as " + s.Target.User
	}
	return fmt.Sprintf("%s (%s, %s)", t, s.Protocol, s.Target.Address)
}

// continuation starts every further line of a multi-line value in the timeline (a statement
// written over several lines, say): indented past the time and the tag, so that only events
// start at the left margin, and marked, so that text such as "\n2026-11-27 14:00:00.000  ALLOW"
// inside a statement reads as part of it rather than as an event of its own.
var continuation = strings.Repeat(" ", 34) + "| "

// escapeText makes a value from the agent, the server or the log safe to print in the timeline:
// newlines continue the value on lines that start with continuation, tabs stay, and everything
// else a terminal acts on is shown escaped (see escapeControls).
func escapeText(s string) string {
	return escapeControls(s, true)
}

// EscapeLine is escapeText for a value that must stay on one line: a newline shows as \n and a
// tab as \t. Every command that prints what an agent or a server sent uses it (the approvals
// and status listings too), so that no such text can move the cursor or rewrite the screen.
func EscapeLine(s string) string {
	return escapeControls(s, false)
}

// escapeControls shows as text every byte of s that a terminal would act on rather than print,
// as PsqlTable does for table cells: a carriage return as \r, other C0 controls and DEL as \xNN,
// C1 controls (U+0080–U+009F, which terminals take as CSI, OSC and the like) as \u00NN, and a
// byte that is not valid UTF-8 as \xNN (a lone 0x9B is CSI to an 8-bit terminal). With
// multiline, \n continues the value on a new line and \t stays; otherwise they show as \n and \t.
// Bidirectional controls (U+202A–U+202E, U+2066–U+2069, the LRM, RLM and ALM marks) show as
// \uNNNN too: a terminal that reorders text by them would show a statement other than the one
// the agent ran ("Trojan Source": DROP TABLE hidden behind a comment that reads as the code).
func escapeControls(s string, multiline bool) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02X`, s[i])
		case r == '\n' && multiline:
			b.WriteString("\n" + continuation)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t' && multiline:
			b.WriteByte('\t')
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02X`, r)
		case 0x80 <= r && r < 0xa0, isBidiControl(r):
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isBidiControl reports whether r is one of Unicode's explicit bidirectional formatting
// characters (UAX #9): embeddings, overrides, isolates and the implicit direction marks.
func isBidiControl(r rune) bool {
	return 0x202a <= r && r <= 0x202e || 0x2066 <= r && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

func quoteParam(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func codeSuffix(code string) string {
	if code == "" {
		return ""
	}
	return " (SQLSTATE " + code + ")"
}

func durationSuffix(us int64) string {
	if us <= 0 {
		return ""
	}
	return fmt.Sprintf("  (%.3f ms)", float64(us)/1000)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}

// rightAligned holds the type OIDs psql right-aligns (int2, int4, int8, oid, xid, cid, float4,
// float8, money, numeric, xid8), as in psql's column_type_alignment.
var rightAligned = map[uint32]bool{20: true, 21: true, 23: true, 26: true, 28: true, 29: true, 700: true, 701: true, 790: true, 1700: true, 5069: true}

// PsqlTable renders columns and rows byte for byte the way psql's aligned format does (checked
// against psql 15 in TestPsqlTableMatchesPsql): a centred header, a rule with '+' at the column
// separators, numeric types (by type OID, as psql decides) right-aligned and the rest left-aligned
// with no padding after the last column, multi-line values over several lines with '+' marks,
// tabs expanded, control characters escaped, wide characters counted as two cells, NULL as
// empty, and "(N rows)" with the total row count, noting when fewer rows were recorded. Without
// types (len(types) != len(columns)) a column is right-aligned when every value in it is a number.
func PsqlTable(columns []string, types []uint32, rows [][]*string, total int64) string {
	ncol := len(columns)
	widths := make([]int, ncol)
	numeric := make([]bool, ncol)
	byType := len(types) == ncol
	header := make([]psqlCell, ncol)
	for i, c := range columns {
		header[i] = formatPsqlCell(c)
		widths[i] = header[i].width()
		if byType {
			numeric[i] = rightAligned[types[i]]
		} else {
			numeric[i] = len(rows) > 0
		}
	}
	body := make([][]psqlCell, len(rows))
	for r, row := range rows {
		body[r] = make([]psqlCell, ncol)
		for i := range columns {
			var v *string
			if i < len(row) {
				v = row[i]
			}
			if v == nil {
				body[r][i] = psqlCell{lines: []string{""}, widths: []int{0}}
				continue
			}
			body[r][i] = formatPsqlCell(*v)
			widths[i] = max(widths[i], body[r][i].width())
			if !byType {
				if _, err := strconv.ParseFloat(*v, 64); err != nil {
					numeric[i] = false
				}
			}
		}
	}

	var b strings.Builder
	pad := func(n int) {
		for ; n > 0; n-- {
			b.WriteByte(' ')
		}
	}
	// Header: every line of every name centred in the full width; '+' marks a name continuing.
	hlines := 0
	for _, h := range header {
		hlines = max(hlines, len(h.lines))
	}
	for k := 0; k < hlines; k++ {
		for i, h := range header {
			if i > 0 {
				b.WriteByte('|')
			}
			b.WriteByte(' ')
			if k < len(h.lines) {
				gap := widths[i] - h.widths[k]
				pad(gap / 2)
				b.WriteString(h.lines[k])
				pad(gap - gap/2)
			} else {
				pad(widths[i])
			}
			if k < len(h.lines)-1 {
				b.WriteByte('+')
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteByte('\n')
	}
	for i := range columns {
		if i > 0 {
			b.WriteByte('+')
		}
		b.WriteString(strings.Repeat("-", widths[i]+2))
	}
	b.WriteByte('\n')
	// Rows: a cell with several lines spans several output lines; '+' after a line says the
	// cell continues. The last column is not padded unless a mark follows it.
	for _, row := range body {
		n := 0
		for _, c := range row {
			n = max(n, len(c.lines))
		}
		for k := 0; k < n; k++ {
			for i, c := range row {
				last := i == ncol-1
				b.WriteByte(' ')
				more := k < len(c.lines)-1
				if k < len(c.lines) {
					gap := widths[i] - c.widths[k]
					if numeric[i] {
						pad(gap)
						b.WriteString(c.lines[k])
					} else {
						b.WriteString(c.lines[k])
						if !last || more {
							pad(gap)
						}
					}
				} else if !last {
					pad(widths[i])
				}
				switch {
				case more:
					b.WriteByte('+')
				case !last:
					b.WriteByte(' ')
				}
				if !last {
					b.WriteByte('|')
				}
			}
			b.WriteByte('\n')
		}
	}
	noun := "rows"
	if total == 1 {
		noun = "row"
	}
	if int64(len(rows)) < total {
		fmt.Fprintf(&b, "(%d %s, %d recorded)\n", total, noun, len(rows))
	} else {
		fmt.Fprintf(&b, "(%d %s)\n", total, noun)
	}
	return b.String()
}

// psqlCell is a value as psql prints it: its lines and their display widths.
type psqlCell struct {
	lines  []string
	widths []int
}

func (c psqlCell) width() int {
	w := 0
	for _, x := range c.widths {
		w = max(w, x)
	}
	return w
}

// formatPsqlCell formats a value like psql's pg_wcsformat: a newline starts a new line, a tab
// becomes spaces up to the next multiple of 8, a carriage return shows as \r and other control
// characters as \xNN; wide (East Asian) characters count two cells and combining marks none.
// Unlike psql, it shows bidirectional controls as \uNNNN (see escapeControls).
func formatPsqlCell(s string) psqlCell {
	var c psqlCell
	var line strings.Builder
	w := 0
	for _, r := range s {
		switch {
		case r == '\n':
			c.lines = append(c.lines, line.String())
			c.widths = append(c.widths, w)
			line.Reset()
			w = 0
		case r == '\t':
			for {
				line.WriteByte(' ')
				w++
				if w%8 == 0 {
					break
				}
			}
		case r == '\r':
			line.WriteString(`\r`)
			w += 2
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&line, `\x%02X`, r)
			w += 4
		case 0x80 <= r && r < 0xa0:
			fmt.Fprintf(&line, `\x%02X`, string(r)[0]) // psql prints the first byte
			w += 4
		case isBidiControl(r):
			// psql prints these as they are; a terminal would reorder the text around them.
			fmt.Fprintf(&line, `\u%04X`, r)
			w += 6
		default:
			line.WriteRune(r)
			w += runeWidth(r)
		}
	}
	c.lines = append(c.lines, line.String())
	c.widths = append(c.widths, w)
	return c
}

func runeWidth(r rune) int {
	if unicode.In(r, unicode.Mn, unicode.Me) || r == 0x200b {
		return 0
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

// ReplayJSON is one event of `enforcer replay --json`: the record's envelope with its payload
// decoded in place.
type ReplayJSON struct {
	Seq     uint64          `json:"seq"`
	Time    string          `json:"time"`
	Type    Type            `json:"type"`
	Session string          `json:"session"`
	Data    json.RawMessage `json:"data"`
	Hash    string          `json:"hash"`
}

func replayJSON(r Record) ReplayJSON {
	return ReplayJSON{Seq: r.Seq, Time: r.Time, Type: r.Type, Session: r.Session, Data: r.Data, Hash: r.Hash}
}

// RenderReplayJSON writes a session's records as a JSON array for `enforcer replay --json`.
func RenderReplayJSON(w io.Writer, recs []Record) error {
	out := make([]ReplayJSON, len(recs))
	for i, r := range recs {
		out[i] = replayJSON(r)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(EscapeJSONControls(append(b, '\n')))
	return err
}

// RenderRecordJSON writes one record as a line of JSON (an element of RenderReplayJSON's array),
// for `enforcer replay --follow --json`, which prints records as FollowSession delivers them.
func RenderRecordJSON(w io.Writer, rec Record) error {
	b, err := json.Marshal(replayJSON(rec))
	if err != nil {
		return err
	}
	_, err = w.Write(EscapeJSONControls(append(b, '\n')))
	return err
}

// EscapeJSONControls escapes in JSON text the characters encoding/json writes raw that a
// terminal would act on: DEL, the C1 controls (U+0080–U+009F, CSI and OSC among them) and the
// bidirectional controls (see isBidiControl), and replaces bytes that are not UTF-8 with U+FFFD,
// as encoding/json does in strings it encodes. JSON output of the CLI is often read on a
// terminal, and outside strings none of these can occur in valid JSON, so the escapes change no
// value.
func EscapeJSONControls(b []byte) []byte {
	clean := true
	for _, c := range b {
		if c >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, `\ufffd`...)
		case r == 0x7f || 0x80 <= r && r < 0xa0 || isBidiControl(r):
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

// ExportJSONL writes records exactly as stored, one per line, so a SIEM (or Verify on a copy of a
// whole log) can re-check their hashes.
func ExportJSONL(w io.Writer, recs []Record) error {
	for _, r := range recs {
		b, err := r.line()
		if err != nil {
			return err
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// line re-creates the stored line of a record that was read from the log.
func (r *Record) line() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return canonicalize(b)
}

// AsciicastOptions shape the asciicast export.
type AsciicastOptions struct {
	Width, Height int           // terminal size, default 120x40
	MaxPause      time.Duration // idle gaps are shortened to this, default 2s
}

// ExportAsciicast writes a session as an asciicast v2 recording (header line, then [time, "o",
// text] events) that asciinema and compatible players play: the replay timeline, each event at
// the time it happened relative to the session start.
func ExportAsciicast(w io.Writer, recs []Record, opts AsciicastOptions) error {
	if opts.Width <= 0 {
		opts.Width = 120
	}
	if opts.Height <= 0 {
		opts.Height = 40
	}
	if opts.MaxPause <= 0 {
		opts.MaxPause = 2 * time.Second
	}
	if len(recs) == 0 {
		return fmt.Errorf("asciicast: no records")
	}
	first, err := recs[0].Event()
	if err != nil {
		return err
	}
	header := map[string]any{
		"version": 2, "width": opts.Width, "height": opts.Height, "timestamp": first.Time.Unix(),
		"title": "enforcer session " + EscapeLine(first.Session),
		"env":   map[string]string{"TERM": "xterm-256color", "SHELL": "/bin/sh"},
	}
	enc := json.NewEncoder(w)
	if err := enc.Encode(header); err != nil {
		return err
	}
	var clock float64
	prev := first.Time
	for _, rec := range recs {
		ev, err := rec.Event()
		if err != nil {
			return err
		}
		gap := ev.Time.Sub(prev)
		if gap < 0 {
			gap = 0
		}
		if gap > opts.MaxPause {
			gap = opts.MaxPause
		}
		clock += gap.Seconds()
		prev = ev.Time
		// renderEvent escapes every control character but \n and \t, so a player's terminal gets
		// nothing from the session it could act on.
		text := strings.ReplaceAll(renderEvent(ev, time.UTC), "\n", "\r\n")
		ts, _ := strconv.ParseFloat(strconv.FormatFloat(clock, 'f', 6, 64), 64)
		if err := enc.Encode([]any{ts, "o", text}); err != nil {
			return err
		}
	}
	return nil
}

// RenderSessions writes `enforcer sessions` as an aligned table.
func RenderSessions(w io.Writer, ss []SessionSummary, loc *time.Location) error {
	if loc == nil {
		loc = time.UTC
	}
	cols := []string{"session", "started", "duration", "user", "target", "process", "stmts", "blocked", "held", "status"}
	rows := make([][]*string, len(ss))
	for i, s := range ss {
		user := s.Email
		if user == "" {
			user = s.Subject
		}
		dur, status := "", "live"
		if !s.Open {
			dur = s.End.Sub(s.Start).Round(time.Millisecond).String()
			status = orDash(s.EndReason)
		}
		proc := s.Process
		if s.PID != 0 {
			proc = fmt.Sprintf("%s[%d]", s.Process, s.PID)
		}
		vals := []string{s.ID, s.Start.In(loc).Format("2006-01-02 15:04:05"), dur, user, s.Target, proc,
			strconv.Itoa(s.Statements), strconv.Itoa(s.Blocked), strconv.Itoa(s.Held), status}
		rows[i] = make([]*string, len(vals))
		for j := range vals {
			// One line per session: the agent names its process, and a newline in the name
			// would draw a row of its own.
			vals[j] = EscapeLine(vals[j])
			rows[i][j] = &vals[j]
		}
	}
	_, err := io.WriteString(w, PsqlTable(cols, nil, rows, int64(len(rows))))
	return err
}

// RenderVerify writes a verification report for `enforcer record verify`. Reasons and problems
// may quote a tampered log, so each line is escaped as the replay's are.
func RenderVerify(w io.Writer, rep *Report) error {
	var b strings.Builder
	out := func(format string, args ...any) {
		b.WriteString(EscapeLine(fmt.Sprintf(format, args...)))
		b.WriteByte('\n')
	}
	out("log %s: %d segments, %d records (seq %d..%d), %d signed checkpoints", rep.Dir, rep.Segments, rep.Records, rep.FirstSeq, rep.LastSeq, rep.Checkpoints)
	for _, r := range rep.Retentions {
		out("retention removed segments %d..%d (%s); chain anchored at seq %d", r.RemovedFrom, r.RemovedTo, humanBytes(r.RemovedBytes), r.AnchorSeq)
	}
	for _, br := range rep.Breaks {
		out("WARNING: chain break accepted at start: %s", br.Reason)
	}
	for _, n := range rep.Notes {
		out("note: %s", n)
	}
	if c := rep.Checkpoint; c != nil && c.Matched {
		out("exported checkpoint seq %d matches", c.Seq)
	}
	if rep.Problem == nil && rep.LastSeq > rep.SignedThrough {
		out("note: the last %d records (after seq %d) are held by the hash chain alone, not yet by a signed checkpoint: compare them with a copy made off the host (the fleet sink) before trusting them", rep.LastSeq-rep.SignedThrough, rep.SignedThrough)
	}
	if rep.Problem != nil {
		out("FAILED: %s", rep.Problem.Error())
	} else {
		out("OK: head seq %d hash %s", rep.LastSeq, rep.LastHash)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ExportLog streams every record of the log in dir with seq ≥ from, exactly as stored, one per
// line (`enforcer record export --format jsonl` of a whole log, without loading it into memory).
func ExportLog(w io.Writer, dir string, from uint64) error {
	return scan(dir, func(rec Record, line []byte) error {
		if rec.Seq < from {
			return nil
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		_, err := w.Write([]byte{'\n'})
		return err
	})
}
