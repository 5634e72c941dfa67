package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Hook is the one interface on the data path. The proxy calls Statement before a statement reaches the
// server and Result for what comes back. Both run on the proxy's relay goroutines: a slow hook delays
// only its own connection, and Statement may block on purpose (hold) until a decision is made.
type Hook interface {
	// Statement judges one statement. ctx is cancelled when the client sends a CancelRequest for this
	// connection or disconnects, so a held statement can give up. While holding, the hook may call
	// s.Notice to tell the client at once why it waits.
	Statement(ctx context.Context, s *Statement) Verdict
	// Result sees one result message, or a statement the server skipped (ResultSkipped, which
	// carries no message). Rows (RowDescription, DataRow) and COPY data reach it only for
	// statements whose Verdict set Observe; command completions, suspended portals, errors, skips,
	// notices, notifications and parameter changes always do, because masking must see every
	// text the server sends and a record every statement's end. The hook may rewrite the message
	// through r's setters. A non-nil error ends the session: the client gets an ErrorResponse
	// and the data does not pass (fail closed).
	Result(ctx context.Context, r *Result) error
}

// Deliverer is implemented by hooks with work that can wait until the client has what it asked for.
// The proxy calls Delivered on the server-side goroutine each time it has written everything the
// server sent so far to the client and is about to wait for more, so work done there (writing the
// session log, say) is off the client's round trip.
type Deliverer interface {
	Delivered()
}

// Forwarder is implemented by hooks with work that can wait until the server has the client's
// next statement. The proxy calls Forwarded on the client-side goroutine each time it has written
// to the server what the client sent (before it waits for more, and when a long message fills its
// buffer), so work done there overlaps the server's rather than the client's turn.
type Forwarder interface {
	Forwarded()
}

// Starter is implemented by hooks that want the client's startup parameters (user, database,
// application_name, options…) and the database the proxy logs in to upstream (the target's, else
// the one the client asked for). The proxy calls ClientStarted once, after it accepted the
// startup message and before it connects upstream.
type Starter interface {
	ClientStarted(database string, params map[string]string)
}

// Kind says which protocol message carries a statement.
type Kind uint8

// Statement kinds.
const (
	// KindQuery is a simple-protocol Query message; SQL may hold several statements separated by
	// semicolons, judged as one.
	KindQuery Kind = iota + 1
	// KindParse is an extended-protocol Parse: SQL and parameter types are known, values are not.
	KindParse
	// KindExecute is an extended-protocol Execute of a portal, with the SQL of the statement the
	// portal was bound from and the parameter values of that Bind.
	KindExecute
	// KindFunctionCall is a FunctionCall message (fast-path function call by OID).
	KindFunctionCall
)

func (k Kind) String() string {
	switch k {
	case KindQuery:
		return "query"
	case KindParse:
		return "parse"
	case KindExecute:
		return "execute"
	case KindFunctionCall:
		return "function-call"
	}
	return "unknown"
}

// Protocol returns "simple", "extended" or "function-call".
func (k Kind) Protocol() string {
	switch k {
	case KindQuery:
		return "simple"
	case KindParse, KindExecute:
		return "extended"
	case KindFunctionCall:
		return "function-call"
	}
	return "unknown"
}

// Statement is what a hook judges. Its slices alias the proxy's buffers and are valid only during the
// Statement call; copy what you keep.
type Statement struct {
	// ID numbers the connection's statements from 1. The proxy reuses a Statement's memory once
	// its results have passed, so a hook that remembers a statement between calls keeps its ID,
	// never the pointer.
	ID   uint64
	Kind Kind
	// ConnID is the Session's ID; Database the upstream database the session uses and ClientUser
	// the user name the client gave (ignored for authentication; the identity is the daemon's).
	ConnID     string
	Database   string
	ClientUser string
	// SQL is the statement text (empty for a function call, and for an Execute of a statement the
	// proxy never saw parsed, see Known).
	SQL string
	// StatementName and PortalName are the extended-protocol names ("" is the unnamed one).
	StatementName string
	PortalName    string
	// Known is false for an Execute whose statement was not created by a Parse the proxy allowed on
	// this connection (for example one made with SQL PREPARE); a policy can refuse it.
	Known bool
	// ParamOIDs are the parameter types given in Parse.
	ParamOIDs []uint32
	// ParamFormats, Params and ResultFormats come from the Bind of an Execute or from a FunctionCall;
	// a nil parameter is NULL.
	ParamFormats  []int16
	Params        [][]byte
	ResultFormats []int16
	// FunctionOID is the function of a FunctionCall.
	FunctionOID uint32
	// MaxRows is the row limit of an Execute (0 = all).
	MaxRows uint32
	// TxStatus is the transaction status of the last ReadyForQuery ('I', 'T' or 'E').
	TxStatus byte

	c *conn
}

