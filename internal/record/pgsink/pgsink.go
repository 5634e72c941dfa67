// Package pgsink ships a host's session log to a PostgreSQL table shared by a fleet, so auditors
// query many hosts in one place.
//
// The sink is a reader of the local log, not a hook on the write path: the recorder never waits for
// it, and an outage of the database only delays shipping. Rows are keyed by (host, log, seq), where
// log is the log's random id from its segment headers (a reinstalled host with the same name starts
// a new log instead of colliding with its old rows), and inserted with ON CONFLICT DO NOTHING
// (without a conflict target: naming one would need SELECT on its columns, and the primary key is
// the table's only unique constraint). The sink persists the log id and seq of the last record
// the database acknowledged, so after a crash, an outage or a restart it resends at most the last
// batch and the table ends with exactly one copy of every record. It ships only records the
// recorder has made durable (Config.Durable): a record lost with the page cache in a power cut
// would otherwise be in the table while its seq is used again on the host. Each row keeps the
// record's stored line, so rows can be re-verified against the chain (prev, hash) without the
// host.
//
// A log that starts over (its files moved aside, or a chain break accepted: both begin a log
// with a new id) is shipped from its first record, whatever the saved position says.
//
// # Database setup (run once, as an owner of the schema)
//
// SchemaFor creates the table; GrantsFor makes an insert-only role: it can add rows but neither
// change nor delete them, nor read other hosts' rows. `enforcer record sink-sql` prints both.
//
//	CREATE ROLE enforcer_sink LOGIN PASSWORD '…';
//	-- SchemaFor, then GrantsFor:
//	GRANT USAGE ON SCHEMA public TO enforcer_sink;
//	GRANT INSERT ON enforcer_records TO enforcer_sink;
//
// Auditors get SELECT on the table through a separate role. Nobody but the table owner holds
// UPDATE, DELETE or TRUNCATE; partitioning and dropping old partitions is the owner's job.
package pgsink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/record"
)

// DefaultTable is the table the sink writes when Config.Table is empty.
const DefaultTable = "enforcer_records"

// Schema is the DDL of the table (for DefaultTable; use SchemaFor for another name).
var Schema = SchemaFor(DefaultTable)

// CheckName reports whether name can name a table (NAME or SCHEMA.NAME, unquoted) or a role
// (withSchema false): each part non-empty, at most 63 bytes, without control characters.
func CheckName(name string, withSchema bool) error {
	parts := []string{name}
	if withSchema {
		parts = strings.Split(name, ".")
	}
	if len(parts) > 2 {
		return fmt.Errorf("%q: name a table as NAME or SCHEMA.NAME", name)
	}
	for _, p := range parts {
		if p == "" || len(p) > 63 || strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("%q: each part of a name must be 1 to 63 bytes without control characters", name)
		}
	}
	return nil
}

// tableIdent splits a table name, NAME or SCHEMA.NAME, into its identifier, its schema ("" when
// not named) and its own name.
func tableIdent(table string) (ident pgx.Identifier, schema, name string) {
	if schema, name, ok := strings.Cut(table, "."); ok {
		return pgx.Identifier{schema, name}, schema, name
	}
	return pgx.Identifier{table}, "", table
}

