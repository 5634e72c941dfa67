package sqlclass

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// readableKey renders a shape key with placeholders as ?<class>.
func readableKey(sql string) (string, bool) {
	k, _, ok := shapeKey(nil, sql)
	if !ok {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		if k[i] == litMark {
			b.WriteByte('?')
			b.WriteByte(k[i+1])
			i++
			continue
		}
		b.WriteByte(k[i])
	}
	return b.String(), true
}

func TestShapeKey(t *testing.T) {
	for _, c := range []struct {
		sql, key string // key "" means: not normalised
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;", "SELECT abalance FROM pgbench_accounts WHERE aid = ?4;"},
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 123;", "SELECT abalance FROM pgbench_accounts WHERE aid = ?3;"},
		{"UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = 77;", "UPDATE pgbench_accounts SET abalance = abalance + -?3 WHERE aid = ?3;"},
		{"SELECT * FROM t WHERE id = $1", "SELECT * FROM t WHERE id = $1"},
		{"SELECT $12::int, 'a'", "SELECT $12::int, ?s"},
		{"SELECT 0, 00, 1, 24, 25, 53, 54, 32767, 32768, 2147483647, 2147483648, 000000000000002", "SELECT ?0, ?0, ?1, ?1, ?2, ?2, ?3, ?3, ?4, ?4, ?f, ?1"},
		{"SELECT 1.5, .5, 5., 1e10, 1.5E-3, .5e+2, 1.e5", "SELECT ?f, ?f, ?f, ?f, ?f, ?f, ?f"},
		{"SELECT 'it''s', '', 'a\\'", "SELECT ?s, ?s, ?s"},
		{`SELECT E'O\'Brien\n', e'\\', E'x''y'`, "SELECT ?e, ?e, ?e"},
		{"SELECT B'1010', x'1F', b''", "SELECT ?b, ?x, ?b"},
		{"SELECT $$a'b$$, $tag$ $$ ' $tag$, $a$$b$ $a$", "SELECT ?d, ?d, ?d"},
		{"SELECT N'x'", "SELECT N?s"},
		{`SELECT "a'b""c", 'x' FROM "t1"`, `SELECT "a'b""c", ?s FROM "t1"`},
		{"SELECT 1 -- it's 2\n, /* '3' /* $$ */ ' */ 4", "SELECT ?1 -- it's 2\n, /* '3' /* $$ */ ' */ ?1"},
		{"SELECT a$$b$$, t1.c2, x.5", "SELECT a$$b$$, t1.c2, x?f"},
		{"SELECT a[1..2]", ""},
		{"SELECT a[1 .. 2]", "SELECT a[?1 .. ?1]"},
		{"SELECT a[x..5]", "SELECT a[x..?1]"},
		{"SELECT 1::float(5)", "SELECT ?1::float(?1)"},
		{"SELECT 1+-2*3/4", "SELECT ?1+-?1*?1/?1"},
		{"SELECT date'2020-01-01'", "SELECT date?s"},
		{"SELECT 'a'\n'b'", "SELECT ?s\n?s"},
		{"SELECT 'é', \"café\"", "SELECT ?s, \"café\""},
		{"DO $$ BEGIN DELETE FROM t; END $$", "DO ?d"},
		// Not normalised.
		{"SELECT 1abc", ""},
		{"SELECT 0x1F", ""},
		{"SELECT 1_000", ""},
		{"SELECT 1e", ""},
		{"SELECT 1e+", ""},
		{"SELECT 1.2.3", ""},
		{"SELECT $1abc", ""},
		{"SELECT $1$a$ x $a$", ""},
		{"SELECT $abc", ""},
		{"SELECT $", ""},
		{"SELECT 'unterminated", ""},
		{"SELECT $$unterminated", ""},
		{"SELECT $a$ x $b$", ""},
		{`SELECT "unterminated`, ""},
		{"SELECT 1 /* unterminated", ""},
		{"SELECT 1 /* /* */", ""},
		{`SELECT E'\x41'`, ""},
		{`SELECT E'\101'`, ""},
		{`SELECT E'\u0041'`, ""},
		{`SELECT E'a\`, ""},
		{"SELECT E'a'\n'b'", ""},
		{"SELECT B'1' /* c */ 'b'", ""},
		{`SELECT U&'\0041'`, ""},
		{`SELECT U&"\0041" FROM t`, ""},
		{`SELECT u&'d!0061' UESCAPE '!'`, ""},
		{"SELECT 'a\x00b'", ""},
		{"SELECT '\xff'", ""},
	} {
		got, ok := readableKey(c.sql)
		if c.key == "" {
			if ok {
				t.Errorf("%q: normalised to %q, want not normalised", c.sql, got)
			}
			continue
		}
		if !ok || got != c.key {
			t.Errorf("%q: key %q (ok %v), want %q", c.sql, got, ok, c.key)
		}
	}
}

// checkLexAgainstScanner compares the literal tokens found by shapeLex with
// those of PostgreSQL's own scanner (pg_query's Scan). It returns "" when
// they agree or the text is not normalised or not scannable.
func checkLexAgainstScanner(sql string) string {
	var lits []literal
	_, _, ok := shapeLex(nil, sql, &lits, new(lexNotes))
	if !ok {
		return ""
	}
	scan, err := pg.Scan(sql)
	if err != nil {
		return ""
	}
	j := 0
	for _, tok := range scan.Tokens {
		var want string
		switch tok.Token {
		case pg.Token_ICONST:
			want = "01234"
		case pg.Token_FCONST:
			want = "f"
		case pg.Token_SCONST:
			want = "sed"
		case pg.Token_BCONST:
			want = "b"
		case pg.Token_XCONST:
			want = "x"
		case pg.Token_USCONST, pg.Token_UIDENT:
			return fmt.Sprintf("normalised a text with %v at %d", tok.Token, tok.Start)
		default:
			for j < len(lits) && lits[j].end <= int(tok.Start) {
				j++
			}
			if j < len(lits) && lits[j].start < int(tok.End) {
				return fmt.Sprintf("token %v [%d,%d) overlaps literal [%d,%d)", tok.Token, tok.Start, tok.End, lits[j].start, lits[j].end)
			}
			continue
		}
		// One scanner literal is one or more (continued strings) of ours.
		if j >= len(lits) || lits[j].start != int(tok.Start) {
			return fmt.Sprintf("scanner literal %v at [%d,%d) %q not found", tok.Token, tok.Start, tok.End, sql[tok.Start:tok.End])
		}
		for {
			if !strings.ContainsRune(want, rune(lits[j].cls)) {
				return fmt.Sprintf("literal at %d: class %c for %v", lits[j].start, lits[j].cls, tok.Token)
			}
			if lits[j].end == int(tok.End) {
				j++
				break
			}
			if lits[j].end > int(tok.End) || lits[j].cls != clsString || j+1 >= len(lits) {
				return fmt.Sprintf("literal [%d,%d) does not end with scanner literal [%d,%d)", lits[j].start, lits[j].end, tok.Start, tok.End)
			}
			j++
		}
	}
	if j != len(lits) {
		return fmt.Sprintf("%d literals not seen by the scanner, first at %d", len(lits)-j, lits[j].start)
	}
	return ""
}

func TestShapeLexMatchesScanner(t *testing.T) {
	texts := []string{
		"SELECT 'a'\n'b', 'c' -- x\n'd' FROM t",
		"SELECT $q$a$q$, $1, 2.5e3, .5, x.5, a[1 .. 2], B'10', X'ff', E'\\n'",
		"SELECT 1 /* a /* b */ c */ + 2",
		"SELECT a$b, a$$b, \"x\"\"y\"",
	}
	for _, c := range corpus {
		texts = append(texts, c.sql)
	}
	for _, sql := range texts {
		if msg := checkLexAgainstScanner(sql); msg != "" {
			t.Errorf("%q: %s", sql, msg)
		}
	}
}

// FuzzShapeLex checks the lexer's literal tokens against PostgreSQL's.
func FuzzShapeLex(f *testing.F) {
	for _, c := range corpus {
		f.Add(c.sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > 4096 {
			return
		}
		if msg := checkLexAgainstScanner(sql); msg != "" {
			t.Fatalf("%q: %s", sql, msg)
		}
	})
}

// sameResult reports how two results differ, "" when they do not.
func sameResult(got, want *Result) string {
	if got.ParseError != want.ParseError {
		return fmt.Sprintf("parse error %q, want %q", got.ParseError, want.ParseError)
	}
	if !reflect.DeepEqual(got.Statements, want.Statements) {
		return fmt.Sprintf("statements\n got %+v\nwant %+v", got.Statements, want.Statements)
	}
	if g, w := got.Fingerprint(), want.Fingerprint(); g != w {
		return fmt.Sprintf("fingerprint %q, want %q", g, w)
	}
	return ""
}

// checkAfter classifies a and then b with one Classifier and compares b's
// result with an uncached classification of b.
func checkAfter(a, b string) string {
	c := New(Options{})
	c.Classify(a)
	if msg := sameResult(c.Classify(b), Classify(b)); msg != "" {
		return msg
	}
	// The same through ClassifyIn once it asks shapes first (after a shape hit).
	c = New(Options{})
	var sc Scratch
	c.ClassifyIn("SELECT * FROM t WHERE id = 1", &sc)
	c.ClassifyIn("SELECT * FROM t WHERE id = 2", &sc)
	if !sc.shapes {
		return "scratch not in shape-first mode"
	}
	c.ClassifyIn(a, &sc)
	c.ClassifyIn("SELECT * FROM t WHERE id = 3", &sc)
	if msg := sameResult(c.ClassifyIn(b, &sc), Classify(b)); msg != "" {
		return "shape first: " + msg
	}
	return ""
}

// TestShapeNoCrossContamination: pairs of texts of the same shape whose
// classifications differ because of a literal's value.
func TestShapeNoCrossContamination(t *testing.T) {
	for _, p := range [][2]string{
		{"DELETE FROM t WHERE id = 5 OR 1 = 2", "DELETE FROM t WHERE id = 5 OR 1 = 1"},
		{"DELETE FROM t WHERE id = 5 OR 'a' = 'b'", "DELETE FROM t WHERE id = 5 OR 'a' = 'a'"},
		{"DELETE FROM t WHERE id = 1 OR 'no'", "DELETE FROM t WHERE id = 1 OR 'yes'"},
		{"UPDATE t SET a = 1 WHERE id = 3 OR 1 > 2", "UPDATE t SET a = 1 WHERE id = 3 OR 2 > 1"},
		{"SELECT * FROM t WHERE id = 3 OR 2.5 < 1.5", "SELECT * FROM t WHERE id = 3 OR 1.5 < 2.5"},
		{"WITH d AS (DELETE FROM t WHERE id = 1 OR 'x' <> 'x' RETURNING *) SELECT * FROM d", "WITH d AS (DELETE FROM t WHERE id = 1 OR 'x' <> 'y' RETURNING *) SELECT * FROM d"},
		{"EXPLAIN DELETE FROM t WHERE id = 1 OR 1 = 2", "EXPLAIN DELETE FROM t WHERE id = 1 OR 1 = 1"},
		{"SELECT set_config('application_name', 'x', false)", "SELECT set_config('role', 'x', false)"},
		{"SELECT set_config('search_path', 'x', false)", "SELECT set_config('session_authorization', 'x', false)"},
		{"SELECT set_config('application_name', 'x', false)", "SELECT set_config('search_path', 'x', false)"}, // SearchPath alone
		{"SELECT set_config('standard_conforming_strings', 'on', false)", "SELECT set_config('standard_conforming_strings', 'off', false)"},
		{"SELECT pg_catalog.set_config('client_encoding', 'UTF8', true)", "SELECT pg_catalog.set_config('client_encoding', 'SJIS', true)"},
		{"SET standard_conforming_strings = 'on'", "SET standard_conforming_strings = 'off'"},
		{"SET client_encoding = 'UTF8'", "SET client_encoding = 'SJIS'"},
		{"SET NAMES 'UTF8'", "SET NAMES 'LATIN1'"},
		{"EXPLAIN (ANALYZE 'off') DELETE FROM t", "EXPLAIN (ANALYZE 'on') DELETE FROM t"},
		{"EXPLAIN (ANALYZE 'false') DELETE FROM t", "EXPLAIN (ANALYZE 'true') DELETE FROM t"},
		{"COPY t TO ''", "COPY t TO '/tmp/x'"},
		{"COPY t FROM ''", "COPY t FROM '/etc/passwd'"},
		{"SELECT 1::float(5)", "SELECT 1::float(0)"},
		{"SELECT 1::float(30)", "SELECT 1::float(60)"},
		{"ALTER INDEX i ALTER COLUMN 1 SET STATISTICS 5", "ALTER INDEX i ALTER COLUMN 0 SET STATISTICS 5"},
		{"ALTER INDEX i ALTER COLUMN 100 SET STATISTICS 5", "ALTER INDEX i ALTER COLUMN 40000 SET STATISTICS 5"},
		{"SELECT 'a'; DELETE FROM t WHERE id = 1", "SELECT 'a'; DELETE FROM t WHERE id = 1 OR 1 = 1"},
		{"SELECT 'a' 'b'", "SELECT 'a'\n'b'"},
		{"SELECT table_to_xml('t', true, false, '')", "SELECT table_to_xml('u', true, false, '')"},
		{"SELECT table_to_xml('t', true, false, '')", "SELECT table_to_xml('16384', true, false, '')"},
		{"SELECT cursor_to_xml('p', 1, false, false, '')", "SELECT cursor_to_xml('q', 1, false, false, '')"},
	} {
		a, b := p[0], p[1]
		ra, rb := Classify(a), Classify(b)
		if sameResult(&Result{Statements: withText(ra.Statements, "")}, &Result{Statements: withText(rb.Statements, "")}) == "" && ra.ParseError == rb.ParseError {
			t.Errorf("%q and %q classify alike; the pair shows nothing", a, b)
		}
		for _, q := range [][2]string{{a, b}, {b, a}} {
			if msg := checkAfter(q[0], q[1]); msg != "" {
				t.Errorf("%q after %q: %s", q[1], q[0], msg)
			}
		}
	}
}

func withText(sts []Statement, text string) []Statement {
	out := append([]Statement(nil), sts...)
	for i := range out {
		out[i].Text = text
	}
	return out
}

// TestShapeShared: texts of one shape that must be served from one entry.
func TestShapeShared(t *testing.T) {
	for _, p := range [][2]string{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;", "SELECT abalance FROM pgbench_accounts WHERE aid = 654321;"},
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 77;", "SELECT abalance FROM pgbench_accounts WHERE aid = 32000;"},
		{"UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = 77;", "UPDATE pgbench_accounts SET abalance = abalance + -1700 WHERE aid = 31999;"},
		{"UPDATE pgbench_tellers SET tbalance = tbalance + 2731 WHERE tid = 3;", "UPDATE pgbench_tellers SET tbalance = tbalance + 1000 WHERE tid = 9;"},
		{"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 88, 4021, CURRENT_TIMESTAMP);", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 99, 2000, CURRENT_TIMESTAMP);"},
		{"  /* app */ SELECT * FROM users WHERE email = 'bob@example.com' ;  -- tail", "  /* app */ SELECT * FROM users WHERE email = 'it''s; DROP TABLE users' ;  -- tail"},
		{"SELECT * FROM t WHERE x = E'a\\nb' AND y = $$q$$", "SELECT * FROM t WHERE x = E'\\'; DELETE FROM t; --' AND y = $$'$$"},
		{"SELECT 1::float(30)", "SELECT 1::float(40)"},
		{"DELETE FROM t WHERE id = 5", "DELETE FROM t WHERE id = 6"},
		{"SELECT pg_read_file('/etc/passwd')", "SELECT pg_read_file('x')"},
		{"DO $$ BEGIN DELETE FROM t; END $$", "DO $$ BEGIN NULL; END $$"},
	} {
		a, b := p[0], p[1]
		ka, _ := readableKey(a)
		kb, _ := readableKey(b)
		if ka == "" || ka != kb {
			t.Errorf("%q and %q: keys %q and %q, want one shape", a, b, ka, kb)
			continue
		}
		c := New(Options{})
		ra := c.Classify(a)
		rb := c.Classify(b)
		if c.Shapes() != 1 || c.Len() != 1 {
			t.Errorf("%q after %q: %d shapes, %d texts; want a shape hit", b, a, c.Shapes(), c.Len())
		}
		if msg := sameResult(rb, Classify(b)); msg != "" {
			t.Errorf("%q after %q: %s", b, a, msg)
		}
		if ra.Statements[0].Text == rb.Statements[0].Text {
			t.Errorf("%q after %q: statement text %q is the other text's", b, a, rb.Statements[0].Text)
		}
	}
}

// TestShapeKeysDiffer: texts whose literals differ in a way the lexer or
// grammar sees get different shapes.
func TestShapeKeysDiffer(t *testing.T) {
	for _, p := range [][2]string{
		{"SELECT 2147483647::int", "SELECT 2147483648::int"}, // ICONST, FCONST
		{"SELECT 1::float(0)", "SELECT 1::float(1)"},         // error, float4
		{"SELECT 1::float(24)", "SELECT 1::float(25)"},       // float4, float8
		{"SELECT 1::float(53)", "SELECT 1::float(54)"},       // float8, error
		{"ALTER INDEX i ALTER COLUMN 32767 SET STATISTICS 5", "ALTER INDEX i ALTER COLUMN 32768 SET STATISTICS 5"},
		{"SELECT 1", "SELECT 1.0"},
		{"SELECT 'a'", "SELECT E'a'"},
		{"SELECT 'a'", "SELECT $$a$$"},
		{"SELECT B'1'", "SELECT X'1'"},
		{"SET role = 'x'", "SET application_name = 'x'"},
		{"SELECT true", "SELECT false"},
		{"SELECT * FROM t WHERE id = 5 OR true", "SELECT * FROM t WHERE id = 5 OR false"},
		{"SELECT - 1", "SELECT 1"},
	} {
		ka, oka := readableKey(p[0])
		kb, okb := readableKey(p[1])
		if !oka || !okb || ka == kb {
			t.Errorf("%q and %q: keys %q (%v), %q (%v), want two shapes", p[0], p[1], ka, oka, kb, okb)
		}
	}
}

// TestShapeHitText: the text of a hit is the caller's, copied.
func TestShapeHitText(t *testing.T) {
	c := New(Options{})
	c.Classify("  SELECT * FROM t WHERE id = 1 ; -- one")
	buf := []byte("  SELECT * FROM t WHERE id = 22 ; -- one")
	res := c.Classify(string(buf))
	if c.Len() != 1 {
		t.Fatal("not a shape hit")
	}
	if got := res.Statements[0].Text; got != "SELECT * FROM t WHERE id = 22" {
		t.Fatalf("text %q", got)
	}
	copy(buf, "XXXXXXXX")
	if got := res.Statements[0].Text; got != "SELECT * FROM t WHERE id = 22" {
		t.Fatalf("text changed with the caller's buffer: %q", got)
	}
}

// TestShapeNotStored: texts whose classification must never be reused.
func TestShapeNotStored(t *testing.T) {
	for _, sql := range []string{
		"DELETE FROM t WHERE id = 5 OR 1 = 1",               // folded a literal
		"SELECT set_config('application_name', 'x', false)", // read the setting's name
		"SET client_encoding = 'UTF8'",                      // read a reader setting's value
		"SET application_name = 'a'",                        // rules may read any SET's value
		"SET ROLE 'admin'",                                  // the same
		"EXPLAIN (ANALYZE 'off') DELETE FROM t",             // read an option
		"COPY t TO '/tmp/x'",                                // COPY
		"SELECT 1; SELECT 2",                                // two statements
		"SELECT 'a' 'b'",                                    // parse error
		"SELECT 1 +",                                        // parse error
		"SELECT 1; SELECT 'a'",                              // two statements
		"SELECT 1",                                          // no: it is stored
	} {
		c := New(Options{})
		c.Classify(sql)
		want := 0
		if sql == "SELECT 1" {
			want = 1
		}
		if c.Shapes() != want {
			t.Errorf("%q: %d shapes stored, want %d", sql, c.Shapes(), want)
		}
	}
	// Too long for MaxLen: Unknown, never normalised.
	c := New(Options{MaxLen: 40})
	c.Classify("SELECT * FROM t WHERE id = 1")
	long := "SELECT * FROM t WHERE id = 1000000000000000000000000"
	if res := c.Classify(long); !res.Unknown() || !strings.Contains(res.ParseError, "too long") {
		t.Errorf("too-long text after a short one of the same shape: %q", res.ParseError)
	}
}

// mutate returns sql with every literal replaced by another of the same
// class, picking values with r; ok is false when sql is not normalised.
func mutate(sql string, r *rand.Rand, strs []string) (string, bool) {
	var lits []literal
	if _, _, ok := shapeLex(nil, sql, &lits, new(lexNotes)); !ok || len(lits) == 0 {
		return "", false
	}
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	str := func() string { return strs[r.IntN(len(strs))] }
	var b strings.Builder
	prev := 0
	for _, l := range lits {
		b.WriteString(sql[prev:l.start])
		prev = l.end
		switch l.cls {
		case clsString:
			b.WriteString("'" + strings.ReplaceAll(str(), "'", "''") + "'")
		case clsEscape:
			v := strings.ReplaceAll(strings.ReplaceAll(str(), `\`, `\\`), "'", `\'`)
			b.WriteString("E'" + v + "'")
		case clsDollar:
			v := str()
			if strings.Contains(v, "$z$") {
				v = "z"
			}
			b.WriteString("$z$" + v + "$z$")
		case clsBit:
			b.WriteString(pick("B'0'", "B'101'", "B''", "b'2'"))
		case clsHex:
			b.WriteString(pick("X'0'", "X'ff'", "X''", "x'g'"))
		case clsFloat:
			b.WriteString(pick("0.0", "1.5", "1e3", "99999999999", ".0", "2147483648", "1.0", "2.0"))
		case clsInt0:
			b.WriteString(pick("0", "00", "000"))
		case clsInt24:
			b.WriteString(pick("1", "2", "7", "24", "01"))
		case clsInt53:
			b.WriteString(pick("25", "30", "53"))
		case clsInt16:
			b.WriteString(pick("54", "100", "32767"))
		case clsInt32:
			b.WriteString(pick("32768", "40000", "2147483647"))
		}
	}
	b.WriteString(sql[prev:])
	return b.String(), true
}

