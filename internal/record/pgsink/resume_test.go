package pgsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// sinkDB starts a PostgreSQL server with the records table and an insert-only role, and returns
// the server and the role's connection string.
func sinkDB(t *testing.T) (*pgtest.Server, string) {
	t.Helper()
	srv := pgtest.Start(t)
	srv.Exec(t, Schema)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := srv.CreateUser(ctx, "enforcer_sink", false); err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, GrantsFor(DefaultTable, "enforcer_sink"))
	return srv, srv.DSN("enforcer_sink", "postgres")
}

// shipUntil runs s until it has shipped up to seq want, or for d at most, and returns its stats.
func shipUntil(t *testing.T, s *Sink, want uint64, d time.Duration) Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for s.Shipped() < want && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	return s.Stats()
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func appendRecords(t *testing.T, rec *record.Recorder, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := rec.Append(statement(i), record.WriteAhead); err != nil {
			t.Fatal(err)
		}
	}
}

// writeLog opens the log with opts, appends n records, closes it, and returns the last seq (the
// recorder's own records at close included) and the log's id.
func writeLog(t *testing.T, opts record.Options, n int) (uint64, string) {
	t.Helper()
	rec, err := record.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	appendRecords(t, rec, n)
	rec.Close()
	return rec.Durable(), rec.LogID()
}

type logSeq struct {
	log string
	seq uint64
}

// tableLines returns the stored lines of host's rows by (log, seq).
func tableLines(t *testing.T, srv *pgtest.Server, host string) map[logSeq]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT log, seq, line FROM enforcer_records WHERE host = $1`, host)
	if err != nil {
		t.Fatal(err)
	}
	out := map[logSeq]string{}
	for rows.Next() {
		var k logSeq
		var seq int64
		var line string
		if err := rows.Scan(&k.log, &seq, &line); err != nil {
			t.Fatal(err)
		}
		k.seq = uint64(seq)
		out[k] = line
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// localLines returns every record of the log in dir by (log, seq), read through a follower as
// the sink reads them.
func localLines(t *testing.T, dir string) map[logSeq]string {
	t.Helper()
	f, err := record.NewFollower(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	out := map[logSeq]string{}
	for {
		ls, err := f.ReadAvailable(1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) == 0 {
			return out
		}
		for _, l := range ls {
			out[logSeq{l.LogID, l.Seq}] = string(l.Raw)
		}
	}
}

// missing lists the records of local that the table lacks or holds with other contents.
func missing(local, table map[logSeq]string) []logSeq {
	var out []logSeq
	for k, l := range local {
		if table[k] != l {
			out = append(out, k)
		}
	}
	return out
}

// TestSinkShipsNUL: a payload with a NUL character (any client can send one in a parameter) is
// valid JSON that jsonb refuses. It ships, with U+FFFD in the data column and the line exact,
// and the records after it ship too.
func TestSinkShipsNUL(t *testing.T) {
	srv, dsn := sinkDB(t)
	dir := t.TempDir()
	rec, err := record.Open(record.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	appendRecords(t, rec, 5)
	p := "a\x00b"
	ev := statement(99)
	ev.Statement.Params = []*string{&p}
	if err := rec.Append(ev, record.WriteAhead); err != nil {
		t.Fatal(err)
	}
	appendRecords(t, rec, 5)
	rec.Close()
	last := rec.Durable()

	s := newSink(t, Config{Dir: dir, ConnString: dsn, Host: "h", Poll: 10 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	st := shipUntil(t, s, last, 10*time.Second)
	if st.Shipped < last || st.Failures > 0 {
		t.Fatalf("shipped up to %d of %d, %d failures: %s", st.Shipped, last, st.Failures, st.LastError)
	}
	if m := missing(localLines(t, dir), tableLines(t, srv, "h")); len(m) > 0 {
		t.Fatalf("records not in the table: %v", m)
	}
	var param string
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT data->'params'->>0 FROM enforcer_records WHERE data->'params' IS NOT NULL`).Scan(&param); err != nil {
		t.Fatal(err)
	}
	if param != "a\uFFFDb" {
		t.Fatalf("data column holds %q, want %q", param, "a\uFFFDb")
	}
}

