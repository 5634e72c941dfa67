package record

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecordSizeBounded: however many rows, columns and parameters a client or server sends, one
// record stays within the recorder's budget (MaxValuesBytes, default 4 MiB, plus markers), so it
// can be encoded without exhausting memory and shipped to the fleet table (jsonb holds 256 MB).
func TestRecordSizeBounded(t *testing.T) {
	dir := t.TempDir()
	r := openT(t, Options{Dir: dir})
	cell := strings.Repeat("x", 64<<10) // at the per-value cap: nothing is cut per value
	row := make([]*string, 40)
	for i := range row {
		row[i] = &cell
	}
	rows := make([][]*string, 100) // at the row cap: 100 rows of 40 columns, 262 MB
	cols := make([]string, len(row))
	for i := range rows {
		rows[i] = row
	}
	for i := range cols {
		cols[i] = "c"
	}
	params := make([]*string, 2000) // 131 MB of parameters
	for i := range params {
		params[i] = &cell
	}
	short := "7"
	params[len(params)-1] = &short
	appendAll(t, r, []Event{
		{Type: TypeStatement, Session: "s", Statement: &Statement{Text: "SELECT wide", Verdict: VerdictAllow,
			Result: &Result{Columns: cols, RowCount: 100, Rows: rows}}},
		{Type: TypeResult, Session: "s", Result: &Result{Columns: cols, RowCount: 100, Rows: rows}},
		{Type: TypeStatement, Session: "s", Statement: &Statement{Text: "INSERT many", Params: params, Verdict: VerdictAllow}},
	}, Async)
	r.Close()
	mustVerify(t, dir, nil)
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
	for _, p := range segs {
		if fi, _ := os.Stat(p); fi.Size() > 16<<20 {
			t.Errorf("%s is %d bytes: a record exceeds the budget", filepath.Base(p), fi.Size())
		}
	}
	recs, err := LoadSession(dir, "s")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		ev, err := rec.Event()
		if err != nil {
			t.Fatal(err)
		}
		res := ev.Result
		if ev.Statement != nil {
			res = ev.Statement.Result
		}
		if res != nil && (!res.Truncated || res.RowCount != 100 || len(res.Rows) == 0 || len(res.Rows) == 100) {
			t.Errorf("seq %d: result keeps %d of %d rows, truncated %v", rec.Seq, len(res.Rows), res.RowCount, res.Truncated)
		}
		if st := ev.Statement; st != nil && len(st.Params) > 0 {
			if len(st.Params) != 2000 || *st.Params[0] != cell || *st.Params[1999] != "7" || !strings.HasPrefix(*st.Params[1998], cutMarker) {
				t.Errorf("params: %d kept, first whole %v, last %q", len(st.Params), *st.Params[0] == cell, *st.Params[1999])
			}
		}
	}
}