// interesting string values: setting names and values, booleans, file
// names, SQL.
var interesting = []string{
	"", "x", "zz", "role", "ROLE", "session_authorization", "application_name",
	"standard_conforming_strings", "client_encoding", "on", "off", "true",
	"false", "t", "f", "yes", "no", "1", "0", "2", "1.0", "SJIS", "UTF8",
	"/etc/passwd", "STDIN", "'; DROP TABLE t; --", "$$", "a\nb", "é",
}

// TestCorpusAfterSibling classifies, for every corpus statement with
// literals, variants with other literal values first, then the statement,
// and checks it against an uncached classification (and the other way
// round).
func TestCorpusAfterSibling(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tested := 0
	rows := 0
	for _, row := range corpus {
		want := Classify(row.sql)
		if _, ok := mutate(row.sql, r, interesting); ok {
			rows++
		}
		for v := 0; v < 12; v++ {
			sib, ok := mutate(row.sql, r, interesting)
			if !ok {
				break
			}
			ka, _ := readableKey(row.sql)
			kb, _ := readableKey(sib)
			if ka != kb {
				t.Fatalf("mutated %q to %q: keys %q, %q", row.sql, sib, ka, kb)
			}
			c := New(Options{})
			c.Classify(sib)
			if msg := sameResult(c.Classify(row.sql), want); msg != "" {
				t.Errorf("%q after %q: %s", row.sql, sib, msg)
			}
			c = New(Options{})
			c.Classify(row.sql)
			if msg := sameResult(c.Classify(sib), Classify(sib)); msg != "" {
				t.Errorf("%q after %q: %s", sib, row.sql, msg)
			}
			tested++
		}
	}
	if tested < 500 {
		t.Fatalf("only %d sibling pairs tested", tested)
	}
	t.Logf("%d corpus statements with literals, %d sibling pairs tested both ways", rows, tested)
}

