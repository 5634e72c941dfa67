package record

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Type names a record's payload.
type Type string

// Session event types, written by the proxy through Recorder.Append.
const (
	TypeSessionStart Type = "session_start"
	TypeStatement    Type = "statement"
	TypeResult       Type = "result"
	TypeNotice       Type = "notice"
	TypeApproval     Type = "approval"
	TypeSessionEnd   Type = "session_end"
)

// Log maintenance types, written only by the Recorder itself.
const (
	TypeSegment    Type = "segment"     // first record of every segment file
	TypeCheckpoint Type = "checkpoint"  // signed chain head
	TypeRetention  Type = "retention"   // anchor left when old segments are deleted
	TypeChainBreak Type = "chain_break" // the saved chain state disagreed with the log at open
	TypeRecovery   Type = "recovery"    // a torn final line was cut off at open
)

// Identity is the person (or workload) an enforced session belongs to.
type Identity struct {
	Email    string   `json:"email,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Provider string   `json:"provider,omitempty"`
	Subject  string   `json:"subject,omitempty"`
}

// Process is the enforced process that opened the connection.
type Process struct {
	Cmdline []string `json:"cmdline,omitempty"`
	Comm    string   `json:"comm,omitempty"`
	Exe     string   `json:"exe,omitempty"`
	PID     int      `json:"pid,omitempty"`
	UID     int      `json:"uid"`
}

// Target is the service the session reached.
type Target struct {
	Address  string `json:"address,omitempty"`
	Database string `json:"database,omitempty"`
	Name     string `json:"name,omitempty"`
	User     string `json:"user,omitempty"`
}

// SessionStart opens a session. Protocol is "postgres", "http", "tls-passthrough" or "tcp" (a raw TCP
// session, which records only this, the byte counts of its SessionEnd and nothing in between).
type SessionStart struct {
	CgroupID     uint64            `json:"cgroup_id,omitempty"`
	CgroupPath   string            `json:"cgroup_path,omitempty"`
	ClientParams map[string]string `json:"client_params,omitempty"`
	Identity     Identity          `json:"identity"`
	Origin       string            `json:"origin,omitempty"` // address:port the client dialled
	Process      Process           `json:"process"`
	Protocol     string            `json:"protocol"`
	Target       Target            `json:"target"`
}

// Verdicts of a statement.
const (
	VerdictAllow   = "allow"
	VerdictBlock   = "block"
	VerdictApprove = "approve" // held for a reviewer
)

// Statement is one statement (or HTTP request) as the policy saw it. Params are already masked by
// the caller; nil entries are SQL NULL.
//
// Result, when set, is the statement's first result, recorded in the same record: a statement
// that cannot change state needs no record before it runs, so the proxy writes it together with
// what came back, which halves the records of a read-heavy session. Later results of the same
// statement (a multi-statement query) follow as result records.
type Statement struct {
	ApprovalID string `json:"approval_id,omitempty"`
	Class      string `json:"class,omitempty"` // statement class from the policy engine (read, write, ddl…)
	// ID numbers the statement within its session when its results are recorded apart from it
	// (written ahead, or pipelined behind another): their Result.StatementID names it.
	ID       uint64    `json:"id,omitempty"`
	Params   []*string `json:"params,omitempty"`
	Protocol string    `json:"protocol,omitempty"` // simple, extended, copy, http…
	Result   *Result   `json:"result,omitempty"`
	Rule     string    `json:"rule,omitempty"`
	Text     string    `json:"text"`
	Verdict  string    `json:"verdict"`
}

// Result is what the client received for the statement before it. Rows are masked and hold at most
// the recorder's row cap (see CapRows); RowCount is the total the server returned.
type Result struct {
	// Bytes is the size of an HTTP response's body as the client received it (Rows holds its
	// start, masked, as one row of one column "body").
	Bytes       int64       `json:"bytes,omitempty"`
	ColumnTypes []uint32    `json:"column_types,omitempty"` // type OIDs from RowDescription, for rendering
	Columns     []string    `json:"columns,omitempty"`
	CommandTag  string      `json:"command_tag,omitempty"`  // for HTTP, the status: "200 OK"
	ContentType string      `json:"content_type,omitempty"` // of an HTTP response
	DurationUS  int64       `json:"duration_us,omitempty"`
	Error       string      `json:"error,omitempty"`
	ErrorCode   string      `json:"error_code,omitempty"` // SQLSTATE
	RowCount    int64       `json:"row_count"`
	Rows        [][]*string `json:"rows,omitempty"`
	// Skipped says the statement never ran: an error earlier in its batch made the server
	// discard it (and the client received nothing for it).
	Skipped     bool   `json:"skipped,omitempty"`
	StatementID uint64 `json:"statement_id,omitempty"` // the Statement.ID it answers, when recorded apart from it
	// Suspended says the Execute stopped at its row limit: the portal's further rows are the
	// results of later statements (Executes of the same portal).
	Suspended bool `json:"suspended,omitempty"`
	// Truncated says the record holds less than the client received: rows were dropped (the row
	// cap) or a value was cut (the value cap, see Options.MaxValueBytes).
	Truncated bool `json:"truncated,omitempty"`
}

// Notice is a NoticeResponse (or a message the proxy itself sent the client).
type Notice struct {
	Code     string `json:"code,omitempty"`
	Message  string `json:"message"`
	Severity string `json:"severity,omitempty"`
}

// Approval states.
const (
	ApprovalRequested = "requested"
	ApprovalApproved  = "approved"
	ApprovalDenied    = "denied"
	ApprovalExpired   = "expired"
	// ApprovalWithdrawn: the client gave up before a decision (it cancelled the statement or
	// request, hung up, or could not be told it waits).
	ApprovalWithdrawn = "withdrawn"
	// ApprovalFailed: the request ended without a decision that counts (the policy changed its
	// rule while it waited, or the approval store failed); Reason says which.
	ApprovalFailed = "failed"
	// ApprovalVoided follows an approval that did not let the statement run: judged again just
	// before it would have run, the policy in force no longer accepts it (Reason says why).
	ApprovalVoided = "voided"
)

// ApprovalOutcome is the state to record for an approval request that ended in state, spelt as
// the approval package spells its states: approved, denied, withdrawn and failed are kept, and
// anything else is recorded as expired.
func ApprovalOutcome(state string) string {
	switch state {
	case ApprovalApproved, ApprovalDenied, ApprovalWithdrawn, ApprovalFailed:
		return state
	}
	return ApprovalExpired
}

// Approval is a step of an approval request for a held statement.
type Approval struct {
	Approvers []string `json:"approvers,omitempty"` // who may decide (requested)
	By        string   `json:"by,omitempty"`        // who decided
	ID        string   `json:"id"`
	Reason    string   `json:"reason,omitempty"`
	State     string   `json:"state"`
}

// SessionEnd closes a session. BytesIn flowed client → server, BytesOut server → client.
type SessionEnd struct {
	BytesIn    int64  `json:"bytes_in"`
	BytesOut   int64  `json:"bytes_out"`
	DurationUS int64  `json:"duration_us"`
	Reason     string `json:"reason,omitempty"`
}

// SegmentHeader is the first record of each segment; its record's prev anchors the segment to
// the previous one.
type SegmentHeader struct {
	Format string `json:"format"`
	Key    string `json:"key"` // hex Ed25519 public key that signs this log's checkpoints
	// Log identifies this log: random, chosen when the log is created and repeated in every
	// header, so records of a host's new log (after a reinstall, say) are never taken for those
	// of its old one by a fleet sink keyed by (host, log, seq).
	Log     string `json:"log"`
	Segment uint64 `json:"segment"`
}

// CheckpointData is a signed statement of the chain head: the record with Seq has Hash.
type CheckpointData struct {
	Hash string `json:"hash"`
	Key  string `json:"key"`
	Seq  uint64 `json:"seq"`
	Sig  string `json:"sig"`
	Time string `json:"time"`
}

// RetentionData records the deletion of whole old segments. AnchorSeq/AnchorHash are the last
// record removed, which is what the first remaining record's prev must be.
type RetentionData struct {
	AnchorHash   string `json:"anchor_hash"`
	AnchorSeq    uint64 `json:"anchor_seq"`
	FirstSegment uint64 `json:"first_segment"` // first segment kept
	Reason       string `json:"reason"`
	RemovedBytes int64  `json:"removed_bytes"`
	RemovedFrom  uint64 `json:"removed_from"` // first removed segment number
	RemovedTo    uint64 `json:"removed_to"`   // last removed segment number
}

// ChainBreakData is written when the log was opened with AcceptChainBreak although the saved chain
// state did not match it: it names what the state promised and what the log held.
type ChainBreakData struct {
	FoundHash string `json:"found_hash"`
	FoundSeq  uint64 `json:"found_seq"`
	Reason    string `json:"reason"`
	StateHash string `json:"state_hash"`
	StateSeq  uint64 `json:"state_seq"`
}

// RecoveryData records bytes after the last complete line of the newest segment (a write torn by
// a crash) that were cut off at open and saved to EvidenceFile.
type RecoveryData struct {
	EvidenceFile string `json:"evidence_file"`
	Segment      uint64 `json:"segment"`
	TornBytes    int64  `json:"torn_bytes"`
	TornSHA256   string `json:"torn_sha256"`
}

// Event is one thing that happened in a session. Exactly one payload, the one matching Type, is set.
// Time is optional: the recorder stamps the append time when it is zero.
type Event struct {
	Type    Type
	Session string
	Time    time.Time

	Start     *SessionStart
	Statement *Statement
	Result    *Result
	Notice    *Notice
	Approval  *Approval
	End       *SessionEnd

	Segment    *SegmentHeader
	Checkpoint *CheckpointData
	Retention  *RetentionData
	ChainBreak *ChainBreakData
	Recovery   *RecoveryData
}

// payload returns the one payload matching ev.Type, or an error naming what is wrong.
func (ev *Event) payload() (any, error) {
	var match any
	ok := false
	switch ev.Type {
	case TypeStatement:
		match, ok = ev.Statement, ev.Statement != nil
	case TypeResult:
		match, ok = ev.Result, ev.Result != nil
	case TypeSessionStart:
		match, ok = ev.Start, ev.Start != nil
	case TypeNotice:
		match, ok = ev.Notice, ev.Notice != nil
	case TypeApproval:
		match, ok = ev.Approval, ev.Approval != nil
	case TypeSessionEnd:
		match, ok = ev.End, ev.End != nil
	case TypeSegment:
		match, ok = ev.Segment, ev.Segment != nil
	case TypeCheckpoint:
		match, ok = ev.Checkpoint, ev.Checkpoint != nil
	case TypeRetention:
		match, ok = ev.Retention, ev.Retention != nil
	case TypeChainBreak:
		match, ok = ev.ChainBreak, ev.ChainBreak != nil
	case TypeRecovery:
		match, ok = ev.Recovery, ev.Recovery != nil
	}
	flags := ev.payloadFlags()
	n := 0
	for _, f := range flags {
		if f.set {
			n++
		}
	}
	if ok && n == 1 {
		return match, nil
	}
	var set []Type
	for _, f := range flags {
		if f.set {
			set = append(set, f.t)
		}
	}
	switch {
	case len(set) == 0:
		return nil, fmt.Errorf("event %q has no payload", ev.Type)
	case len(set) > 1:
		return nil, fmt.Errorf("event %q has %d payloads %v, want one", ev.Type, len(set), set)
	}
	return nil, fmt.Errorf("event type %q does not match its payload %s", ev.Type, set[0])
}

type payloadFlag struct {
	t   Type
	set bool
}

// payloadFlags says which payloads are set (an array, so the common path does not allocate).
func (ev *Event) payloadFlags() [11]payloadFlag {
	return [...]payloadFlag{
		{TypeSessionStart, ev.Start != nil}, {TypeStatement, ev.Statement != nil}, {TypeResult, ev.Result != nil},
		{TypeNotice, ev.Notice != nil}, {TypeApproval, ev.Approval != nil}, {TypeSessionEnd, ev.End != nil},
		{TypeSegment, ev.Segment != nil}, {TypeCheckpoint, ev.Checkpoint != nil}, {TypeRetention, ev.Retention != nil},
		{TypeChainBreak, ev.ChainBreak != nil}, {TypeRecovery, ev.Recovery != nil},
	}
}

// decodePayload fills the payload of ev.Type from data.
func (ev *Event) decodePayload(data []byte) error {
	var dst any
	switch ev.Type {
	case TypeSessionStart:
		ev.Start = new(SessionStart)
		dst = ev.Start
	case TypeStatement:
		ev.Statement = new(Statement)
		dst = ev.Statement
	case TypeResult:
		ev.Result = new(Result)
		dst = ev.Result
	case TypeNotice:
		ev.Notice = new(Notice)
		dst = ev.Notice
	case TypeApproval:
		ev.Approval = new(Approval)
		dst = ev.Approval
	case TypeSessionEnd:
		ev.End = new(SessionEnd)
		dst = ev.End
	case TypeSegment:
		ev.Segment = new(SegmentHeader)
		dst = ev.Segment
	case TypeCheckpoint:
		ev.Checkpoint = new(CheckpointData)
		dst = ev.Checkpoint
	case TypeRetention:
		ev.Retention = new(RetentionData)
		dst = ev.Retention
	case TypeChainBreak:
		ev.ChainBreak = new(ChainBreakData)
		dst = ev.ChainBreak
	case TypeRecovery:
		ev.Recovery = new(RecoveryData)
		dst = ev.Recovery
	default:
		return fmt.Errorf("unknown record type %q", ev.Type)
	}
	if err := json.Unmarshal(data, dst); err != nil {
		return fmt.Errorf("decode %s payload: %w", ev.Type, err)
	}
	return nil
}

// isSessionType reports whether t is written by callers (as opposed to the log's own maintenance).
func isSessionType(t Type) bool {
	switch t {
	case TypeSessionStart, TypeStatement, TypeResult, TypeNotice, TypeApproval, TypeSessionEnd:
		return true
	}
	return false
}

// CapRows returns rows limited to max (max <= 0 means no rows kept) and whether any were dropped.
// Callers building a Result use it with the configured row cap and set RowCount to len(rows).
func CapRows(rows [][]*string, max int) ([][]*string, bool) {
	if max < 0 {
		max = 0
	}
	if len(rows) <= max {
		return rows, false
	}
	return rows[:max], true
}

// NewSessionID returns a new session id: the UTC start time (so ids sort by start) and 64 random
// bits, e.g. "20261127T143218-9f86d081884c7d65".
func NewSessionID(now time.Time) string {
	var b [8]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}
