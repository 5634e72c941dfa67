package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup parameters the proxy does not pass on: it sets user and database itself, a replication
// connection is refused, and options (which could set any server setting) is dropped, as it
// always was, since libpq sends PGOPTIONS there unasked.
var droppedParams = map[string]bool{"user": true, "database": true, "replication": true, "options": true}

// passedParams are the startup parameters the server gets: how values are shown to the client.
// Any other is a server setting no statement shows the policy (role=, search_path=,
// session_preload_libraries=), so a startup naming one is refused. Names are case-insensitive,
// as the server's are. A protocol extension's _pq_.* is not a setting: the session speaks
// protocol 3.0 without extensions, and says so (see negotiation).
var passedParams = map[string]bool{
	"application_name": true, "client_encoding": true, "datestyle": true, "timezone": true,
	"intervalstyle": true, "extra_float_digits": true, "bytea_output": true,
	"standard_conforming_strings": true, // on only: see lexicalProblem
}

// negotiation is the NegotiateProtocolVersion a startup needs, or nil: a client that asked for
// a newer minor version than 3.0 (3.2 brings longer cancel keys) or for protocol extensions
// (_pq_.*) learns that the session speaks 3.0 without them, as PostgreSQL tells it, and
// continues or disconnects as its settings say (libpq's min_protocol_version).
func negotiation(sm *pgproto3.StartupMessage) []byte {
	var unrecognized []string
	for k := range sm.Parameters {
		if strings.HasPrefix(k, "_pq_.") {
			unrecognized = append(unrecognized, k)
		}
	}
	if sm.ProtocolVersion == pgproto3.ProtocolVersion30 && len(unrecognized) == 0 {
		return nil
	}
	slices.Sort(unrecognized)
	b, _ := (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unrecognized}).Encode(nil)
	return b
}

func (s *Server) serveSession(ctx context.Context, client net.Conn, sm *pgproto3.StartupMessage, sess Session) error {
	if r := sm.Parameters["replication"]; r != "" && r != "false" && r != "off" && r != "0" && r != "no" {
		writeFatal(client, "42501", "replication connections are not allowed through the enforcer", "")
		return errors.New("client asked for a replication connection")
	}
	db := sess.Database
	if db == "" {
		db = sm.Parameters["database"]
	}
	if db == "" {
		db = sm.Parameters["user"]
	}
	params := map[string]string{}
	for k, v := range sm.Parameters {
		if droppedParams[k] || strings.HasPrefix(k, "_pq_.") {
			continue
		}
		if !passedParams[strings.ToLower(k)] {
			writeFatal(client, "42501", fmt.Sprintf("enforcer: the startup parameter %q is not passed to the server", k),
				"remove it from the connection settings; set what the policy allows with SET after connecting, where the enforcer judges it")
			return fmt.Errorf("client startup: parameter %q refused", k)
		}
		if p := lexicalProblem(k, v); p != "" {
			writeFatal(client, "0A000", "enforcer: "+p, "connect with the default setting")
			return fmt.Errorf("client startup: %s", p)
		}
		params[k] = v
	}
	if b := negotiation(sm); b != nil {
		if _, err := client.Write(b); err != nil {
			return fmt.Errorf("write NegotiateProtocolVersion: %w", err)
		}
	}
	if st, ok := sess.Hook.(Starter); ok {
		st.ClientStarted(db, maps.Clone(sm.Parameters))
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	hc, err := connectUpstream(cctx, sess, db, params)
	cancel()
	if err != nil {
		code, msg := "08006", fmt.Sprintf("enforcer: cannot connect to the upstream server %s: %v", sess.Upstream, err)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			code, msg = pgErr.Code, fmt.Sprintf("enforcer: upstream server %s refused the connection: %s", sess.Upstream, pgErr.Message)
		}
		writeFatal(client, code, msg, "the enforcer authenticates to the database with the target's own credentials; check the target's user, password and database in the policy")
		return fmt.Errorf("connect upstream %s: %w", sess.Upstream, err)
	}
	up := hc.Conn
	up.SetDeadline(time.Time{})
	for k, v := range hc.ParameterStatuses {
		if p := lexicalProblem(k, v); p != "" {
			up.Close()
			writeFatal(client, "0A000", "enforcer: the server runs with "+p, "the database administrator must change the server's setting")
			return fmt.Errorf("upstream %s: %s", sess.Upstream, p)
		}
	}

	// Every close goes through the relay's connections (rawConn stops its resident reader first).
	client = newRawConn(client)
	c := &conn{
		srv:        s,
		sess:       sess,
		hook:       sess.Hook,
		client:     client,
		upstream:   up,
		upPID:      hc.PID,
		upKey:      hc.SecretKey,
		upAddr:     up.RemoteAddr().String(),
		database:   db,
		clientUser: sm.Parameters["user"],
	}
	if c.hook == nil {
		c.hook = PassThrough{}
	}
	c.txStatus.Store(uint32(hc.TxStatus))
	c.ctx, c.stop = context.WithCancel(ctx)
	c.stmtCtx, c.stmtCancel = context.WithCancel(c.ctx)
	defer c.stop()
	// The caller's context ends the session too (daemon shutdown, the connection closed): closing
	// both sockets unblocks both relay goroutines. Deadlines first: they wake whatever either
	// goroutine waits for on either socket, so neither close waits on a goroutine that only the
	// other close would wake.
	context.AfterFunc(c.ctx, func() {
		client.SetDeadline(longAgo)
		up.SetDeadline(longAgo)
		client.Close()
		up.Close()
	})
	s.register(c)
	defer s.unregister(c)

	// Replay what the upstream told pgconn during its startup, with the proxy's own cancel key.
	var b []byte
	b, _ = (&pgproto3.AuthenticationOk{}).Encode(b)
	for k, v := range hc.ParameterStatuses {
		b, _ = (&pgproto3.ParameterStatus{Name: k, Value: v}).Encode(b)
	}
	b, _ = (&pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.secret[:]}).Encode(b)
	b, _ = (&pgproto3.ReadyForQuery{TxStatus: hc.TxStatus}).Encode(b)
	if _, err := client.Write(b); err != nil {
		up.Close()
		return fmt.Errorf("write startup response: %w", err)
	}
	return c.relay()
}