// SchemaFor returns the DDL of a records table named table (NAME or SCHEMA.NAME).
func SchemaFor(table string) string {
	ident, _, name := tableIdent(table)
	t := ident.Sanitize()
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
	host    text        NOT NULL,
	log     text        NOT NULL, -- the log's id (a reinstalled host starts a new log)
	seq     bigint      NOT NULL,
	time    timestamptz NOT NULL,
	type    text        NOT NULL,
	session text        NOT NULL,
	data    jsonb       NOT NULL, -- the payload, for queries; a NUL character (which jsonb cannot hold) reads U+FFFD
	prev    text        NOT NULL,
	hash    text        NOT NULL,
	line    text        NOT NULL, -- the record exactly as stored on the host, for re-verification
	shipped timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (host, log, seq)
);
CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{name + "_session"}.Sanitize() + ` ON ` + t + ` (session);
CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{name + "_time"}.Sanitize() + ` ON ` + t + ` (time);
`
}

// GrantsFor returns the statements that let role insert into table (NAME, in schema public, or
// SCHEMA.NAME) and nothing else.
func GrantsFor(table, role string) string {
	ident, schema, _ := tableIdent(table)
	if schema == "" {
		schema = "public"
	}
	r := pgx.Identifier{role}.Sanitize()
	return "REVOKE ALL ON " + ident.Sanitize() + " FROM " + r + ";\n" +
		"GRANT USAGE ON SCHEMA " + pgx.Identifier{schema}.Sanitize() + " TO " + r + ";\n" +
		"GRANT INSERT ON " + ident.Sanitize() + " TO " + r + ";\n"
}

// Config configures a Sink. Dir and ConnString are required.
type Config struct {
	Dir        string // the record log directory
	ConnString string // pgx connection string of the insert-only role
	Host       string // this host's name in the table, default os.Hostname()
	Table      string // NAME or SCHEMA.NAME, default DefaultTable
	StateFile  string // the position shipped up to, default Dir/pgsink.state
	// Durable returns the highest seq of the log that is on disk (the recorder's Durable); the
	// sink ships nothing after it. Nil ships every complete record (a log no one writes to).
	Durable func() uint64

	BatchSize int // records per INSERT, default 500
	// BatchBytes bounds an INSERT by size as well, default 32 MiB: each record travels twice
	// (its payload and its line), a statement's text alone may take 6 MiB of escapes in the
	// log, and PostgreSQL (and pgx) refuse a message over 1 GB, so a backlog of large records
	// counted only in records would make a batch that fails, and is retried, forever. A
	// record larger than BatchBytes is shipped alone.
	BatchBytes int
	Poll       time.Duration // how often to look for new records when idle, default 200ms
	MinBackoff time.Duration // first retry delay after a failure, default 100ms
	MaxBackoff time.Duration // longest retry delay, default 5s
	Logger     *slog.Logger
}

// Stats are the sink's counters.
type Stats struct {
	// Shipped is the seq before the next record to ship: every record of the log up to it is in
	// the database (or, for a log the sink finds started over, was never this log's).
	Shipped   uint64
	Rows      uint64 // rows sent (including resent ones the database already had)
	Batches   uint64
	Failures  uint64 // failed attempts (each retried)
	Lost      uint64 // records removed from the log before they were shipped
	LastError string
}

// Sink ships the log in Config.Dir to PostgreSQL.
type Sink struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	stats Stats
	pos   position // the last record the database acknowledged
	conn  *pgx.Conn
	sql   string
}

// position names a record of the log: the id of its log and its seq.
type position struct {
	log string
	seq uint64
}

// New prepares a sink, reading the shipped-up-to seq from its state file.
func New(cfg Config) (*Sink, error) {
	if cfg.Dir == "" || cfg.ConnString == "" {
		return nil, errors.New("pgsink: Dir and ConnString are required")
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("pgsink: host name: %w", err)
		}
		cfg.Host = h
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if err := CheckName(cfg.Table, true); err != nil {
		return nil, fmt.Errorf("pgsink: table %w", err)
	}
	if cfg.StateFile == "" {
		cfg.StateFile = filepath.Join(cfg.Dir, "pgsink.state")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 32 << 20
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Sink{cfg: cfg, log: cfg.Logger.With("component", "pgsink", "table", cfg.Table)}
	pos, err := s.readState()
	if err != nil {
		return nil, err
	}
	s.pos = pos
	// Known before the recorder opens, whose retention asks Shipped what it may delete.
	if _, err := s.resume(false); err != nil {
		return nil, err
	}
	ident, _, _ := tableIdent(cfg.Table)
	s.sql = `INSERT INTO ` + ident.Sanitize() + ` (host, log, seq, time, type, session, data, prev, hash, line)
