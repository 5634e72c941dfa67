package record

import (
	"bytes"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"
)

// marshalCanonical is the reference the hand-written encoder must match byte for byte.
func marshalCanonical(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	c, err := canonicalize(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sp(s string) *string { return &s }

// awkward strings: every escape encoding/json knows, HTML characters, invalid UTF-8, separators.
var awkward = []string{
	"", "plain", `quote " and \ backslash`, "<script>&amp;</script>", "\x00\x01\x08\x0c\n\r\t\x1f\x7f",
	"caf\u00e9 \u65e5\u672c \U0001F600", "\u2028line\u2029para", "bad \xff\xfe utf8 \xe2\x82", "\ufffd raw", `\ufffd escaped`,
	"trailing \xc3",
}

func TestAppendPayloadMatchesEncodingJSON(t *testing.T) {
	var events []Event
	for _, s := range awkward {
		events = append(events,
			Event{Type: TypeStatement, Statement: &Statement{Text: s, Verdict: VerdictAllow}},
			Event{Type: TypeStatement, Statement: &Statement{ApprovalID: s, Class: "read,write", ID: 1<<64 - 1, Params: []*string{sp(s), nil, sp("")}, Protocol: "extended", Rule: s, Text: s, Verdict: s}},
			Event{Type: TypeResult, Result: &Result{Bytes: 12345, ContentType: s, ColumnTypes: []uint32{23, 4294967295}, Columns: []string{s, "b"}, CommandTag: s, DurationUS: -3, Error: s, ErrorCode: "42501", RowCount: 7, Rows: [][]*string{{sp(s), nil}, nil, {}}, Skipped: true, StatementID: 17, Suspended: true, Truncated: true}},
			Event{Type: TypeResult, Result: &Result{}},
			Event{Type: TypeResult, Result: &Result{Columns: []string{}, Rows: [][]*string{}, ColumnTypes: []uint32{}}},
			Event{Type: TypeNotice, Notice: &Notice{Message: s}},
			Event{Type: TypeNotice, Notice: &Notice{Code: s, Message: s, Severity: s}},
			Event{Type: TypeApproval, Approval: &Approval{ID: s, State: s}},
			Event{Type: TypeApproval, Approval: &Approval{Approvers: []string{s, "x"}, By: s, ID: "a", Reason: s, State: ApprovalDenied}},
			Event{Type: TypeSessionEnd, End: &SessionEnd{}},
			Event{Type: TypeSessionEnd, End: &SessionEnd{BytesIn: 1 << 62, BytesOut: -1, DurationUS: 5, Reason: s}},
			Event{Type: TypeStatement, Statement: &Statement{Params: []*string{}, Text: s}},
			Event{Type: TypeStatement, Statement: &Statement{Class: s, Text: s, Verdict: VerdictAllow, Result: &Result{Columns: []string{s}, CommandTag: s, RowCount: 1, Rows: [][]*string{{sp(s)}}}}},
			Event{Type: TypeStatement, Statement: &Statement{Text: s, Result: &Result{}}},
		)
	}
	for i, ev := range events {
		got, err := encodePayload(&ev)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		p, _ := ev.payload()
		if want := marshalCanonical(t, p); !bytes.Equal(got, want) {
			t.Errorf("event %d (%s):\n got %s\nwant %s", i, ev.Type, got, want)
		}
	}
}

func TestAppendPayloadRefusesBadEvents(t *testing.T) {
	for _, ev := range []Event{
		{Type: TypeStatement},
		{Type: TypeStatement, Result: &Result{}},
		{Type: TypeStatement, Statement: &Statement{}, Result: &Result{}},
	} {
		if _, err := encodePayload(&ev); err == nil {
			t.Errorf("%+v: encoded, want an error", ev)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range awkward {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendJSONString(nil, s)
		if want := marshalCanonical(t, s); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
		}
	})
}

func BenchmarkEncodeStatement(b *testing.B) {
	ev := Event{Type: TypeStatement, Statement: &Statement{Class: "read", Protocol: "simple", Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", Verdict: VerdictAllow}}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = appendPayload(buf[:0], &ev)
	}
}

func BenchmarkEncodeResult(b *testing.B) {
	ev := Event{Type: TypeResult, Result: &Result{ColumnTypes: []uint32{23}, Columns: []string{"abalance"}, CommandTag: "SELECT 1", DurationUS: 84, RowCount: 1, Rows: [][]*string{{sp("0")}}}}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = appendPayload(buf[:0], &ev)
	}
}

func TestAppendTimestamp(t *testing.T) {
	var shared atomic.Pointer[stampCache] // across seconds
	for _, tm := range []time.Time{
		time.Date(2026, 11, 27, 16, 32, 29, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 999, time.FixedZone("x", -7*3600)),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(0, 0),
		time.Unix(0, 999_999_999),
		time.Unix(1, 0),
		time.Unix(-1, 500),
		time.Now(),
	} {
		want := tm.UTC().Format(TimeFormat)
		if got := string(appendTimestamp(nil, tm)); got != want {
			t.Errorf("%v: got %s, want %s", tm, got, want)
		}
		var c atomic.Pointer[stampCache]
		for i := 0; i < 2; i++ { // a miss, then a hit
			if got := string(appendStamp(&c, nil, tm)); got != want {
				t.Errorf("%v (cached, try %d): got %s, want %s", tm, i, got, want)
			}
		}
		if got := string(appendStamp(&shared, nil, tm)); got != want {
			t.Errorf("%v (shared cache): got %s, want %s", tm, got, want)
		}
	}
}
