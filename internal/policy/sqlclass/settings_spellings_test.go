package sqlclass_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/enforcer-dev/enforcer/internal/pgtest"
	"github.com/enforcer-dev/enforcer/internal/policy/sqlclass"
)

// settingProbe runs SET statements on a real server, each in a transaction it rolls back, and
// reads back what the server set.
type settingProbe struct {
	t   testing.TB
	ctx context.Context
	c   *pgconn.PgConn
}

func newSettingProbe(t testing.TB) *settingProbe {
	db := pgtest.Start(t)
	ctx := context.Background()
	c, err := pgconn.Connect(ctx, db.DSN(pgtest.SuperUser, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(ctx) })
	return &settingProbe{t: t, ctx: ctx, c: c}
}

// run executes sql in a transaction and returns the setting's value after it, or the server's
// error when it refused sql.
func (p *settingProbe) run(sql, setting string) (value string, refused error) {
	p.t.Helper()
	defer func() { p.c.Exec(p.ctx, "ROLLBACK").ReadAll() }()
	if _, err := p.c.Exec(p.ctx, "BEGIN").ReadAll(); err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.c.Exec(p.ctx, sql).ReadAll(); err != nil {
		return "", err
	}
	rs, err := p.c.Exec(p.ctx, "SELECT setting FROM pg_settings WHERE name = '"+setting+"'").ReadAll()
	if err != nil || len(rs) != 1 || len(rs[0].Rows) != 1 {
		p.t.Fatalf("read %s back after %q: %v", setting, sql, err)
	}
	return string(rs[0].Rows[0][0]), nil
}

// checkMillis compares SettingMillis of sql with what the server sets; it reports whether the
// classifier read the value.
func (p *settingProbe) checkMillis(sql string) bool {
	p.t.Helper()
	res := sqlclass.Classify(sql)
	if len(res.Statements) != 1 {
		return false
	}
	st := res.Statements[0]
	ms, ok := st.SettingMillis()
	if !ok {
		return false
	}
	got, err := p.run(sql, st.Setting)
	if err != nil {
		// pg_query parses with PostgreSQL 17's grammar, whose literals (0x10, 0o17, 1_000)
		// PostgreSQL 15 refuses as a syntax error: the statement then sets nothing. Any other
		// refusal is a value read that the server does not read.
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42601" {
			p.t.Errorf("%.120q: read as %d ms, but the server refused it: %v", sql, ms, err)
		}
		return true
	}
	n, err := strconv.ParseInt(got, 10, 64)
	if err != nil || n != ms {
		p.t.Errorf("%.120q: read as %d ms, the server set %q", sql, ms, got)
	}
	return true
}

// TestSettingMillisAgreesWithTheServerInEverySpelling: whatever spelling the grammar accepts
// (plain, escape, Unicode-escape and dollar-quoted strings, quoted identifiers, bare numbers
// with signs and fractions, units, spaces, TO or =, LOCAL or SESSION), a timeout that
// SettingMillis reads is the one PostgreSQL sets.
func TestSettingMillisAgreesWithTheServerInEverySpelling(t *testing.T) {
	p := newSettingProbe(t)
	bare := []string{"5000", "+5000", "-0", "- 0", "-5000", "0", "00", "5000.", "5000.0", "1.5", "2.5", "0.5",
		".5", "1e3", "1E3", "0.0", "-0.0", "2147483647", "2147483648", "99999999999", "0x10", "1_000",
		"0o17", "on", "off", "true", "s", "min"}
	strs := []string{"5s", " 5s", "5s ", "\t5\ts\t", "\n5\r\n", "\v5\f", "5 s", "5  ms", "5ms", "5us", "5 us ",
		"1.5s", "1.5ms", "0.5ms", "1.5us", "0.0005s", "2.5ms", "0.0015s", "1.0001min", "0.0001h", "0.00001d",
		"1.49999999999999999999ms", "0.49999999999999999999", "2147483647", "2147483647.4", "2147483647.5",
		"2147483647 ms", "2147483.647s", "2147483.6475s", "24.85d", "24.855d", "596.5h", "35791.39min",
		"2147483647499us", "2147483647500us", "5 S", "5 MS", "5 Ms", "5 mins", "5min5", "5 min s", "5s5",
		"5 s x", "5.s", "5..5s", "5e", "5e0", "5.5e1s", "0x1F", "0X1f", "010", "08", "0.1", "00.1", "0", "0s",
		"0ms", "0 min", "+5", "-5", " +5", "- 5", "5-", "inf", "nan", "Infinity", "1_000", "5\u00a0s",
		"\u00a05s", "５s", "5ｓ", "5s\u200b", "", " ", "1000000000000000000000000000000", "1" + strings.Repeat("0", 400),
		"0." + strings.Repeat("0", 400) + "1", "4." + strings.Repeat("9", 400) + "ms", "0.5" + strings.Repeat("0", 400) + "1ms"}
	spellings := append([]string(nil), bare...)
	for _, v := range strs {
		q := strings.ReplaceAll(v, "'", "''")
		spellings = append(spellings, "'"+q+"'", "E'"+strings.ReplaceAll(q, `\`, `\\`)+"'", "$$"+v+"$$", "$x$"+v+"$x$")
		if v != "" && !strings.Contains(v, `"`) {
			spellings = append(spellings, `"`+v+`"`)
		}
		var u strings.Builder
		for _, r := range v {
			fmt.Fprintf(&u, `\+%06X`, r)
		}
		spellings = append(spellings, "U&'"+u.String()+"'")
	}
	// Escapes and continuations that the lexer turns into the value.
	spellings = append(spellings, `E'5\163'`, `E'5\x73'`, `E'5\u0073'`, `E'5\U00000073'`, `E'\x35s'`, `E'5s\x00'`,
		`E'5\000s'`, `U&'5\0073'`, `U&'5!0073' UESCAPE '!'`, "'5'\n's'", "'5' \n 's'", "'5' 's'",
		`'5s'::text`, `'5s'::interval`, `interval '5s'`, `5000::int`, `'5s', '6s'`, `5000, 6000`, `5000 6000`,
		`(5000)`, `'5s' || ''`, `$1`, "'5s' -- x", "/* x */ '5s' /* y */", "'5s';", "'5s'; SET statement_timeout = 0")
	read := 0
	// The server reads every timeout with the same function (parse_int, GUC_UNIT_MS); these two
	// do not cut the probe's own statements short when set to a few milliseconds.
	for _, setting := range []string{"lock_timeout", "idle_session_timeout"} {
		for _, form := range []string{"SET %s = %s", "SET %s TO %s", "SET LOCAL %s = %s", "SET SESSION %s TO %s", "set \"%s\" = %s"} {
			for _, v := range spellings {
				if p.checkMillis(fmt.Sprintf(form, setting, v)) {
					read++
				}
			}
		}
	}
	if read < 1000 {
		t.Fatalf("only %d spellings were read: the comparison covers too little", read)
	}
}

// FuzzSettingMillisAgreesWithTheServer: for any value, quoted or written bare, a timeout that
// SettingMillis reads is the one PostgreSQL sets (go test -fuzz FuzzSettingMillis -parallel 1).
func FuzzSettingMillisAgreesWithTheServer(f *testing.F) {
	for _, v := range []string{"5000", "1.5s", " 2 min ", "0.0005s", "2500us", "1.0001min", "0.0001h", "24d",
		"0x1F", "010", "1e3", "-5", ".5ms", "1.49999999999999999999ms", "0." + strings.Repeat("0", 330) + "1"} {
		f.Add(v)
	}
	p := newSettingProbe(f)
	f.Fuzz(func(t *testing.T, v string) {
		if strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v) {
			return // not SQL text a client can send
		}
		p.t = t
		p.checkMillis("SET idle_session_timeout = '" + strings.ReplaceAll(v, "'", "''") + "'")
		p.checkMillis("SET lock_timeout TO " + v)
	})
}

// TestSettingMillisRefusesUnderflow: a value too small for a normal double is not read as 0
// (off): the server's strtod reports underflow and PostgreSQL refuses it.
func TestSettingMillisRefusesUnderflow(t *testing.T) {
	for _, v := range []string{"0." + strings.Repeat("0", 330) + "1", "0." + strings.Repeat("0", 400) + "1ms",
		"0." + strings.Repeat("0", 320) + "5 s"} {
		sql := "SET statement_timeout = '" + v + "'"
		if ms, ok := sqlclass.Classify(sql).Statements[0].SettingMillis(); ok {
			t.Errorf("%.60q…: read as %d ms; the server refuses it", sql, ms)
		}
	}
	for _, v := range []string{"0." + strings.Repeat("0", 400), "0.000000001"} {
		sql := "SET statement_timeout = '" + v + "'"
		if ms, ok := sqlclass.Classify(sql).Statements[0].SettingMillis(); !ok || ms != 0 {
			t.Errorf("%.60q…: SettingMillis() = %d, %v; want 0, true", sql, ms, ok)
		}
	}
}