// FuzzShapeCache checks the cache's key property: for texts a and b of the
// same shape, Classify(b) after Classify(a) on one Classifier equals an
// uncached Classify(b). b is a with its literals replaced using values
// drawn from vals and seed; a and b are also tried as given.
func FuzzShapeCache(f *testing.F) {
	for i, c := range corpus {
		f.Add(c.sql, interesting[i%len(interesting)], uint64(i))
	}
	f.Fuzz(func(t *testing.T, a, vals string, seed uint64) {
		if len(a) > 2048 {
			return
		}
		check := func(a, b string) {
			ka, _, oka := shapeKey(nil, a)
			kb, _, okb := shapeKey(nil, b)
			if !oka || !okb || string(ka) != string(kb) {
				return
			}
			if msg := checkAfter(a, b); msg != "" {
				t.Fatalf("%q after %q: %s", b, a, msg)
			}
		}
		check(a, vals)
		check(vals, a)
		strs := append(strings.Split(vals, "|"), interesting...)
		b, ok := mutate(a, rand.New(rand.NewPCG(seed, seed>>7)), strs)
		if !ok {
			return
		}
		check(a, b)
		check(b, a)
	})
}

func TestShapeHitAllocs(t *testing.T) {
	c := New(Options{})
	c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 123456;")
	sql := "SELECT abalance FROM pgbench_accounts WHERE aid = 654321;"
	n := testing.AllocsPerRun(100, func() { c.Classify(sql) })
	if n > 1 {
		t.Fatalf("shape hit allocates %.1f times, want at most 1 (the result)", n)
	}
	var sc Scratch
	if n := testing.AllocsPerRun(100, func() { c.ClassifyIn(sql, &sc) }); n != 0 {
		t.Fatalf("shape hit into scratch allocates %.1f times", n)
	}
	var buf [512]byte
	if n := testing.AllocsPerRun(100, func() { shapeKey(buf[:0], sql) }); n != 0 {
		t.Fatalf("shapeKey allocates %.1f times", n)
	}
}

