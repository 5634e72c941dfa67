package pgguard

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Catalogs resolves the table OID and attribute number of result columns to names, so column
// masking rules hold whatever alias a query gives a column. One catalog per target and database
// (OIDs are per database), filled on first sight of a table over the target's own credentials and
// kept for the daemon's life: a renamed column keeps its old name until restart, which only
// matters for rules written against the new name.
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
}

type catalog struct {
	mu      sync.Mutex
	conn    *pgconn.PgConn
	tables  map[uint32]bool // OIDs looked up (found or not)
	columns map[attrKey]Source
}

func (cs *Catalogs) get(key string) *catalog {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byDB == nil {
		cs.byDB = map[string]*catalog{}
	}
	c := cs.byDB[key]
	if c == nil {
		c = &catalog{tables: map[uint32]bool{}, columns: map[attrKey]Source{}}
		cs.byDB[key] = c
	}
	return c
}

// Resolve returns the source of each (table OID, attribute number) pair; pairs with table OID 0
// (computed columns) get a zero Source, attribute number 0 (a whole row) one without a column. Unknown tables are fetched in one query.
func (cs *Catalogs) Resolve(ctx context.Context, target, database string, connect Connector, tables []uint32, attrs []uint16) ([]Source, error) {
	c := cs.get(target + "\x00" + database)
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []string
	seen := map[uint32]bool{}
	for _, t := range tables {
		if t != 0 && !c.tables[t] && !seen[t] {
			seen[t] = true
			missing = append(missing, strconv.FormatUint(uint64(t), 10))
		}
	}
	if len(missing) > 0 {
		if err := c.fetch(ctx, database, connect, missing); err != nil {
			return nil, err
		}
	}
	out := make([]Source, len(tables))
	for i, t := range tables {
		if t != 0 {
			out[i] = c.columns[attrKey{t, attrs[i]}]
		}
	}
	return out, nil
}

const catalogQuery = `SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
WHERE c.oid = ANY($1::oid[])`

func (c *catalog) fetch(ctx context.Context, database string, connect Connector, oids []string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for attempt := 0; attempt < 2; attempt++ {
		if c.conn == nil || c.conn.IsClosed() {
			conn, err := connect(ctx, database)
			if err != nil {
				return fmt.Errorf("catalog connection: %w", err)
			}
			c.conn = conn
		}
		rr := c.conn.ExecParams(ctx, catalogQuery, [][]byte{[]byte("{" + strings.Join(oids, ",") + "}")}, nil, nil, nil)
		for rr.NextRow() {
			v := rr.Values()
			oid, err1 := strconv.ParseUint(string(v[0]), 10, 32)
			attnum, err2 := strconv.ParseUint(string(v[3]), 10, 16)
			if err1 != nil || err2 != nil {
				continue
			}
			c.columns[attrKey{uint32(oid), uint16(attnum)}] = Source{Schema: string(v[1]), Table: string(v[2]), Column: string(v[4])}
			c.columns[attrKey{uint32(oid), 0}] = Source{Schema: string(v[1]), Table: string(v[2])} // the whole row
		}
		if _, err := rr.Close(); err != nil {
			c.conn.Close(context.Background())
			c.conn = nil
			if attempt == 0 {
				continue
			}
			return fmt.Errorf("catalog query: %w", err)
		}
		for _, o := range oids {
			oid, _ := strconv.ParseUint(o, 10, 32)
			c.tables[uint32(oid)] = true
		}
		return nil
	}
	return nil
}

// Describe returns the columns a query would produce, prepared (not run) on the catalog
// connection of the target's database.
func (cs *Catalogs) Describe(ctx context.Context, target, database string, connect Connector, sql string) ([]pgproto3.FieldDescription, error) {
	c := cs.get(target + "\x00" + database)
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if c.conn == nil || c.conn.IsClosed() {
			conn, err := connect(ctx, database)
			if err != nil {
				return nil, fmt.Errorf("catalog connection: %w", err)
			}
			c.conn = conn
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
