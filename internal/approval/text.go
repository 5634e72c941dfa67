package approval

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// NoticeText is the message for the client's NoticeResponse: the request id, the rule and who may
// approve, so the person (or agent) behind the client knows whom to ask.
func NoticeText(r *Request) string {
	return fmt.Sprintf("approval required: request %s (rule %s) waits up to %s for %s from group %s; a reviewer runs `enforcer approve %s`",
		r.ID, r.Rule, r.Timeout.Round(time.Millisecond), approvalsWord(r.Quorum), strings.Join(r.Approvers, " or "), r.ID)
}

func approvalsWord(n int) string {
	if n <= 1 {
		return "1 approval"
	}
	return fmt.Sprintf("%d approvals", n)
}

// Message is the text of the ErrorResponse a client gets when its statement is not forwarded.
func (o Outcome) Message() string {
	id := o.ID()
	switch o.State {
	case StateApproved:
		return fmt.Sprintf("approved (request %s)", id)
	case StateDenied:
		who, why := "a reviewer", ""
		if o.Request != nil {
			for _, d := range o.Request.Decisions {
				if d.Verdict == Deny {
					who, why = d.Reviewer.Subject, d.Reason
				}
			}
		}
		return fmt.Sprintf("statement denied by %s (request %s): %s", who, id, why)
	case StateExpired:
		return fmt.Sprintf("approval request %s timed out", id)
	case StateWithdrawn:
		return fmt.Sprintf("approval request %s withdrawn", id)
	}
	if o.Request != nil && o.Request.Reason != "" {
		return fmt.Sprintf("approval request %s failed: %s", id, o.Request.Reason)
	}
	return fmt.Sprintf("approval request %s failed", id)
}

// Hint is the HINT of that ErrorResponse.
func (o Outcome) Hint() string {
	id := o.ID()
	switch o.State {
	case StateExpired:
		return fmt.Sprintf("ask a reviewer to run `enforcer approve %s`, then retry the identical statement once", id)
	case StateDenied:
		return fmt.Sprintf("see `enforcer approvals %s`", id)
	}
	return ""
}

// Summary is a one-line, Slack-compatible description of an event for webhooks.
func Summary(ev Event) string {
	r := ev.Request
	if r == nil {
		if ev.Grant != nil {
			return fmt.Sprintf("grant for %s used by %s", ev.Grant.RequestID, slackInline(ev.Grant.Subject))
		}
		return string(ev.Type)
	}
	who := r.Identity.Subject
	if r.Identity.Email != "" {
		who = r.Identity.Email
	}
	who = slackInline(who)
	switch ev.Type {
	case EventCreated:
		proc := ""
		if r.Process.Comm != "" {
			proc = fmt.Sprintf(" via %s (pid %d)", slackInline(r.Process.Comm), r.Process.PID)
		}
		where := fmt.Sprintf("run on %s/%s as %s", slackInline(r.Target), slackInline(r.Database), slackInline(r.DBUser))
		if r.IsHTTP() {
			where = "send to " + slackInline(r.Target)
			if r.DBUser != "" {
				where += " as " + slackInline(r.DBUser)
			}
		}
		return fmt.Sprintf("*Approval needed* `%s`: %s%s wants to %s:\n```%s```\n%srule %s, %s from %s; `enforcer approve %s` or `enforcer deny %s --reason …`",
			r.ID, who, proc, where, slackCode(r.SQL), CutNote(r),
			slackInline(r.Rule), approvalsWord(r.Quorum), slackInline(strings.Join(r.Approvers, " or ")), r.ID, r.ID)
	case EventDecided:
		if ev.Decision == nil {
			return fmt.Sprintf("`%s` is now %s", r.ID, r.State)
		}
		d := ev.Decision
		verb := "approved"
		if d.Verdict == Deny {
			verb = "denied"
		}
		s := fmt.Sprintf("`%s` %s by %s (%d/%d approvals, now %s)", r.ID, verb, slackInline(d.Reviewer.Subject), r.Approvals(), r.Quorum, r.State)
		if d.Reason != "" {
			s += ": " + slackInline(d.Reason)
		}
		return s
	case EventGranted:
		what := "statement"
		if r.IsHTTP() {
			what = "request"
		}
		return fmt.Sprintf("`%s` approved after it expired: %s may retry the identical %s once until %s", r.ID, who, what, r.GrantExpires.UTC().Format(time.RFC3339))
	case EventExpired:
		return fmt.Sprintf("`%s` from %s expired after %s without a decision", r.ID, who, r.Timeout.Round(time.Millisecond))
	}
	return fmt.Sprintf("`%s` %s", r.ID, ev.Type)
}

// CutNote tells reviewers that what they are shown of r is not all of it, or is "": a line ending
// in a newline.
func CutNote(r *Request) string {
	what, params := "statement", "some parameters are cut"
	if r.IsHTTP() {
		what, params = "request", "its body is cut"
	}
	var cut []string
	if r.SQLCut {
		cut = append(cut, fmt.Sprintf("its text is cut to %d bytes", len(r.SQL)))
	}
	if slices.ContainsFunc(r.Params, func(p DisplayParam) bool { return p.Cut }) {
		cut = append(cut, params)
	}
	if r.ParamsOmitted > 0 {
		cut = append(cut, fmt.Sprintf("%d parameters are left out", r.ParamsOmitted))
	}
	if len(cut) == 0 {
		return ""
	}
	covers := "an approval covers the whole " + what
	if r.Shrunk {
		covers = "it ended undecided and can no longer be approved"
	}
	return fmt.Sprintf("Shown in part (%s; each cut ends with the whole value's length and SHA-256); %s.\n",
		strings.Join(cut, ", "), covers)
}

// slackEscaper escapes the three characters Slack reads as markup (mentions such as <!channel>,
// links with a text of their choosing); Slack shows the escaped forms as the characters themselves.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// slackInline is text from the agent, the identity provider or a reviewer for a line of the
// summary: no Slack markup, and no line breaks or other control characters that could fake
// further lines of the message.
func slackInline(s string) string {
	return escapeBidi(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, slackEscaper.Replace(s)))
}

// escapeBidi shows Unicode's explicit bidirectional controls (embeddings, overrides, isolates
// and the direction marks) as \uNNNN, as replays do: Slack lays text out by them, so a comment
// holding them would show reviewers a statement other than the one they approve ("Trojan
// Source").
func escapeBidi(s string) string {
	if !strings.ContainsFunc(s, isBidiControl) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if isBidiControl(r) {
			fmt.Fprintf(&b, `\u%04X`, r)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isBidiControl reports whether r is one of Unicode's explicit bidirectional formatting
// characters (UAX #9).
func isBidiControl(r rune) bool {
	return 0x202a <= r && r <= 0x202e || 0x2066 <= r && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

// slackCode is the statement for the inside of a ``` code block. The agent chooses every byte of
// it (a comment holds anything), so no run of backticks may remain that could close the block
// early or merge with its fences: a space follows every backtick that another one follows, and
// one pads a backtick at either end.
func slackCode(s string) string {
	var b strings.Builder
	if strings.HasPrefix(s, "`") {
		b.WriteByte(' ')
	}
	for i := 0; i < len(s); i++ {
		b.WriteByte(s[i])
		if s[i] == '`' && i+1 < len(s) && s[i+1] == '`' {
			b.WriteByte(' ')
		}
	}
	if strings.HasSuffix(s, "`") {
		b.WriteByte(' ')
	}
	return escapeBidi(slackEscaper.Replace(b.String()))
}