// TestClassifyIn checks that shape hits are built in the scratch (and
// answer for their own text), that the scratch's next use replaces them,
// and that cached results never live in it.
func TestClassifyIn(t *testing.T) {
	c := New(Options{})
	var sc Scratch
	inScratch := func(r *Result) bool { return r == &sc.sr.res }
	first := c.ClassifyIn("SELECT * FROM t WHERE id = 1", &sc)
	if inScratch(first) {
		t.Fatal("a classified (cached) result was built in the scratch")
	}
	for _, c2 := range []struct {
		sql, text string
		writes    bool
	}{
		{"SELECT * FROM t WHERE id = 2", "SELECT * FROM t WHERE id = 2", false},
		{"SELECT * FROM t WHERE id = 7", "SELECT * FROM t WHERE id = 7", false},
	} {
		r := c.ClassifyIn(c2.sql, &sc)
		if !inScratch(r) {
			t.Fatalf("%q: shape hit not built in the scratch", c2.sql)
		}
		if got := r.Statements[0].Text; got != c2.text {
			t.Errorf("%q: text %q, want %q", c2.sql, got, c2.text)
		}
		if r.Statements[0].Writes != c2.writes || !r.Statements[0].Reads {
			t.Errorf("%q: flags %+v", c2.sql, r.Statements[0])
		}
	}
	c.ClassifyIn("DELETE FROM t WHERE id = 1", &sc)
	del := c.ClassifyIn("DELETE FROM t WHERE id = 9", &sc)
	if !inScratch(del) || !del.Statements[0].Writes || del.Statements[0].Text != "DELETE FROM t WHERE id = 9" {
		t.Fatalf("second shape: %+v", del.Statements[0])
	}
	if again := c.ClassifyIn("SELECT * FROM t WHERE id = 1", &sc); again.Statements[0].Text != "SELECT * FROM t WHERE id = 1" || again.Statements[0].Writes {
		t.Errorf("classified again: %+v", again.Statements[0])
	}
	if first.Statements[0].Text != "SELECT * FROM t WHERE id = 1" || first.Statements[0].Writes {
		t.Errorf("cached result was overwritten: %+v", first.Statements[0])
	}
	// After shape hits the shape is asked first; texts whose classification depends on their
	// literals have no shape and must still get their own classification, cached or not.
	for range 2 {
		set := c.ClassifyIn("SELECT set_config('application_name', 'x', false)", &sc)
		if !set.Statements[0].Session || inScratch(set) {
			t.Errorf("set_config: %+v", set.Statements[0])
		}
		c.ClassifyIn("SELECT * FROM t WHERE id = 8", &sc) // a shape hit again
		del := c.ClassifyIn("DELETE FROM t WHERE id = 5 OR 1 = 1", &sc)
		if !del.Statements[0].WhereIsConstant || inScratch(del) {
			t.Errorf("folded literal: %+v", del.Statements[0])
		}
	}
}

