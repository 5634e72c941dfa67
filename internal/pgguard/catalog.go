package pgguard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// Catalogs resolves the table OID and attribute number of result columns to names, so column
// masking rules hold whatever alias a query gives a column. One catalog per target and database
// (OIDs are per database), filled on first sight of a table over the target's own credentials and
// kept for catalogTTL: a table altered or a view redefined since is followed within that. A
// column added since is looked up at once.
type Catalogs struct {
	mu   sync.Mutex
	byDB map[string]*catalog
}

// Connector opens a connection to a target's database with the target's credentials.
type Connector func(ctx context.Context, database string) (*pgconn.PgConn, error)

type attrKey struct {
	table uint32
	attr  uint16
}

// Source is a column's origin: schema, table and attribute name.
type Source struct {
	Schema, Table, Column string
	// From are, for a view's column, the table columns it is computed from, followed through
	// the views it reads; FromUnknown is set when that cannot be told (a definition that does
	// not parse, views nested too deep). A table's columns have neither.
	From        []Source
	FromUnknown bool
	// View: the column is a view's (or a materialized view's).
	View bool
}

// relation is a table or view the catalog has looked up.
type relation struct {
	schema, name string
	view         bool     // a view or materialized view
	def          string   // its definition
	cols         []string // column names by attribute number - 1
	uses         []uint32 // relations a view's definition reads
	ancestors    []Source // tables a table inherits from, at any depth (Schema and Table)
	parsed       bool     // outs and calls are set (see outputs)
	outs         *sqlclass.Outputs
	calls        bool // the definition calls functions not known to be free of effects
}

// maxViewDepth bounds how deep views on views are followed.
const maxViewDepth = 16

type catalog struct {
	mu      sync.Mutex
	conn    *pgconn.PgConn
	tables  map[uint32]bool // OIDs looked up (found or not)
	columns map[attrKey]Source
	rels    map[uint32]*relation
	views   map[string][]uint32 // views by name, for names looked up (nil: none by that name)
	// filledAt is when the catalog was last emptied: what it holds is forgotten after
	// catalogTTL (see expire).
	filledAt time.Time
	// After a lookup fails, lookups fail at once with downErr until downUntil, rather than each
	// waiting up to catalogTimeout under mu.
	downUntil time.Time
	downErr   error
	// gen counts resets: a plan built from what the catalog said is kept only while gen is
	// the same (see masker.describe).
	gen atomic.Uint64
}

// catalogRetry is how long lookups fail at once after one failed.
const catalogRetry = 2 * time.Second

// catalogTTL is how long the catalog keeps what it looked up: a column renamed, a view created
// or redefined, a table attached to an inheritance tree after the catalog looked is followed
// within this long.
const catalogTTL = 10 * time.Second

// catalogTimeout bounds one lookup; a statement or result waiting for it fails after this long.
const catalogTimeout = 10 * time.Second

// expire forgets everything once catalogTTL has passed.
func (c *catalog) expire() {
	if time.Since(c.filledAt) < catalogTTL {
		return
	}
	c.reset()
}

// reset forgets everything.
func (c *catalog) reset() {
	c.gen.Add(1)
	c.filledAt = time.Now()
	clear(c.views)
	clear(c.rels)
	clear(c.tables)
	clear(c.columns)
}

// Generation counts the times the catalog of a target's database forgot what it held.
func (cs *Catalogs) Generation(target, database string) uint64 {
	return cs.get(target + "\x00" + database).gen.Load()
}

// Forget makes the catalog of a target's database look everything up again: the guard calls it
// once a connection's schema changes are committed.
func (cs *Catalogs) Forget(target, database string) {
	c := cs.get(target + "\x00" + database)
	c.mu.Lock()
	c.reset()
	c.mu.Unlock()
}

// forget drops what the catalog holds of relation oid, to look it up again.
func (c *catalog) forget(oid uint32) {
	if rel := c.rels[oid]; rel != nil {
		for a := range len(rel.cols) + 1 {
			delete(c.columns, attrKey{oid, uint16(a)})
		}
	}
	delete(c.rels, oid)
	delete(c.tables, oid)
}

func (cs *Catalogs) get(key string) *catalog {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byDB == nil {
		cs.byDB = map[string]*catalog{}
	}
	c := cs.byDB[key]
	if c == nil {
		c = &catalog{tables: map[uint32]bool{}, columns: map[attrKey]Source{}, rels: map[uint32]*relation{}, views: map[string][]uint32{}}
		cs.byDB[key] = c
	}
	return c
}

// open returns the catalog of a target's database, locked, emptied if it expired.
func (cs *Catalogs) open(target, database string) *catalog {
	c := cs.get(target + "\x00" + database)
	c.mu.Lock()
	c.expire()
	return c
}

