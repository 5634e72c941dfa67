package postgres

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection: the proxy's end wrapped in rawConn.
func tcpPair(t *testing.T) (*rawConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	rc, ok := newRawConn(c).(*rawConn)
	if !ok {
		t.Fatal("a TCP connection was not wrapped")
	}
	if rc.raw.watch == nil {
		t.Fatal("the hang-up watch did not take the socket")
	}
	t.Cleanup(func() { rc.Close(); peer.Close() })
	return rc, peer
}

// readWithin runs Read and fails the test if it has not returned within d.
func readWithin(t *testing.T, c net.Conn, b []byte, d time.Duration) (int, error) {
	t.Helper()
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		n, err := c.Read(b)
		ch <- res{n, err}
	}()
	select {
	case r := <-ch:
		return r.n, r.err
	case <-time.After(d):
		t.Fatalf("Read did not return within %v", d)
		return 0, nil
	}
}

// readToError reads until an error, each Read within 5 s, and returns what it read and the error.
func readToError(t *testing.T, c net.Conn) ([]byte, error) {
	t.Helper()
	b := make([]byte, 4096)
	var got []byte
	for {
		n, err := readWithin(t, c, b, 5*time.Second)
		got = append(got, b[:n]...)
		if err != nil {
			return got, err
		}
	}
}

// TestResidentReaderSeesHangUps: a peer that writes and closes (or resets) at once, so that one
// wake-up covers both, still ends the stream: the read after the data reports the end.
func TestResidentReaderSeesHangUps(t *testing.T) {
	for _, reset := range []bool{false, true} {
		name := "fin"
		if reset {
			name = "reset"
		}
		t.Run(name, func(t *testing.T) {
			c, peer := tcpPair(t)
			b := make([]byte, 4096)
			// A first exchange puts the reader in its wait after a draining read.
			peer.Write([]byte("one"))
			if n, err := readWithin(t, c, b, 5*time.Second); err != nil || string(b[:n]) != "one" {
				t.Fatalf("got %q %v", b[:n], err)
			}
			peer.Write([]byte("two"))
			if reset {
				peer.SetLinger(0)
			}
			peer.Close()
			time.Sleep(50 * time.Millisecond) // both arrive before the reader looks
			got, err := readToError(t, c)
			if !reset && (string(got) != "two" || !errors.Is(err, io.EOF)) {
				t.Fatalf("got %q then %v, want \"two\" then EOF", got, err)
			}
			if reset && err == nil {
				t.Fatal("no error after a reset")
			}
		})
	}
}

// TestResidentReaderLargeTransfer: reads that fill the buffer are followed by more reads (no wait),
// and every byte arrives in order.
func TestResidentReaderLargeTransfer(t *testing.T) {
	c, peer := tcpPair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		peer.Write(want)
		peer.CloseWrite()
	}()
	got, err := io.ReadAll(io.LimitReader(c, int64(len(want)+1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || string(got) != string(want) {
		t.Fatalf("got %d bytes, want %d identical", len(got), len(want))
	}
}

// TestRawConnCloseDoesNotWait: Close returns while the reader waits for data, and while it is
// suspended between reads (holding the descriptor), and later Reads report a closed connection.
func TestRawConnCloseDoesNotWait(t *testing.T) {
	t.Run("reader waiting", func(t *testing.T) {
		c, _ := tcpPair(t)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 16))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		closeWithin(t, c)
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read still waits after Close")
		}
	})
	t.Run("reader suspended", func(t *testing.T) {
		c, peer := tcpPair(t)
		peer.Write([]byte("x"))
		if _, err := readWithin(t, c, make([]byte, 16), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		closeWithin(t, c)
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
		}
	})
}

func closeWithin(t *testing.T, c *rawConn) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		c.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

// TestResidentReaderAfterDeadline: a read deadline ends one Read with a timeout, and the next Read
// (deadline cleared) starts a new reader that gets the data.
func TestResidentReaderAfterDeadline(t *testing.T) {
	c, peer := tcpPair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	b := make([]byte, 16)
	if _, err := readWithin(t, c, b, 5*time.Second); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	peer.Write([]byte("after"))
	if n, err := readWithin(t, c, b, 5*time.Second); err != nil || string(b[:n]) != "after" {
		t.Fatalf("got %q %v", b[:n], err)
	}
}

// TestHangupWatchFailure: if the hang-up watch ever stops (epoll_wait failing), its readers fall
// back to reading until EAGAIN, so a FIN that came with data is still seen, and new sockets are
// not put in it.
func TestHangupWatchFailure(t *testing.T) {
	w := &hangupWatch{}
	w.once.Do(w.start)
	if w.epfd < 0 {
		t.Fatal("epoll_create1 failed")
	}
	c, peer := tcpPair(t)
	hangups.remove(c.raw) // move the socket to the watch under test
	if !w.add(c.raw) {
		t.Fatal("add failed")
	}
	c.raw.watch = w
	b := make([]byte, 64)
	peer.Write([]byte("one"))
	if n, err := readWithin(t, c, b, 5*time.Second); err != nil || string(b[:n]) != "one" {
		t.Fatalf("got %q %v", b[:n], err)
	}
	w.fail()
	if w.add(&rawIO{rc: c.raw.rc, tc: c.raw.tc}) {
		t.Fatal("a failed watch took a socket")
	}
	peer.Write([]byte("two"))
	peer.Close()
	time.Sleep(50 * time.Millisecond)
	got, err := readToError(t, c)
	if string(got) != "two" || !errors.Is(err, io.EOF) {
		t.Fatalf("got %q then %v, want \"two\" then EOF", got, err)
	}
}

// TestRawWrite: a write larger than the socket buffer waits for room and arrives whole, writes
// from two goroutines do not interleave within a call, and a small write allocates nothing.
func TestRawWrite(t *testing.T) {
	c, peer := tcpPair(t)
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i * 13)
	}
	small := []byte("one small message")
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	done := make(chan error, 2)
	go func() { _, err := c.Write(big); done <- err }()
	go func() {
		for range 100 {
			if _, err := c.Write(small); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(200, func() { c.Write(small) }); n != 0 {
		t.Fatalf("a write allocates %v times", n)
	}
	c.Close()
	b := <-got
	if want := len(big) + 301*len(small); len(b) != want { // AllocsPerRun calls once more to warm up
		t.Fatalf("peer got %d bytes, want %d", len(b), want)
	}
	// The big write is one run of bytes; the small ones sit before or after it, whole.
	i := strings.Index(string(b), string(big[:64]))
	if i < 0 || string(b[i:i+len(big)]) != string(big) {
		t.Fatal("the large write did not arrive in one piece")
	}
	rest := string(b[:i]) + string(b[i+len(big):])
	if rest != strings.Repeat(string(small), 301) {
		t.Fatal("small writes were cut or interleaved")
	}
}