// connectUpstream authenticates to the upstream with pgconn and takes over its connection.
func connectUpstream(ctx context.Context, sess Session, db string, params map[string]string) (*pgconn.HijackedConn, error) {
	host, portStr, err := net.SplitHostPort(sess.Upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", sess.Upstream, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("upstream port %q: %w", portStr, err)
	}
	// ParseConfig is the only way to get a Config pgconn accepts; every field that the environment
	// (PG* variables, ~/.pgpass, service files) could have filled is set explicitly below.
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host = host
	cfg.Port = uint16(port)
	cfg.Database = db
	cfg.User = sess.User
	cfg.Password = sess.Password
	cfg.Fallbacks = nil
	cfg.ValidateConnect = nil
	cfg.AfterConnect = nil
	cfg.OnNotice = nil
	cfg.OnNotification = nil
	cfg.KerberosSrvName = ""
	cfg.KerberosSpn = ""
	cfg.RuntimeParams = params
	cfg.RequireAuth, cfg.ChannelBinding = UpstreamAuth(sess.TLS, sess.Auth)
	cfg.ConnectTimeout = 0
	cfg.TLSConfig, err = upstreamTLS(sess, host)
	if err != nil {
		return nil, err
	}
	// TLS to the server wraps the socket pgconn dials; giving it a raw-syscall socket keeps TLS
	// records off the scheduler's syscall path too (as rawIO does for plain sockets).
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return newRawConn(c), nil
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(context.Background())
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(context.Background())
		return nil, err
	}
	return hc, nil
}

// UpstreamAuth is what pgconn may answer of an upstream's authentication requests, as its
// RequireAuth and ChannelBinding: SCRAM only unless the target allows more methods, so that a
// server at the upstream's address cannot ask for the password in clear or an MD5 hash to
// relay; and under TLS without a certificate check (require), SCRAM with channel binding only,
// so that no one between can relay the exchange to the real server. A server that asks for
// nothing (trust) is answered: it learns nothing.
func UpstreamAuth(mode TLSMode, methods []string) (requireAuth, channelBinding string) {
	if len(methods) == 0 {
		methods = []string{AuthSCRAM}
	}
	channelBinding = "prefer"
	if mode == TLSRequire && len(methods) == 1 && methods[0] == AuthSCRAM {
		channelBinding = "require"
	}
	return strings.Join(methods, ",") + ",none", channelBinding
}