// Settled reports whether the client synced everything it sent before this statement, the
// server answered it all and was then outside a transaction block: what earlier statements did
// is committed (or undone). Client side only (the hook's Statement call).
func (s *Statement) Settled() bool {
	if s.c == nil {
		return s.TxStatus == 'I'
	}
	return !s.c.unsynced && s.c.ops.front() == nil && s.c.txStatus.Load() == 'I'
}

// Notice sends a NoticeResponse to the client now, ahead of any result, and pushes to the server what
// the client sent before this statement, so a held statement does not delay earlier ones. It may be
// called from any goroutine while Statement runs.
func (s *Statement) Notice(n *pgproto3.NoticeResponse) error {
	if s.c == nil {
		return nil
	}
	if err := s.c.flushUpstream(); err != nil {
		return err
	}
	return s.c.sendClient(n)
}

// Action is what to do with a statement.
type Action uint8

// Actions.
const (
	// Allow forwards the statement unchanged.
	Allow Action = iota
	// Refuse answers the client with Verdict.Error; the server is put in the same transaction state
	// as if the statement had failed there (see the package documentation).
	Refuse
	// Rewrite forwards Verdict.SQL instead of the client's text (Query and Parse only; for other
	// kinds it is refused as a misuse).
	Rewrite
)

// Verdict is a hook's decision on a statement.
type Verdict struct {
	Action Action
	// Error is sent to the client on Refuse. Severity defaults to ERROR and Code to 42501
	// (insufficient_privilege).
	Error *pgproto3.ErrorResponse
	// SQL replaces the statement text on Rewrite.
	SQL string
	// Observe asks for Result calls on the rows and COPY data this statement produces. It counts for
	// KindQuery, KindExecute and KindFunctionCall, which run something; a Parse runs nothing.
	Observe bool
}

// ResultKind names a result message.
type ResultKind uint8

// Result kinds.
const (
	ResultRowDescription ResultKind = iota + 1
	ResultRow
	ResultCommandComplete
	ResultError
	ResultNotice
	ResultNotification
	ResultCopyData
	// ResultPortalSuspended ends an Execute that reached its row limit: the portal has more rows,
	// for a later Execute (a Statement of its own).
	ResultPortalSuspended
	// ResultSkipped says the server never ran the statement: an error earlier in the same
	// extended-protocol batch made it discard every message up to the client's Sync. It is the
	// statement's only result, and the client received nothing for it.
	ResultSkipped
	// ResultParameterStatus reports a setting the session changed (Parameter): SET, or
	// set_config in any statement, of one the server reports, such as application_name.
	ResultParameterStatus
)

// Result is one message from the server, shown to the hook. Slices alias the proxy's read buffer and
// are valid only during the call. To change the message use the setters; untouched messages are
// forwarded as the server sent them, byte for byte.
type Result struct {
	Kind ResultKind
	// Statement is the statement the result belongs to (nil for messages outside any, such as a
	// notification between queries). Like the rest, it is valid only during the call.
	Statement *Statement
	// Columns describes the row (ResultRowDescription, ResultRow); nil when the proxy saw no
	// description for a row (an Execute of a portal never described, and not observed at Parse).
	Columns *pgproto3.RowDescription
	// Formats are the column formats of a row (0 text, 1 binary), from the row description or Bind.
	Formats []int16
	// Values are the cells of a DataRow (nil = NULL).
	Values [][]byte
	// Data is the payload of a CopyData.
	Data []byte
	// Tag is a CommandComplete tag, such as "SELECT 1".
	Tag []byte
	// Error is the ErrorResponse or NoticeResponse (as an ErrorResponse; the fields are the same);
	// Notification a NOTIFY; Parameter a ParameterStatus. Change their fields and call
	// MarkChanged.
	Error        *pgproto3.ErrorResponse
	Notification *pgproto3.NotificationResponse
	Parameter    *pgproto3.ParameterStatus

	changed bool
}

// SetValue replaces cell i of a DataRow (nil = NULL).
func (r *Result) SetValue(i int, v []byte) {
	r.Values[i] = v
	r.changed = true
}

// SetData replaces the payload of a CopyData.
func (r *Result) SetData(b []byte) {
	r.Data = b
	r.changed = true
}

// MarkChanged tells the proxy the hook edited Error, Notification, Parameter or Values in place.
func (r *Result) MarkChanged() { r.changed = true }

// PassThrough is the hook that allows everything and observes nothing.
type PassThrough struct{}

// Statement allows every statement.
func (PassThrough) Statement(context.Context, *Statement) Verdict { return Verdict{} }

// Result changes nothing.
func (PassThrough) Result(context.Context, *Result) error { return nil }