SELECT $1, lg, s, t::timestamptz, ty, se, d::jsonb, p, h, l
FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) AS u(lg, s, t, ty, se, d, p, h, l)
ON CONFLICT DO NOTHING`
	return s, nil
}

// Shipped returns the seq before the next record to ship (see Stats.Shipped). Wire Shipped()+1
// into the recorder's Options.KeepFrom so retention never deletes what was not shipped.
func (s *Sink) Shipped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.Shipped
}

// Stats returns the sink's counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Run ships records until ctx is done, retrying failed batches with backoff; it returns ctx's error,
// or an error if the log itself cannot be read.
func (s *Sink) Run(ctx context.Context) error {
	defer s.closeConn()
	start, err := s.resume(true)
	if err != nil {
		return err
	}
	f, err := record.NewFollower(s.cfg.Dir, start)
	if err != nil {
		return fmt.Errorf("pgsink: %w", err)
	}
	var held []record.Line // read, not yet durable or not yet shipped
	for {
		if len(held) < s.cfg.BatchSize && batchBytes(held) < s.cfg.BatchBytes {
			more, err := f.ReadAvailable(s.cfg.BatchSize - len(held))
			if err != nil {
				return fmt.Errorf("pgsink: read log: %w", err)
			}
			held = append(held, more...)
		}
		n := len(held)
		if s.cfg.Durable != nil {
			// Seqs rise through the directory: a log that starts over continues the numbering.
			d := s.cfg.Durable()
			n = sort.Search(len(held), func(i int) bool { return held[i].Seq > d })
		}
		n = s.batchLen(held[:n])
		if n == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(s.cfg.Poll):
			}
			continue
		}
		batch := s.checkGaps(held[:n])
		if len(batch) > 0 {
			if err := s.shipWithRetry(ctx, batch); err != nil {
				return err
			}
		}
		held = append(held[:0], held[n:]...)
	}
}

// batchBytes is what the records of held weigh in an INSERT: each travels as its payload and
// its line.
func batchBytes(held []record.Line) int {
	size := 0
	for _, l := range held {
		size += 2 * len(l.Raw)
	}
	return size
}

// batchLen is how many records of held the next INSERT takes: at most BatchBytes of them, but
// at least one (a record larger than that goes alone).
func (s *Sink) batchLen(held []record.Line) int {
	size := 0
	for i, l := range held {
		size += 2 * len(l.Raw)
		if i > 0 && size > s.cfg.BatchBytes {
			return i
		}
	}
	return len(held)
}

// resume returns the seq of the first record to ship, and sets Shipped to the one before it.
// That is the record after the saved position, unless segments of a later log follow the saved
// log's last one (or none of its segments are left): then from that log's first record, which
// it logs if report is set.
func (s *Sink) resume(report bool) (uint64, error) {
	segs, err := record.SegmentStarts(s.cfg.Dir)
	if err != nil {
		return 0, fmt.Errorf("pgsink: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos.log == "" && s.pos.seq > 0 {
		// A state file without a log id: the log the seq is in.
		for _, g := range segs {
			if g.Seq <= s.pos.seq {
				s.pos.log = g.LogID
			}
		}
	}
	start := s.pos.seq + 1
	last := -1
	for i, g := range segs {
		if g.LogID == s.pos.log {
			last = i
		}
	}
	switch {
	case last+1 < len(segs) && segs[last+1].Seq < start:
		start = segs[last+1].Seq
		if report {
			s.log.Warn("the session log started over since the last record shipped; shipping the new log from its start",
				"shipped_log", s.pos.log, "shipped_seq", s.pos.seq, "new_log", segs[last+1].LogID, "from", start)
		}
	case last < 0 && len(segs) == 0 && s.pos.log != "":
		start = 1 // whatever the next log is, from its start
	}
	s.stats.Shipped = start - 1
	return start, nil
}

// checkGaps returns the records of batch not yet shipped and counts the ones missing before them:
// a seq skipped within one log was deleted before it was shipped.
func (s *Sink) checkGaps(batch []record.Line) []record.Line {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.pos
	out := batch[:0]
	for _, l := range batch {
		switch {
		case l.LogID != prev.log:
		case l.Seq <= prev.seq:
			continue // shipped already
		case l.Seq > prev.seq+1:
			s.stats.Lost += l.Seq - prev.seq - 1
			s.log.Error("records were removed from the log before they were shipped", "log", l.LogID, "from", prev.seq+1, "to", l.Seq-1)
		}
		prev = position{l.LogID, l.Seq}
		out = append(out, l)
	}
	return out
}

func (s *Sink) shipWithRetry(ctx context.Context, batch []record.Line) error {
	backoff := s.cfg.MinBackoff
	for {
		err := s.ship(ctx, batch)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.mu.Lock()
		s.stats.Failures++
		s.stats.LastError = err.Error()
		s.mu.Unlock()
		s.closeConn()
		wait := backoff/2 + rand.N(backoff/2+1)
		attrs := []any{"from", batch[0].Seq, "to", batch[len(batch)-1].Seq, "retry_in", wait, "err", err}
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42501" || pgErr.Code == "3F000") {
			// A table, schema or grant missing: the database was not set up for the sink.
			attrs = append(attrs, "hint", "create the table and the role's grants with `enforcer record sink-sql --table "+s.cfg.Table+" --role ROLE`, run as the schema's owner")
		}
		s.log.Warn("shipping records failed; retrying", attrs...)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// ship inserts one batch and, once the database has committed it, persists its last seq.
func (s *Sink) ship(ctx context.Context, batch []record.Line) error {
	if s.conn == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := pgx.Connect(cctx, s.cfg.ConnString)
		cancel()
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		s.conn = c
	}
	n := len(batch)
	logs := make([]string, n)
	seqs := make([]int64, n)
	times, types, sessions, datas, prevs, hashes, lines := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, l := range batch {
		seqs[i], logs[i] = int64(l.Seq), l.LogID
		if l.LogID == "" {
			return fmt.Errorf("record %d: no log id (segment header missing)", l.Seq)
		}
		times[i], types[i], sessions[i] = l.Time, string(l.Type), l.Session
		datas[i], prevs[i], hashes[i], lines[i] = jsonbText(l.Data), l.Prev, l.Hash, string(l.Raw)
		if !json.Valid(l.Data) {
			return fmt.Errorf("record %d has invalid data", l.Seq)
		}
	}
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := s.conn.Exec(qctx, s.sql, s.cfg.Host, logs, seqs, times, types, sessions, datas, prevs, hashes, lines); err != nil {
		return fmt.Errorf("insert seq %d..%d: %w", batch[0].Seq, batch[n-1].Seq, err)
	}
	last := position{batch[n-1].LogID, batch[n-1].Seq}
	s.mu.Lock()
	s.pos = last
	s.stats.Shipped = last.seq
	s.stats.Rows += uint64(n)
	s.stats.Batches++
	s.mu.Unlock()
	// Losing this write only means resending rows the table already has.
	if err := writeState(s.cfg.StateFile, last); err != nil {
		s.log.Error("saving the shipped position failed", "err", err)
	}
	return nil
}

// jsonbText is a record's payload as jsonb takes it. The log escapes a NUL character as \u0000,
// valid JSON that jsonb refuses (22P05): one such value, which any client can put in a
// parameter, would stop every later record from shipping. In the data column it becomes
// \ufffd; the line column keeps the record exactly.
func jsonbText(data []byte) string {
	if !bytes.Contains(data, []byte(`\u0000`)) {
		return string(data)
	}
	out := make([]byte, 0, len(data))
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c != '\\' || i+1 == len(data) {
			out = append(out, c)
			continue
		}
		// An escape: its second byte is never a quote or backslash that ends or starts another.
		if data[i+1] == 'u' && i+6 <= len(data) && string(data[i+2:i+6]) == "0000" {
			out = append(out, `\ufffd`...)
			i += 5
			continue
		}
		out = append(out, c, data[i+1])
		i++
	}
	return string(out)
}

func (s *Sink) closeConn() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
}

// readState reads the saved position: "LOG SEQ", or an older file's "SEQ" alone.
func (s *Sink) readState() (position, error) {
	b, err := os.ReadFile(s.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return position{}, nil
	}
	if err != nil {
		return position{}, fmt.Errorf("pgsink: read state: %w", err)
	}
	f := strings.Fields(string(b))
	var p position
	if len(f) == 2 {
		p.log, f = f[0], f[1:]
	}
	if len(f) == 1 {
		p.seq, err = strconv.ParseUint(f[0], 10, 64)
	}
	if len(f) != 1 || err != nil {
		return position{}, fmt.Errorf("pgsink: state file %s is corrupt (want \"LOG SEQ\"); move it aside to ship the whole log again", s.cfg.StateFile)
	}
	return p, nil
}

// writeState replaces the state file atomically (temp file, fsync, rename, fsync dir).
func writeState(path string, p position) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".pgsink.state.tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(p.log + " " + strconv.FormatUint(p.seq, 10) + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
