// Package sqlclass classifies PostgreSQL statements by what they do, using the
// real PostgreSQL parser (github.com/pganalyze/pg_query_go/v6).
//
// A statement is judged by its effects, not its first keyword: a DELETE inside
// a CTE is a write, EXPLAIN ANALYZE is its inner statement, PREPARE is its
// body, SELECT INTO creates a table, COPY (DELETE … RETURNING) TO STDOUT
// deletes. A string the parser cannot read is Unknown, and callers are
// expected to refuse it.
//
// Known blind spots, by design of text classification:
//   - A function call is only taken to be free of effects when it names a
//     built-in known to be (funcs_pure.go), unqualified or qualified with
//     pg_catalog. Every other call (user-defined and extension functions,
//     unknown names, other schemas, quoted upper-case names) and every
//     operator that is not a built-in name (<=>, OPERATOR(s.+)) or
//     TABLESAMPLE method that is not built in is code with unknown
//     effects: the statement is Procedural, wherever the call is (select
//     list, WHERE, FROM, ORDER BY, VALUES, CTEs, DEFAULT…). Built-ins with
//     known effects set their own flags (nextval: SideEffects).
//   - Code reached without a call in the text is not seen: triggers, rules,
//     views, column defaults of INSERT, casts and domain checks, functional
//     notation (t.f for f(t)), a user-defined overload of a built-in name on
//     types of its own (lower(mytype), = on mytype), and search_path
//     putting another schema before pg_catalog. The statements that create
//     such code are DDL, and Procedural where they name code; statements
//     that change search_path are SearchPath.
//   - DO blocks, CALL and dynamic-SQL functions (query_to_xml, ts_stat…) are
//     marked Procedural: their contents are not inspected. So are functions
//     that read tables the statement does not name (schema_to_xml,
//     database_to_xml, logical decoding's changes), and table_to_xml and
//     cursor_to_xml unless a literal names the table (then in Tables) or the
//     cursor (in CursorsRead).
//   - The write target of INSERT/UPDATE/DELETE/MERGE is reported as named.
//     A view is always treated as written when it is the target (an updatable
//     view writes its base table; an INSTEAD rule or trigger may write
//     elsewhere); which tables are finally written is not knowable from text.
//     pg_catalog's pg_settings, whose rule runs set_config, is recognised by
//     name; a view of another name over it is not.
//   - Parsing assumes standard_conforming_strings=on and a UTF-8 client
//     encoding, as pg_query does. Statements that change either are Unknown;
//     the caller must check the server's ParameterStatus for both.
package sqlclass

