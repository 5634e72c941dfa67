package mask

import (
	"bytes"
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
)

// cellOutcome is what MaskCell does with a cell.
type cellOutcome string

const (
	cellClean    cellOutcome = "unchanged"
	cellMasked   cellOutcome = "masked"
	cellWithheld cellOutcome = "NULL"
)

// TestCellsOfEveryTypeInBothFormats runs each expression against a real PostgreSQL 15 in text and
// in binary result format and masks the cell as the proxy does. A value the detectors find in the
// text form must not reach the client in the binary one: not as raw bytes (records, arrays,
// lexemes, bytea), and not as a number that decodes to it (int8, numeric). Masked binary cells
// must still be values the server itself accepts.
func TestCellsOfEveryTypeInBothFormats(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv.Exec(t, `
create table cards (id int, card text, email text, ssn int, phone int8);
insert into cards values (1, '4111111111111111', 'ada.lovelace@example.com', 536228726, 4155550100);
create type pair as (a text, b int);`)
	secrets := []string{"4111111111111111", "ada.lovelace", "536228726", "4155550100", "203.0.113.7"}
	conn, err := pgconn.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	p := mustPlan(t, nil, Config{})

	for _, c := range []struct {
		sql          string
		escape       bool // bytea_output = escape
		text, binary cellOutcome
	}{
		{sql: `select card from cards`, text: cellMasked, binary: cellMasked},
		{sql: `select email::refcursor from cards`, text: cellMasked, binary: cellMasked},
		{sql: `select row(card, email) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select row(row(email), 1) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select row(card::int8) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select array_agg(row(card, email)) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select row(email, 1)::pair from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select array[row(email, 1)::pair] from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select to_tsvector('simple', email) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select array[to_tsvector('simple', email)] from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select to_tsquery('simple', card) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select phraseto_tsquery('simple', 'paid with ' || card) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select ('"' || email || '"')::jsonpath from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select array[email::refcursor] from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select card::int8 from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select card::numeric from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select card::numeric(20, 2) / 1000 from cards`, text: cellClean, binary: cellClean},
		{sql: `select array[card::int8] from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select array[[card::numeric]] from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select int8range(card::int8, null) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select int8multirange(int8range(card::int8, null)) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select numrange(null, card::numeric) from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select card::int8::text::xid8 from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select convert_to(email, 'utf8') from cards`, text: cellMasked, binary: cellMasked},
		{sql: `select card::bytea from cards`, text: cellMasked, binary: cellMasked},
		{sql: `select card::bytea from cards`, escape: true, text: cellMasked, binary: cellMasked},
		{sql: `select '\x00ff5c0a'::bytea || convert_to(email, 'utf8') from cards`, escape: true, text: cellMasked, binary: cellMasked},
		{sql: `select ('x' || encode(convert_to(email, 'utf8'), 'hex'))::varbit from cards`, text: cellClean, binary: cellWithheld},
		{sql: `select ssn as ssn from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select array[ssn] as ssn from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select phone as phone from cards`, text: cellMasked, binary: cellWithheld},
		{sql: `select '203.0.113.7'::inet as addr`, text: cellMasked, binary: cellWithheld},
		{sql: `select 12.5::money`, text: cellClean, binary: cellWithheld},
		// Nothing to find: what drivers read in binary every day passes untouched.
		{sql: `select id from cards`, text: cellClean, binary: cellClean},
		{sql: `select ssn + 1 as n from cards`, text: cellClean, binary: cellClean}, // no context: not an SSN
		{sql: `select 42::int8`, text: cellClean, binary: cellClean},
		{sql: `select -1234.5678::numeric`, text: cellClean, binary: cellClean},
		{sql: `select 'NaN'::numeric`, text: cellClean, binary: cellClean},
		{sql: `select array[1, 2]::int8[]`, text: cellClean, binary: cellClean},
		{sql: `select array[1, 2]::int4[] as phone`, text: cellClean, binary: cellClean},
		{sql: `select row(1, 'plain', 2.5::float8, now(), gen_random_uuid())`, text: cellClean, binary: cellClean},
		{sql: `select to_tsvector('simple', 'hello world')`, text: cellClean, binary: cellClean},
		{sql: `select to_tsquery('simple', 'hello & !world')`, text: cellClean, binary: cellClean},
		{sql: `select 'plain'::bytea`, text: cellClean, binary: cellClean},
		{sql: `select '\x00ff5c'::bytea`, escape: true, text: cellClean, binary: cellClean},
		{sql: `select int4range(1, 10)`, text: cellClean, binary: cellClean},
		{sql: `select now()`, text: cellClean, binary: cellClean},
		{sql: `select '08:00:2b:01:02:03'::macaddr`, text: cellClean, binary: cellClean},
		{sql: `select 'pg_class'::regclass`, text: cellClean, binary: cellClean},
	} {
		output := "hex"
		if c.escape {
			output = "escape"
		}
		if _, err := conn.Exec(ctx, "set bytea_output = "+output).ReadAll(); err != nil {
			t.Fatal(err)
		}
		for format, want := range map[int16]cellOutcome{0: c.text, 1: c.binary} {
			name := c.sql + map[int16]string{0: " (text)", 1: " (binary)"}[format]
			if c.escape {
				name += " (escape)"
			}
			rr := conn.ExecParams(ctx, c.sql, nil, nil, nil, []int16{format}).Read()
			if rr.Err != nil {
				t.Fatalf("%s: %v", name, rr.Err)
			}
			fd := rr.FieldDescriptions[0]
			rp := p.ForColumns([]Column{{Name: fd.Name, Field: fd.Name, TypeOID: fd.DataTypeOID, Format: format}})
			cell := rr.Rows[0][0]
			out, changed, null, err := rp.MaskCell(0, cell, nil)
			if err != nil {
				t.Errorf("%s: %v (cell %q)", name, err, cell)
				continue
			}
			got := cellClean
			switch {
			case null:
				got = cellWithheld
			case changed:
				got = cellMasked
			}
			if got != want {
				t.Errorf("%s: %s, want %s (cell %q → %q)", name, got, want, cell, out)
			}
			if null {
				continue
			}
			// What the client reads: the bytes, and for a binary cell or a bytea, the value the
			// server makes of them.
			seen := string(out)
			if format == 1 || fd.DataTypeOID == oidBytea {
				render := `select $1::text`
				if fd.DataTypeOID == oidBytea {
					render = `select encode($1, 'escape')`
				}
				rr := conn.ExecParams(ctx, render, [][]byte{out}, []uint32{fd.DataTypeOID}, []int16{format}, nil).Read()
				switch {
				case rr.Err == nil:
					seen += " " + string(rr.Rows[0][0])
				case !strings.Contains(rr.Err.Error(), "anonymous composite"):
					t.Errorf("%s: the server does not read the cell back: %v (%q)", name, rr.Err, out)
				}
			}
			for _, s := range secrets {
				if strings.Contains(seen, s) {
					t.Errorf("%s: %q in clear in %q", name, s, seen)
				}
			}
		}
	}
}

