package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

var errHelloRead = errors.New("client hello read")

// readClientHello reads the client's first TLS flight far enough to learn its SNI and returns
// the bytes consumed, which must be replayed to the upstream. crypto/tls does the parsing; the
// handshake is aborted as soon as the ClientHello is known, nothing is ever sent to the client.
func readClientHello(c net.Conn) (string, []byte, error) {
	var buf bytes.Buffer
	var sni string
	var seen bool
	conn := &recordingConn{r: io.TeeReader(io.LimitReader(c, 64<<10), &buf)}
	err := tls.Server(conn, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, seen = h.ServerName, true
			return nil, errHelloRead
		},
	}).Handshake()
	if !seen {
		if err == nil {
			err = errors.New("no ClientHello")
		}
		return "", nil, err
	}
	if sni == "" {
		return "", nil, errors.New("ClientHello without SNI")
	}
	return sni, buf.Bytes(), nil
}

// recordingConn is a read-only net.Conn over a reader; writes are refused so no alert or other
// byte of the aborted handshake reaches the client.
type recordingConn struct{ r io.Reader }

func (c *recordingConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *recordingConn) Write(p []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (c *recordingConn) Close() error                     { return nil }
func (c *recordingConn) LocalAddr() net.Addr              { return nil }
func (c *recordingConn) RemoteAddr() net.Addr             { return nil }
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }
