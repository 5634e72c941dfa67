package sqlclass

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

func TestStatementText(t *testing.T) {
	res := Classify("SELECT 1;\n  DELETE FROM t WHERE id = 1 ;\n/* c */ DROP TABLE x")
	want := []string{"SELECT 1", "DELETE FROM t WHERE id = 1", "/* c */ DROP TABLE x"}
	if len(res.Statements) != len(want) {
		t.Fatalf("got %d statements", len(res.Statements))
	}
	for i, w := range want {
		if got := res.Statements[i].Text; got != w {
			t.Errorf("statement %d text %q, want %q", i, got, w)
		}
	}
}

func TestEmptyAndComments(t *testing.T) {
	for _, sql := range []string{"", "   ", "-- only a comment", "/* c */", ";"} {
		res := Classify(sql)
		if len(res.Statements) != 0 || res.ParseError != "" || res.Unknown() {
			t.Errorf("%q: got %d statements, error %q", sql, len(res.Statements), res.ParseError)
		}
	}
}

func TestParseError(t *testing.T) {
	res := Classify("DELETE FROM")
	if !res.Unknown() || res.ParseError == "" || res.Fingerprint() != "" {
		t.Fatalf("want unknown with parse error, got %+v", res)
	}
	if !strings.Contains(res.ParseError, "syntax error") {
		t.Errorf("parse error %q does not say what is wrong", res.ParseError)
	}
}

func TestFingerprint(t *testing.T) {
	a := Classify("SELECT * FROM t WHERE id = 1").Fingerprint()
	b := Classify("select *  from t where id = 42").Fingerprint()
	c := Classify("SELECT * FROM u WHERE id = 1").Fingerprint()
	if a == "" || a != b {
		t.Errorf("fingerprints of the same shape differ: %q %q", a, b)
	}
	if a == c {
		t.Errorf("fingerprints of different tables agree: %q", a)
	}
}

func TestReadOnlyAndInert(t *testing.T) {
	for _, c := range []struct {
		sql             string
		readOnly, inert bool
	}{
		{"SELECT * FROM t", true, true},
		{"SELECT 1", true, true},
		{"EXPLAIN DELETE FROM t", true, true},
		{"SHOW search_path", true, true},
		{"BEGIN", false, true},
		{"COMMIT", false, true},
		{"SELECT nextval('s')", false, false},
		{"SET search_path = x", false, false},
		{"EXECUTE p", false, false},
		{"DELETE FROM t WHERE id = 1", false, false},
		{"SELECT pg_read_file('x')", false, false},
		{"WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d", false, false},
		{"DELETE FROM", false, false},
		{"PREPARE TRANSACTION 'x'", false, false},
		// Must hold: row locks are not reads (PostgreSQL refuses them in a read-only
		// transaction), wherever the locking clause is; plain EXPLAIN of one locks nothing.
		{"SELECT * FROM t FOR UPDATE", false, false},
		{"SELECT * FROM t FOR NO KEY UPDATE", false, false},
		{"SELECT * FROM t FOR SHARE", false, false},
		{"SELECT * FROM t FOR KEY SHARE", false, false},
		{"WITH l AS (SELECT * FROM t FOR UPDATE) SELECT * FROM l", false, false},
		{"DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", false, false},
		{"EXPLAIN SELECT * FROM t FOR UPDATE", true, true},
		{"LOCK TABLE t", false, false},
		// Must hold: a write to pg_settings is set_config; reading it is a read.
		{"UPDATE pg_settings SET setting = 'app_owner' WHERE name = 'role'", false, false},
		{"SELECT * FROM pg_settings", true, true},
		// Must hold: search_path changes in any spelling are not inert.
		{"SET SCHEMA 'evil'", false, false},
		{"SELECT set_config('search_path', 'evil', false)", false, false},
	} {
		st := &Classify(c.sql).Statements[0]
		if st.ReadOnly() != c.readOnly || st.Inert() != c.inert {
			t.Errorf("%q: ReadOnly %v Inert %v, want %v %v", c.sql, st.ReadOnly(), st.Inert(), c.readOnly, c.inert)
		}
	}
}

