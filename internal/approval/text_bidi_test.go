package approval

import (
	"strings"
	"testing"
)

// The Slack text shows reviewers the statement that runs: Unicode's bidirectional controls from
// the agent ("Trojan Source": a comment that reorders the line so that the SQL reads as other
// SQL) and from other agent-controlled fields reach the message only as visible escapes.
func TestSummaryEscapesBidiControls(t *testing.T) {
	const rlo, lri, pdi = "\u202e", "\u2066", "\u2069"
	ev := testEvent(EventCreated)
	ev.Request.SQL = "UPDATE accounts SET plan = 'free' WHERE id = 1 /*" + rlo + " } " + lri + "OR true" + pdi + lri + " */\nAND 1=1"
	ev.Request.Process.Comm = "psql" + rlo
	ev.Request.Rule = "r" + "\u200f"
	s := Summary(ev)
	for _, r := range s {
		if 0x202a <= r && r <= 0x202e || 0x2066 <= r && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c {
			t.Fatalf("bidirectional control U+%04X reaches the Slack text: %q", r, s)
		}
	}
	if !strings.Contains(s, `\u202E`) || !strings.Contains(s, `\u2066`) {
		t.Errorf("the controls are not shown as escapes: %q", s)
	}
	if !strings.Contains(s, "\nAND 1=1") {
		t.Errorf("the statement's own line breaks are lost: %q", s)
	}
}
