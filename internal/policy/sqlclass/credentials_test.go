package sqlclass

import (
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

const (
	testLabel = "[REDACTED:generic_secret]"
	hidden    = "\x00hidden"
)

// redactionCases are statements giving credentials in every spelling the server takes, and
// look-alikes that give none; want is the text shown, with 'R' for the quoted label ("" for the
// text as it is, hidden for none of it: the credential cannot be placed).
var redactionCases = []struct{ sql, want string }{
	// Roles: CREATE/ALTER ROLE, USER, GROUP, with every kind of string.
	{`ALTER ROLE app PASSWORD 'Tr0ub4dor&3horse'`, `ALTER ROLE app PASSWORD 'R'`},
	{`CREATE USER bob WITH PASSWORD 'Kx9-pl0ugh-mare' LOGIN`, `CREATE USER bob WITH PASSWORD 'R' LOGIN`},
	{`create role r login encrypted password 'x' valid until '2030-01-01'`, `create role r login encrypted password 'R' valid until '2030-01-01'`},
	{`CREATE GROUP g WITH PASSWORD 'x'`, `CREATE GROUP g WITH PASSWORD 'R'`},
	{`ALTER USER app WITH PASSWORD 'it''s'`, `ALTER USER app WITH PASSWORD 'R'`},
	{`ALTER USER app WITH PASSWORD E'it\'s\\x'`, `ALTER USER app WITH PASSWORD 'R'`},
	{`ALTER USER app WITH PASSWORD e'\x41\u0042\101'`, `ALTER USER app WITH PASSWORD 'R'`},
	{`ALTER ROLE app PASSWORD $$it's$$`, `ALTER ROLE app PASSWORD 'R'`},
	{`ALTER ROLE app PASSWORD $pw$a$$b$pw$ LOGIN`, `ALTER ROLE app PASSWORD 'R' LOGIN`},
	{`ALTER ROLE app PASSWORD U&'d\0061t\+000061'`, `ALTER ROLE app PASSWORD 'R'`},
	{`ALTER ROLE app PASSWORD U&'d!0061t' UESCAPE '!' LOGIN`, `ALTER ROLE app PASSWORD 'R' LOGIN`},
	{`ALTER ROLE app PASSWORD U&'d!0061t' /* c */ uescape '!'`, `ALTER ROLE app PASSWORD 'R'`},
	{"ALTER ROLE app PASSWORD /* the new one */ 'x' -- rotated\n", "ALTER ROLE app PASSWORD /* the new one */ 'R' -- rotated\n"},
	{"ALTER ROLE app ENCRYPTED -- why\n PASSWORD /* a /* nested */ note */ 'x'", "ALTER ROLE app ENCRYPTED -- why\n PASSWORD /* a /* nested */ note */ 'R'"},
	// A string continued on the next line is one literal; so is an E'…' one.
	{"ALTER ROLE app PASSWORD 'first'\n'second' LOGIN", "ALTER ROLE app PASSWORD 'R' LOGIN"},
	{"ALTER ROLE app PASSWORD E'a\\''\n  'b\\'' LOGIN", "ALTER ROLE app PASSWORD 'R' LOGIN"},
	// Nor after a comment (the server takes two strings, and refuses the statement).
	{"ALTER ROLE app PASSWORD 'first' -- more\n'second'", "ALTER ROLE app PASSWORD 'R' -- more\n'R'"},
	// psql's \password sends the SCRAM verifier.
	{`ALTER USER app PASSWORD 'SCRAM-SHA-256$4096:c2FsdHNhbHQ=$c3RvcmVka2V5:c2VydmVya2V5'`, `ALTER USER app PASSWORD 'R'`},
	{`ALTER ROLE app PASSWORD 'md5e8a48653851e28c69d0506508fb27fc5'`, `ALTER ROLE app PASSWORD 'R'`},
	// Several statements in one query; a role named like the keyword.
	{`select 'kept'; ALTER ROLE a PASSWORD 'x'; alter role "password" password 'y'; select 'kept'`,
		`select 'kept'; ALTER ROLE a PASSWORD 'R'; alter role "password" password 'R'; select 'kept'`},
	{"CREATE ROLE a PASSWORD 'x' IN ROLE b;\nCREATE ROLE c PASSWORD 'y' ADMIN d", "CREATE ROLE a PASSWORD 'R' IN ROLE b;\nCREATE ROLE c PASSWORD 'R' ADMIN d"},
	// Foreign data: a secret option's value, whatever case or spelling its name has.
	{`CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'rep', password 'Wq7-lantern-fig')`,
		`CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'rep', password 'R')`},
	{`ALTER USER MAPPING FOR app SERVER remote OPTIONS (SET password 'x', ADD sslpassword 'y', DROP passfile)`,
		`ALTER USER MAPPING FOR app SERVER remote OPTIONS (SET password 'R', ADD sslpassword 'R', DROP passfile)`},
	{`alter user mapping for current_user server remote options (set PASSWORD $$x$$, "Password" E'y')`,
		`alter user mapping for current_user server remote options (set PASSWORD 'R', "Password" 'R')`},
	{`CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db', dbname 'prod', password 'x')`,
		`CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db', dbname 'prod', password 'R')`},
	{`ALTER SERVER remote OPTIONS (ADD secret_access_key 'x', SET api_token 'y')`, `ALTER SERVER remote OPTIONS (ADD secret_access_key 'R', SET api_token 'R')`},
	{`CREATE FOREIGN DATA WRAPPER w OPTIONS (apikey 'x', region 'eu')`, `CREATE FOREIGN DATA WRAPPER w OPTIONS (apikey 'R', region 'eu')`},
	{`ALTER FOREIGN DATA WRAPPER w OPTIONS (SET client_secret 'x')`, `ALTER FOREIGN DATA WRAPPER w OPTIONS (SET client_secret 'R')`},
	// What only points at a credential, or says whether one is needed, reviewers see.
	{`CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'rep', passfile '/var/lib/pg/.pgpass', password_required 'false', sslkey '/k')`, ""},
	{`ALTER ROLE app PASSWORD NULL VALID UNTIL 'infinity'`, ""},
	{`ALTER ROLE app SET search_path = 'x'`, ""},
	{`SELECT 'password', $$secret$$ AS token`, ""},
	{`CREATE SUBSCRIPTION s CONNECTION 'host=h password=x' PUBLICATION p`, ""}, // the detectors' (password=…)
	// Texts that do not parse: a string literal right after a word naming a credential.
	{`ALTER ROLE app PASSWORD 'x' LOGN`, `ALTER ROLE app PASSWORD 'R' LOGN`},
	{`ALTER ROLE app WITH PASSWORD /* c */ E'x\'y' oops 'kept'`, `ALTER ROLE app WITH PASSWORD /* c */ 'R' oops 'kept'`},
	{`ALTER ROLE app PASSWORD U&'x' UESCAPE '!' oops`, `ALTER ROLE app PASSWORD 'R' oops`},
	{`ALTER ROLE app PASSWORD N'x' oops`, `ALTER ROLE app PASSWORD 'R' oops`},
	{`ALTER ROLE app PASSWORD 'a' 'b'`, `ALTER ROLE app PASSWORD 'R' 'R'`},
	{`CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'rep', "sslPassword" 'x',)`, `CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'rep', "sslPassword" 'R',)`},
	{`SELECT 'kept' garbage`, `SELECT 'kept' garbage`},
	// Nor split into tokens: with a word naming a credential, none of it is shown.
	{`ALTER ROLE app PASSWORD 'unterminated`, hidden},
	{`ALTER ROLE app PASSWORD $pw$unterminated`, hidden},
	// After a comment an E'…' string does not go on: the next line is a string of its own.
	{"ALTER ROLE app PASSWORD E'a\\''  -- more\n  'b\\'' LOGIN", hidden},
	{`select 'unterminated`, `select 'unterminated`},
}

func TestRedactCredentials(t *testing.T) {
	for _, c := range redactionCases {
		got, ok := RedactCredentials(c.sql, testLabel)
		want := strings.ReplaceAll(c.want, "'R'", "'"+testLabel+"'")
		switch {
		case c.want == hidden:
			if ok {
				t.Errorf("%s:\n  shown as %s; want none of it shown", c.sql, got)
			}
		case c.want == "":
			if !ok || got != c.sql {
				t.Errorf("%s:\n  shown as %q (ok %v); want it as it is", c.sql, got, ok)
			}
		case !ok || got != want:
			t.Errorf("%s:\n  shown as %s (ok %v)\n  want     %s", c.sql, got, ok, want)
		}
	}
}

// TestRedactCredentialsQuotesTheLabel: a label with a quote in it stays one string literal.
func TestRedactCredentialsQuotesTheLabel(t *testing.T) {
	got, ok := RedactCredentials(`ALTER ROLE app PASSWORD 'x'`, "it's hidden")
	if want := `ALTER ROLE app PASSWORD 'it''s hidden'`; !ok || got != want {
		t.Errorf("shown as %s (ok %v), want %s", got, ok, want)
	}
}

// TestCredentialsFlag: the classification says which statements give credentials, also when it
// comes from a text of the same shape, and that a text that does not parse may.
func TestCredentialsFlag(t *testing.T) {
	c := New(Options{})
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{`ALTER ROLE app PASSWORD 'one'`, true},
		{`ALTER ROLE app PASSWORD 'two'`, true}, // a shape hit
		{`CREATE USER MAPPING FOR app SERVER s OPTIONS (password 'x')`, true},
		{`CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x')`, false},
		{`ALTER ROLE app PASSWORD NULL`, false},
		{`ALTER ROLE app VALID UNTIL 'infinity'`, false},
		{`SELECT abalance FROM pgbench_accounts WHERE aid = 1`, false},
	} {
		res := c.Classify(tc.sql)
		if got := res.Statements[0].Credentials; got != tc.want || res.MayHoldCredentials() != tc.want {
			t.Errorf("%s: Credentials %v, MayHoldCredentials %v; want %v", tc.sql, got, res.MayHoldCredentials(), tc.want)
		}
	}
	if !c.Classify(`ALTER ROLE app PASSWORD 'x' LOGN`).MayHoldCredentials() {
		t.Error("a text that does not parse: MayHoldCredentials is false")
	}
}

// FuzzRedactCredentials: whatever the text, a credential the parser sees in what is shown is the
// label, and a text that parsed still parses into as many statements.
func FuzzRedactCredentials(f *testing.F) {
	for _, c := range redactionCases {
		f.Add(c.sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		shown, ok := RedactCredentials(sql, testLabel)
		if !ok {
			return
		}
		before, err := pg.Parse(sql)
		if err != nil {
			return
		}
		after, err := pg.Parse(shown)
		if err != nil {
			t.Fatalf("%q parses, shown as %q it does not: %v", sql, shown, err)
		}
		if len(after.Stmts) != len(before.Stmts) {
			t.Fatalf("%q: %d statements, shown as %q: %d", sql, len(before.Stmts), shown, len(after.Stmts))
		}
		for _, raw := range after.Stmts {
			opts, role := credentialOptions(raw.Stmt)
			for _, o := range opts {
				if d := o.GetDefElem(); d != nil && isCredential(d, role) && d.Arg.GetString_().Sval != testLabel {
					t.Fatalf("%q shown as %q: %s is %q", sql, shown, d.Defname, d.Arg.GetString_().Sval)
				}
			}
		}
	})
}