func TestTooLong(t *testing.T) {
	c := New(Options{MaxLen: 100})
	long := "SELECT " + strings.Repeat("1+", 60) + "1"
	res := c.Classify(long)
	if !res.Unknown() || !strings.Contains(res.ParseError, "too long") {
		t.Fatalf("want too-long unknown, got %q", res.ParseError)
	}
	if res := c.Classify("SELECT 1"); res.Unknown() {
		t.Fatalf("short statement unknown: %q", res.ParseError)
	}
}

func TestCacheHitsShareResult(t *testing.T) {
	c := New(Options{})
	a := c.Classify("SELECT * FROM t WHERE id = 1")
	// A different string with the same text must hit too.
	b := c.Classify(string([]byte("SELECT * FROM t WHERE id = 1")))
	if a != b {
		t.Fatal("second classification of the same text was not served from the cache")
	}
	if c.Len() != 1 {
		t.Fatalf("cache holds %d entries, want 1", c.Len())
	}
	if d := c.Classify("SELECT * FROM t WHERE id = 2"); d == a {
		t.Fatal("different text served the same result")
	}
}

func TestCacheBounded(t *testing.T) {
	// Texts differing only in literals would share a shape entry and never
	// fill the first level: test the first level alone.
	c := New(Options{MaxEntries: 64, MaxBytes: 1 << 20, NoShapeCache: true})
	for i := 0; i < 1000; i++ {
		c.Classify(fmt.Sprintf("SELECT %d", i))
	}
	if n := c.Len(); n > 64+shards || n < 32 {
		t.Fatalf("cache holds %d entries, bound 64", n)
	}
	// Byte bound: 16 shards × 1 KiB.
	c = New(Options{MaxEntries: 1 << 20, MaxBytes: 16 << 10, NoShapeCache: true})
	pad := strings.Repeat(" ", 900)
	for i := 0; i < 200; i++ {
		c.Classify(fmt.Sprintf("SELECT %d%s", i, pad))
	}
	if n := c.Len(); n > 16*2 {
		t.Fatalf("cache holds %d entries of ~900 bytes with a 16 KiB bound", n)
	}
	// Texts above MaxCachedLen are classified but not kept.
	c = New(Options{MaxCachedLen: 10})
	c.Classify("SELECT 1 + 2 + 3")
	if c.Len() != 0 {
		t.Fatalf("long text was cached")
	}
}

