package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// bindHook keeps a copy of every Execute it is asked about, with the Statement's address, and
// checks each result against the Execute it belongs to.
type bindHook struct {
	PassThrough
	mu       sync.Mutex
	executes []*Statement
	seen     []Statement
	results  map[*Statement]int
}

func (h *bindHook) Statement(_ context.Context, s *Statement) Verdict {
	if s.Kind != KindExecute {
		return Verdict{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := *s
	c.Params = make([][]byte, len(s.Params))
	for i, p := range s.Params {
		if p != nil {
			c.Params[i] = slices.Clone(p)
		}
	}
	h.executes = append(h.executes, s)
	h.seen = append(h.seen, c)
	return Verdict{Observe: true}
}

func (h *bindHook) Result(_ context.Context, r *Result) error {
	if r.Kind == ResultRow {
		h.mu.Lock()
		h.results[r.Statement]++
		h.mu.Unlock()
	}
	return nil
}

// TestBindStorage: a Bind's parameters, formats and description are kept with the portal, inside
// its own allocation when they are small and outside it when not; either way the hook sees exactly
// what the client sent and the server gets it unchanged (it echoes every parameter back).
func TestBindStorage(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name    string
		params  []*string
		formats []int16
	}{
		{"none", nil, nil},
		{"one", []*string{ptr("48213")}, nil},
		{"four fill the portal", []*string{ptr("a"), ptr("b"), nil, ptr("d")}, []int16{0, 0, 0, 0}},
		{"five do not", []*string{ptr("a"), ptr("b"), ptr("c"), ptr("d"), ptr("e")}, []int16{0, 0, 0, 0, 0}},
		{"64 bytes fill the arena", []*string{ptr(long(60)), ptr("1234")}, []int16{0}},
		{"65 bytes do not", []*string{ptr(long(60)), ptr("12345")}, []int16{0}},
		{"one large", []*string{ptr(long(100_000))}, nil},
		{"all null", []*string{nil, nil, nil, nil, nil, nil}, nil},
		{"empty strings", []*string{ptr(""), ptr("")}, nil},
	}
	h := &bindHook{results: map[*Statement]int{}}
	_, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cols := make([]string, len(tc.params))
			params := make([][]byte, len(tc.params))
			for i, p := range tc.params {
				cols[i] = fmt.Sprintf("$%d::text", i+1)
				if p != nil {
					params[i] = []byte(*p)
				}
			}
			sql := "SELECT " + strings.Join(append(cols, "'end'"), ", ")
			// More result columns than the portal's inline format room, too.
			resultFormats := make([]int16, len(cols)+1)
			res := c.ExecParams(ctx, sql, params, nil, tc.formats, resultFormats).Read()
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if len(res.Rows) != 1 {
				t.Fatalf("%d rows", len(res.Rows))
			}
			for i, p := range params {
				if got := res.Rows[0][i]; (got == nil) != (p == nil) || string(got) != string(p) {
					t.Fatalf("column %d: got %q, sent %q", i, got, p)
				}
			}
			h.mu.Lock()
			seen := h.seen[len(h.seen)-1]
			st := h.executes[len(h.executes)-1]
			rows := h.results[st]
			h.mu.Unlock()
			if len(seen.Params) != len(params) {
				t.Fatalf("hook saw %d parameters, sent %d", len(seen.Params), len(params))
			}
			for i, p := range params {
				if (seen.Params[i] == nil) != (p == nil) || string(seen.Params[i]) != string(p) {
					t.Fatalf("hook saw parameter %d as %q, sent %q", i, seen.Params[i], p)
				}
			}
			if !slices.Equal(seen.ParamFormats, tc.formats) || !slices.Equal(seen.ResultFormats, resultFormats) {
				t.Fatalf("hook saw formats %v / %v, sent %v / %v", seen.ParamFormats, seen.ResultFormats, tc.formats, resultFormats)
			}
			if seen.SQL != sql || !seen.Known {
				t.Fatalf("hook saw %q known=%v", seen.SQL, seen.Known)
			}
			if rows != 1 {
				t.Fatalf("the hook saw %d rows for this Execute", rows)
			}
		})
	}
}

// TestSuspendedPortal: a portal executed in steps (Execute with a row limit, PortalSuspended,
// Execute again) gives the hook a distinct Statement for each Execute, and each step's rows are
// reported with the Execute that asked for them.
func TestSuspendedPortal(t *testing.T) {
	h := &bindHook{results: map[*Statement]int{}}
	p := startProxy(t, Config{}, func() Session { s := defaultSession(); s.Hook = h; return s }())
	_, fe := rawStartup(t, p.addr, nil)
	fe.Send(&pgproto3.Parse{Query: "SELECT g FROM generate_series(1, 5) g"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Describe{ObjectType: 'P'})
	fe.Send(&pgproto3.Execute{MaxRows: 2})
	fe.Send(&pgproto3.Execute{MaxRows: 2})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			got = append(got, string(m.Values[0]))
		case *pgproto3.PortalSuspended:
			got = append(got, "suspended")
		case *pgproto3.CommandComplete:
			got = append(got, string(m.CommandTag))
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s %s", m.Code, m.Message)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	if want := "1 2 suspended 3 4 suspended 5 SELECT 1"; strings.Join(got, " ") != want {
		t.Fatalf("client got %q, want %q", strings.Join(got, " "), want)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.executes) != 3 {
		t.Fatalf("hook saw %d executes", len(h.executes))
	}
	for i, st := range h.executes {
		for _, other := range h.executes[:i] {
			if st == other {
				t.Fatalf("execute %d reused an earlier Statement", i)
			}
		}
		if want := []int{2, 2, 1}[i]; h.results[st] != want {
			t.Fatalf("execute %d: hook saw %d rows with it, want %d", i, h.results[st], want)
		}
	}
}

