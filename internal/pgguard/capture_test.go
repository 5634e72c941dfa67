package pgguard

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// TestCellsCut: row keeps each value cut to the limit as the log would record it, and refuses
// a row whose values would take the record past its budget, counted as the log counts them.
func TestCellsCut(t *testing.T) {
	plain := func(dst []byte, _ int, _ []byte) ([]byte, bool) { return dst, false }
	shown := func(dst []byte, _ int, v []byte) ([]byte, bool) { return append(append(dst, '<'), v...), true }
	long := strings.Repeat("é", 300)
	tests := []struct {
		name          string
		display       func([]byte, int, []byte) ([]byte, bool)
		vals          []string
		limit, budget int
		want          []string
		cut, fits     bool
	}{
		{"short values", plain, []string{"a", "bc"}, 200, 100, []string{"a", "bc"}, false, true},
		{"one long value", plain, []string{"a", long}, 200, 1000, []string{"a", record.CutValue(long, 200)}, true, true},
		{"long once shown", shown, []string{long[:150]}, 150, 1000, []string{record.CutValue("<"+long[:150], 150)}, true, true},
		{"no room", plain, []string{"a", long}, 200, 150, nil, true, false},
		{"room for exactly the row", plain, []string{"abc", "de"}, 200, 5, []string{"abc", "de"}, false, true},
		// Cut a little short of the limit (a character is not split), a value still takes the
		// whole limit, as the log counts it.
		{"a cut value takes the limit", plain, []string{"x" + long}, 128, 127, nil, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c cells
			vals := make([][]byte, len(tc.vals))
			for i, v := range tc.vals {
				vals[i] = []byte(v)
			}
			row, cut, fits := c.row(vals, tc.display, tc.limit, tc.budget)
			if cut != tc.cut || fits != tc.fits {
				t.Fatalf("cut %v, fits %v; want %v, %v", cut, fits, tc.cut, tc.fits)
			}
			if !fits {
				if len(c.buf) != 0 || row != nil {
					t.Errorf("a refused row left %d bytes, row %v", len(c.buf), row)
				}
				return
			}
			for i, p := range row {
				if *p != tc.want[i] {
					t.Errorf("value %d: %.60q, want %.60q", i, *p, tc.want[i])
				}
				if len(*p) > tc.limit {
					t.Errorf("value %d: %d bytes kept, limit %d", i, len(*p), tc.limit)
				}
			}
		})
	}
}