func TestCacheLRUKeepsHotEntries(t *testing.T) {
	c := New(Options{MaxEntries: shards * 4})
	hot := c.Classify("SELECT 'hot'")
	for i := 0; i < 2000; i++ {
		if c.Classify("SELECT 'hot'") != hot {
			t.Fatalf("hot entry evicted after %d other statements", i)
		}
		c.Classify(fmt.Sprintf("SELECT %d", i))
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := New(Options{MaxEntries: 128})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				sql := fmt.Sprintf("DELETE FROM t%d WHERE id = %d", i%50, g)
				res := c.Classify(sql)
				if len(res.Statements) != 1 || res.Statements[0].Kind != KindDelete {
					t.Errorf("%q: wrong result %+v", sql, res)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestCacheHitDoesNotAllocate(t *testing.T) {
	c := New(Options{})
	sql := "SELECT * FROM users WHERE id = $1"
	c.Classify(sql)
	if n := testing.AllocsPerRun(100, func() { c.Classify(sql) }); n != 0 {
		t.Fatalf("cache hit allocates %.1f times", n)
	}
}

// FuzzClassify checks that no input panics the classifier, that results
// keep their invariants, and that the Classifier (shared by all inputs, so
// that earlier inputs fill both cache levels) answers like an uncached
// classification.
func FuzzClassify(f *testing.F) {
	for _, c := range corpus {
		f.Add(c.sql)
	}
	c := New(Options{MaxLen: 4096, MaxEntries: 256})
	f.Fuzz(func(t *testing.T, sql string) {
		res := c.Classify(sql)
		if msg := sameResult(res, classify(sql, 4096)); msg != "" {
			t.Fatalf("cached classification differs: %s", msg)
		}
		if res.ParseError != "" && (len(res.Statements) != 1 || !res.Statements[0].Unknown) {
			t.Fatalf("parse error without one unknown statement: %+v", res)
		}
		for i := range res.Statements {
			st := &res.Statements[i]
			if st.Kind == "" || len(st.Kinds) == 0 || st.Kinds[0] != string(st.Kind) {
				t.Fatalf("statement %d: kind %q kinds %q", i, st.Kind, st.Kinds)
			}
			if st.Kind == KindUnknown && !st.Unknown {
				t.Fatalf("statement %d: UNKNOWN kind not marked unknown", i)
			}
			if !strings.Contains(sql, st.Text) {
				t.Fatalf("statement %d: text %q is not part of the input", i, st.Text)
			}
			if utf8.ValidString(sql) && !utf8.ValidString(st.Text) {
				t.Fatalf("statement %d: text cut inside a character", i)
			}

		}
	})
}

func BenchmarkClassifyUncached(b *testing.B) {
	for _, sql := range benchSQL {
		b.Run(sql.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Classify(sql.sql)
			}
		})
	}
}

func BenchmarkClassifyCached(b *testing.B) {
	c := New(Options{})
	for _, sql := range benchSQL {
		c.Classify(sql.sql)
		b.Run(sql.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.Classify(sql.sql)
			}
		})
	}
}

var benchSQL = []struct{ name, sql string }{
	{"select-pk", "SELECT id, name, email FROM users WHERE id = $1"},
	{"pgbench-update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"},
	{"join", "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > now() - interval '1 day' ORDER BY o.id LIMIT 50"},
	{"cte-delete", "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d"},
}

// TestDeepInputs feeds texts that crashed the process (operator and cast
// chains) or stress the parser; they must come back Unknown, not kill us.
func TestDeepInputs(t *testing.T) {
	for _, c := range []struct {
		name    string
		sql     string
		unknown bool
	}{
		{"plus-chain", "SELECT " + strings.Repeat("1+", 30000) + "1", true},
		{"plus-chain-huge", "SELECT " + strings.Repeat("1+", 200000) + "1", true},
		{"cast-chain", "SELECT 1" + strings.Repeat("::int", 30000), true},
		{"concat-chain", "SELECT " + strings.Repeat("'a'||", 30000) + "'a'", true},
		{"nested-chains", "SELECT " + strings.Repeat("1+(", 5000) + "1" + strings.Repeat(")", 5000), true},
		{"parens", "SELECT " + strings.Repeat("(", 30000) + "1" + strings.Repeat(")", 30000), true},
		{"not-chain", "SELECT " + strings.Repeat("NOT ", 30000) + "true", true},
		{"in-list", "SELECT * FROM t WHERE id IN (" + strings.Repeat("1,", 20000) + "1)", false},
		{"bulk-insert", "INSERT INTO t VALUES " + strings.Repeat("(-1, 'x+y', now() - interval '1 day'),", 5000) + "(1, 'a', now())", false},
		{"many-statements", strings.Repeat("SELECT 1 + 2;", 3000), false},
		{"moderate-chain", "SELECT " + strings.Repeat("a + ", 2000) + "1 FROM t" + strings.Repeat(" ", 9000), false},
	} {
		res := Classify(c.sql)
		if res.Unknown() != c.unknown {
			t.Errorf("%s (%d bytes): unknown %v (%q), want %v", c.name, len(c.sql), res.Unknown(), res.ParseError, c.unknown)
		}
	}
}