func upstreamTLS(sess Session, host string) (*tls.Config, error) {
	mode := sess.TLS
	if mode == "" {
		mode = TLSDisable
	}
	if mode == TLSDisable {
		return nil, nil
	}
	serverName := sess.ServerName
	if serverName == "" {
		serverName = host
	}
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	if mode == TLSRequire {
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	if sess.CAFile == "" {
		if mode == TLSVerifyFull {
			return cfg, nil // the system's roots, as libpq's sslrootcert=system and http targets
		}
		return nil, fmt.Errorf("TLS mode %s needs a CA file", mode)
	}
	pem, err := os.ReadFile(sess.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", sess.CAFile)
	}
	switch mode {
	case TLSVerifyFull:
		cfg.RootCAs = pool
	case TLSVerifyCA:
		// Chain to the CA, any name (libpq's verify-ca).
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server sent no certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = c
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		}
	default:
		return nil, fmt.Errorf("unknown TLS mode %q", mode)
	}
	return cfg, nil
}

// table holds a connection's prepared statements or portals by name. The unnamed one, which is
// all most drivers use (a new one each transaction), lives outside the map. The zero table is empty.
type table[T any] struct {
	unnamed *T
	named   map[string]*T
}

// get returns the entry called name, or nil.
func (t *table[T]) get(name string) *T {
	if name == "" {
		return t.unnamed
	}
	return t.named[name]
}

// put makes v the entry called name (nil removes it) and returns the entry it replaced.
func (t *table[T]) put(name string, v *T) (old *T) {
	if name == "" {
		old, t.unnamed = t.unnamed, v
		return old
	}
	old = t.named[name]
	switch {
	case v == nil:
		delete(t.named, name)
	case t.named == nil:
		t.named = map[string]*T{name: v}
	default:
		t.named[name] = v
	}
	return old
}

// all yields every entry with its name, the unnamed one first.
func (t *table[T]) all() iter.Seq2[string, *T] {
	return func(yield func(string, *T) bool) {
		if t.unnamed != nil && !yield("", t.unnamed) {
			return
		}
		for name, v := range t.named {
			if !yield(name, v) {
				return
			}
		}
	}
}

// stmtInfo is a prepared statement the proxy saw created. Its memory is reused (see
// conn.dropStmt) once nothing refers to it: not the statement table, a portal or a queued op.
type stmtInfo struct {
	refs    atomic.Int32
	sql     string
	mayCopy bool   // sql could start a COPY FROM STDIN (see mayCopyIn)
	rowDesc []byte // raw RowDescription from a Describe of the statement (relay side only)
	// describeBatch is conn.syncs+1 when the client last sent a Describe of it (client side);
	// described is set once a Describe of it was answered (server side).
	describeBatch uint64
	described     atomic.Bool

	// What the Parse that made it needs, carried in the same allocation: its Statement (each
	// Parse makes a new stmtInfo, so the hook still sees a distinct Statement per Parse) and room
	// for a few parameter types.
	parse  Statement
	oidBuf [4]uint32
}

// portalInfo is a portal the proxy saw bound. Like a stmtInfo, its memory is reused once
// neither the portal table nor a queued op refers to it (see conn.dropPortal).
type portalInfo struct {
	refs          atomic.Int32
	stmtName      string
	stmt          *stmtInfo
	paramFormats  []int16
	params        [][]byte
	resultFormats []int16
	rowDesc       []byte // raw RowDescription from a Describe of the portal (relay side only)
	// describeBatch and described: as stmtInfo's, for Describes of the portal, the client's
	// or the proxy's.
	describeBatch uint64
	described     atomic.Bool

	// A Bind of a few short parameters, the portal's first Execute and its description fit in
	// the portal's own allocation: one per transaction of a driver that binds the unnamed
	// portal each time, instead of one per slice. execUsed is set once exec went to the hook; a
	// later Execute of the same portal (after PortalSuspended) gets a Statement of its own.
	exec     Statement
	execUsed bool
	// What the proxy knows of the portal at the server (see conn.portalUncertain): its Bind
	// failed or was skipped (failed), completed (bound) while idleEnds was boundEnds;
	// bindSyncs and bindStatements are conn.syncs and conn.statements when the Bind was sent.
	failed, bound             atomic.Bool
	boundEnds                 atomic.Uint64
	bindSyncs, bindStatements uint64
	paramBuf                  [4][]byte
	fmtBuf                    [4]int16
	resFmtBuf                 [4]int16
	arena                     [64]byte
	rowDescBuf                [96]byte
}