func TestJSONBText(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"a":"b"}`, `{"a":"b"}`},
		{`{"a":"x\u0000y"}`, `{"a":"x\ufffdy"}`},
		{`{"a":"\u0000\u0000"}`, `{"a":"\ufffd\ufffd"}`},
		{`{"a":"\\u0000"}`, `{"a":"\\u0000"}`},   // a backslash, then the text u0000
		{`{"a":"\\\u0000"}`, `{"a":"\\\ufffd"}`}, // a backslash, then a NUL
		{`{"a":"\u00001"}`, `{"a":"\ufffd1"}`},   // a NUL, then 1
		{`{"a":"\u0001","b":"\"\u0000"}`, `{"a":"\u0001","b":"\"\ufffd"}`},
	}
	for _, c := range cases {
		if got := jsonbText([]byte(c.in)); got != c.want {
			t.Errorf("jsonbText(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestSinkRetentionAtOpenKeepsUnshipped: the daemon creates its sink before it opens the
// recorder, whose retention at Open asks the sink what it may delete. Records written while the
// database was down survive a restart with retention due.
func TestSinkRetentionAtOpenKeepsUnshipped(t *testing.T) {
	srv, dsn := sinkDB(t)
	dir := t.TempDir()
	var sink atomic.Pointer[Sink]
	keepFrom := func() uint64 {
		if s := sink.Load(); s != nil {
			return s.Shipped() + 1
		}
		return 0
	}
	opts := record.Options{Dir: dir, SegmentBytes: 4 << 10, KeepFrom: keepFrom}
	rec, err := record.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	appendRecords(t, rec, 30)
	cfg := Config{Dir: dir, ConnString: dsn, Host: "h", Poll: 10 * time.Millisecond, Durable: rec.Durable}
	shipUntil(t, newSink(t, cfg), rec.Durable(), 10*time.Second)
	appendRecords(t, rec, 300) // the database is down from here
	rec.Close()

	// The restart, an hour later, with max_age a minute: in the daemon's order.
	sink.Store(newSink(t, Config{Dir: dir, ConnString: dsn, Host: "h", Poll: 10 * time.Millisecond}))
	opts.MaxAge = time.Minute
	opts.Now = func() time.Time { return time.Now().Add(time.Hour) }
	rec, err = record.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	rec.Close()
	st := shipUntil(t, sink.Load(), rec.Durable(), 10*time.Second)
	if st.Lost > 0 {
		t.Fatalf("retention at Open deleted %d records that were not shipped", st.Lost)
	}
	local, table := localLines(t, dir), tableLines(t, srv, "h")
	if m := missing(local, table); len(m) > 0 {
		t.Fatalf("%d records of the log are not in the table", len(m))
	}
}

// TestSinkNewLog: when the log starts over (its files moved aside, the sink's state left), the
// sink ships the new log from its first record, whatever seq the state names.
func TestSinkNewLog(t *testing.T) {
	srv, dsn := sinkDB(t)
	dir := t.TempDir()
	last, _ := writeLog(t, record.Options{Dir: dir}, 100)
	cfg := Config{Dir: dir, ConnString: dsn, Host: "h", Poll: 10 * time.Millisecond}
	shipUntil(t, newSink(t, cfg), last, 10*time.Second)

	aside := t.TempDir()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*"))
	for _, p := range append(segs, filepath.Join(dir, "chain.state")) {
		if err := os.Rename(p, filepath.Join(aside, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	last, _ = writeLog(t, record.Options{Dir: dir}, 40)
	s := newSink(t, cfg)
	if s.Shipped() != 0 {
		t.Errorf("Shipped() = %d for a log nothing of which was shipped, want 0 (retention would delete it)", s.Shipped())
	}
	st := shipUntil(t, s, last, 10*time.Second)
	if m := missing(localLines(t, dir), tableLines(t, srv, "h")); len(m) > 0 {
		t.Fatalf("%d records of the new log are not in the table (sink %+v)", len(m), st)
	}
	if st.Lost > 0 {
		t.Fatalf("sink counted %d records lost", st.Lost)
	}
}

// TestSinkChainBreak: a log truncated below what was shipped and opened with AcceptChainBreak
// goes on as a new log, so the records after the break (the chain_break record first) reach the
// table although the old log's rows hold their seqs, with the state file and without it.
func TestSinkChainBreak(t *testing.T) {
	for _, keepState := range []bool{true, false} {
		t.Run(fmt.Sprintf("state=%v", keepState), func(t *testing.T) {
			srv, dsn := sinkDB(t)
			dir := t.TempDir()
			last, oldLog := writeLog(t, record.Options{Dir: dir}, 100)
			cfg := Config{Dir: dir, ConnString: dsn, Host: "h", Poll: 10 * time.Millisecond}
			shipUntil(t, newSink(t, cfg), last, 10*time.Second)

			segs, _ := filepath.Glob(filepath.Join(dir, "seg-*"))
			b, err := os.ReadFile(segs[len(segs)-1])
			if err != nil {
				t.Fatal(err)
			}
			lines := bytes.SplitAfter(b, []byte("\n"))
			if err := os.WriteFile(segs[len(segs)-1], bytes.Join(lines[:len(lines)-51], nil), 0o600); err != nil {
				t.Fatal(err)
			}
			if !keepState {
				os.Remove(filepath.Join(dir, "pgsink.state"))
			}
			last, newLog := writeLog(t, record.Options{Dir: dir, AcceptChainBreak: true}, 80)
			if newLog == oldLog {
				t.Fatal("the log goes on under its old id after a chain break")
			}
			st := shipUntil(t, newSink(t, cfg), last, 10*time.Second)
			local := localLines(t, dir)
			if m := missing(local, tableLines(t, srv, "h")); len(m) > 0 {
				t.Fatalf("%d records of the log are not in the table (sink %+v)", len(m), st)
			}
			breaks := 0
			for k, l := range local {
				if k.log != oldLog && bytes.Contains([]byte(l), []byte(`"type":"chain_break"`)) {
					breaks++
				}
			}
			if breaks != 1 {
				t.Fatalf("%d chain_break records in the new log, want 1", breaks)
			}
		})
	}
}

// TestSinkShipsOnlyDurable: records written but not yet on disk are not shipped; a power cut
// could take them, and their seqs would then name other records.
func TestSinkShipsOnlyDurable(t *testing.T) {
	srv, dsn := sinkDB(t)
	dir := t.TempDir()
	last, _ := writeLog(t, record.Options{Dir: dir}, 20)
	var durable atomic.Uint64
	durable.Store(last - 10)
	s := newSink(t, Config{Dir: dir, ConnString: dsn, Host: "h", Poll: 10 * time.Millisecond, Durable: durable.Load})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for s.Shipped() < last-10 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // ten polls: nothing more may go
	if got := s.Shipped(); got != last-10 {
		t.Fatalf("shipped up to %d with %d durable", got, last-10)
	}
	if n := len(tableLines(t, srv, "h")); uint64(n) != last-10 {
		t.Fatalf("table has %d rows with %d records durable", n, last-10)
	}
	durable.Store(last)
	for s.Shipped() < last && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if m := missing(localLines(t, dir), tableLines(t, srv, "h")); len(m) > 0 {
		t.Fatalf("%d records not in the table", len(m))
	}
}

// TestSinkTableInSchema: a table named SCHEMA.NAME is created, granted and shipped to as such,
// and the role can still only insert; a sink whose table is missing says how to create it.
func TestSinkTableInSchema(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := srv.CreateUser(ctx, "fleet_sink", false); err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, "CREATE SCHEMA audit;\n"+SchemaFor("audit.records")+GrantsFor("audit.records", "fleet_sink"))
	dsn := srv.DSN("fleet_sink", "postgres")
	dir := t.TempDir()
	last, _ := writeLog(t, record.Options{Dir: dir}, 10)

	var logs bytes.Buffer
	missingTable := newSink(t, Config{Dir: dir, ConnString: dsn, Host: "h", Table: "audit.nosuch", StateFile: filepath.Join(t.TempDir(), "state"),
		Poll: 10 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if st := shipUntil(t, missingTable, last, 300*time.Millisecond); st.Shipped != 0 || st.Failures == 0 {
		t.Fatalf("shipped to a missing table: %+v", st)
	}
	if !strings.Contains(logs.String(), "enforcer record sink-sql --table audit.nosuch") {
		t.Errorf("the failure does not say how to create the table:\n%s", logs.String())
	}

	s := newSink(t, Config{Dir: dir, ConnString: dsn, Host: "h", Table: "audit.records", Poll: 10 * time.Millisecond})
	if st := shipUntil(t, s, last, 10*time.Second); st.Shipped < last || st.Failures > 0 {
		t.Fatalf("shipped up to %d of %d, %d failures: %s", st.Shipped, last, st.Failures, st.LastError)
	}
	conn, err := pgx.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM audit.records WHERE host = 'h'").Scan(&rows); err != nil || uint64(rows) != last {
		t.Fatalf("audit.records holds %d rows (%v), want %d", rows, err, last)
	}
	sc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(context.Background())
	for _, q := range []string{`SELECT count(*) FROM audit.records`, `DELETE FROM audit.records`} {
		_, err := sc.Exec(ctx, q).ReadAll()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("%s as the sink role: %v, want permission denied", q, err)
		}
	}
}
