package pgguard

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/enforcer-dev/enforcer/internal/mask"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
	"github.com/enforcer-dev/enforcer/internal/proto/postgres"
)

// masker applies a masking plan to the results of one connection. It runs on the proxy's
// server-side goroutine, but for noteOrigins, which the client side calls.
type masker struct {
	plan *mask.Plan
	g    *Guard
	// origins are noted by the client side (noteOrigins), read here; cursors and noteScratch
	// are the client side's.
	origins     origins
	cursors     map[string]*sqlclass.Outputs
	noteScratch []*sqlclass.Outputs
	origin      origin // the origin of the result being described
	// The plan of the last row description seen, reused for its rows, and for the next
	// description with the same key (the same statement again; see describeKey).
	desc    *pgproto3.RowDescription
	rp      *mask.ResultPlan
	key     []byte
	scratch []byte
	// The plan of the COPY statement whose data is flowing.
	copy     *copyPlan
	copyStmt uint64 // the ID of the statement copy is for
}

var binaryCopySignature = []byte("PGCOPY\n\xff\r\n\x00")

func (m *masker) result(ctx context.Context, r *postgres.Result) error {
	switch r.Kind {
	case postgres.ResultRowDescription:
		return m.describe(ctx, r.Columns, r.Formats, r.Statement, nil)
	case postgres.ResultRow:
		if r.Columns != m.desc || m.rp == nil {
			if err := m.describe(ctx, r.Columns, r.Formats, r.Statement, nil); err != nil {
				return err
			}
		}
		for i, v := range r.Values {
			if v == nil {
				continue
			}
			out, changed, null, err := m.rp.MaskCell(i, v, nil)
			if err != nil {
				out, null = m.rp.Fallback(i, nil)
				changed = true
			}
			if null {
				r.SetValue(i, nil)
			} else if changed {
				r.SetValue(i, out)
			}
		}
	case postgres.ResultCopyData:
		return m.copyData(ctx, r)
	case postgres.ResultError, postgres.ResultNotice:
		e := r.Error
		changed := false
		// Every text a statement can put in an error: RAISE … USING sets the message, detail
		// and hint, and the schema, table, column, type and constraint names, to any text.
		// File, line and routine name the server's own code; the SQLSTATE is five characters
		// the client must be able to read.
		for _, f := range []*string{&e.Message, &e.Detail, &e.Hint, &e.Where, &e.InternalQuery,
			&e.SchemaName, &e.TableName, &e.ColumnName, &e.DataTypeName, &e.ConstraintName} {
			changed = m.maskServerText(f) || changed
		}
		for k, v := range e.UnknownFields {
			// Fields of a later protocol version, which the client may show as they are.
			if m.maskServerText(&v) {
				e.UnknownFields[k], changed = v, true
			}
		}
		if changed {
			r.MarkChanged()
		}
	case postgres.ResultNotification:
		// A payload is the agent's own text (NOTIFY c, 'payload' or pg_notify(c, any
		// expression)): under column rules, masked as strictly as a server message.
		if m.maskServerText(&r.Notification.Payload) {
			r.MarkChanged()
		}
	case postgres.ResultParameterStatus:
		// Any statement can set a reported setting to any text (set_config('application_name',
		// card, false)), which the server then reports as it is.
		if !fixedParameters[strings.ToLower(r.Parameter.Name)] && m.maskServerText(&r.Parameter.Value) {
			r.MarkChanged()
		}
	}
	return nil
}

// maskServerText masks *f, a text of a server message, and reports whether it changed it. Under
// column rules it masks strictly: a statement that reads a ruled column can make the server
// quote its values (relation "4155550100" does not exist, after tel::regclass), also through a
// view, a function or pg_stats, which its text does not show. A notification payload and a
// setting's value are masked the same way: any statement can make them hold any value.
func (m *masker) maskServerText(f *string) bool {
	if *f == "" {
		return false
	}
	mask := m.plan.MaskServerMessage
	if m.plan.HasColumnRules() {
		mask = m.plan.MaskServerMessageStrict
	}
	// Server messages echo values back ("invalid input syntax for type integer: "…""):
	// MaskServerMessage also redacts the quoted data of such templates.
	out, changed, err := mask([]byte(*f), nil)
	switch {
	case err != nil:
		*f = string(m.plan.Redacted())
		return true
	case changed:
		*f = string(out)
	}
	return changed
}

// fixedParameters are the reported settings whose values the server takes from a fixed set (an
// encoding, a date style, on or off), which can hold no other data, and which drivers read:
// masking a digit of UTF8 would break them.
var fixedParameters = map[string]bool{
	"client_encoding": true, "server_encoding": true, "datestyle": true, "intervalstyle": true,
	"integer_datetimes": true, "standard_conforming_strings": true, "is_superuser": true,
	"in_hot_standby": true, "default_transaction_read_only": true,
}

// errCatalog is what the client learns when masking cannot run for want of the catalog; the
// daemon's log has the cause (which may name the upstream's address and user).
var errCatalog = errors.New("masking unavailable: the catalog lookup failed")