type opKind uint8

const (
	opParse opKind = iota + 1
	opBind
	opDescribe
	opExecute
	opClose
	opSync
	opQuery
	opFunction
	opProbe
	// opCopyEnd is a CopyDone or CopyFail the client sent while a statement that may start a
	// COPY FROM STDIN was queued, before the server had started it: it ends that COPY's data
	// once it starts (see opQueue.startCopyIn). The server answers the message itself with
	// nothing: one that no COPY took is dropped as it reaches the front (pop).
	opCopyEnd
)

// op is one client message whose response the server-side reader must recognise.
type op struct {
	kind    opKind
	swallow bool // response not shown to the client (proxy-generated message)
	// replaces: a Parse of a name the proxy holds a statement for, which takes its place only
	// if the server completes it.
	replaces bool
	name     string
	stmt     *stmtInfo
	portal   *portalInfo
	st       *Statement
	ownSt    bool // st came from newStatement and is reused once the op is done
	observe  bool
	mayCopy  bool // a Query or Execute whose text could start a COPY FROM STDIN (see mayCopyIn)
	refusal  *pgproto3.ErrorResponse
	columns  *pgproto3.RowDescription // decoded lazily for observed rows
	formats  []int16
	rowDesc  []byte // a Query's current RowDescription
}

// opQueue is a FIFO between the two relay goroutines. It holds pointers: the server side
// writes to the op at the front while the client side pushes, and a slice of ops would move it
// when it grows. Popped ops are reused.
type opQueue struct {
	mu   sync.Mutex
	ops  []*op
	head int
	free []*op
	// done keeps what popped ops referred to until the server side is through with the message
	// that popped them (see conn.releaseDone). Server side only.
	done []opRefs
	// discarding says the server discards everything up to the next Sync: an error ended its
	// batch when no Sync was queued. Set by frontOrDiscarding, cleared by endDiscarding at the
	// ReadyForQuery that Sync brings (both on the server side, under mu; atomic so that the
	// server side's check at every ReadyForQuery takes no lock); syncQueued says a Sync was
	// queued since.
	discarding atomic.Bool
	syncQueued bool
	// COPY FROM STDIN, during which the server reads the client's messages as the COPY's data:
	// it ignores Sync and Flush then, and ends the COPY with an error at any other message (see
	// conn.duringCopy). mayCopy counts the queued ops that may start one (op.mayCopy); copyIn
	// says the server started one (its CopyInResponse) whose data the client has not ended yet
	// (CopyDone, CopyFail), nor the server with an error. Both change under mu; they are
	// atomic so that the client side's check at every message and the server side's at every
	// error take no lock. copyWake, when set, is closed at the next change of either, for the
	// client side waiting to know how the server will read its next message, and when
	// discarding is set.
	mayCopy  atomic.Int32
	copyIn   atomic.Bool
	copyWake chan struct{}
	copyEnds int // queued opCopyEnd ops
}

// opRefs is what an op holds a reference to.
type opRefs struct {
	stmt   *stmtInfo
	portal *portalInfo
	st     *Statement // only a Statement the op owned (op.ownSt)
}

// push queues o, which then holds a reference to its prepared statement and portal.
func (q *opQueue) push(o op) { q.pushUnlessDiscarding(o, false) }

// pushProbe queues the op of a refusal's stand-in, unless the server is discarding messages up
// to the client's next Sync: it would discard the stand-in too and answer nothing, while the op
// waits for an error. It reports whether it queued the op.
func (q *opQueue) pushProbe(o op) bool { return q.pushUnlessDiscarding(o, true) }

func (q *opQueue) pushUnlessDiscarding(o op, probe bool) bool {
	q.mu.Lock()
	if probe && q.discarding.Load() && !q.syncQueued {
		q.mu.Unlock()
		return false
	}
	if o.kind == opSync {
		q.syncQueued = true
	}
	if o.mayCopy {
		q.mayCopy.Add(1)
	}
	if o.stmt != nil {
		o.stmt.refs.Add(1)
	}
	if o.portal != nil {
		o.portal.refs.Add(1)
	}
	if q.head > 0 && (q.head == len(q.ops) || q.head >= 64 && 2*q.head >= len(q.ops)) {
		// Empty, or half of it popped (a client that always has an op in flight): move the
		// rest down, so the queue does not grow without end.
		n := copy(q.ops, q.ops[q.head:])
		clear(q.ops[n:])
		q.ops = q.ops[:n]
		q.head = 0
	}
	var p *op
	if n := len(q.free); n > 0 {
		p, q.free = q.free[n-1], q.free[:n-1]
	} else {
		p = new(op)
	}
	*p = o
	q.ops = append(q.ops, p)
	q.mu.Unlock()
	return true
}