// TestWideResultCapture: a result of huge cells costs the connection no more memory than the
// log's budget for one record, and what is recorded is what the log would record from the whole
// values: each cut with its length and hash, rows while they fit, the result marked truncated.
// Once a later result is collected, the memory the wide one took is let go.
func TestWideResultCapture(t *testing.T) {
	opts := record.Options{MaxValueBytes: 1 << 10, MaxValuesBytes: 1 << 20, MaxResultRows: 5000}
	dir := t.TempDir()
	opts.Dir = dir
	rec, err := record.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	pol := parsePolicy(t, testPolicy+"recording:\n  max_rows: 5000\n") // the log's budget cuts first
	g := guardFor(func() *policy.Policy { return pol }, rec)
	ctx := context.Background()
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("big"), DataTypeOID: 25}, {Name: []byte("n"), DataTypeOID: 25}}}

	wide := &postgres.Statement{ID: 1, Kind: postgres.KindQuery, SQL: "select repeat('x', 65536) || g, g from generate_series(1, 1200) g"}
	if v := g.Statement(ctx, wide); v.Action != postgres.Allow {
		t.Fatal(v.Error)
	}
	g.Result(ctx, &postgres.Result{Kind: postgres.ResultRowDescription, Statement: wide, Columns: rd})
	const rows = 1200
	big := make([]byte, 64<<10) // 1,200 rows of these: 77 MB whole
	for i := range big {
		big[i] = 'x'
	}
	var whole [][]*string // what the log would be given without the capture's cuts
	for i := range rows {
		b, n := fmt.Appendf(big, "%d", i), fmt.Appendf(nil, "%d", i)
		if i < 1100 {
			bs, ns := string(b), string(n)
			whole = append(whole, []*string{&bs, &ns})
		}
		g.Result(ctx, &postgres.Result{Kind: postgres.ResultRow, Statement: wide, Columns: rd, Values: [][]byte{b, n}})
		if held := cap(g.rec.rows.buf); held > 2*opts.MaxValuesBytes { // room for append's growth

			t.Fatalf("row %d: the capture holds %d bytes, over the log's budget", i, held)
		}
	}
	g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: wide, Tag: []byte("SELECT 1200")})
	g.Delivered()

	small := &postgres.Statement{ID: 2, Kind: postgres.KindQuery, SQL: "select 1"}
	if v := g.Statement(ctx, small); v.Action != postgres.Allow {
		t.Fatal(v.Error)
	}
	g.Result(ctx, &postgres.Result{Kind: postgres.ResultRow, Statement: small, Columns: rd, Values: [][]byte{[]byte("1"), nil}})
	g.Result(ctx, &postgres.Result{Kind: postgres.ResultCommandComplete, Statement: small, Tag: []byte("SELECT 1")})
	g.Delivered()
	g.Forwarded()
	for _, c := range []*cells{&g.rec.rows, &g.rec.late.rows} {
		if cap(c.buf) > keepCellBytes {
			t.Errorf("after a small result, the capture still holds %d bytes", cap(c.buf))
		}
	}
	// Nor do the written results keep them reachable.
	for _, rows := range [][][]*string{g.rec.cur.Rows, g.rec.late.res.Rows} {
		for _, row := range rows[:cap(rows)] {
			if row != nil {
				t.Fatal("a written result still points into the capture's buffers")
			}
		}
	}
	g.End("done", 0, 0)

	// The log's own caps, applied to the whole values, are the reference.
	refDir := t.TempDir()
	refOpts := opts
	refOpts.Dir = refDir
	ref, err := record.Open(refOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.Append(record.Event{Type: record.TypeResult, Session: "ref", Result: &record.Result{RowCount: rows, Rows: whole}}, record.Async); err != nil {
		t.Fatal(err)
	}
	want := eventsOf(t, closeAndLoad(t, ref, refDir, "ref"))[0].Result

	var got *record.Result
	for _, ev := range eventsOf(t, closeAndLoad(t, rec, dir, g.SessionID())) {
		if ev.Statement != nil && ev.Statement.Text == wide.SQL {
			got = ev.Statement.Result
		}
	}
	if got == nil {
		t.Fatal("the wide result is not recorded with its statement")
	}
	if got.RowCount != rows || !got.Truncated || len(got.Rows) != len(want.Rows) || len(got.Rows) == 0 {
		t.Fatalf("recorded %d of %d rows, truncated %v; the log alone keeps %d", len(got.Rows), got.RowCount, got.Truncated, len(want.Rows))
	}
	for i := range got.Rows {
		for j := range got.Rows[i] {
			if *got.Rows[i][j] != *want.Rows[i][j] {
				t.Fatalf("row %d value %d: %.80q, the log alone records %.80q", i, j, *got.Rows[i][j], *want.Rows[i][j])
			}
		}
	}
}

// TestWideResultWithPostgres: cells of a MiB from a real server are recorded cut, each with its
// length and hash, and the client gets them whole.
func TestWideResultWithPostgres(t *testing.T) {
	p := startGuardedProxy(t, allowAllPolicy)
	c := p.connect(t)
	<-p.guards
	const sql = "select repeat('x', 1 << 20) || g, g from generate_series(1, 40) g"
	res, err := c.Exec(context.Background(), sql).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || len(res[0].Rows) != 40 || len(res[0].Rows[39][0]) != 1<<20+2 {
		t.Fatalf("the client got %d results", len(res))
	}
	c.Close(context.Background())
	var got *record.Result
	for _, ev := range eventsOf(t, p.session(t)) {
		switch {
		case ev.Statement != nil && ev.Statement.Result != nil:
			got = ev.Statement.Result
		case ev.Result != nil: // a result this long reaches the client before it ends
			got = ev.Result
		}
	}
	if got == nil || got.RowCount != 40 || len(got.Rows) != 40 || !got.Truncated {
		t.Fatalf("recorded %+v", got)
	}
	limit, _ := p.rec.ValueCaps()
	for i, row := range got.Rows {
		whole := strings.Repeat("x", 1<<20) + fmt.Sprint(i+1)
		if want := record.CutValue(whole, limit); *row[0] != want || *row[1] != fmt.Sprint(i+1) {
			t.Fatalf("row %d recorded as %.80q, %q; want %.80q", i, *row[0], *row[1], want)
		}
	}
}
