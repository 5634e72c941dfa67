package approval

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Schema is the DDL of the PostgreSQL store; OpenPGStore runs it (idempotent) on start. body holds
// the whole request as JSON and is authoritative; the other request columns are copies for queries.
// Decisions are also kept one row per reviewer, so the primary key refuses a second vote even
// outside this code.
const Schema = `
CREATE TABLE IF NOT EXISTS enforcer_approval_requests (
	id         text PRIMARY KEY,
	created_at timestamptz NOT NULL,
	deadline   timestamptz NOT NULL,
	owner      text NOT NULL,
	subject    text NOT NULL,
	rule       text NOT NULL,
	hash       text NOT NULL,
	state      text NOT NULL,
	closed_at  timestamptz,
	body       jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS enforcer_approval_requests_state ON enforcer_approval_requests (state, created_at);
CREATE TABLE IF NOT EXISTS enforcer_approval_decisions (
	request_id text NOT NULL REFERENCES enforcer_approval_requests (id) ON DELETE CASCADE,
	reviewer   text NOT NULL,
	verdict    text NOT NULL,
	reason     text NOT NULL,
	decided_at timestamptz NOT NULL,
	PRIMARY KEY (request_id, reviewer)
);
CREATE TABLE IF NOT EXISTS enforcer_approval_grants (
	request_id  text PRIMARY KEY REFERENCES enforcer_approval_requests (id) ON DELETE CASCADE,
	hash        text NOT NULL,
	subject     text NOT NULL,
	created_at  timestamptz NOT NULL,
	expires_at  timestamptz NOT NULL,
	consumed_at timestamptz
);
CREATE INDEX IF NOT EXISTS enforcer_approval_grants_hash ON enforcer_approval_grants (hash) WHERE consumed_at IS NULL;
ALTER TABLE enforcer_approval_grants ADD COLUMN IF NOT EXISTS rule text NOT NULL DEFAULT '';
ALTER TABLE enforcer_approval_grants ADD COLUMN IF NOT EXISTS rule_digest text NOT NULL DEFAULT '';
ALTER TABLE enforcer_approval_requests ADD COLUMN IF NOT EXISTS shrunk boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS enforcer_approval_requests_unshrunk ON enforcer_approval_requests (owner, closed_at)
	WHERE state = 'expired' AND NOT shrunk;
`

// pgChannel is the LISTEN/NOTIFY channel; payloads are "<instance> <event> <request id>".
const pgChannel = "enforcer_approval"

// PGStoreConfig configures OpenPGStore.
type PGStoreConfig struct {
	// DSN is a pgx connection string for the shared database.
	DSN string
	// Owner names this daemon (hostname). On start its pending requests are failed: their clients
	// were connected to the previous process.
	Owner string
	// Conns is how many connections serve queries (default 4); one more listens.
	Conns int
	// Retain is how long finished requests are kept (default DefaultRetain); older ones are
	// deleted on start.
	Retain time.Duration
	Logger *slog.Logger
}

// PGStore keeps requests in PostgreSQL, shared by many daemons. A decision taken through any daemon
// wakes the request waiting in another through LISTEN/NOTIFY.
type PGStore struct {
	cfg      PGStoreConfig
	conf     *pgx.ConnConfig
	instance string // tells this process's notifications from other daemons'
	log      *slog.Logger
	conns    chan *pgx.Conn

	mu   sync.Mutex
	hook func(Change)

	done      chan struct{}
	closeOnce sync.Once
	cancel    context.CancelFunc
	listener  sync.WaitGroup
}