// pushCopyEnd takes the client's CopyDone or CopyFail. During a COPY FROM STDIN the server reads
// it as the end of the COPY's data; before a COPY a queued statement may start, the COPY will
// (an opCopyEnd is queued for it); with no such statement queued, the server ignores it.
func (q *opQueue) pushCopyEnd() {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.copyIn.Load():
		q.copyIn.Store(false)
		q.wakeLocked()
	case q.mayCopy.Load() != 0:
		// At most one a COPY: not worth push's reuse of ops.
		q.copyEnds++
		q.ops = append(q.ops, &op{kind: opCopyEnd})
	}
}

// front returns the oldest op, or nil. Only the server-side reader calls front and pop, so the
// op is its own until it pops it.
func (q *opQueue) front() *op {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.ops) {
		return nil
	}
	return q.ops[q.head]
}

// frontOrDiscarding is front for skipping an error's batch: with no op left, the server now
// discards everything up to the client's next Sync (see pushProbe). Marked under the queue's
// lock, so a stand-in is either queued before (and skipped here) or not at all.
func (q *opQueue) frontOrDiscarding() *op {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.ops) {
		q.discarding.Store(true)
		q.syncQueued = false
		q.wakeLocked()
		return nil
	}
	return q.ops[q.head]
}

// endDiscarding reports whether the server was discarding up to a Sync (see frontOrDiscarding),
// and clears it: the ReadyForQuery the server side has just read is that Sync's.
func (q *opQueue) endDiscarding() bool {
	if !q.discarding.Load() {
		return false // only the server side sets it, and it is the caller
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.discarding.Store(false)
	q.syncQueued = false
	return true
}

func (q *opQueue) pop() {
	q.mu.Lock()
	if q.head < len(q.ops) {
		o := q.ops[q.head]
		if o.stmt != nil || o.portal != nil || o.ownSt {
			r := opRefs{stmt: o.stmt, portal: o.portal}
			if o.ownSt {
				r.st = o.st
			}
			q.done = append(q.done, r)
		}
		if o.mayCopy {
			q.mayCopy.Add(-1)
			q.wakeLocked()
		}
		*o = op{}
		q.ops[q.head] = nil
		q.head++
		q.free = append(q.free, o)
		for q.copyEnds != 0 && q.head < len(q.ops) && q.ops[q.head].kind == opCopyEnd {
			// The statement it was sent after is answered, and started no COPY that took it:
			// the server ignored it, and answers nothing.
			q.copyEnds--
			e := q.ops[q.head]
			*e = op{}
			q.ops[q.head] = nil
			q.head++
			q.free = append(q.free, e)
		}
	}
	q.mu.Unlock()
}

// startCopyIn takes the server's CopyInResponse (or CopyBothResponse) for the front op. The
// client side holds back every message but COPY data while such an op is queued (duringCopy),
// so only the CopyDone or CopyFail it sent ahead can follow the op: the server reads that one
// as the end of this COPY's data. It reports false when the front op cannot have started a
// COPY, or one is running already: the proxy is then out of step with the server.
func (q *opQueue) startCopyIn() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.ops) || !q.ops[q.head].mayCopy || q.copyIn.Load() {
		return false
	}
	switch rest := q.ops[q.head+1:]; {
	case len(rest) == 0:
		q.copyIn.Store(true)
	case rest[0].kind == opCopyEnd:
		q.copyEnds--
		end := rest[0]
		copy(rest, rest[1:])
		q.ops[len(q.ops)-1] = nil
		q.ops = q.ops[:len(q.ops)-1]
		*end = op{}
		q.free = append(q.free, end)
	default:
		return false
	}
	q.wakeLocked()
	return true
}

