// Package record is the tamper-evident session log of the enforcer daemon: every enforced session's
// start, statements, verdicts, masked results, notices, approvals and end, appended as hash-chained
// JSON Lines records with durability chosen per statement (write-ahead with group commit, or async),
// signed checkpoints, retention, verification, replay rendering and export.
//
// # Record format
//
// A log is a directory of segments seg-NNNNNNNNNNNN.jsonl. Each line is one record:
//
//	{"data":{…},"hash":"…","prev":"…","seq":7,"session":"…","time":"2026-11-27T14:32:18.443211Z","type":"statement"}
//
// data holds the payload of the record's type. prev is the hash of the record before it (64 zero
// hex digits for the first record ever), and
//
//	hash = hex(SHA-256(bytes(prev) ‖ canonical(record without the "hash" member)))
//
// where bytes(prev) is the 32 bytes prev encodes. One chain runs across segments and restarts: the
// first record of every segment is a "segment" header whose prev is the last hash of the previous
// segment.
//
// # Canonical JSON
//
// canonical(v) is the JSON text of v with: objects' members sorted by key in byte order, no
// whitespace outside strings, integers only (no fractions or exponents; numbers are kept as written
// in the decimal form Go's strconv produces), and strings escaped exactly as Go's encoding/json
// Marshal escapes them: \" \\ \n \r \t \b \f, other control characters as \u00XX, '<' '>' '&' as
// \u003c \u003e \u0026, U+2028 and U+2029 as \u2028 \u2029, invalid UTF-8 replaced by a raw U+FFFD,
// all other characters as raw UTF-8. Absent optional members are omitted, never written as null. A
// stored line must be byte-for-byte the canonical form of its own content (hash included), so any
// byte change of a line is detected: either the content changed (hash mismatch) or the form did (not
// canonical). Payload structs declare their fields in key order so encoding/json produces this form
// directly; TestPayloadFieldsSorted keeps it so. The payloads written per statement are encoded by
// hand (encode.go) to the same bytes, which TestAppendPayloadMatchesEncodingJSON and
// FuzzAppendJSONString check against encoding/json.
//
// # Durability
//
// Append(ev, WriteAhead) returns after the record is fdatasync'ed: one writer goroutine takes every
// pending record from all sessions, writes them with one write, fsyncs once and releases all
// waiters (group commit). The sync goes through io_uring where the kernel allows it (see syncRing),
// so the writer waits for it without holding the daemon's scheduler thread. Append(ev, Async)
// returns once the record is queued; the writer writes queued async records within AsyncWindow
// (default 10 ms; at once if a write-ahead record arrives) and syncs them with the next group
// commit or within SyncInterval (default 1 s). So a killed daemon loses at most the last
// AsyncWindow of reads (written records are in the page cache) and a power loss at most the last
// SyncInterval of them; never a write-ahead record. Options.Strict makes every Append write-ahead.
// (The Postgres guard holds a read's statement record back until its first result, then appends
// both as one record, see Statement.Result; unless another connection recorded a statement
// meanwhile, it appends that record once the connection's next statement is forwarded, or
// AsyncWindow later at most, so its reads reach the file within about twice AsyncWindow.) When the log cannot be written (disk full, I/O error,
// closed file) the recorder fails for good: the failing Append and every later one return an error
// wrapping ErrLogFailed, so the caller refuses the statement, and the failure is logged with
// slog.Error and counted in Stats.Failures.
//
// # Chain state and restarts
//
// chain.state holds the head {seq, hash, segment}. It is replaced atomically (temporary file,
// fsync, rename, fsync of the directory) after every checkpoint, at rotation and at Close, always
// after the segment is synced, so it never names a record that is not on disk; the log may be ahead
// of it after a crash. Open checks the newest segment record by record and compares it with the
// state. A disagreement (state missing, the log shorter than the state's head, a different hash at
// the state's seq, a broken newest segment, an empty log with a state) makes Open fail with a
// *ChainBreakError: the daemon refuses to start. Only with Options.AcceptChainBreak (an explicit
// --accept-chain-break) does it continue, and then it first writes a chain_break record naming
// what the state said and what the log held, linked to the last intact record, so the break is
// part of the chain and Verify reports it on every later run. Bytes after the last newline of the
// newest segment (a write torn by a crash) are moved to an evidence file and a recovery record says
// so; a complete record is never dropped.
//
// # Checkpoints, retention, verification
//
// Every CheckpointEvery records or CheckpointInterval, at rotation and at Close, the recorder signs
// {seq, hash, time} of the head with the host's Ed25519 key (host.key, 0600; host.pub beside it)
// and appends it as a checkpoint record. Checkpoint makes one on demand; ExportCheckpoint writes it
// to a file kept off the host, against which Verify detects removal of the log's tail, which a hash
// chain alone cannot. Retention (MaxAge, MaxBytes, bounded by KeepFrom) deletes whole closed
// segments, oldest first, after durably writing a retention record that names the removed range and
// the hash the first kept segment's header links to, and signing a checkpoint right after it (as
// after a chain_break record): against an exported checkpoint whose record is gone, Verify accepts
// the retention or chain_break record that accounts for it only with a checkpoint signed by that
// key after it, since anyone who can delete segments can append an unsigned one. Verify checks
// every record and reports the first bad one with its segment, line, seq and kind.
//
// # Files
//
// The directory (0700) holds seg-NNNNNNNNNNNN.jsonl segments (0600), chain.state, host.key,
// host.pub, seg-*.torn-* evidence files, and lock (flock'ed by the one Recorder writing the log;
// readers and Verify take no lock). The daemon uses DefaultDir.
package record