// Resolve returns the source of each (table OID, attribute number) pair; pairs with table OID 0
// (computed columns) and system columns get a zero Source, attribute number 0 (a whole row) one
// without a column. Unknown tables are fetched in one query, and the views they are, with what
// those read; so are known tables with a column the catalog has not seen (added since). A
// column the catalog cannot find even then (added in a transaction not committed yet) has
// FromUnknown set: every rule covers it.
//
// Relations a session holds locked (a view it is replacing) cannot be looked up: after
// catalogLockTimeout, the catalog is emptied and the columns it no longer holds have
// FromUnknown set.
func (cs *Catalogs) Resolve(ctx context.Context, target, database string, connect Connector, tables []uint32, attrs []uint16) ([]Source, error) {
	ctx = context.WithoutCancel(ctx) // one client hanging up must not fail a lookup others wait for
	c := cs.open(target, database)
	defer c.mu.Unlock()
	var missing []uint32
	for i, t := range tables {
		if t == 0 || slices.Contains(missing, t) {
			continue
		}
		if c.tables[t] && userColumn(attrs[i]) {
			if _, ok := c.columns[attrKey{t, attrs[i]}]; !ok {
				c.forget(t)
			}
		}
		if !c.tables[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		if err := c.fetch(ctx, database, connect, missing); err != nil {
			c.reset() // a lookup that failed half way leaves relations without their sources
			if !lockTimedOut(err) {
				return nil, err
			}
		}
	}
	out := make([]Source, len(tables))
	for i, t := range tables {
		if t != 0 {
			var ok bool
			out[i], ok = c.columns[attrKey{t, attrs[i]}]
			out[i].FromUnknown = out[i].FromUnknown || (!ok && userColumn(attrs[i]))
		}
	}
	return out, nil
}

// userColumn reports whether attribute number attr (as RowDescription carries it, unsigned) is
// a table's own column: system columns (ctid, xmin…) are negative.
func userColumn(attr uint16) bool { return int16(attr) > 0 }

const catalogQuery = `SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, c.relkind IN ('v', 'm'),
  CASE WHEN c.relkind IN ('v', 'm') AND a.attnum = 1 THEN pg_catalog.pg_get_viewdef(c.oid) END
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.oid = ANY($1::oid[])`

// usesQuery lists the relations each view's definition reads (its rewrite rule's dependencies).
const usesQuery = `SELECT DISTINCT r.ev_class, d.refobjid
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
WHERE r.ev_class = ANY($1::oid[]) AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class`

// ancestorsQuery lists the tables each of a set of tables inherits from (partitions' parents
// included), at any depth.
const ancestorsQuery = `WITH RECURSIVE a(child, parent) AS (
  SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits WHERE inhrelid = ANY($1::oid[])
  UNION SELECT a.child, i.inhparent FROM a JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.parent)
SELECT a.child, n.nspname, c.relname FROM a
JOIN pg_catalog.pg_class c ON c.oid = a.parent
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`

// fetch looks up the relations oids, then the relations the views among them read, and so on,
// and works out where each view column comes from, and what each table inherits from: a rule
// on customers covers a partition or a child table of it.
func (c *catalog) fetch(ctx context.Context, database string, connect Connector, oids []uint32) error {
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	var views []uint32
	for depth := 0; len(oids) > 0 && depth <= maxViewDepth; depth++ {
		rows, err := c.query(ctx, database, connect, catalogQuery, oids)
		if err != nil {
			return fmt.Errorf("catalog query: %w", err)
		}
		var found []uint32
		for _, v := range rows {
			oid, err1 := strconv.ParseUint(v[0], 10, 32)
			attnum, err2 := strconv.ParseUint(v[3], 10, 16)
			if err1 != nil || err2 != nil || attnum == 0 {
				continue
			}
			rel := c.rels[uint32(oid)]
			if rel == nil {
				rel = &relation{schema: v[1], name: v[2], view: v[5] == "t"}
				c.rels[uint32(oid)] = rel
				found = append(found, uint32(oid))
			}
			if v[6] != "" {
				rel.def = v[6]
			}
			if int(attnum) > len(rel.cols) {
				rel.cols = append(rel.cols, make([]string, int(attnum)-len(rel.cols))...)
			}
			rel.cols[attnum-1] = v[4]
			c.columns[attrKey{uint32(oid), uint16(attnum)}] = Source{Schema: v[1], Table: v[2], Column: v[4], View: rel.view}
			c.columns[attrKey{uint32(oid), 0}] = Source{Schema: v[1], Table: v[2], View: rel.view} // the whole row
		}
		for _, o := range oids {
			c.tables[o] = true
		}
		if len(found) > 0 {
			rows, err := c.query(ctx, database, connect, ancestorsQuery, found)
			if err != nil {
				return fmt.Errorf("catalog query of inheritance: %w", err)
			}
			for _, v := range rows {
				child, err := strconv.ParseUint(v[0], 10, 32)
				if rel := c.rels[uint32(child)]; err == nil && rel != nil {
					rel.ancestors = append(rel.ancestors, Source{Schema: v[1], Table: v[2]})
				}
			}
			for _, o := range found {
				rel := c.rels[o]
				for attnum := 0; attnum <= len(rel.cols) && len(rel.ancestors) > 0 && !rel.view; attnum++ {
					k := attrKey{o, uint16(attnum)}
					src := c.columns[k]
					src.From, _ = c.derive(o, attnum, 0)
					c.columns[k] = src
				}
			}
		}
		var fresh []uint32
		for _, o := range found {
			if c.rels[o].view {
				fresh = append(fresh, o)
			}
		}
		views = append(views, fresh...)
		oids = nil
		if len(fresh) == 0 {
			break
		}
		rows, err = c.query(ctx, database, connect, usesQuery, fresh)
		if err != nil {
			return fmt.Errorf("catalog query of view dependencies: %w", err)
		}
		for _, v := range rows {
			view, err1 := strconv.ParseUint(v[0], 10, 32)
			used, err2 := strconv.ParseUint(v[1], 10, 32)
			if err1 != nil || err2 != nil || c.rels[uint32(view)] == nil {
				continue
			}
			rel := c.rels[uint32(view)]
			rel.uses = append(rel.uses, uint32(used))
			if !c.tables[uint32(used)] && !slices.Contains(oids, uint32(used)) {
				oids = append(oids, uint32(used))
			}
		}
	}
	for _, v := range views {
		rel := c.rels[v]
		for attnum := range len(rel.cols) + 1 {
			k := attrKey{v, uint16(attnum)}
			src := c.columns[k]
			src.From, src.FromUnknown = c.derive(v, attnum, 0)
			c.columns[k] = src
		}
	}
	return nil
}

// query runs a catalog query with an OID array parameter and returns its rows as strings
// (NULL as ""), reconnecting once if the connection was lost.
func (c *catalog) query(ctx context.Context, database string, connect Connector, sql string, oids []uint32) ([][]string, error) {
	arg := make([]byte, 0, 1+len(oids)*11)
	arg = append(arg, '{')
	for i, o := range oids {
		if i > 0 {
			arg = append(arg, ',')
		}
		arg = strconv.AppendUint(arg, uint64(o), 10)
	}
	return c.queryArg(ctx, database, connect, sql, append(arg, '}'))
}

// queryArg is query with its one parameter as text.
func (c *catalog) queryArg(ctx context.Context, database string, connect Connector, sql string, arg []byte) ([][]string, error) {
	if time.Now().Before(c.downUntil) {
		return nil, c.downErr
	}
	rows, err := c.queryArgOnce(ctx, database, connect, sql, arg)
	if err != nil && !lockTimedOut(err) {
		// Not for a lock the catalog waited for too long: that is one relation's, held by a
		// session, not the catalog's failure.
		c.downUntil, c.downErr = time.Now().Add(catalogRetry), fmt.Errorf("%w (lookups fail for %v after a failure)", err, catalogRetry)
	}
	return rows, err
}

// catalogLockTimeout bounds how long a lookup waits for a lock a session holds on a relation
// (pg_get_viewdef locks the view): it holds the catalog, which every connection shares.
const catalogLockTimeout = "200ms"

// lockTimedOut reports whether err is a lookup's wait for a lock ending (lock_not_available).
func lockTimedOut(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// connect opens the catalog's connection if it has none.
func (c *catalog) connect(ctx context.Context, database string, connect Connector) error {
	if c.conn != nil && !c.conn.IsClosed() {
		return nil
	}
	conn, err := connect(ctx, database)
	if err != nil {
		return fmt.Errorf("catalog connection: %w", err)
	}
	if _, err := conn.Exec(ctx, "SET lock_timeout = '"+catalogLockTimeout+"'").ReadAll(); err != nil {
		conn.Close(context.Background())
		return fmt.Errorf("catalog connection: %w", err)
	}
	c.conn = conn
	return nil
}

func (c *catalog) queryArgOnce(ctx context.Context, database string, connect Connector, sql string, arg []byte) ([][]string, error) {
	for attempt := 0; ; attempt++ {
		if err := c.connect(ctx, database, connect); err != nil {
			return nil, err
		}
		var rows [][]string
		rr := c.conn.ExecParams(ctx, sql, [][]byte{arg}, nil, nil, nil)
		for rr.NextRow() {
			vals := rr.Values()
			row := make([]string, len(vals))
			for i, v := range vals {
				row[i] = string(v)
			}
			rows = append(rows, row)
		}
		_, err := rr.Close()
		if err == nil || lockTimedOut(err) {
			return rows, err // a lock waited for: the connection is fine, and trying again waits again
		}
		c.conn.Close(context.Background())
		c.conn = nil
		if attempt > 0 {
			return nil, err
		}
	}
}

// viewsQuery finds views, materialized views and tables that inherit, by name, in any schema.
const viewsQuery = `SELECT c.relname, c.oid FROM pg_catalog.pg_class c
WHERE c.relname = ANY($1::text[]) AND (c.relkind IN ('v', 'm')
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid))`

// ViewColumns returns the table columns that sources naming a column of a view, materialized
// view or child table show (an unqualified name may be one in any schema), and unknown when
// that cannot be told: upper(num) FROM contacts reports its source as contacts.num, a view of
// customers.tel. Sources naming none of those add nothing.
func (cs *Catalogs) ViewColumns(ctx context.Context, target, database string, connect Connector, srcs []Source) (from []Source, unknown bool, err error) {
	ctx = context.WithoutCancel(ctx)
	c := cs.open(target, database)
	defer c.mu.Unlock()
	var names []string
	for _, s := range srcs {
		if _, looked := c.views[s.Table]; !looked && s.Table != "" && !slices.Contains(names, s.Table) {
			names = append(names, s.Table)
		}
	}
	if len(names) > 0 {
		arg := []byte{'{'}
		for i, n := range names {
			if i > 0 {
				arg = append(arg, ',')
			}
			arg = append(arg, '"')
			arg = append(arg, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(n)...)
			arg = append(arg, '"')
		}
		rows, err := c.queryArg(ctx, database, connect, viewsQuery, append(arg, '}'))
		if err != nil {
			c.reset()
			if lockTimedOut(err) {
				return nil, true, nil
			}
			return nil, false, fmt.Errorf("catalog query of views: %w", err)
		}
		var missing []uint32
		for _, n := range names {
			c.views[n] = nil
		}
		for _, v := range rows {
			oid, err := strconv.ParseUint(v[1], 10, 32)
			if err != nil {
				continue
			}
			c.views[v[0]] = append(c.views[v[0]], uint32(oid))
			if !c.tables[uint32(oid)] {
				missing = append(missing, uint32(oid))
			}
		}
		if len(missing) > 0 {
			if err := c.fetch(ctx, database, connect, missing); err != nil {
				c.reset()
				if lockTimedOut(err) {
					return nil, true, nil
				}
				return nil, false, err
			}
		}
	}
	for _, s := range srcs {
		for _, oid := range c.views[s.Table] {
			rel := c.rels[oid]
			if rel == nil || !sameSchema(s.Schema, rel.schema) {
				continue
			}
			attnum := 0
			if s.Column != "" {
				if attnum = attnumOf(rel, s.Column); attnum == 0 {
					continue
				}
			}
			col := c.columns[attrKey{oid, uint16(attnum)}]
			from, unknown = append(from, col.From...), unknown || col.FromUnknown
		}
	}
	return from, unknown, nil
}

// sameSchema reports whether a schema as a statement names it (empty: any) may be the catalog's
// schema: pg_temp names the session's own temporary schema, pg_temp_N in the catalog.
func sameSchema(named, schema string) bool {
	return named == "" || named == schema || named == "pg_temp" && strings.HasPrefix(schema, "pg_temp_")
}

// Describe returns the columns a query would produce, prepared (not run) on the catalog
// connection of the target's database.
func (cs *Catalogs) Describe(ctx context.Context, target, database string, connect Connector, sql string) ([]pgproto3.FieldDescription, error) {
	c := cs.get(target + "\x00" + database)
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if err := c.connect(ctx, database, connect); err != nil {
			return nil, err
		}
		sd, err := c.conn.Prepare(ctx, "", sql, nil)
		if err == nil {
			out := make([]pgproto3.FieldDescription, len(sd.Fields))
			for i, f := range sd.Fields {
				out[i] = pgproto3.FieldDescription{Name: []byte(f.Name), TableOID: f.TableOID, TableAttributeNumber: f.TableAttributeNumber,
					DataTypeOID: f.DataTypeOID, DataTypeSize: f.DataTypeSize, TypeModifier: f.TypeModifier, Format: f.Format}
			}
			return out, nil
		}
		if c.conn.IsClosed() && attempt == 0 {
			c.conn = nil
			continue
		}
		return nil, err
	}
}
