package record

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// TestPsqlTableMatchesPsql runs queries with real psql against a real PostgreSQL and checks that
// PsqlTable, given the same columns, type OIDs and text values (read with pgconn), prints exactly
// what psql printed.
func TestPsqlTableMatchesPsql(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	queries := []string{
		`SELECT * FROM (VALUES (1, 'a****@example.com'), (10, NULL)) v(id, email)`,
		`SELECT 1`,
		`SELECT 1.5::numeric AS n, 2::int8 AS big, 'x'::text AS t, '123'::text AS digits, true AS b, NULL::int AS nul, 3.25::float8 AS f, 7::oid AS o`,
		`SELECT 'ünïcödé' AS wide, '' AS empty, 'x' AS "Ünï"`,
		`SELECT n, repeat('x', n) AS long_header_name_here, n * 1000 AS thousands FROM generate_series(1, 12) n`,
		`SELECT * FROM (VALUES (1)) v(a) WHERE false`,
		`SELECT 'a' AS "col with spaces", -42 AS neg, 1e-7::float8 AS tiny`,
		`SELECT '{1,2}'::int[] AS arr, '{"k": 1}'::jsonb AS js, '2026-11-27'::date AS d`,
		`SELECT E'line\nbreak\nthree' AS multi, 'x' AS last`,
		`SELECT 'x' AS first, E'a\nbb' AS multi_last, 5 AS n`,
		`SELECT 1 AS n, E'two\nlines' AS last UNION ALL SELECT 22, 'one'`,
		`SELECT E'a\tb\tc' AS tabs, E'cr\rhere' AS cr, E'bell\x07' AS ctl, E'\x7f' AS del`,
		`SELECT '日本語テキスト' AS cjk, 'e' || U&'\0301' AS combining, '😀' AS emoji`,
		`SELECT E'ünï\nline\nbreak' AS name`,
	}
	for _, q := range queries {
		cmd := exec.CommandContext(ctx, "psql", "-X", "-h", srv.Addr.Addr().String(), "-p", strconv.Itoa(int(srv.Addr.Port())),
			"-U", pgtest.SuperUser, "-d", "postgres", "-c", q)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+srv.Password, "PGSSLMODE=disable", "LC_ALL=C.UTF-8")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql %q: %v: %s", q, err, out)
		}
		want := strings.TrimSuffix(string(out), "\n") // psql ends a result with an empty line

		mrr := conn.Exec(ctx, q)
		if !mrr.NextResult() {
			t.Fatalf("%s: no result: %v", q, mrr.Close())
		}
		rr := mrr.ResultReader()
		var rows [][]*string
		for rr.NextRow() {
			vals := rr.Values()
			row := make([]*string, len(vals))
			for j, v := range vals {
				if v != nil {
					s := string(v)
					row[j] = &s
				}
			}
			rows = append(rows, row)
		}
		var cols []string
		var types []uint32
		for _, fd := range rr.FieldDescriptions() {
			cols = append(cols, fd.Name)
			types = append(types, fd.DataTypeOID)
		}
		if _, err := rr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := mrr.Close(); err != nil {
			t.Fatal(err)
		}
		if got := PsqlTable(cols, types, rows, int64(len(rows))); got != want {
			t.Errorf("%s\npsql:\n%s\nPsqlTable:\n%s", q, want, got)
		}
	}
}
