package postgres

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// observeHook observes every statement and touches every cell, as a masking layer with nothing to
// mask would.
type observeHook struct{ PassThrough }

func (observeHook) Statement(context.Context, *Statement) Verdict { return Verdict{Observe: true} }

func (observeHook) Result(_ context.Context, r *Result) error {
	for _, v := range r.Values {
		if len(v) > 0 && v[0] == 0xff {
			return errors.New("unexpected")
		}
	}
	return nil
}

// benchHooks are the hooks the relay benchmarks run with.
var benchHooks = []struct {
	name string
	hook Hook
}{{"passthrough", PassThrough{}}, {"observe", observeHook{}}}

// newBenchConn is a session's state without sockets; the caller sets the readers and upstream.
func newBenchConn(hook Hook) *conn {
	c := &conn{hook: hook}
	c.ctx, c.stop = context.WithCancel(context.Background())
	c.stmtCtx, c.stmtCancel = context.WithCancel(c.ctx)
	c.srv = &Server{cfg: Config{MaxMessageSize: 1 << 20}}
	c.cw.w = io.Discard
	return c
}

// relayMessages passes n messages from r to handle.
func relayMessages(tb testing.TB, r *msgReader, n int, handle func(typ byte, msg []byte) error) {
	tb.Helper()
	for range n {
		typ, msg, err := r.next()
		if err != nil {
			tb.Fatal(err)
		}
		if err := handle(typ, msg); err != nil {
			tb.Fatal(err)
		}
	}
}

// relayServerUntilReady passes the server's messages through the relay up to ReadyForQuery.
func relayServerUntilReady(b *testing.B, c *conn) {
	for {
		typ, msg, err := c.sr.next()
		if err != nil {
			b.Fatal(err)
		}
		if err := c.onServerMessage(typ, msg); err != nil {
			b.Fatal(err)
		}
		if typ == 'Z' {
			return
		}
	}
}

// BenchmarkRelayRows measures the server-to-client path on a pgbench_accounts-like result (about
// 115 bytes per DataRow) without sockets: pass-through forwards raw bytes, observe splits every row
// into cells for the hook. Both must not allocate per row.
func BenchmarkRelayRows(b *testing.B) {
	const rows = 10000
	var stream []byte
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("aid")}, {Name: []byte("bid")}, {Name: []byte("abalance")}, {Name: []byte("filler")}}}
	stream, _ = rd.Encode(stream)
	for i := range rows {
		stream = appendDataRow(stream, [][]byte{[]byte("123456"), []byte("1"), []byte("0"), bytes.Repeat([]byte(" "), 84+i%2)})
	}
	stream, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 10000")}).Encode(stream)
	stream, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(stream)
	for _, tc := range benchHooks {
		b.Run(tc.name, func(b *testing.B) {
			c := newBenchConn(tc.hook)
			defer c.stop()
			r := bytes.NewReader(stream)
			c.sr = newMsgReader(r, maxServerMessage, c.flushClientLocked)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r.Reset(stream)
				c.ops.push(op{kind: opQuery, st: &Statement{Kind: KindQuery}, observe: tc.hook != PassThrough{}})
				relayServerUntilReady(b, c)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
		})
	}
}

// BenchmarkRelayExtended measures one extended-protocol transaction as pgbench -M extended sends
// it (Parse, Bind, Describe, Execute, Sync of the unnamed statement) and the server's answer,
// through the proxy's message handling on both sides, without sockets.
func BenchmarkRelayExtended(b *testing.B) {
	var client []byte
	client, _ = (&pgproto3.Parse{Query: "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"}).Encode(client)
	client, _ = (&pgproto3.Bind{Parameters: [][]byte{[]byte("48213")}, ResultFormatCodes: []int16{0}}).Encode(client)
	client, _ = (&pgproto3.Describe{ObjectType: 'P'}).Encode(client)
	client, _ = (&pgproto3.Execute{}).Encode(client)
	client, _ = (&pgproto3.Sync{}).Encode(client)
	var server []byte
	server, _ = (&pgproto3.ParseComplete{}).Encode(server)
	server, _ = (&pgproto3.BindComplete{}).Encode(server)
	benchTransactions(b, 5, func(int) []byte { return client }, selectOneAnswer(server))
}

// BenchmarkRelaySimple measures one simple-protocol transaction as pgbench -S -M simple sends it
// (a Query whose literal changes every time) and the server's answer, through the proxy's message
// handling on both sides, without sockets.
func BenchmarkRelaySimple(b *testing.B) {
	queries := make([][]byte, 64)
	for i := range queries {
		queries[i], _ = (&pgproto3.Query{String: "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(10000+i*7919) + ";"}).Encode(nil)
	}
	benchTransactions(b, 1, func(i int) []byte { return queries[i%len(queries)] }, selectOneAnswer(nil))
}

// selectOneAnswer appends to dst the rest of the server's answer to pgbench's select-only query:
// its description, one row, the completion and ReadyForQuery.
func selectOneAnswer(dst []byte) []byte {
	dst, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("abalance"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}).Encode(dst)
	dst = appendDataRow(dst, [][]byte{[]byte("-2817")})
	dst, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(dst)
	dst, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(dst)
	return dst
}

// benchTransactions runs one transaction per iteration with each bench hook: the client's
// messages (client(i), the given number of them) through the client side, then server through the
// server side up to ReadyForQuery.
func benchTransactions(b *testing.B, messages int, client func(i int) []byte, server []byte) {
	for _, tc := range benchHooks {
		b.Run(tc.name, func(b *testing.B) {
			c := newBenchConn(tc.hook)
			defer c.stop()
			c.uw.w = io.Discard
			cr, sr := bytes.NewReader(nil), bytes.NewReader(server)
			c.cr = newMsgReader(cr, 1<<20, c.flushUpstream)
			c.cr.known = frontendTypes
			c.sr = newMsgReader(sr, maxServerMessage, c.flushClientLocked)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				cr.Reset(client(i))
				i++
				sr.Reset(server)
				relayMessages(b, c.cr, messages, c.onClientMessage)
				relayServerUntilReady(b, c)
			}
		})
	}
}