// describe plans a result set: column rules apply by source table and column, whatever the
// alias, so sources are resolved through the catalog, and a computed column's from the origin
// of the statement stmt (see noteOrigins), or org when the caller knows it. If they cannot be
// resolved the result does not pass (fail closed).
func (m *masker) describe(ctx context.Context, desc *pgproto3.RowDescription, formats []int16, stmt *postgres.Statement, org *origin) error {
	m.desc = desc
	if desc == nil {
		// Rows with no description (a portal never described): no column is planned, so every
		// cell is withheld (MaskCell fails, Fallback is NULL).
		m.rp = m.plan.ForColumns(nil)
		m.key = m.key[:0] // matches no description
		return nil
	}
	m.scratch = describeKey(m.scratch[:0], m.g.database(), desc, formats)
	// The connection may have changed the schema where the catalog cannot see it yet (see
	// noteSchemaChange): a view's and a computed column's sources are then not known.
	stale := false
	if m.plan.HasColumnRules() {
		// What the catalog says is kept for catalogTTL; so are plans that used it.
		m.scratch = binary.BigEndian.AppendUint64(m.scratch, uint64(time.Now().UnixNano()/int64(catalogTTL)))
		// A view replaced keeps its OID and columns: its rows' description is the same, but
		// once the catalog forgot what it held, the plan must be made again.
		m.scratch = binary.BigEndian.AppendUint64(m.scratch, m.g.sh.Catalogs.Generation(m.g.info.Target.Name, m.g.database()))
		if stale = m.g.schemaChanged.Load(); stale {
			m.scratch = append(m.scratch, 0xfd)
		}
	}
	// A computed column's sources are part of the key: the same columns from another
	// statement (or from the same FETCH of a cursor declared again) may come from other
	// table columns.
	var computed [][]mask.Source // by column; nil where the column is a table's
	var anyOrigin []bool
	if m.plan.HasColumnRules() && anyComputed(desc) {
		if org == nil {
			org = m.originOf(stmt)
		}
		computed, anyOrigin = make([][]mask.Source, len(desc.Fields)), make([]bool, len(desc.Fields))
		for i, f := range desc.Fields {
			if f.TableOID != 0 {
				continue
			}
			computed[i], anyOrigin[i] = org.sources(i, len(desc.Fields), []mask.Source{})
			m.scratch = appendSourcesKey(m.scratch, computed[i], anyOrigin[i])
		}
	}
	if m.rp != nil && bytes.Equal(m.scratch, m.key) {
		// Everything the plan depends on is in the key (under column rules, the catalog's time
		// window too), so the resolution would come out the same.
		return nil
	}
	tables := make([]uint32, len(desc.Fields))
	attrs := make([]uint16, len(desc.Fields))
	for i, f := range desc.Fields {
		tables[i], attrs[i] = f.TableOID, f.TableAttributeNumber
	}
	var srcs []Source
	if m.g.info.Connect != nil && anyNonZero(tables) {
		var err error
		srcs, err = m.g.sh.Catalogs.Resolve(ctx, m.g.info.Target.Name, m.g.database(), m.g.info.Connect, tables, attrs)
		if err != nil {
			m.g.log.Error("masking: cannot resolve result columns; result withheld", "err", err)
			return errCatalog
		}
	}
	cols := make([]mask.Column, len(desc.Fields))
	for i, f := range desc.Fields {
		c := mask.Column{Name: string(f.Name), Field: string(f.Name), TypeOID: f.DataTypeOID, Format: f.Format}
		if i < len(formats) {
			c.Format = formats[i]
		}
		switch {
		case srcs != nil && srcs[i].Table != "":
			src := &srcs[i]
			c.Schema, c.Table, c.Name = src.Schema, src.Table, src.Column
			if src.Column == "" {
				// A whole row (SELECT c FROM customers c): every column of its table.
				c.Name = string(f.Name)
				c.Sources = []mask.Source{{Schema: c.Schema, Table: c.Table}}
			}
			// A view's column: the table columns it shows.
			c.Sources = appendFrom(c.Sources, src.From)
			c.AnySource = src.FromUnknown || stale && (src.View || len(src.From) > 0)
		case srcs != nil && srcs[i].FromUnknown:
			c.AnySource = true // a column the catalog cannot find
		case computed != nil && f.TableOID == 0 && stale && len(computed[i]) > 0:
			// Computed from relations the catalog may see as they were (count(*) and 1+1 are
			// from none).
			c.AnySource = true
		case computed != nil && f.TableOID == 0:
			c.Sources, c.AnySource = computed[i], anyOrigin[i]
			if err := m.viewColumns(ctx, &c); err != nil {
				m.g.log.Error("masking: cannot resolve the views of a result; result withheld", "err", err)
				return errCatalog
			}
		}
		if readsStatistics(&c) {
			// pg_stats shows sampled values of every column (most_common_vals,
			// histogram_bounds): every rule covers them.
			c.AnySource = true
		}
		cols[i] = c
	}
	m.rp = m.plan.ForColumns(cols)
	m.key, m.scratch = m.scratch, m.key
	return nil
}

