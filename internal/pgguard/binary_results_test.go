package pgguard

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	cardValue  = "4111111111111111"
	emailValue = "ada.lovelace@example.com"
)

// cardsTable is a table of one card number and one e-mail address.
const cardsTable = `create table cards (id int, card text, email text);
insert into cards values (1, '` + cardValue + `', '` + emailValue + `');`

// cellsOf runs sql in the extended protocol with every result column in format, and returns
// the first row's cells (nil for NULL) or the error.
func cellsOf(c *pgconn.PgConn, sql string, format int16) ([][]byte, error) {
	res := c.ExecParams(context.Background(), sql, nil, nil, nil, []int16{format}).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Rows) == 0 {
		return nil, nil
	}
	return res.Rows[0], nil
}

// TestBinaryResultsAreMasked (from a review, 2026-12-07): the detectors ran over text cells
// only, so a client asking for binary results got a card number or an e-mail address in clear
// wherever the binary form of a built-in type carries it: records, arrays, text search types,
// refcursor, jsonpath, bytea, or the number itself (int8, numeric). Must hold: such a cell is
// masked (bytea, refcursor: its binary form is the value) or withheld as NULL, as its text form is
// masked; a cell with nothing to find passes unchanged in both formats.
func TestBinaryResultsAreMasked(t *testing.T) {
	p := startGuardedProxy(t, "default: allow_reads\n"+testPolicy)
	p.db.Exec(t, cardsTable)
	c := p.connect(t)
	defer c.Close(context.Background())
	server := p.connectDirect(t)
	const (
		masked   = "masked"
		withheld = "NULL"
		clean    = "unchanged"
	)
	for _, q := range []struct{ sql, binary string }{
		{`select card from cards`, masked},
		{`select row(card, email) from cards`, withheld},
		{`select array_agg(row(card, email)) from cards`, withheld},
		{`select to_tsvector('simple', email) from cards`, withheld},
		{`select array[to_tsvector('simple', email)] from cards`, withheld},
		{`select to_tsquery('simple', card) from cards`, withheld},
		{`select card::int8 from cards`, withheld},
		{`select card::numeric from cards`, withheld},
		{`select array[card::int8] from cards`, withheld},
		{`select email::refcursor from cards`, masked},
		{`select ('"' || email || '"')::jsonpath from cards`, withheld},
		{`select convert_to(email, 'utf8') from cards`, masked},
		{`select card::bytea from cards`, masked},
		{`select id from cards`, clean},
		{`select id::int8, 12.5::numeric, row(id, 'plain') from cards`, clean},
	} {
		direct, err := cellsOf(server, q.sql, 1)
		if err != nil {
			t.Fatalf("%s at the server: %v", q.sql, err)
		}
		for _, format := range []int16{0, 1} {
			cells, err := cellsOf(c, q.sql, format)
			if err != nil {
				t.Errorf("%s (format %d): %v", q.sql, format, err)
				continue
			}
			for i, cell := range cells {
				if s := string(cell); strings.Contains(s, cardValue) || strings.Contains(s, "ada.lovelace") {
					t.Errorf("%s (format %d): %q in clear", q.sql, format, s)
				}
				if format == 0 {
					continue
				}
				got := masked
				switch {
				case cell == nil:
					got = withheld
				case string(cell) == string(direct[i]):
					got = clean
				}
				if got != q.binary {
					t.Errorf("%s (binary): column %d %s, want %s (%q)", q.sql, i+1, got, q.binary, cell)
				}
			}
		}
	}
}

// TestBinaryResultsUnderColumnRules: a column rule's binary cells of non-text types stay NULL
// (records, bytea, tsvector of the ruled column).
func TestBinaryResultsUnderColumnRules(t *testing.T) {
	p := startGuardedProxy(t, secretRule)
	c := p.connect(t)
	defer c.Close(context.Background())
	for _, sql := range []string{
		`select row(id, secret) from t where id = 1`,
		`select secret::bytea from t where id = 1`,
		`select to_tsvector('simple', secret) from t where id = 1`,
	} {
		cells, err := cellsOf(c, sql, 1)
		if err != nil || len(cells) != 1 || cells[0] != nil {
			t.Errorf("%s: %q %v, want one NULL", sql, cells, err)
		}
	}
}

// TestByteaTextFormats (from a review, 2026-12-07): bytea was never scanned ("its text form is
// hex"), yet hex is a card number an agent decodes at once, and the shipped policy let an agent
// SET bytea_output = escape, where printable bytes are sent as themselves. Must hold: under the
// shipped policy a bytea cell is masked in the bytes it holds, in hex and in escape format (a
// client may still ask for escape at startup), and SET bytea_output is refused.
func TestByteaTextFormats(t *testing.T) {
	p := startPlainRoleProxy(t, shippedPolicyText(t), "prod-db", cardsTable+"grant select on cards to agent_rw;")
	const sql = "select card::bytea, convert_to(email, 'utf8') from cards"
	for _, c := range []struct {
		output string
		want   []string
	}{
		{"hex", []string{`\x2a2a2a2a2a2a2a2a2a2a2a2a31313131`, `\x5b52454441435445443a656d61696c5d`}},
		{"escape", []string{`************1111`, `[REDACTED:email]`}},
	} {
		conn := p.connect(t, map[string]string{"bytea_output": c.output})
		rs, err := conn.Exec(context.Background(), sql).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", c.output, err)
		}
		row := rs[0].Rows[0]
		for i, want := range c.want {
			if string(row[i]) != want {
				t.Errorf("bytea_output=%s column %d: %q, want %q", c.output, i+1, row[i], want)
			}
		}
	}
	conn := p.connect(t, nil)
	if _, err := firstValue(conn, "set bytea_output = escape"); err == nil {
		t.Error("SET bytea_output = escape passed the shipped policy")
	}
	if v, err := firstValue(conn, "show bytea_output"); err != nil || v != "hex" {
		t.Errorf("bytea_output is %q (%v), want hex", v, err)
	}
}
