package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/enforcer-dev/enforcer/internal/budget"
)

// TestReaderGrowsWithData: a header that claims a huge message does not make the reader allocate
// it; the buffer grows with the bytes that come, and a message that does come whole is returned.
func TestReaderGrowsWithData(t *testing.T) {
	header := func(l int) []byte {
		h := []byte{'Q', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(h[1:], uint32(l))
		return h
	}
	// 900 MB claimed, 1 MB sent, then the peer stops.
	in := append(header(900<<20), bytes.Repeat([]byte{'x'}, 1<<20)...)
	m := newMsgReader(bytes.NewReader(in), 1<<30, func() error { return nil })
	if _, _, err := m.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("next: %v, want unexpected EOF", err)
	}
	if len(m.buf) > 4<<20 {
		t.Fatalf("the reader holds %d bytes for 1 MiB received", len(m.buf))
	}
	// A 5 MB message, sent whole after a small one.
	body := bytes.Repeat([]byte{'y'}, 5<<20)
	small := append(header(4+2), 'h', 'i')
	in = append(append(small, header(4+len(body))...), body...)
	m = newMsgReader(bytes.NewReader(in), 1<<30, func() error { return nil })
	for i, want := range [][]byte{small, append(header(4+len(body)), body...)} {
		_, msg, err := m.next()
		if err != nil || !bytes.Equal(msg, want) {
			t.Fatalf("message %d: %d bytes, %v", i, len(msg), err)
		}
	}
}

// TestReaderBudget: a reader takes what its buffer grows past 64 KiB from the Server's budget,
// refuses a message the budget has no room for, and gives everything back when the buffer is
// dropped or the reader released.
func TestReaderBudget(t *testing.T) {
	msg := func(n int) []byte {
		b := append([]byte{'Q', 0, 0, 0, 0}, bytes.Repeat([]byte{'x'}, n)...)
		binary.BigEndian.PutUint32(b[1:], uint32(4+n))
		return b
	}
	tests := []struct {
		name    string
		limit   int64
		sizes   []int
		refused int // index of the message refused, or -1
	}{
		{"small messages take nothing", 0, []int{100, 60 << 10}, -1},
		{"a large message within the budget", 5 << 20, []int{3 << 20, 10}, -1},
		{"one message over the budget", 1 << 20, []int{10, 2 << 20}, 1},
		{"a budget given back is taken again", 3 << 20, []int{2 << 20, 10, 2 << 20}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var in []byte
			for _, n := range tc.sizes {
				in = append(in, msg(n)...)
			}
			b := &budget.Shared{}
			// One message a read at most, as from a peer that waits for each answer: the
			// reader finds its buffer empty before the next, and drops a grown one.
			m := newMsgReader(&messageAtATime{in: in}, 1<<30, func() error { return nil })
			m.budget, m.limit = b, tc.limit
			for i, n := range tc.sizes {
				_, got, err := m.next()
				if i == tc.refused {
					if !errors.Is(err, errBufferBudget) {
						t.Fatalf("message %d: %v, want the budget's refusal", i, err)
					}
					break
				}
				if err != nil || len(got) != 5+n {
					t.Fatalf("message %d: %d bytes, %v", i, len(got), err)
				}
				if used, _ := b.InUse(""); used > tc.limit || used != m.held || used != int64(len(m.buf)-readBufSize) {
					t.Fatalf("message %d: budget used %d, reader holds %d (a buffer of %d), limit %d", i, used, m.held, len(m.buf), tc.limit)
				}
			}
			m.release()
			if used, _ := b.InUse(""); used != 0 {
				t.Errorf("released, but %d bytes of the budget still taken", used)
			}
		})
	}
}

// messageAtATime reads from in no further than the end of the message being read.
type messageAtATime struct {
	in  []byte
	off int // where the message being read ends
}

func (r *messageAtATime) Read(p []byte) (int, error) {
	if len(r.in) == 0 {
		return 0, io.EOF
	}
	if r.off == 0 {
		r.off = 1 + int(binary.BigEndian.Uint32(r.in[1:5]))
	}
	n := copy(p, r.in[:r.off])
	r.in, r.off = r.in[n:], r.off-n
	return n, nil
}
