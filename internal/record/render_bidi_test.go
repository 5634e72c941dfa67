package record

import (
	"strings"
	"testing"
	"time"
)

// TestReplayEscapesBidiControls: a statement with bidirectional overrides (which a terminal
// would use to show other text than what ran) is replayed with them escaped.
func TestReplayEscapesBidiControls(t *testing.T) {
	text := "DELETE FROM users /*\u202e } \u2066 SELECT 1 \u2069 { \u202c*/ \u200f\u061c"
	ev := Event{Type: TypeStatement, Session: "s", Time: time.Unix(0, 0), Statement: &Statement{Text: text, Verdict: VerdictAllow}}
	out := renderEvent(ev, time.UTC)
	for _, r := range []rune{0x202e, 0x2066, 0x2069, 0x202c, 0x200f, 0x061c} {
		if strings.ContainsRune(out, r) {
			t.Errorf("replay passes U+%04X through: %q", r, out)
		}
	}
	if !strings.Contains(out, `/*\u202E } \u2066 SELECT 1 \u2069 { \u202C*/ \u200F\u061C`) {
		t.Errorf("replay = %q", out)
	}
	if got := EscapeLine("\u202ename"); got != `\u202Ename` {
		t.Errorf("EscapeLine = %q", got)
	}
}