// describeKey appends what a result plan depends on: the database, and each column's name,
// source (table OID, attribute number), type and format.
func describeKey(b []byte, database string, desc *pgproto3.RowDescription, formats []int16) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(database)))
	b = append(b, database...)
	for i, f := range desc.Fields {
		format := f.Format
		if i < len(formats) {
			format = formats[i]
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.Name)))
		b = append(b, f.Name...)
		b = binary.BigEndian.AppendUint32(b, f.TableOID)
		b = binary.BigEndian.AppendUint16(b, f.TableAttributeNumber)
		b = binary.BigEndian.AppendUint32(b, f.DataTypeOID)
		b = binary.BigEndian.AppendUint16(b, uint16(format))
	}
	return b
}

// viewColumns adds to a computed column's sources the table columns that those naming a view's
// column show.
func (m *masker) viewColumns(ctx context.Context, c *mask.Column) error {
	if m.g.info.Connect == nil || len(c.Sources) == 0 {
		return nil
	}
	srcs := make([]Source, 0, len(c.Sources))
	for _, s := range c.Sources {
		if !s.Any {
			srcs = append(srcs, Source{Schema: s.Schema, Table: s.Table, Column: s.Name})
		}
	}
	from, unknown, err := m.g.sh.Catalogs.ViewColumns(ctx, m.g.info.Target.Name, m.g.database(), m.g.info.Connect, srcs)
	if err != nil {
		return err
	}
	c.Sources = appendFrom(c.Sources, from)
	c.AnySource = c.AnySource || unknown
	return nil
}

// appendFrom appends the catalog's sources as masking sources.
func appendFrom(dst []mask.Source, from []Source) []mask.Source {
	for _, f := range from {
		dst = append(dst, mask.Source{Schema: f.Schema, Table: f.Table, Name: f.Column})
	}
	return dst
}

// appendSourcesKey appends a computed column's sources to a plan cache key.
func appendSourcesKey(b []byte, srcs []mask.Source, any bool) []byte {
	b = append(b, 0xfe)
	if any {
		b = append(b, 0xff)
	}
	for _, s := range srcs {
		for _, part := range []string{s.Schema, s.Table, s.Name} {
			b = binary.BigEndian.AppendUint32(b, uint32(len(part)))
			b = append(b, part...)
		}
		if s.Any {
			b = append(b, 0xff)
		}
	}
	return b
}

// statistics are the catalog relations that show samples of column values.
var statistics = map[string]bool{"pg_stats": true, "pg_stats_ext": true, "pg_stats_ext_exprs": true,
	"pg_statistic": true, "pg_statistic_ext_data": true}

// readsStatistics reports whether column c is, or is computed from, a catalog relation that
// shows samples of column values.
func readsStatistics(c *mask.Column) bool {
	if c.Table != "" && statistics[c.Table] && (c.Schema == "" || c.Schema == "pg_catalog") {
		return true
	}
	for _, s := range c.Sources {
		if statistics[s.Table] && (s.Schema == "" || s.Schema == "pg_catalog") {
			return true
		}
	}
	return false
}

// anyComputed reports whether a result has a column that is not a table's column as it is.
func anyComputed(desc *pgproto3.RowDescription) bool {
	for _, f := range desc.Fields {
		if f.TableOID == 0 || f.TableAttributeNumber == 0 {
			return true
		}
	}
	return false
}

// originOf fills m.origin with the origin of stmt's result (unknown without a statement).
func (m *masker) originOf(stmt *postgres.Statement) *origin {
	if stmt == nil {
		m.origin = origin{outs: m.origin.outs[:0], unknown: true}
	} else {
		m.origins.get(stmt.ID, &m.origin)
	}
	return &m.origin
}

func anyNonZero(v []uint32) bool {
	for _, x := range v {
		if x != 0 {
			return true
		}
	}
	return false
}

var errBinaryCopy = errors.New("binary COPY output cannot be masked; use COPY in text or CSV format")

func (m *masker) copyData(ctx context.Context, r *postgres.Result) error {
	if bytes.HasPrefix(r.Data, binaryCopySignature) {
		return errBinaryCopy
	}
	if r.Statement == nil {
		return errCopyUnreadable
	}
	if m.copy == nil || m.copyStmt != r.Statement.ID {
		cp, err := m.planCopy(ctx, r.Statement.SQL)
		if err != nil {
			m.g.log.Error("masking: COPY output withheld", "err", err)
			return err
		}
		m.copy, m.copyStmt = cp, r.Statement.ID
	}
	cp := m.copy
	var out []byte
	var changed bool
	var err error
	switch {
	case cp.csv && cp.header && !cp.headerSeen:
		cp.headerSeen = true
		return nil
	case cp.csv:
		out, changed, err = m.plan.MaskCSV(r.Data, nil, cp.rp, cp.csvFormat)
	default:
		out, changed, err = m.plan.MaskCopyLine(r.Data, nil, cp.rp)
	}
	if err != nil {
		return fmt.Errorf("masking COPY data: %w", err)
	}
	if changed {
		r.SetData(out)
	}
	return nil
}
