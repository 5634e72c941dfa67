package pgsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
	"github.com/enforcer-dev/enforcer/internal/record"
)

// restartServer stops the PostgreSQL of srv with a fast shutdown, keeps it down for a while, and
// starts it again on the same data directory with the same command line (from postmaster.opts).
// pgtest has no restart of its own; the restarted postmaster is stopped by a cleanup of the test.
func restartServer(t *testing.T, srv *pgtest.Server, down time.Duration) {
	t.Helper()
	data := filepath.Join(srv.Dir, "data")
	pidText, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(pidText), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	optsText, err := os.ReadFile(filepath.Join(data, "postmaster.opts"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(optsText), -1) {
		args = append(args, m[1])
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatalf("stop postgres: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("postgres did not stop")
		}
	}
	time.Sleep(down)
	cmd := srv.Netns.Command(context.Background(), "setpriv",
		append([]string{"--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig=KILL", pgtest.BinDir + "/postgres"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if err := srv.ExecContext(ctx, "SELECT 1"); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("postgres did not come back: %s", srv.LogTail())
		case <-exited:
			t.Fatalf("restarted postgres exited: %s", srv.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func statement(i int) record.Event {
	return record.Event{Type: record.TypeStatement, Session: fmt.Sprintf("s%d", i%7),
		Statement: &record.Statement{Class: "write", Text: fmt.Sprintf("UPDATE t SET v = %d WHERE id = 1", i), Verdict: record.VerdictAllow}}
}

// TestSinkOutageExactlyOnce appends records continuously while the sink ships them, restarts the
// PostgreSQL server mid-run, restarts the sink itself from its state file, and ends with exactly
// one row for every record of the log, byte-identical to the stored lines.
func TestSinkOutageExactlyOnce(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	srv.Exec(t, Schema)
	if _, err := srv.CreateUser(ctx, "enforcer_sink", false); err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, GrantsFor(DefaultTable, "enforcer_sink"))
	dsn := srv.DSN("enforcer_sink", "postgres")

	dir := t.TempDir()
	rec, err := record.Open(record.Options{Dir: dir, SegmentBytes: 32 << 10, CheckpointEvery: 500})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, ConnString: dsn, Host: "host-a", BatchSize: 1000, Poll: 10 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}
	startSink := func() (*Sink, func()) {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(sctx) }()
		return s, func() {
			scancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("sink Run: %v", err)
			}
		}
	}

	// Appends run throughout, write-ahead and async mixed, from two goroutines.
	var appended atomic.Int64
	stopAppend := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopAppending := func() {
		stopOnce.Do(func() {
			close(stopAppend)
			wg.Wait()
			rec.Close()
		})
	}
	t.Cleanup(stopAppending)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2500; i++ { // bounded and paced so the sink can catch up on a loaded machine
				select {
				case <-stopAppend:
					return
				default:
				}
				d := record.Async
				if i%4 == 0 {
					d = record.WriteAhead
				}
				if err := rec.Append(statement(i), d); err != nil {
					t.Error(err)
					return
				}
				appended.Add(1)
				if i%2 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	waitShipped := func(s *Sink, atLeast uint64) {
		for s.Shipped() < atLeast {
			if ctx.Err() != nil {
				t.Fatalf("sink stuck at %d (want %d): %+v", s.Shipped(), atLeast, s.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	sink, stopSink := startSink()
	waitShipped(sink, 500)
	appendedBefore := appended.Load()
	restartServer(t, srv, 700*time.Millisecond)
	if appended.Load() == appendedBefore {
		t.Fatal("no appends during the outage")
	}
	before := sink.Shipped()
	waitShipped(sink, before+500)
	st := sink.Stats()
	if st.Failures == 0 {
		t.Fatalf("the outage went unnoticed: %+v", st)
	}
	t.Logf("after outage: %+v", st)

	// Restart the sink: it resumes from its state file, not from the beginning.
	stopSink()
	resumeFrom := sink.Shipped()
	sink, stopSink = startSink()
	if sink.Shipped() != resumeFrom {
		t.Fatalf("new sink starts at %d, saved %d", sink.Shipped(), resumeFrom)
	}

	stopAppending()
	rep, err := record.Verify(dir, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problem)
	}
	waitShipped(sink, rep.LastSeq)
	stopSink()
	// The resumed sink sent what came after its saved seq, plus at most the batch that was in
	// flight when the first one stopped.
	if rows := sink.Stats().Rows; rows > rep.LastSeq-resumeFrom+uint64(cfg.BatchSize) {
		t.Fatalf("resumed sink sent %d rows for %d records after seq %d", rows, rep.LastSeq-resumeFrom, resumeFrom)
	}
	t.Logf("%d appended, %d records in the log, sink %+v", appended.Load(), rep.LastSeq, sink.Stats())

	conn, err := pgx.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var count, distinct, lo, hi int64
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM enforcer_records WHERE host = 'host-a'`).Scan(&count, &distinct, &lo, &hi); err != nil {
		t.Fatal(err)
	}
	if uint64(count) != rep.LastSeq || distinct != count || lo != 1 || uint64(hi) != rep.LastSeq {
		t.Fatalf("table has %d rows (%d distinct, seq %d..%d), log has %d records", count, distinct, lo, hi, rep.LastSeq)
	}
	// Every row is the stored line, so the table re-verifies without the host.
	all, err := record.LoadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	record.ExportJSONL(&want, all)
	rows, err := conn.Query(ctx, `SELECT line FROM enforcer_records WHERE host = 'host-a' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for rows.Next() {
		var l string
		rows.Scan(&l)
		got.WriteString(l + "\n")
	}
	if rows.Err() != nil || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("table lines differ from the log (%v)", rows.Err())
	}

	// The sink's role can insert and nothing else.
	sc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(context.Background())
	for _, q := range []string{
		`UPDATE enforcer_records SET line = '' WHERE seq = 1`,
		`DELETE FROM enforcer_records`,
		`TRUNCATE enforcer_records`,
		`SELECT count(*) FROM enforcer_records`,
	} {
		_, err := sc.Exec(ctx, q).ReadAll()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("%s as the sink role: %v, want permission denied", q, err)
		}
	}
}

// TestSinkNewLogSameHost: a host whose log directory was wiped (a reinstall) starts a new log with
// seqs from 1 again; its records are added, not dropped as duplicates of the old log's.
func TestSinkNewLogSameHost(t *testing.T) {
	srv := pgtest.Start(t)
	srv.Exec(t, Schema)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	dsn := srv.DSN(pgtest.SuperUser, "postgres")
	var total uint64
	for round := 0; round < 2; round++ {
		dir := t.TempDir()
		rec, err := record.Open(record.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			if err := rec.Append(statement(i), record.Async); err != nil {
				t.Fatal(err)
			}
		}
		rec.Close()
		rep, _ := record.Verify(dir, nil)
		total += rep.LastSeq
		s, err := New(Config{Dir: dir, ConnString: dsn, Host: "same-host", Poll: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(sctx) }()
		for s.Shipped() < rep.LastSeq && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		scancel()
		<-done
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var rows, logs int64
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT log) FROM enforcer_records WHERE host = 'same-host'`).Scan(&rows, &logs); err != nil {
		t.Fatal(err)
	}
	if uint64(rows) != total || logs != 2 {
		t.Fatalf("%d rows in %d logs, want %d in 2", rows, logs, total)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name  string
		cfg   Config
		state string
	}{
		{"no dir", Config{ConnString: "host=x"}, ""},
		{"no conn", Config{Dir: dir}, ""},
		{"table with three parts", Config{Dir: dir, ConnString: "host=x", Table: "a.b.c"}, ""},
		{"table with an empty schema", Config{Dir: dir, ConnString: "host=x", Table: ".t"}, ""},
		{"corrupt state", Config{Dir: dir, ConnString: "host=x"}, "twelve\n"},
	}
	for _, c := range cases {
		if c.state != "" {
			os.WriteFile(filepath.Join(dir, "pgsink.state"), []byte(c.state), 0o600)
		}
		if _, err := New(c.cfg); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}
