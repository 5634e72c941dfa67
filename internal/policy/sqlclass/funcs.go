package sqlclass

import (
	"math"
	"slices"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// funcClass is what calling a built-in function does.
type funcClass uint8

const (
	fnUnsafeIO funcClass = 1 << iota
	fnSideEffect
	fnProcedural // runs SQL text given as an argument, or code whose effects are not known
	fnSession    // set_config; refined by its first argument
	fnTableArg   // reads the rows of the relation its first argument names; refined by it (namedRead)
	fnCursorArg  // fetches from the cursor or portal its first argument names; refined by it (namedRead)
)

// builtinFuncs maps bare, lower-cased names of built-in functions with
// effects to their class. The schema is ignored on purpose: a same-named
// function in another schema is treated like the built-in (and, being
// outside pg_catalog, also as code with unknown effects), which errs on the
// strict side. Functions without effects are in pureFuncNames; every other
// name is code with unknown effects (see classifyCall).
var builtinFuncs = map[string]funcClass{
	// Server files and directories (pg_read_server_files and friends).
	"pg_read_file":            fnUnsafeIO,
	"pg_read_binary_file":     fnUnsafeIO,
	"pg_ls_dir":               fnUnsafeIO,
	"pg_ls_logdir":            fnUnsafeIO,
	"pg_ls_waldir":            fnUnsafeIO,
	"pg_ls_tmpdir":            fnUnsafeIO,
	"pg_ls_archive_statusdir": fnUnsafeIO,
	"pg_ls_logicalsnapdir":    fnUnsafeIO,
	"pg_ls_logicalmapdir":     fnUnsafeIO,
	"pg_ls_replslotdir":       fnUnsafeIO,
	"pg_ls_summariesdir":      fnUnsafeIO,
	"pg_stat_file":            fnUnsafeIO,
	"pg_file_write":           fnUnsafeIO | fnSideEffect, // adminpack
	"pg_file_rename":          fnUnsafeIO | fnSideEffect,
	"pg_file_unlink":          fnUnsafeIO | fnSideEffect,
	"pg_file_sync":            fnUnsafeIO,
	"pg_logdir_ls":            fnUnsafeIO,
	"lo_import":               fnUnsafeIO | fnSideEffect,
	"lo_export":               fnUnsafeIO,

	// Dynamic SQL: the query text is an argument the parser never sees.
	"query_to_xml":                           fnProcedural,
	"query_to_xmlschema":                     fnProcedural,
	"query_to_xml_and_xmlschema":             fnProcedural,
	"ts_stat":                                fnProcedural,
	"ts_rewrite":                             fnProcedural,
	"set_config":                             fnSession,
	"pg_reload_conf":                         fnSideEffect,
	"pg_rotate_logfile":                      fnSideEffect,
	"pg_terminate_backend":                   fnSideEffect,
	"pg_cancel_backend":                      fnSideEffect,
	"pg_log_backend_memory_contexts":         fnSideEffect,
	"pg_switch_wal":                          fnSideEffect,
	"pg_create_restore_point":                fnSideEffect,
	"pg_promote":                             fnSideEffect,
	"pg_wal_replay_pause":                    fnSideEffect,
	"pg_wal_replay_resume":                   fnSideEffect,
	"pg_backup_start":                        fnSideEffect,
	"pg_backup_stop":                         fnSideEffect,
	"pg_create_physical_replication_slot":    fnSideEffect,
	"pg_create_logical_replication_slot":     fnSideEffect,
	"pg_drop_replication_slot":               fnSideEffect,
	"pg_copy_physical_replication_slot":      fnSideEffect,
	"pg_copy_logical_replication_slot":       fnSideEffect,
	"pg_replication_slot_advance":            fnSideEffect,
	"pg_logical_emit_message":                fnSideEffect,
	"pg_logical_slot_get_changes":            fnSideEffect | fnProcedural, // every table's changes
	"pg_import_system_collations":            fnSideEffect,
	"pg_notify":                              fnSideEffect,
	"nextval":                                fnSideEffect,
	"setval":                                 fnSideEffect,
	"pg_advisory_lock":                       fnSideEffect,
	"pg_advisory_lock_shared":                fnSideEffect,
	"pg_advisory_xact_lock":                  fnSideEffect,
	"pg_advisory_xact_lock_shared":           fnSideEffect,
	"pg_try_advisory_lock":                   fnSideEffect,
	"pg_try_advisory_lock_shared":            fnSideEffect,
	"pg_try_advisory_xact_lock":              fnSideEffect,
	"pg_try_advisory_xact_lock_shared":       fnSideEffect,
	"pg_advisory_unlock":                     fnSideEffect,
	"pg_advisory_unlock_shared":              fnSideEffect,
	"pg_advisory_unlock_all":                 fnSideEffect,
	"lo_create":                              fnSideEffect,
	"lo_creat":                               fnSideEffect,
	"lo_unlink":                              fnSideEffect,
	"lo_put":                                 fnSideEffect,
	"lo_from_bytea":                          fnSideEffect,
	"lo_truncate":                            fnSideEffect,
	"lo_truncate64":                          fnSideEffect,
	"lowrite":                                fnSideEffect,
	"lo_open":                                fnSideEffect,
	"pg_stat_reset":                          fnSideEffect,
	"pg_stat_reset_shared":                   fnSideEffect,
	"pg_stat_reset_single_table_counters":    fnSideEffect,
	"pg_stat_reset_single_function_counters": fnSideEffect,
	"pg_stat_reset_slru":                     fnSideEffect,
	"pg_stat_reset_replication_slot":         fnSideEffect,
	"pg_stat_statements_reset":               fnSideEffect,
	"pg_stat_reset_subscription_stats":       fnSideEffect,
	"pg_stat_reset_backend_stats":            fnSideEffect,
	"pg_stat_force_next_flush":               fnSideEffect,
	"pg_read_file_old":                       fnUnsafeIO,
	"pg_rotate_logfile_old":                  fnSideEffect,
	"pg_export_snapshot":                     fnSideEffect,
	"pg_extension_config_dump":               fnSideEffect,
	"pg_nextoid":                             fnSideEffect,
	"pg_stop_making_pinned_objects":          fnSideEffect,
	"pg_log_standby_snapshot":                fnSideEffect,
	"pg_sync_replication_slots":              fnSideEffect,
	"pg_logical_slot_get_binary_changes":     fnSideEffect | fnProcedural, // every table's changes
	"pg_replication_origin_advance":          fnSideEffect,
	"pg_replication_origin_create":           fnSideEffect,
	"pg_replication_origin_drop":             fnSideEffect,
	"pg_replication_origin_progress":         fnSideEffect, // can flush to disk
	"pg_replication_origin_session_progress": fnSideEffect,
	"pg_replication_origin_session_reset":    fnSideEffect,
	"pg_replication_origin_session_setup":    fnSideEffect,
	"pg_replication_origin_xact_reset":       fnSideEffect,
	"pg_replication_origin_xact_setup":       fnSideEffect,
	"pg_set_relation_stats":                  fnSideEffect,
	"pg_clear_relation_stats":                fnSideEffect,
	"pg_restore_relation_stats":              fnSideEffect,
	"pg_set_attribute_stats":                 fnSideEffect,
	"pg_clear_attribute_stats":               fnSideEffect,
	"pg_restore_attribute_stats":             fnSideEffect,
	"brin_summarize_range":                   fnSideEffect,
	"brin_summarize_new_values":              fnSideEffect,
	"brin_desummarize_range":                 fnSideEffect,
	"gin_clean_pending_list":                 fnSideEffect,
	"setseed":                                fnSideEffect, // the session's random() sequence
	// STABLE, but they assign the transaction an id when it has none.
	"txid_current":       fnSideEffect,
	"pg_current_xact_id": fnSideEffect,
	// Large objects: descriptors are session state; reads are listed too.
	"loread":     fnSideEffect,
	"lo_get":     fnSideEffect,
	"lo_close":   fnSideEffect,
	"lo_lseek":   fnSideEffect,
	"lo_lseek64": fnSideEffect,
	"lo_tell":    fnSideEffect,
	"lo_tell64":  fnSideEffect,

	// They read the rows of a relation, or of a cursor or portal (at the server a protocol portal
	// is a cursor), that their first argument names: a statement that calls one reads what it
	// names, and is Procedural when that is not a literal (see namedRead).
	"table_to_xml":               fnTableArg,
	"table_to_xmlschema":         fnTableArg,
	"table_to_xml_and_xmlschema": fnTableArg,
	"pg_sequence_last_value":     fnTableArg,
	"cursor_to_xml":              fnCursorArg,
	"cursor_to_xmlschema":        fnCursorArg,
	// They read every table of a schema or a database, or every table's changes, none named in
	// the statement: as with dynamic SQL, what they read is not known.
	"schema_to_xml":                       fnProcedural,
	"schema_to_xmlschema":                 fnProcedural,
	"schema_to_xml_and_xmlschema":         fnProcedural,
	"database_to_xml":                     fnProcedural,
	"database_to_xmlschema":               fnProcedural,
	"database_to_xml_and_xmlschema":       fnProcedural,
	"pg_logical_slot_peek_changes":        fnProcedural,
	"pg_logical_slot_peek_binary_changes": fnProcedural,
}

// effectClass returns the class of a built-in with effects by its
// lower-cased bare name, 0 for other names.
func effectClass(name string) funcClass {
	if c, ok := builtinFuncs[name]; ok {
		return c
	}
	switch {
	case strings.HasPrefix(name, "dblink"):
		return fnUnsafeIO | fnSideEffect
	case strings.HasPrefix(name, "lo_"), strings.HasPrefix(name, "binary_upgrade_"):
		return fnSideEffect
	}
	return 0
}

// pureFuncs is pureFuncNames as a set.
var pureFuncs = func() map[string]bool {
	names := strings.Fields(pureFuncNames)
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}()

// infoSchemaFuncs are the (pure) functions of schema information_schema,
// called by drivers' metadata queries (pgjdbc's getPrimaryKeys…); they are
// only recognised when qualified.
var infoSchemaFuncs = map[string]bool{
	"_pg_char_max_length": true, "_pg_char_octet_length": true, "_pg_datetime_precision": true,
	"_pg_expandarray": true, "_pg_index_position": true, "_pg_interval_type": true,
	"_pg_numeric_precision": true, "_pg_numeric_precision_radix": true, "_pg_numeric_scale": true,
	"_pg_truetypid": true, "_pg_truetypmod": true,
}

// classifyCall returns the class of a call to the function schema.bare
// (schema is empty for an unqualified name; names are as the parser
// returns them: lower-cased unless quoted).
//
// A function is only free of effects when it is known to be: a built-in of
// pureFuncNames called unqualified or as pg_catalog.name, or a function of
// information_schema. Anything else (user-defined functions, extension
// functions, unknown names, names qualified with another schema, quoted
// names in upper case, which are never built-ins) may run any SQL and is
// fnProcedural, on top of the effects of a built-in of the same name.
//
// Unqualified names are assumed to resolve to pg_catalog, which is the
// case unless search_path names pg_catalog after another schema, or a
// user-defined overload takes argument types of its own (lower(mytype)):
// text classification cannot see either.
func classifyCall(schema, bare string) funcClass {
	lower := strings.ToLower(bare)
	c := effectClass(lower)
	switch {
	case lower != bare:
	case schema == "" || schema == "pg_catalog":
		if c != 0 || pureFuncs[bare] {
			return c
		}
	case schema == "information_schema":
		if infoSchemaFuncs[bare] {
			return c
		}
	}
	return c | fnProcedural
}

// builtinOperators are the operator names of pg_catalog (PostgreSQL 15 to
// 17). An operator runs a function; one with any other name, or qualified
// with a schema other than pg_catalog (OPERATOR(s.+)), is user-defined and
// may run any SQL. A user-defined operator with a built-in name on types of
// its own cannot be told from the built-in.
var builtinOperators = func() map[string]bool {
	names := strings.Fields(`!! !~ !~* !~~ !~~* # ## #- #> #>> % & && &< &<| &> * *< *<= *<> *= *> *>=
		+ - -> ->> -|- / < <-> << <<= <<| <= <> != <@ <^ = > >= >> >>= >^ ? ?# ?& ?- ?-| ?| ?||
		@ @-@ @> @? @@ @@@ ^ ^@ | |&> |/ |>> || ||/ ~ ~* ~<=~ ~<~ ~= ~>=~ ~>~ ~~ ~~*`)
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}()

// classifyOperator returns the class of an operator name (a list of String
// nodes, optionally schema-qualified): 0 for a built-in operator name,
// fnProcedural for any other.
func classifyOperator(names []*pg.Node) funcClass {
	if len(names) == 0 {
		return 0
	}
	op := names[len(names)-1].GetString_().GetSval()
	if len(names) > 1 && names[len(names)-2].GetString_().GetSval() != "pg_catalog" {
		return fnProcedural
	}
	if !builtinOperators[op] {
		return fnProcedural
	}
	return 0
}

// builtinSampleMethod reports whether a TABLESAMPLE method is one of
// pg_catalog's; others (tsm_system_rows…) run an extension's code.
func builtinSampleMethod(names []*pg.Node) bool {
	switch len(names) {
	case 1:
	case 2:
		if names[0].GetString_().GetSval() != "pg_catalog" {
			return false
		}
	default:
		return false
	}
	switch names[len(names)-1].GetString_().GetSval() {
	case "system", "bernoulli":
		return true
	}
	return false
}

// namedRead records what a call of a function of class fnTableArg or fnCursorArg reads: the
// relation or the cursor its first argument names. The name counts only as a string literal,
// alone or cast straight to the argument's type, that the server reads as this does; any other
// argument (an expression, a column, an OID, named notation, another cast: 'tx'::char(1) is 't')
// may name any relation or portal, and makes the call Procedural, judged as code that may read
// anything.
func (w *walker) namedRead(f *pg.FuncCall, c funcClass) {
	typ := "regclass"
	if c&fnCursorArg != 0 {
		typ = "refcursor"
	}
	var name string
	ok := len(f.Args) > 0
	if ok {
		// table_to_xml('a', …) and table_to_xml('b', …) read different tables.
		w.valueDep = true
		name, ok = literalArg(f.Args[0], typ)
	}
	if ok && c&fnCursorArg != 0 {
		// A refcursor's text is the cursor's name as it is: no case folding, no quotes.
		w.cursors = append(w.cursors, name)
		return
	}
	var parts []string
	if ok {
		parts, ok = regclassName(name)
	}
	if !ok {
		w.funcClass |= fnProcedural
		return
	}
	w.addTable(strings.Join(parts, "."), parts[len(parts)-1], false)
}

// literalArg returns the text of the string literal n, alone or cast straight to typ, a type of
// pg_catalog ('t', 't'::regclass, CAST('t' AS pg_catalog.regclass)); ok is false for anything
// else.
func literalArg(n *pg.Node, typ string) (string, bool) {
	if tc := n.GetTypeCast(); tc != nil {
		tn := tc.GetTypeName()
		names := tn.GetNames()
		switch {
		case len(tn.GetTypmods()) > 0 || len(tn.GetArrayBounds()) > 0 || tn.GetSetof() || tn.GetPctType():
			return "", false
		case len(names) == 1 && names[0].GetString_().GetSval() == typ:
		case len(names) == 2 && names[0].GetString_().GetSval() == "pg_catalog" && names[1].GetString_().GetSval() == typ:
		default:
			return "", false
		}
		n = tc.GetArg()
	}
	c := n.GetAConst()
	if c == nil || c.GetIsnull() || c.GetSval() == nil {
		return "", false
	}
	return c.GetSval().GetSval(), true
}

// regclassName reads a relation's name as regclassin does (SplitIdentifierString): names
// separated by dots, each unquoted (lower-cased) or in double quotes ("" for a quote), with
// spaces around them. ok is false for an OID (digits alone) and "-" (no relation), for text the
// server refuses, and where servers may read it otherwise than this: an unquoted name with bytes
// beyond ASCII (lower-cased in single-byte encodings), \v (a space from PostgreSQL 16), a name of
// 64 bytes or more (cut by the server's encoding's characters).
func regclassName(s string) (parts []string, ok bool) {
	if s == "-" || s != "" && s[0] >= '0' && s[0] <= '9' && strings.Trim(s, "0123456789") == "" {
		return nil, false
	}
	space := func(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' }
	i := 0
	skipSpace := func() {
		for i < len(s) && space(s[i]) {
			i++
		}
	}
	skipSpace()
	for {
		var name string
		if i < len(s) && s[i] == '"' {
			var b strings.Builder
			for i++; ; {
				j := strings.IndexByte(s[i:], '"')
				if j < 0 {
					return nil, false
				}
				b.WriteString(s[i : i+j])
				i += j + 1
				if i == len(s) || s[i] != '"' {
					break
				}
				b.WriteByte('"')
				i++
			}
			name = b.String()
		} else {
			start := i
			for ; i < len(s) && s[i] != '.' && !space(s[i]); i++ {
				if s[i] >= 0x80 || s[i] == '\v' {
					return nil, false
				}
			}
			name = strings.ToLower(s[start:i])
		}
		if name == "" || len(name) >= 64 || len(parts) == 3 {
			return nil, false
		}
		parts = append(parts, name)
		skipSpace()
		if i == len(s) {
			return parts, true
		}
		if s[i] != '.' {
			return nil, false
		}
		i++
		skipSpace()
	}
}

// unsafeExtensions are extensions whose installation opens I/O outside the
// database (files, other servers, untrusted languages).
var unsafeExtensions = map[string]bool{
	"dblink": true, "postgres_fdw": true, "file_fdw": true, "adminpack": true,
	"plpython3u": true, "plpythonu": true, "plperlu": true, "pltclu": true,
	"plsh": true, "lo": true, "pg_read_server_files": true, "mysql_fdw": true,
	"oracle_fdw": true, "tds_fdw": true, "multicorn": true, "http": true,
	"pgsql-http": true, "pg_net": true,
}

// privilegedSettings change who the session is.
var privilegedSettings = map[string]bool{
	"role": true, "session_authorization": true, "session authorization": true,
}

// readerSettings change how statement text is read; after changing them the
// proxy's parser and the server disagree, so the statement is Unknown unless
// the value keeps the default reading.
func readerSettingSafe(name, value string) (relevant, safe bool) {
	switch strings.ToLower(name) {
	case "standard_conforming_strings":
		v := strings.ToLower(value)
		return true, v == "on" || v == "true" || v == "1" || v == "yes"
	case "client_encoding", "names":
		v := strings.ToLower(strings.ReplaceAll(strings.ReplaceAll(value, "-", ""), "_", ""))
		return true, v == "utf8" || v == "unicode" || v == "sqlascii"
	}
	return false, true
}

// millisecondSettings are the settings measured in time whose unit is the millisecond: a number
// without a unit is milliseconds.
var millisecondSettings = map[string]bool{
	"statement_timeout": true, "lock_timeout": true, "idle_in_transaction_session_timeout": true,
	"idle_session_timeout": true, "transaction_timeout": true, "deadlock_timeout": true,
}

// SetsMillis reports whether st is a SET giving a value to a setting measured in milliseconds
// (the ones SettingMillis reads), whether or not SettingMillis can read that value.
func (st *Statement) SetsMillis() bool {
	return st.Kind == KindSet && millisecondSettings[st.Setting] && st.SettingValue != ""
}

// cSpace is what C's isspace, and so the server, skips around a value and its unit.
const cSpace = " \t\n\v\f\r"

// timeUnits are the units the server accepts after a time value whose base unit is the
// millisecond, largest first, with their size in milliseconds (case matters), as in its
// conversion table: a fractional value is rounded to a whole number of the next smaller unit.
var timeUnits = []timeUnit{{"d", 86_400_000}, {"h", 3_600_000}, {"min", 60_000}, {"s", 1000}, {"ms", 1}, {"us", 0.001}}

type timeUnit struct {
	name string
	ms   float64
}

// SettingMillis returns the value st, a SET of a setting measured in milliseconds
// (statement_timeout, lock_timeout, idle_in_transaction_session_timeout, idle_session_timeout,
// transaction_timeout, deadlock_timeout), gives it, in milliseconds as the server rounds it; 0
// turns a timeout off. ok is false for any other statement, and for a value this reading is not
// sure to share with the server: those are refused by a rule that tests the value, never
// misread. Accepted: a decimal number with an optional fraction, then optionally a unit (us, ms,
// s, min, h, d), with spaces around either. Refused: signs, exponents, hexadecimal and
// leading-zero (octal) integers, which the server reads with strtol/strtod.
func (st *Statement) SettingMillis() (ms int64, ok bool) {
	if !st.SetsMillis() {
		return 0, false
	}
	s := strings.Trim(st.SettingValue, cSpace)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intPart := s[:i]
	if intPart == "" || len(intPart) > 1 && intPart[0] == '0' {
		return 0, false
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	num, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, false
	}
	if num < 0x1p-1022 && strings.ContainsAny(s[:i], "123456789") {
		// A value too small for a normal double ("0.000…1", 330 zeros): strtod reports
		// underflow (ERANGE) and the server refuses it; ParseFloat reads it as 0, off.
		return 0, false
	}
	v := num
	if unit := strings.TrimLeft(s[i:], cSpace); unit != "" {
		u := slices.IndexFunc(timeUnits, func(t timeUnit) bool { return t.name == unit })
		if u < 0 {
			return 0, false
		}
		v = num * timeUnits[u].ms
		if u+1 < len(timeUnits) {
			// "0.0001h" is 0 (off), not 360 ms.
			next := timeUnits[u+1].ms
			v = math.RoundToEven(v/next) * next
		}
	}
	v = math.RoundToEven(v)
	if v > math.MaxInt32 {
		return 0, false
	}
	return int64(v), true
}