// endCopyIn records that the server ended a COPY FROM STDIN with an error: it reads the client's
// messages as it would outside a COPY again.
func (q *opQueue) endCopyIn() {
	if !q.copyIn.Load() {
		return // only the server side sets it, and it is the caller
	}
	q.mu.Lock()
	q.copyIn.Store(false)
	q.wakeLocked()
	q.mu.Unlock()
}

// wakeLocked wakes the client side if it waits in duringCopy.
func (q *opQueue) wakeLocked() {
	if q.copyWake != nil {
		close(q.copyWake)
		q.copyWake = nil
	}
}

// conn is one proxied session.
type conn struct {
	srv      *Server
	sess     Session
	hook     Hook
	client   net.Conn
	upstream net.Conn
	pid      uint32
	secret   [4]byte
	upPID    uint32
	upKey    []byte
	upAddr   string

	database   string
	clientUser string

	ctx        context.Context
	stop       context.CancelFunc
	ctxMu      sync.Mutex
	stmtCtx    context.Context
	stmtCancel context.CancelFunc

	txStatus atomic.Uint32
	// idleEnds counts ReadyForQuery messages that found no transaction open (server goroutine):
	// every portal bound before one is gone at the server. syncs and statements count the Sync,
	// and the Query, Parse and FunctionCall messages the client sent (client goroutine).
	idleEnds          atomic.Uint64
	syncs, statements uint64
	// judging is the number of the running hook call (judgeSeq, client goroutine only), 0 when
	// none runs: the server has not seen that statement. watchSeen is the watchdog's.
	judging   atomic.Uint64
	judgeSeq  uint64
	watchSeen uint64
	watched   atomic.Bool // a watch runs (see startWatch)
	watchMu   sync.Mutex
	watchFile *os.File // the running watch's descriptor, nil when none runs
	watchDone chan struct{}

	// client → server side
	clientRaw *rawIO // nil unless the client is plain TCP
	lastSQL   string // client goroutine only: see sqlString
	lastCopy  bool   // mayCopyIn(lastSQL)
	cr        *msgReader
	upMu      sync.Mutex
	uw        msgWriter
	skipping  bool
	unsynced  bool       // an extended-protocol message was sent since the last Sync
	stmtMu    sync.Mutex // stmts is also touched by the server side when a Parse fails
	stmts     table[stmtInfo]
	portals   table[portalInfo]
	stmtSeq   uint64 // the last Statement.ID given
	scratch   [][]byte

	// serverTurn, when set, replaces the client side's wait for the server side in duringCopy:
	// the replay tests, which run both sides on one goroutine, let the server side go on there.
	serverTurn func(wake <-chan struct{}) error

	// server → client side
	sr       *msgReader
	clientMu sync.Mutex
	cw       msgWriter
	ops      opQueue
	res      Result
	cells    [][]byte
	// queryDesc holds the RowDescription of the Query or FunctionCall whose rows flow.
	queryDesc []byte
	// The last description columnsOf decoded, reused while the next is the same: most result
	// sets repeat the one before. descRaw is a private copy the decoded names point into; a
	// different description gets a new one, never overwritten while a hook may hold the old.
	descRaw     []byte
	descFormats []int16 // the Bind's result formats applied to it, or nil if none were
	descApplied bool
	descColumns *pgproto3.RowDescription
	descOut     []int16

	// One retired prepared statement, portal and Statement each, for the client side to reuse
	// (see dropStmt): enough for a client that parses and binds the unnamed ones in every
	// transaction, which then allocates nothing for them.
	spareStmt      atomic.Pointer[stmtInfo]
	sparePortal    atomic.Pointer[portalInfo]
	spareStatement atomic.Pointer[Statement]
}

var errTerminate = errors.New("client terminated")