func ptr(s string) *string { return &s }

// descHook notes, for every row, the column names and formats the hook was given with it.
type descHook struct {
	PassThrough
	mu   sync.Mutex
	rows []string
}

func (h *descHook) Statement(context.Context, *Statement) Verdict { return Verdict{Observe: true} }

func (h *descHook) Result(_ context.Context, r *Result) error {
	if r.Kind != ResultRow {
		return nil
	}
	var b strings.Builder
	for i, f := range r.Columns.Fields {
		fmt.Fprintf(&b, "%s/%d/%d ", f.Name, f.DataTypeOID, r.Formats[i])
	}
	h.mu.Lock()
	h.rows = append(h.rows, strings.TrimSpace(b.String()))
	h.mu.Unlock()
	return nil
}

// TestDescriptionReuse: the proxy reuses its decoding of a row description while the next one is
// the same, and never hands a hook a stale one: other columns, the same columns in other formats,
// and a description seen before, in both protocols.
func TestDescriptionReuse(t *testing.T) {
	h := &descHook{}
	p, c := hookProxy(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Prepared statements described once (Describe of the statement, which says text for every
	// column) and then bound and executed without a description, as pgx's cached statements are:
	// the Bind's formats decide. pgconn always describes the portal, so this client is raw.
	_, fe := rawStartup(t, p.addr, nil)
	roundTrip := func(msgs ...pgproto3.FrontendMessage) {
		t.Helper()
		for _, m := range msgs {
			fe.Send(m)
		}
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("%s %s", e.Code, e.Message)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				return
			}
		}
	}
	for _, name := range []string{"p1", "p2"} {
		roundTrip(&pgproto3.Parse{Name: name, Query: "SELECT 1 AS a, 'y'::text AS b"}, &pgproto3.Describe{ObjectType: 'S', Name: name})
	}
	steps := []struct {
		simple   string
		ext      string
		prepared string
		formats  []int16
		want     string
	}{
		{simple: "SELECT 1 AS a", want: "a/23/0"},
		{simple: "SELECT 1 AS a", want: "a/23/0"},
		{simple: "SELECT 'x'::text AS b", want: "b/25/0"},
		{ext: "SELECT 1 AS a", formats: []int16{1}, want: "a/23/1"},
		{ext: "SELECT 1 AS a", formats: []int16{0}, want: "a/23/0"},
		{ext: "SELECT 1 AS a", formats: nil, want: "a/23/0"},
		{ext: "SELECT 1 AS a", formats: []int16{1}, want: "a/23/1"},
		{ext: "SELECT 1 AS a, 'y'::text AS b", formats: []int16{1, 0}, want: "a/23/1 b/25/0"},
		{ext: "SELECT 1 AS a, 'y'::text AS b", formats: []int16{0, 1}, want: "a/23/0 b/25/1"},
		{prepared: "p1", formats: []int16{1, 0}, want: "a/23/1 b/25/0"},
		{prepared: "p1", formats: []int16{1, 0}, want: "a/23/1 b/25/0"},
		{prepared: "p1", formats: []int16{0, 1}, want: "a/23/0 b/25/1"},
		{prepared: "p2", formats: []int16{1}, want: "a/23/1 b/25/1"},
		{prepared: "p2", formats: nil, want: "a/23/0 b/25/0"},
		{prepared: "p1", formats: []int16{1}, want: "a/23/1 b/25/1"},
		{simple: "SELECT 1 AS a", want: "a/23/0"},
	}
	for i, s := range steps {
		if s.prepared != "" {
			roundTrip(&pgproto3.Bind{PreparedStatement: s.prepared, ResultFormatCodes: s.formats}, &pgproto3.Execute{})
		} else if s.simple != "" {
			if _, err := c.Exec(ctx, s.simple).ReadAll(); err != nil {
				t.Fatal(err)
			}
		} else if r := c.ExecParams(ctx, s.ext, nil, nil, nil, s.formats).Read(); r.Err != nil {
			t.Fatal(r.Err)
		}
		h.mu.Lock()
		got := h.rows[len(h.rows)-1]
		h.mu.Unlock()
		if got != s.want {
			t.Fatalf("step %d: hook saw %q, want %q", i, got, s.want)
		}
	}
}
