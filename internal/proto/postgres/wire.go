package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/enforcer-dev/enforcer/internal/budget"
)

const (
	readBufSize  = 64 << 10
	flushAt      = 64 << 10
	headerLength = 5
)

// errTooLarge and errMalformed describe bad input from a peer.
var (
	errTooLarge  = errors.New("message too large")
	errMalformed = errors.New("malformed message")
)

// errBufferBudget is a message that would take a Server's readers past their budget.
var errBufferBudget = errors.New("the enforcer holds too many large messages at once")

// msgReader splits a byte stream into protocol messages (type byte, int32 length) without copying:
// the returned message aliases the buffer until the next call. Before it has to read from the socket
// again it calls flush, so everything decided so far is written in one batch exactly when the reader
// would otherwise wait: the flush-when-idle policy that keeps both wake-ups and write(2) calls at one
// per round trip, and large results moving in 64 KiB writes.
type msgReader struct {
	r     io.Reader
	buf   []byte
	start int // first unread byte
	end   int // end of valid data
	max   int // largest message accepted, header included
	flush func() error
	// known, if set, lists the message types this side may send; others are rejected as soon as
	// their header arrives rather than after their (possibly huge or never sent) body.
	known *[256]bool
	// budget, if set, is taken for buf beyond readBufSize (held bytes of it), for owner, up to
	// limit (see Config.MaxBufferedMessages).
	budget *budget.Shared
	limit  int64
	owner  string
	held   int64
}

// errUnknownType reports a message type the peer may not send.
var errUnknownType = errors.New("invalid message type")

func newMsgReader(r io.Reader, max int, flush func() error) *msgReader {
	return &msgReader{r: r, buf: make([]byte, readBufSize), max: max, flush: flush}
}

// next returns the next message, header included.
func (m *msgReader) next() (byte, []byte, error) {
	for {
		n := m.end - m.start
		if n >= headerLength {
			l := int(int32(binary.BigEndian.Uint32(m.buf[m.start+1:])))
			if m.known != nil && !m.known[m.buf[m.start]] {
				return m.buf[m.start], nil, fmt.Errorf("%w %d", errUnknownType, m.buf[m.start])
			}
			if l < 4 {
				return 0, nil, fmt.Errorf("%w: length %d of message type %q", errMalformed, l, m.buf[m.start])
			}
			if l+1 > m.max {
				return m.buf[m.start], nil, fmt.Errorf("%w: %d bytes of message type %q, limit %d", errTooLarge, l+1, m.buf[m.start], m.max)
			}
			if n >= l+1 {
				msg := m.buf[m.start : m.start+l+1]
				m.start += l + 1
				return msg[0], msg, nil
			}
			if need := l + 1; need > len(m.buf)-m.start && len(m.buf)-m.end < readBufSize/4 {
				// The buffer grows as the message's bytes arrive, doubling, not to the length
				// its header claims: a peer could otherwise make the proxy allocate up to max
				// bytes with five, and hold them while it sends nothing more.
				if err := m.flush(); err != nil { // forwarded spans alias the old buffer
					return 0, nil, err
				}
				size := min(need+readBufSize, 2*len(m.buf))
				if !m.budget.Take(m.owner, int64(size-readBufSize)-m.held, m.limit) {
					return m.buf[m.start], nil, fmt.Errorf("%w: %d bytes of message type %q", errBufferBudget, need, m.buf[m.start])
				}
				m.held = int64(size - readBufSize)
				nb := make([]byte, size)
				m.end = copy(nb, m.buf[m.start:m.end])
				m.start = 0
				m.buf = nb
			}
		}
		if err := m.fill(); err != nil {
			return 0, nil, err
		}
	}
}

// release gives back what the reader took of its budget; it must not be used after.
func (m *msgReader) release() {
	m.budget.Give(m.owner, m.held)
	m.held, m.buf = 0, nil
}

// fill flushes pending output, then reads more input.
func (m *msgReader) fill() error {
	if err := m.flush(); err != nil {
		return err
	}
	if m.start == m.end {
		m.start, m.end = 0, 0
		if len(m.buf) > 4*readBufSize {
			m.buf = make([]byte, readBufSize) // drop the buffer a huge message needed
			m.budget.Give(m.owner, m.held)
			m.held = 0
		}
	} else if m.start > 0 && len(m.buf)-m.end < readBufSize/4 {
		m.end = copy(m.buf, m.buf[m.start:m.end])
		m.start = 0
	}
	n, err := m.r.Read(m.buf[m.end:])
	m.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	if errors.Is(err, io.EOF) && m.end > m.start {
		return io.ErrUnexpectedEOF
	}
	return err
}

// msgWriter batches outgoing messages. Forwarded messages that lie back to back in the reader's
// buffer are written straight from it (span); anything else is copied into out.
type msgWriter struct {
	w    io.Writer
	span []byte
	out  []byte
}