// TestNumericTextOfBinary compares appendNumericText with the server's own numeric_out.
func TestNumericTextOfBinary(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, srv.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, v := range []string{
		"0", "0.00", "-0.5", "1", "-1", "9999", "10000", "12345678", "4111111111111111", "-4111111111111111",
		"0.0001", "0.00001", "1e-20", "1.5e20", "123456789012345678901234567890.1234567890123",
		"411111111111.1111000000000000", "0.4111111111111111", "1000000.000001", "NaN", "Infinity",
		"-Infinity", "5.000", "99999999.99999999",
	} {
		rr := conn.ExecParams(ctx, `select $1::numeric, $1::numeric`, [][]byte{[]byte(v)}, nil, nil, []int16{0, 1}).Read()
		if rr.Err != nil {
			t.Fatalf("%s: %v", v, rr.Err)
		}
		text, bin := rr.Rows[0][0], rr.Rows[0][1]
		got, err := appendNumericText(nil, bin)
		if err != nil || !bytes.Equal(got, text) {
			t.Errorf("%s: binary %x reads as %q (%v), the server writes %q", v, bin, got, err, text)
		}
	}
}

// TestShortNumbersNeedContext holds the reason to pass binary int4, xid and cid cells, and int8
// and numeric ones whose text has no run of minCardDigits digits, unread: as text (what a text
// cell of them is scanned as) no detector finds anything in such a number unless the column's
// name gives a context; under one, the number is read.
func TestShortNumbersNeedContext(t *testing.T) {
	p := mustPlan(t, nil, Config{})
	var buf [maxSpans]span
	for _, v := range []string{
		"0", "-2147483648", "2147483647", "4294967295", "536228726", "078051120", "2125550100", "4155550100",
		"1234567890", "4111111111", "12345678", "99999999", "5555555555", "1000000001", "41111111111",
		"-99999999999", "99999999.99999999999", "-4111.11111111111", "0.41111111111", "4155550100.5",
	} {
		if spans := p.det.find([]byte(v), 0, buf[:0]); len(spans) > 0 {
			t.Errorf("%s without context: %v found; cleanBinary must not pass int4 cells", v, spans[0].Kind)
		}
	}
	for _, c := range []struct {
		name string
		v    int32
	}{{"ssn", 536228726}, {"phone", 2125550100}, {"password", 12345678}} {
		rp := p.ForColumns([]Column{{Name: c.name, TypeOID: oidInt4, Format: 1}, {Name: "n", TypeOID: oidInt4, Format: 1}})
		cell := binary.BigEndian.AppendUint32(nil, uint32(c.v))
		if _, _, null, err := rp.MaskCell(0, cell, nil); err != nil || !null {
			t.Errorf("binary int4 %d in column %s: null=%v err=%v, want NULL", c.v, c.name, null, err)
		}
		if out, changed, _, err := rp.MaskCell(1, cell, nil); err != nil || changed || !sameSlice(out, cell) {
			t.Errorf("binary int4 %d in column n: changed=%v err=%v, want it passed", c.v, changed, err)
		}
		text := []byte(strconv.Itoa(int(c.v)))
		if _, changed, _, err := p.ForColumns([]Column{{Name: c.name, TypeOID: oidInt4}}).MaskCell(0, text, nil); err != nil || !changed {
			t.Errorf("text int4 %s in column %s passes: the binary form need not be withheld", text, c.name)
		}
	}
}