// OpenPGStore connects, creates the schema if missing, fails this owner's leftover pending
// requests, deletes expired history and starts listening for other daemons' changes.
func OpenPGStore(ctx context.Context, cfg PGStoreConfig) (*PGStore, error) {
	if cfg.Owner == "" {
		return nil, errors.New("approval store: PostgreSQL store needs an owner name")
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 4
	}
	if cfg.Retain <= 0 {
		cfg.Retain = DefaultRetain
	}
	conf, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		// The DSN may hold a password: do not repeat it.
		return nil, errors.New("approval store: cannot parse the PostgreSQL connection string")
	}
	var inst [6]byte
	rand.Read(inst[:])
	s := &PGStore{cfg: cfg, conf: conf, instance: hex.EncodeToString(inst[:]), log: cfg.Logger, conns: make(chan *pgx.Conn, cfg.Conns), done: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	for range cfg.Conns {
		c, err := pgx.ConnectConfig(ctx, conf)
		if err != nil {
			s.closeConns()
			return nil, fmt.Errorf("approval store: connect: %w", err)
		}
		s.conns <- c
	}
	if err := s.setup(ctx); err != nil {
		s.closeConns()
		return nil, err
	}
	// Listen before anything can change, so no notification between setup and now is missed.
	lc, err := s.listen(ctx)
	if err != nil {
		s.closeConns()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.listener.Add(1)
	go s.listenLoop(lctx, lc)
	return s, nil
}

func (s *PGStore) setup(ctx context.Context) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		// Daemons starting together would race creating the same tables.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('enforcer_approval_schema'))`); err != nil {
			return fmt.Errorf("approval store: lock schema: %w", err)
		}
		if _, err := tx.Exec(ctx, Schema); err != nil {
			return fmt.Errorf("approval store: create schema: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT body FROM enforcer_approval_requests WHERE owner = $1 AND state = 'pending' FOR UPDATE`, s.cfg.Owner)
		if err != nil {
			return fmt.Errorf("approval store: find leftover requests: %w", err)
		}
		stale, err := pgx.CollectRows(rows, scanRequest)
		if err != nil {
			return fmt.Errorf("approval store: find leftover requests: %w", err)
		}
		now := time.Now()
		for _, r := range stale {
			finish(r, StateFailed, "the daemon restarted while the request was pending", now)
			if err := s.write(ctx, tx, r, EventFailed); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `DELETE FROM enforcer_approval_requests r
			WHERE state <> 'pending' AND closed_at < $1
			AND NOT EXISTS (SELECT 1 FROM enforcer_approval_grants g WHERE g.request_id = r.id AND g.expires_at >= $1)`,
			now.Add(-s.cfg.Retain))
		if err != nil {
			return fmt.Errorf("approval store: prune: %w", err)
		}
		return nil
	})
}

func (s *PGStore) listen(ctx context.Context) (*pgx.Conn, error) {
	c, err := pgx.ConnectConfig(ctx, s.conf)
	if err != nil {
		return nil, fmt.Errorf("approval store: connect listener: %w", err)
	}
	if _, err := c.Exec(ctx, "LISTEN "+pgChannel); err != nil {
		c.Close(context.Background())
		return nil, fmt.Errorf("approval store: listen: %w", err)
	}
	return c, nil
}

// listenLoop turns other daemons' notifications into Changes. When the connection drops it
// reconnects with backoff; notifications sent meanwhile are lost, which waiters cover by
// re-reading their request every Config.PollInterval.
func (s *PGStore) listenLoop(ctx context.Context, c *pgx.Conn) {
	defer s.listener.Done()
	backoff := 100 * time.Millisecond
	for {
		if c == nil {
			var err error
			if c, err = s.listen(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("approval store: listener", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 10*time.Second)
				continue
			}
			backoff = 100 * time.Millisecond
		}
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			c.Close(context.Background())
			c = nil
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("approval store: listener lost its connection", "err", err)
			continue
		}
		inst, rest, ok1 := strings.Cut(n.Payload, " ")
		ev, id, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || inst == s.instance {
			continue
		}
		s.notify(Change{ID: id, Event: EventType(ev), Remote: true})
	}
}

func (s *PGStore) notify(c Change) {
	s.mu.Lock()
	fn := s.hook
	s.mu.Unlock()
	if fn != nil {
		fn(c)
	}
}

// OnChange implements Store.
func (s *PGStore) OnChange(fn func(Change)) {
	s.mu.Lock()
	s.hook = fn
	s.mu.Unlock()
}

func (s *PGStore) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case c := <-s.conns:
		if c != nil && !c.IsClosed() {
			return c, nil
		}
		// Replace a connection that broke; the slot is ours until release.
		nc, err := pgx.ConnectConfig(ctx, s.conf)
		if err != nil {
			s.conns <- c
			return nil, fmt.Errorf("approval store: reconnect: %w", err)
		}
		return nc, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

func (s *PGStore) release(c *pgx.Conn) { s.conns <- c }

func (s *PGStore) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	c, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.release(c)
	return pgx.BeginFunc(ctx, c, fn)
}

func scanRequest(row pgx.CollectableRow) (*Request, error) {
	var body []byte
	if err := row.Scan(&body); err != nil {
		return nil, err
	}
	r := new(Request)
	if err := json.Unmarshal(body, r); err != nil {
		return nil, fmt.Errorf("decode request: %w", err)
	}
	return r, nil
}

// write stores r's body and query columns and queues a notification, delivered at commit.
func (s *PGStore) write(ctx context.Context, tx pgx.Tx, r *Request, ev EventType) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode request %s: %w", r.ID, err)
	}
	var closed *time.Time
	if !r.Closed.IsZero() {
		closed = &r.Closed
	}
	if _, err := tx.Exec(ctx, `UPDATE enforcer_approval_requests SET state = $2, closed_at = $3, body = $4, shrunk = $5 WHERE id = $1`,
		r.ID, string(r.State), closed, body, r.Shrunk); err != nil {
		return fmt.Errorf("update request %s: %w", r.ID, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, pgChannel, s.instance+" "+string(ev)+" "+r.ID); err != nil {
		return fmt.Errorf("notify %s: %w", r.ID, err)
	}
	return nil
}