// forward queues msg, which aliases the reader's buffer, unchanged.
func (w *msgWriter) forward(msg []byte) error {
	if len(w.out) == 0 {
		if len(w.span) == 0 {
			w.span = msg
			return nil
		}
		if cap(w.span) > len(w.span) && &w.span[:len(w.span)+1][len(w.span)] == &msg[0] {
			w.span = w.span[:len(w.span)+len(msg)]
			if len(w.span) >= flushAt {
				return w.flush()
			}
			return nil
		}
	}
	w.takeSpan()
	w.out = append(w.out, msg...)
	if len(w.out) >= flushAt {
		return w.flush()
	}
	return nil
}

// takeSpan moves a pending span into out so a new message can follow it.
func (w *msgWriter) takeSpan() {
	if len(w.span) > 0 {
		w.out = append(w.out, w.span...)
		w.span = nil
	}
}

// buffer returns out for appending an encoded message; pass the result to queued.
func (w *msgWriter) buffer() []byte {
	w.takeSpan()
	return w.out
}

func (w *msgWriter) queued(out []byte) error {
	w.out = out
	if len(w.out) >= flushAt {
		return w.flush()
	}
	return nil
}

func (w *msgWriter) pending() bool { return len(w.span) > 0 || len(w.out) > 0 }

func (w *msgWriter) flush() error {
	var err error
	if len(w.span) > 0 {
		_, err = w.w.Write(w.span)
		w.span = nil
	}
	if len(w.out) > 0 {
		if err == nil {
			_, err = w.w.Write(w.out)
		}
		if cap(w.out) > 1<<20 {
			w.out = nil
		} else {
			w.out = w.out[:0]
		}
	}
	return err
}

// body helpers: a cursor over a message body that reports malformed input instead of panicking.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) fail() {
	if c.err == nil {
		c.err = errMalformed
	}
}

func (c *cursor) cstring() []byte {
	for i, x := range c.b {
		if x == 0 {
			s := c.b[:i]
			c.b = c.b[i+1:]
			return s
		}
	}
	c.fail()
	c.b = nil
	return nil
}

func (c *cursor) u16() uint16 {
	if len(c.b) < 2 {
		c.fail()
		c.b = nil
		return 0
	}
	v := binary.BigEndian.Uint16(c.b)
	c.b = c.b[2:]
	return v
}

func (c *cursor) u32() uint32 {
	if len(c.b) < 4 {
		c.fail()
		c.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(c.b)
	c.b = c.b[4:]
	return v
}

func (c *cursor) bytes(n int) []byte {
	if n < 0 || len(c.b) < n {
		c.fail()
		c.b = nil
		return nil
	}
	v := c.b[:n:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) byte1() byte {
	if len(c.b) < 1 {
		c.fail()
		return 0
	}
	v := c.b[0]
	c.b = c.b[1:]
	return v
}

// int16s reads a count and that many int16 values into dst.
func (c *cursor) int16s(dst []int16) []int16 {
	n := int(c.u16())
	if n*2 > len(c.b) {
		c.fail()
		c.b = nil
		return dst[:0]
	}
	dst = dst[:0]
	for range n {
		dst = append(dst, int16(c.u16()))
	}
	return dst
}

// values reads a count and that many length-prefixed values (-1 = NULL) into dst.
func (c *cursor) values(dst [][]byte) [][]byte {
	n := int(c.u16())
	if n > len(c.b)/4 {
		c.fail()
		c.b = nil
		return dst[:0]
	}
	dst = dst[:0]
	for range n {
		l := int32(c.u32())
		if l == -1 {
			dst = append(dst, nil)
			continue
		}
		dst = append(dst, c.bytes(int(l)))
		if c.err != nil {
			return dst[:0]
		}
	}
	return dst
}

func (c *cursor) done() error {
	if c.err == nil && len(c.b) != 0 {
		c.err = errMalformed
	}
	return c.err
}

// appendDataRow encodes a DataRow.
func appendDataRow(dst []byte, values [][]byte) []byte {
	start := len(dst)
	dst = append(dst, 'D', 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
			continue
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

func appendCopyData(dst, data []byte) []byte {
	dst = append(dst, 'd')
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)+4))
	return append(dst, data...)
}

// appendDescribePortal encodes Describe('P', portal).
func appendDescribePortal(dst, portal []byte) []byte {
	start := len(dst)
	dst = append(dst, 'D', 0, 0, 0, 0, 'P')
	dst = append(dst, portal...)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

// probeName and probeSQL make the Parse that stands in for a refused message: text the server's
// grammar rejects before it looks at the name, so whatever a client created under that name
// (with SQL PREPARE: a Parse of it is refused) stays as it was.
const (
	probeName = "\x01enforcer refused"
	probeSQL  = "enforcer refused"
)

// appendParse appends a Parse of sql as statement name, with no parameter types.
func appendParse(dst []byte, name, sql string) []byte {
	start := len(dst)
	dst = append(dst, 'P', 0, 0, 0, 0)
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, sql...)
	dst = append(dst, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}
