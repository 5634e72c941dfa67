package postgres

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
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