// Create implements Store.
func (s *PGStore) Create(ctx context.Context, r *Request) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode request %s: %w", r.ID, err)
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO enforcer_approval_requests (id, created_at, deadline, owner, subject, rule, hash, state, body, shrunk)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			r.ID, r.Created, r.Deadline, r.Owner, r.Identity.Subject, r.Rule, r.Hash, string(r.State), body, r.Shrunk); err != nil {
			return fmt.Errorf("insert request %s: %w", r.ID, err)
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, pgChannel, s.instance+" "+string(EventCreated)+" "+r.ID)
		return err
	})
	if err != nil {
		return err
	}
	s.notify(Change{ID: r.ID, Event: EventCreated})
	return nil
}

// Get implements Store.
func (s *PGStore) Get(ctx context.Context, id string) (*Request, error) {
	c, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.release(c)
	rows, _ := c.Query(ctx, `SELECT body FROM enforcer_approval_requests WHERE id = $1`, id)
	r, err := pgx.CollectExactlyOneRow(rows, scanRequest)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read request %s: %w", id, err)
	}
	return r, nil
}

// List implements Store.
func (s *PGStore) List(ctx context.Context, f Filter) ([]*Request, error) {
	c, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.release(c)
	var states []string
	for _, st := range f.States {
		states = append(states, string(st))
	}
	var since *time.Time
	if !f.Since.IsZero() {
		since = &f.Since
	}
	var limit *int
	if f.Limit > 0 {
		limit = &f.Limit
	}
	order := "created_at, id"
	if f.Newest {
		order = "created_at DESC, id DESC"
	}
	rows, _ := c.Query(ctx, `SELECT body FROM enforcer_approval_requests
		WHERE (coalesce(cardinality($1::text[]), 0) = 0 OR state = ANY($1))
		AND ($2 = '' OR subject = $2)
		AND ($3::timestamptz IS NULL OR created_at >= $3)
		ORDER BY `+order+` LIMIT $4`, states, f.Subject, since, limit)
	out, err := pgx.CollectRows(rows, scanRequest)
	if err != nil {
		return nil, fmt.Errorf("list requests: %w", err)
	}
	if f.Newest {
		slices.Reverse(out)
	}
	return out, nil
}

// update runs fn on request id under a row lock and writes the result.
func (s *PGStore) update(ctx context.Context, id string, fn func(tx pgx.Tx, r *Request) (EventType, error)) (*Request, error) {
	var out *Request
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT body FROM enforcer_approval_requests WHERE id = $1 FOR UPDATE`, id)
		r, err := pgx.CollectExactlyOneRow(rows, scanRequest)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read request %s: %w", id, err)
		}
		ev, err := fn(tx, r)
		if err != nil {
			return err
		}
		out = r
		if ev == "" {
			return nil // nothing changed
		}
		return s.write(ctx, tx, r, ev)
	})
	return out, err
}

// Decide implements Store.
func (s *PGStore) Decide(ctx context.Context, id string, d Decision, w Windows) (*Request, *Grant, error) {
	var g *Grant
	r, err := s.update(ctx, id, func(tx pgx.Tx, r *Request) (EventType, error) {
		var err error
		if g, err = decide(r, d, w); err != nil {
			return "", err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO enforcer_approval_decisions (request_id, reviewer, verdict, reason, decided_at) VALUES ($1, $2, $3, $4, $5)`,
			id, d.Reviewer.Subject, string(d.Verdict), d.Reason, d.Time); err != nil {
			return "", fmt.Errorf("insert decision on %s: %w", id, err)
		}
		if g != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO enforcer_approval_grants (request_id, hash, subject, rule, rule_digest, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
				g.RequestID, g.Hash, g.Subject, g.Rule, g.RuleDigest, g.Created, g.Expires); err != nil {
				return "", fmt.Errorf("insert grant for %s: %w", id, err)
			}
		}
		return EventDecided, nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.notify(Change{ID: id, Event: EventDecided})
	return r, g, nil
}

// Finish implements Store.
func (s *PGStore) Finish(ctx context.Context, id string, st State, reason string, now time.Time) (*Request, bool, error) {
	changed := false
	r, err := s.update(ctx, id, func(_ pgx.Tx, r *Request) (EventType, error) {
		if changed = finish(r, st, reason, now); !changed {
			return "", nil
		}
		return eventFor(st), nil
	})
	if err != nil {
		return nil, false, err
	}
	if changed {
		s.notify(Change{ID: id, Event: eventFor(st)})
	}
	return r, changed, nil
}