// pgbenchSelects are pgbench -S statements (simple protocol) with random
// account ids, as pgbench sends them.
func pgbenchSelects(n int) []string {
	r := rand.New(rand.NewPCG(3, 4))
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("SELECT abalance FROM pgbench_accounts WHERE aid = %d;", 1+r.IntN(1000000))
	}
	return out
}

func BenchmarkShapeKey(b *testing.B) {
	sql := "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;"
	var buf [512]byte
	b.ReportAllocs()
	for b.Loop() {
		shapeKey(buf[:0], sql)
	}
}

// BenchmarkClassifyPgbenchSimple classifies pgbench -S statements with a
// different literal each time, with the exact-text cache only and with the
// shape cache, and reports the ratio (x-faster, on the shape run).
func BenchmarkClassifyPgbenchSimple(b *testing.B) {
	texts := pgbenchSelects(1 << 14)
	var ns [2]float64
	for i, o := range []Options{{NoShapeCache: true}, {}} {
		name := []string{"exact-only", "shape"}[i]
		b.Run(name, func(b *testing.B) {
			c := New(o)
			b.ReportAllocs()
			j := 0
			for b.Loop() {
				c.Classify(texts[j%len(texts)])
				j++
			}
			ns[i] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if i == 1 && ns[0] > 0 {
				b.ReportMetric(ns[0]/ns[1], "x-faster")
			}
		})
	}
}

// TestShapeConcurrent runs shape hits, misses and Fingerprint calls from
// several goroutines (run with -race).
func TestShapeConcurrent(t *testing.T) {
	c := New(Options{MaxEntries: 64})
	texts := pgbenchSelects(400)
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < len(texts); i += 3 {
				sql := texts[i]
				res := c.Classify(sql)
				if len(res.Statements) != 1 || res.Statements[0].Text != strings.TrimSuffix(sql, ";") || !res.Statements[0].ReadOnly() {
					t.Errorf("%q: %+v", sql, res.Statements)
					return
				}
				if i%50 == 0 && res.Fingerprint() == "" {
					t.Errorf("%q: no fingerprint", sql)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}