// relay runs both directions until one ends, then closes both connections.
func (c *conn) relay() error {
	if rc, ok := c.client.(*rawConn); ok {
		c.clientRaw = rc.raw
	}
	flushUpstream := c.flushUpstream
	if f, ok := c.hook.(Forwarder); ok {
		flushUpstream = func() error {
			sent, err := c.flushUpstreamSent()
			if sent && err == nil {
				f.Forwarded()
			}
			return err
		}
	}
	c.cr = newMsgReader(c.client, c.srv.cfg.MaxMessageSize, flushUpstream)
	c.cr.known = frontendTypes
	c.cr.budget, c.cr.limit, c.cr.owner = &c.srv.messages, c.srv.cfg.MaxBufferedMessages, c.sess.Owner
	c.uw.w = c.upstream
	flushClient := c.flushClientLocked
	if d, ok := c.hook.(Deliverer); ok {
		flushClient = func() error {
			if err := c.flushClientLocked(); err != nil {
				return err
			}
			d.Delivered()
			return nil
		}
	}
	c.sr = newMsgReader(c.upstream, maxServerMessage, flushClient)
	c.sr.budget, c.sr.limit, c.sr.owner = &c.srv.messages, c.srv.cfg.MaxBufferedMessages, c.sess.Owner
	c.cw.w = c.client

	errc := make(chan error, 1)
	go func() {
		err := c.clientLoop()
		if errors.Is(err, errTerminate) {
			err = nil
		} else {
			// Tell the server we are gone so it ends the backend cleanly.
			c.upMu.Lock()
			c.uw.flush()
			c.upstream.Write([]byte{'X', 0, 0, 0, 4})
			c.upMu.Unlock()
		}
		c.stop()
		c.upstream.Close()
		errc <- err
	}()
	serr := c.serverLoop()
	c.stop()
	c.client.Close()
	c.upstream.Close()
	cerr := <-errc
	c.cr.release()
	c.sr.release()
	if cerr != nil {
		return cerr
	}
	if !errors.Is(serr, net.ErrClosed) && !errors.Is(serr, io.EOF) {
		return serr
	}
	return nil
}

func (c *conn) flushUpstream() error {
	c.upMu.Lock()
	defer c.upMu.Unlock()
	return c.uw.flush()
}

// flushUpstreamSent is flushUpstream that also says whether anything was waiting to be sent.
func (c *conn) flushUpstreamSent() (bool, error) {
	c.upMu.Lock()
	defer c.upMu.Unlock()
	sent := c.uw.pending()
	return sent, c.uw.flush()
}

func (c *conn) flushClientLocked() error {
	if !c.cw.pending() {
		return nil
	}
	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	return c.cw.flush()
}

// sendClient writes a proxy-made message to the client now, between whole messages of the relay.
func (c *conn) sendClient(m pgproto3.BackendMessage) error {
	b, err := m.Encode(nil)
	if err != nil {
		return err
	}
	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	_, err = c.client.Write(b)
	return err
}

// overBudget ends the session for a message the Server's readers have no room for.
func (c *conn) overBudget(err error) error {
	c.sendClient(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "53200",
		Message: "out of memory: the enforcer holds too many large messages for its sessions at once",
		Hint:    "retry once fewer large statements or results are in flight, or fetch large values in parts"})
	return err
}

// protocolError tells the client why the session ends.
func (c *conn) protocolError(code, msg string) error {
	c.sendClient(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	return fmt.Errorf("client protocol error: %s", msg)
}

// statementContext returns the context for a hook call: a fresh one if a cancel used up the last.
func (c *conn) statementContext() context.Context {
	c.ctxMu.Lock()
	defer c.ctxMu.Unlock()
	if c.stmtCtx.Err() != nil && c.ctx.Err() == nil {
		c.stmtCtx, c.stmtCancel = context.WithCancel(c.ctx)
	}
	return c.stmtCtx
}

// cancelRequested handles a CancelRequest for this session: a held statement's hook context is
// cancelled and the upstream server gets a CancelRequest with its own key.
func (c *conn) cancelRequested() error {
	c.ctxMu.Lock()
	c.stmtCancel()
	c.ctxMu.Unlock()
	if c.judging.Load() != 0 {
		// The statement being cancelled is the held one, which the server has not seen; a cancel
		// forwarded now could only hit whatever the client sends next.
		return nil
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	uc, err := d.Dial("tcp", c.upAddr)
	if err != nil {
		return fmt.Errorf("forward cancel to %s: %w", c.upAddr, err)
	}
	defer uc.Close()
	b := make([]byte, 12, 12+len(c.upKey))
	binary.BigEndian.PutUint32(b[0:], uint32(12+len(c.upKey)))
	binary.BigEndian.PutUint32(b[4:], cancelRequestCode)
	binary.BigEndian.PutUint32(b[8:], c.upPID)
	b = append(b, c.upKey...)
	if _, err := uc.Write(b); err != nil {
		return fmt.Errorf("forward cancel to %s: %w", c.upAddr, err)
	}
	// The server closes the connection once it has processed the request.
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, uc)
	return nil
}