import (
	"sync"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Kind is the kind of a statement, upper case ("SELECT", "DELETE", …).
type Kind string

// Statement kinds. Kinds not listed here are reported with their SQL verb.
const (
	KindSelect     Kind = "SELECT"
	KindInsert     Kind = "INSERT"
	KindUpdate     Kind = "UPDATE"
	KindDelete     Kind = "DELETE"
	KindMerge      Kind = "MERGE"
	KindCopy       Kind = "COPY"
	KindDrop       Kind = "DROP"
	KindTruncate   Kind = "TRUNCATE"
	KindAlter      Kind = "ALTER"
	KindCreate     Kind = "CREATE"
	KindGrant      Kind = "GRANT"
	KindRevoke     Kind = "REVOKE"
	KindSet        Kind = "SET"
	KindReset      Kind = "RESET"
	KindShow       Kind = "SHOW"
	KindDo         Kind = "DO"
	KindCall       Kind = "CALL"
	KindExecute    Kind = "EXECUTE"
	KindDeallocate Kind = "DEALLOCATE"
	KindDiscard    Kind = "DISCARD"
	KindExplain    Kind = "EXPLAIN"
	KindBegin      Kind = "BEGIN"
	KindCommit     Kind = "COMMIT"
	KindRollback   Kind = "ROLLBACK"
	KindSavepoint  Kind = "SAVEPOINT"
	KindRelease    Kind = "RELEASE"
	KindVacuum     Kind = "VACUUM"
	KindAnalyze    Kind = "ANALYZE"
	KindLock       Kind = "LOCK"
	KindUnknown    Kind = "UNKNOWN"
)

// Wrappers a statement can be judged through (Statement.Wrapper).
const (
	WrapExplain        = "EXPLAIN"
	WrapExplainAnalyze = "EXPLAIN ANALYZE"
	WrapPrepare        = "PREPARE"
)

// Statement is the classification of one statement of a SQL string.
//
// Statements returned by a Classifier are shared between callers and must
// not be modified.
type Statement struct {
	// Kind is the statement's verb after unwrapping EXPLAIN ANALYZE and
	// PREPARE (judged as their inner statement). SELECT INTO and CREATE TABLE
	// AS are CREATE. A SELECT whose CTE deletes stays SELECT; its Kinds and
	// Writes say what it does.
	Kind Kind
	// Kinds lists every statement kind found inside, Kind first: a
	// data-modifying CTE adds DELETE, COPY (DELETE …) adds DELETE, plain
	// EXPLAIN DELETE is ["EXPLAIN", "DELETE"].
	Kinds []string
	// Setting is the configuration parameter a SET, RESET or SHOW names, lower case ("timezone"
	// for SET TIME ZONE, "transaction" for SET TRANSACTION, "all" for RESET ALL and SHOW ALL).
	Setting string
	// SettingValue is the value a SET gives Setting, as the server reads it: its constants
	// joined by ", " (SET datestyle = ISO, MDY gives "iso, mdy": keywords and unquoted names
	// are lower case, quoted strings are as written). It is "" for RESET, SET … TO DEFAULT,
	// SET … FROM CURRENT, SET TRANSACTION and a value that is not a constant. See
	// SettingMillis for timeouts.
	SettingValue string
	// Object is the object type of DDL and privilege statements ("TABLE",
	// "INDEX", "FUNCTION", "ROLE", …), empty otherwise.
	Object string
	// Wrapper is "", WrapExplain, WrapExplainAnalyze or WrapPrepare.
	Wrapper string
	// Text is this statement's text within the classified string: always
	// the text that was asked about, also when the rest of the
	// classification came from a text of the same shape (see Result).
	Text string

	Reads       bool // reads table data or returns rows (SELECT 1 reads)
	Writes      bool // changes data: DML anywhere, SELECT INTO, COPY FROM, TRUNCATE, DROP of data, side-effect functions
	DDL         bool // CREATE, ALTER, DROP, TRUNCATE, COMMENT, …
	Privilege   bool // GRANT, REVOKE, roles, owners, policies, SET ROLE, SET SESSION AUTHORIZATION, set_config('role') or of a computed name, writes to pg_settings, ALTER ROLE/DATABASE … SET, CREATE SCHEMA … AUTHORIZATION, view security options
	UnsafeIO    bool // COPY PROGRAM / server files, file and large-object functions, dblink, foreign servers
	Procedural  bool // DO, CALL, CREATE FUNCTION/PROCEDURE/TRIGGER, dynamic-SQL functions, functions reading tables or cursors not named by a literal, LOAD, calls of functions/operators not known to be free of effects
	Session     bool // SET, RESET, DISCARD, DEALLOCATE, LISTEN, set_config, writes to pg_settings (set_config through the view's rule)
	Transaction bool // BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION
	Maintenance bool // VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, REFRESH MATERIALIZED VIEW
	SideEffects bool // calls a built-in with side effects (nextval, pg_terminate_backend, pg_advisory_lock, …)
	// Locks is set when the statement takes locks a read does not: a locking clause anywhere in it
	// (SELECT … FOR UPDATE / FOR NO KEY UPDATE / FOR SHARE / FOR KEY SHARE, also in a CTE, a
	// subquery or a DECLARE'd cursor's query) or LOCK TABLE. PostgreSQL refuses row locks in a
	// read-only transaction: they write the rows' xmax, and the locks block the application's
	// writes for as long as the transaction stays open.
	Locks bool
	// SearchPath is set when the statement may change search_path, which decides what unqualified
	// names (built-in functions and operators included) resolve to: SET/RESET of search_path in
	// any spelling (SET SCHEMA, SET LOCAL, a quoted or U&-escaped name), RESET ALL, DISCARD ALL,
	// set_config whose setting name is 'search_path' or not a literal, a write to pg_settings, and
	// ALTER ROLE/DATABASE … SET/RESET search_path (or RESET ALL) for later sessions.
	SearchPath bool
	// Unknown is set when the statement cannot be judged: parse error,
	// input too long, an unrecognised statement type, or a setting that
	// would make later statements unreadable (standard_conforming_strings,
	// client_encoding, or a setting whose name is not known: set_config with
	// a computed name, a write to pg_settings). EXECUTE of a prepared name is not Unknown; see Execute.
	Unknown bool
	// Executes is false when the (inner) statement is not run now: plain
	// EXPLAIN, PREPARE.
	Executes bool
	// Credentials is set when the statement gives a credential as a string literal: a role's
	// PASSWORD, a password or other secret option of a user mapping, foreign server or wrapper.
	// Its text is shown only through RedactCredentials.
	Credentials bool

	// Tables lists every relation named, schema-qualified as written
	// (lower-cased unless quoted), CTE names excluded.
	Tables        []string
	TablesRead    []string
	TablesWritten []string
	// Functions lists called functions by bare name; a qualified call is
	// listed both ways ("pg_catalog.pg_read_file" and "pg_read_file").
	Functions []string

	// HasWhere: when the statement updates or deletes (anywhere, including
	// CTEs and COPY), every UPDATE/DELETE has a WHERE (MERGE: its ON
	// condition); otherwise the top-level SELECT has a WHERE.
	HasWhere bool
	// WhereIsConstant: one of those WHERE clauses does not depend on the
	// rows (no column reference, or folds to a constant: WHERE 1=1,
	// WHERE id = 5 OR true, WHERE id = id).
	WhereIsConstant bool

	// Cursor is the cursor DECLARE defines, FETCH and MOVE read (rows of the DECLARE's query)
	// or CLOSE closes ("" for CLOSE ALL).
	Cursor string
	// CursorsRead are the cursors cursor_to_xml and cursor_to_xmlschema fetch from, by the names
	// their first arguments give as literals, as the server reads them ('' is the unnamed
	// portal). At the server an extended-protocol portal is a cursor too. A call that names its
	// cursor otherwise makes the statement Procedural.
	CursorsRead []string
	// Outputs are the table columns the statement's result columns may be computed from (nil
	// when it returns no rows of its own), for masking by column.
	Outputs *Outputs
	// Names are the table columns the statement names anywhere, for masking its values
	// where it is shown.
	Names Names

	// Prepare is the name defined by PREPARE name AS … (Kind is the body's).
	Prepare string
	// Execute is the name of a prepared statement this statement runs
	// (EXECUTE name, EXPLAIN ANALYZE EXECUTE name, CREATE TABLE AS EXECUTE
	// name). The caller must judge what was prepared under that name.
	Execute string
	// Deallocate is the prepared name released by DEALLOCATE name;
	// DeallocateAll is set by DEALLOCATE ALL and DISCARD ALL.
	Deallocate    string
	DeallocateAll bool
}

// ReadOnly reports whether the statement only reads: it reads, and has no
// other effect of any class, and is not Unknown or an EXECUTE.
func (s *Statement) ReadOnly() bool {
	return s.Reads && s.inert()
}

// Inert reports whether the statement changes nothing by itself: read-only
// statements and plain transaction control (BEGIN, COMMIT, SAVEPOINT…).
// COMMIT is inert because it only makes durable what earlier statements of
// the transaction did, and each of those that could change anything was
// not inert itself (deferred triggers and ON COMMIT actions it runs were
// set up by such statements). COMMIT PREPARED and PREPARE TRANSACTION are
// Writes: the first finishes a transaction that may be another session's,
// the second leaves one (and its locks) behind the session.
func (s *Statement) Inert() bool {
	return (s.Reads || s.Transaction) && s.inert()
}

func (s *Statement) inert() bool {
	return !s.Writes && !s.DDL && !s.Privilege && !s.UnsafeIO && !s.Procedural &&
		!s.Session && !s.Maintenance && !s.SideEffects && !s.Locks && !s.SearchPath && !s.Unknown && s.Execute == ""
}

// Result is the classification of one SQL string.
//
// Results returned by a Classifier are shared between callers and must not
// be modified.
//
// A Classifier may answer a text from the classification of another text
// that differs only in literal values (see Classifier). Such a result is a
// fresh Result whose per-text parts come from the text asked about:
// Statement.Text and Fingerprint. Every other field (kinds, flags, tables,
// functions, names, ParseError) is per-shape: it is only shared when it
// provably does not depend on any literal's value.
type Result struct {
	// Statements holds one entry per statement; a string that does not parse
	// has exactly one Unknown statement. An empty string (or only comments)
	// has none.
	Statements []Statement
	// ParseError is the parser's error text, empty when the string parsed.
	ParseError string

	text   string // the classified string, for Fingerprint
	fpOnce sync.Once
	fp     string
}

// Fingerprint returns pg_query's fingerprint of the whole string (hex),
// empty when it does not parse. It identifies similar statements (most
// constants ignored); never use it to bind an approval to exact text. It is
// computed on first use: it costs a second parse.
func (r *Result) Fingerprint() string {
	r.fpOnce.Do(func() {
		if r.ParseError != "" {
			return
		}
		if fp, err := pg.Fingerprint(r.text); err == nil {
			r.fp = fp
		}
	})
	return r.fp
}

// Unknown reports whether any statement is Unknown.
func (r *Result) Unknown() bool {
	for i := range r.Statements {
		if r.Statements[i].Unknown {
			return true
		}
	}
	return false
}
