package sqlclass

import "strings"

// funcClass is what calling a built-in function does.
type funcClass uint8

const (
	fnUnsafeIO funcClass = 1 << iota
	fnSideEffect
	fnProcedural // runs SQL text given as an argument
	fnSession    // set_config; refined by its first argument
)

// builtinFuncs maps bare, lower-cased function names to their class. The
// schema is ignored on purpose: a same-named function in another schema is
// treated like the built-in, which errs on the strict side.
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
	"database_to_xml":                        0, // reads everything; listed in Functions
	"xpath":                                  0,
	"pg_get_viewdef":                         0,
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
	"pg_logical_slot_get_changes":            fnSideEffect,
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
}

// classifyFunc returns the class of a function by its bare name.
func classifyFunc(bare string) funcClass {
	name := strings.ToLower(bare)
	if c, ok := builtinFuncs[name]; ok {
		return c
	}
	if strings.HasPrefix(name, "dblink") {
		return fnUnsafeIO | fnSideEffect
	}
	return 0
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