// TestMalformedBinaryCells: bytes that do not parse as their type are an error, and the cell's
// fallback is NULL (never the bytes, never a text label in a binary cell).
func TestMalformedBinaryCells(t *testing.T) {
	p := mustPlan(t, nil, Config{})
	for _, c := range []struct {
		oid  uint32
		name string
		in   []byte
	}{
		{oidInt8, "short int8", []byte{0, 0, 0, 1}},
		{oidNumeric, "numeric digits missing", []byte{0, 2, 0, 0, 0, 0, 0, 0, 0, 1}},
		{oidNumeric, "numeric digit 10000", []byte{0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10}},
		{oidNumeric, "numeric sign", []byte{0, 0, 0, 0, 0x12, 0x34, 0, 0}},
		{oidRecord, "record truncated", []byte{0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 9, 'a'}},
		{oidRecord, "record trailing", []byte{0, 0, 0, 0, 'x'}},
		{oidRecord, "record field count", []byte{0x7f, 0, 0, 0}},
		{1016, "int8[] element length", binArray(oidInt8, [][]byte{{0, 0, 0}})[:20]},
		{oidTSVector, "tsvector unterminated", []byte{0, 0, 0, 1, 'a', 'b', 'c'}},
		{oidTSQuery, "tsquery item type", []byte{0, 0, 0, 1, 9, 0}},
		{oidJSONPath, "jsonpath version", []byte{2, '$'}},
		{3926, "int8range bound", []byte{0, 0, 0, 0, 8}},
		{4536, "int8multirange count", []byte{0, 0, 0, 9}},
		{oidVarbit, "varbit length", []byte{0, 0}},
	} {
		rp := p.ForColumns([]Column{{Name: "x", TypeOID: c.oid, Format: 1}})
		if out, _, null, err := rp.MaskCell(0, c.in, nil); err == nil {
			t.Errorf("%s accepted: %q null=%v", c.name, out, null)
		}
		if v, null := rp.Fallback(0, nil); !null || v != nil {
			t.Errorf("%s: fallback %q, want NULL", c.name, v)
		}
	}
	// Records nested deeper than anything but a contrived value: an error, not a recursion
	// without end.
	deep := binRecord(oidInt8, binary.BigEndian.AppendUint64(nil, 42))
	for range maxBinaryDepth + 1 {
		deep = binRecord(oidRecord, deep)
	}
	rp := p.ForColumns([]Column{{Name: "x", TypeOID: oidRecord, Format: 1}})
	if _, _, _, err := rp.MaskCell(0, deep, nil); err == nil {
		t.Error("deeply nested record accepted")
	}
}

// binRecord builds record_send output for a record of one field.
func binRecord(oid uint32, field []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1)
	b = binary.BigEndian.AppendUint32(b, oid)
	b = binary.BigEndian.AppendUint32(b, uint32(len(field)))
	return append(b, field...)
}

// TestCleanBinaryCellsDoNotAllocate: the cells drivers read in binary all day (int4, int8,
// numeric, text) cost no allocation when clean.
func TestCleanBinaryCellsDoNotAllocate(t *testing.T) {
	p := mustPlan(t, nil, Config{})
	rp := p.ForColumns([]Column{
		{Name: "id", TypeOID: oidInt4, Format: 1},
		{Name: "n", TypeOID: oidInt8, Format: 1},
		{Name: "total", TypeOID: oidNumeric, Format: 1},
		{Name: "name", TypeOID: oidText, Format: 1},
		{Name: "pair", TypeOID: oidRecord, Format: 1},
	})
	row := [][]byte{
		{0, 0, 0x10, 0x92},
		{0, 0, 0, 0, 0, 0, 0, 12},
		{0, 2, 0, 0, 0, 0, 0, 1, 0x04, 0xd2, 0x13, 0x88},
		[]byte("Ada Lovelace"),
		{0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 5, 'p', 'l', 'a', 'i', 'n'},
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i, c := range row {
			if _, changed, _, err := rp.MaskCell(i, c, nil); err != nil || changed {
				t.Fatalf("cell %d: changed=%v err=%v", i, changed, err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations per clean binary row", allocs)
	}
}