// shrinkBatch is how many requests ShrinkExpired reads and rewrites in one transaction: each may
// weigh the created caps (~130 KiB) until it is shrunk.
const shrinkBatch = 64

// ShrinkExpired implements Store, a batch a transaction. The shrinking is this package's (the
// body is JSON); the shrunk column, a copy of the body's, keeps the rows still to shrink in a
// small index.
func (s *PGStore) ShrinkExpired(ctx context.Context, owner string, cutoff time.Time) (int, error) {
	total := 0
	for {
		n, err := s.shrinkExpiredBatch(ctx, owner, cutoff)
		total += n
		// A short batch is the last; one that shrank less than it read (a body that disagrees
		// with its columns) is left for the next sweep rather than read again and again.
		if err != nil || n < shrinkBatch {
			return total, err
		}
	}
}

func (s *PGStore) shrinkExpiredBatch(ctx context.Context, owner string, cutoff time.Time) (int, error) {
	n := 0
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// Rows a decision holds are skipped, not waited for: the next sweep takes them if they
		// are still to shrink.
		rows, _ := tx.Query(ctx, `SELECT body FROM enforcer_approval_requests r
			WHERE owner = $1 AND state = 'expired' AND NOT shrunk AND closed_at < $2
			AND NOT EXISTS (SELECT 1 FROM enforcer_approval_decisions d WHERE d.request_id = r.id)
			ORDER BY closed_at LIMIT $3 FOR UPDATE SKIP LOCKED`, owner, cutoff, shrinkBatch)
		reqs, err := pgx.CollectRows(rows, scanRequest)
		if err != nil {
			return fmt.Errorf("find expired requests to shrink: %w", err)
		}
		ids, bodies := make([]string, 0, len(reqs)), make([]string, 0, len(reqs))
		for _, r := range reqs {
			if !r.endUndecided(cutoff) {
				continue
			}
			body, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("encode request %s: %w", r.ID, err)
			}
			ids, bodies = append(ids, r.ID), append(bodies, string(body))
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE enforcer_approval_requests r SET body = u.body::jsonb, shrunk = true
			FROM unnest($1::text[], $2::text[]) AS u(id, body) WHERE r.id = u.id`, ids, bodies); err != nil {
			return fmt.Errorf("shrink expired requests: %w", err)
		}
		n = len(ids)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// ConsumeGrant implements Store. The row lock and the consumed_at check in one UPDATE make two
// daemons racing for the same grant see exactly one winner.
func (s *PGStore) ConsumeGrant(ctx context.Context, hash, rule, ruleDigest string, now time.Time) (*Grant, error) {
	c, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.release(c)
	var g Grant
	err = c.QueryRow(ctx, `UPDATE enforcer_approval_grants SET consumed_at = $2
		WHERE request_id = (
			SELECT request_id FROM enforcer_approval_grants
			WHERE hash = $1 AND consumed_at IS NULL AND expires_at > $2 AND rule = $3 AND rule_digest = $4 AND rule_digest <> ''
			ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		AND consumed_at IS NULL
		RETURNING request_id, hash, subject, rule, rule_digest, created_at, expires_at, consumed_at`, hash, now, rule, ruleDigest).
		Scan(&g.RequestID, &g.Hash, &g.Subject, &g.Rule, &g.RuleDigest, &g.Created, &g.Expires, &g.Consumed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("consume grant: %w", err)
	}
	return &g, nil
}

// RevokeGrants implements Store.
func (s *PGStore) RevokeGrants(ctx context.Context, owner string, rules map[string]string, now time.Time) (int, error) {
	names, digests := make([]string, 0, len(rules)), make([]string, 0, len(rules))
	for n, d := range rules {
		names, digests = append(names, n), append(digests, d)
	}
	c, err := s.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer s.release(c)
	tag, err := c.Exec(ctx, `UPDATE enforcer_approval_grants SET expires_at = $1
		WHERE consumed_at IS NULL AND expires_at > $1
		AND request_id IN (SELECT id FROM enforcer_approval_requests WHERE owner = $4)
		AND (rule_digest = '' OR (rule, rule_digest) NOT IN (SELECT * FROM unnest($2::text[], $3::text[])))`, now, names, digests, owner)
	if err != nil {
		return 0, fmt.Errorf("revoke grants: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func (s *PGStore) closeConns() {
	for {
		select {
		case c := <-s.conns:
			if c != nil {
				c.Close(context.Background())
			}
		default:
			return
		}
	}
}

// Close implements Store: it stops listening and closes the connections (waiting for queries in
// flight to return theirs).
func (s *PGStore) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
		s.listener.Wait()
		for range s.cfg.Conns {
			if c := <-s.conns; c != nil {
				c.Close(context.Background())
			}
		}
	})
	return nil
}
