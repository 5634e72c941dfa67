package postgres

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// bindHook keeps a copy of every Execute it is asked about, with the Statement's ID, and counts
// each result against the Execute it belongs to.
type bindHook struct {
	PassThrough
	mu       sync.Mutex
	executes []uint64
	seen     []Statement
	results  map[uint64]int
}

func (h *bindHook) Statement(_ context.Context, s *Statement) Verdict {
	if s.Kind != KindExecute {
		return Verdict{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := *s
	c.ParamFormats, c.ResultFormats = slices.Clone(s.ParamFormats), slices.Clone(s.ResultFormats)
	c.Params = make([][]byte, len(s.Params))
	for i, p := range s.Params {
		if p != nil {
			c.Params[i] = slices.Clone(p)
		}
	}
	h.executes = append(h.executes, s.ID)
	h.seen = append(h.seen, c)
	return Verdict{Observe: true}
}

func (h *bindHook) Result(_ context.Context, r *Result) error {
	if r.Kind == ResultRow {
		h.mu.Lock()
		h.results[r.Statement.ID]++
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
	h := &bindHook{results: map[uint64]int{}}
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
	h := &bindHook{results: map[uint64]int{}}
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
				t.Fatalf("execute %d has the ID of an earlier one", i)
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

// ownerHook checks that every result reaches the hook with the Statement of the Execute it
// answers: the row's value is quoted in that statement's SQL, and the ID is the one the hook was
// asked about for that SQL.
type ownerHook struct {
	PassThrough
	mu     sync.Mutex
	ids    map[string]uint64
	rows   int
	errors []string
	bad    []string
}

func (h *ownerHook) Statement(_ context.Context, s *Statement) Verdict {
	if s.Kind == KindExecute {
		h.mu.Lock()
		h.ids[s.SQL] = s.ID
		h.mu.Unlock()
	}
	return Verdict{Observe: true}
}

func (h *ownerHook) Result(_ context.Context, r *Result) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case r.Kind != ResultRow && r.Kind != ResultError:
	case r.Statement == nil:
		h.bad = append(h.bad, fmt.Sprintf("a result of kind %d without its statement", r.Kind))
	case h.ids[r.Statement.SQL] != r.Statement.ID:
		h.bad = append(h.bad, fmt.Sprintf("%q has ID %d, the hook judged it as %d", r.Statement.SQL, r.Statement.ID, h.ids[r.Statement.SQL]))
	case r.Kind == ResultError:
		h.errors = append(h.errors, r.Statement.SQL)
	case !strings.Contains(r.Statement.SQL, "'"+string(r.Values[0])+"'"):
		h.bad = append(h.bad, fmt.Sprintf("row %q came with %q", r.Values[0], r.Statement.SQL))
	default:
		h.rows++
	}
	return nil
}

// TestReusedPortalsKeepTheirResults: the proxy reuses the memory of a portal, a prepared statement
// and a Statement once nothing refers to them any more. A long pipeline that parses and binds the
// unnamed ones over and over, describes them both ways, closes some, and fails in the middle of
// one batch must still show every result to the hook with the Statement it belongs to.
func TestReusedPortalsKeepTheirResults(t *testing.T) {
	h := &ownerHook{ids: map[string]uint64{}}
	p := startProxy(t, Config{}, func() Session { s := defaultSession(); s.Hook = h; return s }())
	_, fe := rawStartup(t, p.addr, nil)
	const statements, batch, failing = 200, 10, 125
	for i := range statements {
		sql := fmt.Sprintf("SELECT 'q%d'::text", i)
		if i == failing {
			// Fails when it runs, not when it is planned at Bind.
			sql = fmt.Sprintf("SELECT 'q%d'::text WHERE 1/(random()*0)::int = 1", i)
		}
		fe.Send(&pgproto3.Parse{Query: sql})
		if i%3 == 0 {
			fe.Send(&pgproto3.Describe{ObjectType: 'S'})
		}
		fe.Send(&pgproto3.Bind{})
		if i%2 == 0 {
			fe.Send(&pgproto3.Describe{ObjectType: 'P'})
		}
		fe.Send(&pgproto3.Execute{})
		if i%7 == 0 {
			fe.Send(&pgproto3.Close{ObjectType: 'P'})
		}
		if i%batch == batch-1 {
			fe.Send(&pgproto3.Sync{})
		}
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	rows, ready := 0, 0
	for ready < statements/batch {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m.(type) {
		case *pgproto3.DataRow:
			rows++
		case *pgproto3.ReadyForQuery:
			ready++
		}
	}
	// The failing statement's batch skips the rest of it, up to its Sync.
	want := statements - (batch - failing%batch)
	h.mu.Lock()
	defer h.mu.Unlock()
	if rows != want || h.rows != want {
		t.Errorf("client got %d rows, the hook saw %d, want %d", rows, h.rows, want)
	}
	if len(h.errors) != 1 || !strings.Contains(h.errors[0], "1/(random()*0)") {
		t.Errorf("errors seen with %q, want the failing statement's", h.errors)
	}
	for _, b := range h.bad {
		t.Error(b)
	}
}

// TestPortalReuseWaitsForResults drives one connection's two sides by hand, in an order the
// network allows: the client replaces the unnamed portal twice while the first Execute's row is
// still on its way. The first portal's memory must not be reused before that row has reached the
// hook with the first Execute's Statement.
func TestPortalReuseWaitsForResults(t *testing.T) {
	h := &ownerHook{ids: map[string]uint64{}}
	c := newBenchConn(h)
	defer c.stop()
	c.uw.w = io.Discard
	client := func(msgs ...pgproto3.FrontendMessage) {
		t.Helper()
		var b []byte
		for _, m := range msgs {
			b, _ = m.Encode(b)
		}
		c.cr = newMsgReader(bytes.NewReader(b), 1<<20, c.flushUpstream)
		c.cr.known = frontendTypes
		relayMessages(t, c.cr, len(msgs), c.onClientMessage)
	}
	server := func(msgs ...pgproto3.BackendMessage) {
		t.Helper()
		var b []byte
		for _, m := range msgs {
			b, _ = m.Encode(b)
		}
		c.sr = newMsgReader(bytes.NewReader(b), maxServerMessage, c.flushClientLocked)
		relayMessages(t, c.sr, len(msgs), c.onServerMessage)
	}
	query := func(i int) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: fmt.Sprintf("SELECT 'q%d'", i)}, &pgproto3.Bind{}, &pgproto3.Execute{}}
	}
	// The client described nothing, so the proxy asked for the portal's description before each
	// Execute (and keeps it from the client).
	answer := func(i int) []pgproto3.BackendMessage {
		return []pgproto3.BackendMessage{&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("?column?"), DataTypeOID: 25, DataTypeSize: -1}}},
			&pgproto3.DataRow{Values: [][]byte{fmt.Appendf(nil, "q%d", i)}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}}
	}
	done := []pgproto3.BackendMessage{&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}}
	client(query(1)...)
	server(done...) // the first portal is now held by the table and its Execute only
	client(query(2)...)
	client(query(3)...)
	server(answer(1)...)
	server(append(done, answer(2)...)...)
	server(append(done, answer(3)...)...)
	client(&pgproto3.Sync{})
	server(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if h.rows != 3 {
		t.Errorf("the hook saw %d rows, want 3", h.rows)
	}
	for _, b := range h.bad {
		t.Error(b)
	}
}
