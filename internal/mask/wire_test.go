package mask

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// TestRealServerFormats checks the wire-format assumptions against a real PostgreSQL 15: cells in
// text and binary format (jsonb's version byte, binary text[] arrays that a real client must still
// decode after masking), COPY TO STDOUT in text and CSV format with escapes, and error messages
// that echo data. The sensitive values must not survive anywhere.
func TestRealServerFormats(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv.Exec(t, `
CREATE TABLE customers (
  id int PRIMARY KEY, email text UNIQUE, card text, ssn varchar(11), prefs jsonb, tags text[],
  note text, password_hash text, client_ip inet, balance numeric);
INSERT INTO customers VALUES
 (1, 'ada@example.com', '4111 1111 1111 1111', '536-22-8726',
  '{"phone": "+1 415 555 2671", "iban": "DE89370400440532013000", "n": 1}',
  ARRAY['vip', 'backup: bob@example.org', NULL],
  E'tab\there\nnewline \\ backslash, card 5555-5555-5555-4444 "quoted"',
  '$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW', '203.0.113.7', 10.5),
 (2, 'carol@example.net', NULL, NULL, '[]', '{}', 'nothing to see', 'x', NULL, 0);`)
	secrets := []string{"ada@example.com", "bob@example.org", "carol@example.net", "4111 1111 1111 1111",
		"5555-5555-5555-4444", "536-22-8726", "415 555 2671", "DE89370400440532013000", "R9h/cIPz0gi", "203.0.113.7"}
	leak := func(where string, b []byte) {
		t.Helper()
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s: %q in clear in %q", where, s, b)
			}
		}
	}

	conn, err := pgconn.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	p := mustPlan(t, []ColumnRule{{Pattern: "customers.password_hash", Style: StyleRedact}}, Config{})
	const query = `SELECT id, email AS contact, card, ssn, prefs, tags, note, password_hash AS h, client_ip, upper(email) FROM customers ORDER BY id`
	names := map[uint16]string{}
	{
		rr := conn.ExecParams(ctx, `SELECT attnum, attname FROM pg_attribute WHERE attrelid = 'customers'::regclass AND attnum > 0`, nil, nil, nil, nil).Read()
		if rr.Err != nil {
			t.Fatal(rr.Err)
		}
		for _, row := range rr.Rows {
			var n int
			for _, c := range row[0] {
				n = n*10 + int(c-'0')
			}
			names[uint16(n)] = string(row[1])
		}
	}
	tm := pgtype.NewMap()
	for _, format := range []int16{0, 1} {
		formats := make([]int16, 10)
		for i := range formats {
			formats[i] = format
		}
		rr := conn.ExecParams(ctx, query, nil, nil, nil, formats).Read()
		if rr.Err != nil {
			t.Fatal(rr.Err)
		}
		// What the proxy does once per RowDescription: resolve table and attribute names.
		cols := make([]Column, len(rr.FieldDescriptions))
		for i, fd := range rr.FieldDescriptions {
			cols[i] = Column{Name: fd.Name, Field: fd.Name, TypeOID: fd.DataTypeOID, Format: fd.Format}
			if fd.TableOID != 0 {
				cols[i].Table, cols[i].Name = "customers", names[fd.TableAttributeNumber]
			}
		}
		rp := p.ForColumns(cols)
		for r, row := range rr.Rows {
			for c, cell := range row {
				if cell == nil {
					continue
				}
				out, _, null, err := rp.MaskCell(c, cell, nil)
				if err != nil {
					t.Fatalf("format %d row %d col %s: %v", format, r, cols[c].Name, err)
				}
				if null {
					continue
				}
				leak(cols[c].Name, out)
				// A real client must still decode every masked cell.
				switch cols[c].TypeOID {
				case oidJSONB:
					body := out
					if format == 1 {
						if out[0] != 1 {
							t.Fatalf("jsonb binary lost its version byte: %q", out)
						}
						body = out[1:]
					}
					if !json.Valid(body) {
						t.Errorf("jsonb cell invalid after masking: %q", out)
					}
				case 1009:
					var tags []*string
					if err := tm.Scan(cols[c].TypeOID, format, out, &tags); err != nil {
						t.Errorf("text[] format %d does not decode after masking: %v (%q)", format, err, out)
					} else if r == 0 && (len(tags) != 3 || tags[2] != nil || *tags[1] != "backup: [REDACTED:email]") {
						t.Errorf("text[] decoded to %v", tags)
					}
				}
			}
		}
	}

	// COPY TO STDOUT, text and CSV: columns as the COPY names them.
	copyCols := p.ForColumns([]Column{
		{Table: "customers", Name: "id", TypeOID: oidInt4}, {Table: "customers", Name: "email", TypeOID: oidText},
		{Table: "customers", Name: "card", TypeOID: oidText}, {Table: "customers", Name: "ssn", TypeOID: oidVarchar},
		{Table: "customers", Name: "prefs", TypeOID: oidJSONB}, {Table: "customers", Name: "tags", TypeOID: 1009},
		{Table: "customers", Name: "note", TypeOID: oidText}, {Table: "customers", Name: "password_hash", TypeOID: oidText},
		{Table: "customers", Name: "client_ip", TypeOID: oidInet}, {Table: "customers", Name: "balance", TypeOID: 1700},
	})
	var text bytes.Buffer
	if _, err := conn.CopyTo(ctx, &text, `COPY customers TO STDOUT`); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(text.Bytes(), []byte(`tab\there\nnewline \\ backslash`)) {
		t.Fatalf("server COPY escapes not as expected: %q", text.Bytes())
	}
	for _, line := range bytes.SplitAfter(text.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		out, _, err := p.MaskCopyLine(line, nil, copyCols)
		if err != nil {
			t.Fatalf("COPY line %q: %v", line, err)
		}
		leak("COPY text", out)
		if bytes.Count(out, []byte("\t")) != bytes.Count(line, []byte("\t")) {
			t.Errorf("COPY fields changed: %q → %q", line, out)
		}
	}
	var csvData bytes.Buffer
	if _, err := conn.CopyTo(ctx, &csvData, `COPY customers TO STDOUT (FORMAT csv)`); err != nil {
		t.Fatal(err)
	}
	out, _, err := p.MaskCSV(csvData.Bytes(), nil, copyCols, CSVFormat{})
	if err != nil {
		t.Fatal(err)
	}
	leak("COPY csv", out)
	rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 2 || len(rows[0]) != 10 {
		t.Errorf("masked CSV does not parse as 2×10: %v %v", rows, err)
	}

	// Error messages that echo data.
	for _, sql := range []string{
		`SELECT password_hash::int FROM customers WHERE id = 1`,
		`SELECT email::int FROM customers WHERE id = 1`,
		`INSERT INTO customers (id, email) VALUES (3, 'ada@example.com')`,
		`INSERT INTO customers (id, email, card) SELECT 1, 'x', card FROM customers WHERE id = 1`,
		`SELECT note::json FROM customers WHERE id = 1`,
		`SELECT ssn::date FROM customers WHERE id = 1`,
		`SELECT password_hash::regclass FROM customers WHERE id = 1`,
		`SELECT email::regclass FROM customers WHERE id = 1`,
		`SELECT password_hash::regtype FROM customers WHERE id = 1`,
		`SELECT password_hash::jsonb FROM customers WHERE id = 1`,
		`SELECT ('{"a": "' || password_hash || '"')::jsonb FROM customers WHERE id = 1`,
		`SELECT xmlparse(document password_hash) FROM customers WHERE id = 1`,
		`SELECT to_date(password_hash, 'YYYY-MM-DD') FROM customers WHERE id = 1`,
		`SELECT password_hash::uuid FROM customers WHERE id = 1`,
		`SELECT password_hash::bytea::int FROM customers WHERE id = 1`,
		`SELECT password_hash::numeric FROM customers WHERE id = 1`,
		`SELECT password_hash::interval FROM customers WHERE id = 1`,
		`SELECT ARRAY[password_hash]::int[] FROM customers WHERE id = 1`,
		`SELECT row_to_json(c)::text::int FROM customers c WHERE id = 1`,
		`SELECT 1 FROM customers WHERE id = 1 AND password_hash::int = 1`,
		`SELECT set_config('search_path', password_hash, false)::int FROM customers WHERE id = 1`,
		`SELECT pg_catalog.pg_get_viewdef(password_hash) FROM customers WHERE id = 1`,
	} {
		_, err := conn.Exec(ctx, sql).ReadAll()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Fatalf("%s: want a server error, got %v", sql, err)
		}
		for _, field := range []string{pgErr.Message, pgErr.Detail, pgErr.Hint, pgErr.Where} {
			out, _, err := p.MaskServerMessage([]byte(field), nil)
			if err != nil {
				t.Fatal(err)
			}
			leak("error "+strings.Fields(sql)[1], out)
			// Strict mode: not even fragments (a value cast to an identifier type).
			out, _, err = p.MaskServerMessageStrict([]byte(field), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, frag := range []string{"ada@example", "R9h", "r9h", "IPz0gi", "4111", "536-22"} {
				if bytes.Contains(out, []byte(frag)) {
					t.Errorf("strict: %q in %q (%s)", frag, out, sql)
				}
			}
		}
	}
}
