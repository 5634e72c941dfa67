package postgres

import (
	"errors"
	"io"
	"iter"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawIO reads and writes a TCP socket with raw read(2) and write(2) on its non-blocking descriptor,
// waiting in Go's netpoller only when the socket is not ready.
//
// Why raw calls: net.Conn's Read and Write enter the scheduler's syscall state, and a loopback
// write that processes the receiver's softirq inline often outlasts the 20 µs after which sysmon
// hands the P to another thread. On a 2-core machine that handoff is an extra thread wake-up per
// message, which made the proxy cost about twice pgbouncer's CPU per statement. A non-blocking
// socket call never sleeps, so it is safe to run it without the syscall state, as the runtime does
// for its own short calls.
//
// Why a resident reader: RawConn.Read forgets the descriptor's readiness each time it starts, so
// each call must try a read(2) first, which on a drained socket fails with EAGAIN: one wasted
// system call per message received, two per round trip. Reads therefore stay inside one
// RawConn.Read call, run as a coroutine (iter.Pull2) that hands each read to Read. Within that call
// readiness is only consumed by waiting, so after a read that did not fill the buffer (the socket
// was drained; edge-triggered epoll reports whatever arrives later) the reader waits without
// trying. A hang-up is the exception: a read returns the data before a FIN or a reset and leaves
// the end for the next read, so a peer that sends and closes at once would go unnoticed; the
// hang-up watch (hangups) wakes the reader for that read. While suspended, the coroutine holds the
// descriptor's read lock, and closing a socket waits for that lock: close (Close of rawConn) stops
// the coroutine first.
type rawIO struct {
	rc syscall.RawConn
	tc *net.TCPConn
	// watch has the socket (nil when it could not take it: the reader then reads until EAGAIN,
	// as a plain Read would); id is the socket's there.
	watch *hangupWatch
	id    uint64

	mu      sync.Mutex // serialises Read and close; the coroutine runs only under it
	next    func() (int, error, bool)
	stop    func()
	buf     []byte // where the coroutine's next read goes
	closing atomic.Bool
	// untilEAGAIN is set when the hang-up watch saw the peer go, or gave up: the reader reads
	// until EAGAIN from then on. A past read deadline may have woken it (woken, cleared when
	// handled).
	untilEAGAIN atomic.Bool
	woken       atomic.Bool

	// Write's state, for writeFn (bound once: a closure per Write escaped to the heap, one
	// allocation per message sent).
	wmu     sync.Mutex
	wbuf    []byte
	written int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

// newRawIO returns a rawIO for plain TCP connections, or nil when conn is anything else (TLS, pipes),
// which then goes through its own Read and Write.
func newRawIO(conn net.Conn) *rawIO {
	var tc *net.TCPConn
	switch c := conn.(type) {
	case *net.TCPConn:
		tc = c
	case interface{ Underlying() *net.TCPConn }:
		tc = c.Underlying() // a TCP connection wrapped by its owner (the daemon's proxy.Conn)
	default:
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc, tc: tc}
	r.writeFn = r.writeFD
	if hangups.add(r) {
		r.watch = &hangups
	}
	return r
}

func (r *rawIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing.Load() {
		return 0, net.ErrClosed
	}
	if r.next == nil {
		r.next, r.stop = iter.Pull2(r.reads)
	}
	r.buf = b
	n, err, ok := r.next()
	r.buf = nil
	if !ok || err != nil {
		// The coroutine has ended (EOF, an error, a deadline); a later Read starts another.
		r.stop()
		r.next, r.stop = nil, nil
		if !ok {
			err = io.ErrNoProgress
		}
		if r.closing.Load() {
			err = net.ErrClosed
		}
	}
	return n, err
}

// reads is the resident reader: it yields each successful read, and then the error that ends it
// (io.EOF when the peer closed).
func (r *rawIO) reads(yield func(int, error) bool) {
	var errno syscall.Errno
	stopped := false
	read := func(fd uintptr) bool {
		for {
			b := r.buf
			n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return false
			case e != 0:
				errno = e
				return true
			case n == 0:
				return true
			}
			if !yield(int(n), nil) {
				stopped = true
				return true
			}
			if int(n) < len(b) && r.watch != nil && !r.untilEAGAIN.Load() {
				return false // drained when read: wait for the next arrival
			}
		}
	}
	err := r.rc.Read(read)
	for err != nil && r.woken.Swap(false) && errors.Is(err, os.ErrDeadlineExceeded) && !r.closing.Load() {
		// Woken by the hang-up watch: read the end.
		r.tc.SetReadDeadline(time.Time{})
		err = r.rc.Read(read)
	}
	switch {
	case stopped:
	case err != nil:
		yield(0, err)
	case errno != 0:
		yield(0, errno)
	default:
		yield(0, io.EOF)
	}
}

// close stops the resident reader so that the socket can be closed. wake must end a wait in the
// netpoller (a read deadline in the past), since a waiting reader holds the lock close needs.
// Reads after close fail with net.ErrClosed.
func (r *rawIO) close(wake func()) {
	if r.closing.Swap(true) {
		return
	}
	wake()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil {
		r.stop()
		r.next, r.stop = nil, nil
	}
	if r.watch != nil {
		r.watch.remove(r)
	}
}

// hangUp wakes the reader to read the end of the stream (see hangups).
func (r *rawIO) hangUp() {
	r.untilEAGAIN.Store(true)
	r.woken.Store(true)
	r.tc.SetReadDeadline(longAgo)
}

func (r *rawIO) Write(b []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wbuf, r.written, r.werrno = b, 0, 0
	err := r.rc.Write(r.writeFn)
	written, errno := r.written, r.werrno
	r.wbuf = nil // the caller's buffer is not kept
	if err != nil {
		return written, err
	}
	if errno != 0 {
		return written, errno
	}
	return written, nil
}

// writeFD writes what is left of wbuf to fd; false asks the netpoller to wait for room (EAGAIN).
func (r *rawIO) writeFD(fd uintptr) bool {
	for r.written < len(r.wbuf) {
		r1, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[r.written])), uintptr(len(r.wbuf)-r.written))
		switch e {
		case 0:
			r.written += int(r1)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.werrno = e
		return true
	}
	return true
}

// dup returns a second descriptor of the socket as a File in the netpoller, to wait for its
// readiness without touching the resident reader's (each descriptor has its own).
func (r *rawIO) dup() (*os.File, error) {
	nfd := -1
	var derr error
	if err := r.rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(nfd), "client socket"), nil
}

// rawConn is a connection whose Read and Write use rawIO; everything else (deadlines, addresses)
// is the underlying connection's, and Close stops the resident reader first.
type rawConn struct {
	net.Conn
	raw *rawIO
}

// newRawConn wraps a plain TCP connection (see newRawIO); anything else is returned as it is.
func newRawConn(c net.Conn) net.Conn {
	if r := newRawIO(c); r != nil {
		return &rawConn{Conn: c, raw: r}
	}
	return c
}

// longAgo is a deadline that has passed.
var longAgo = time.Unix(1, 0)

func (c *rawConn) Read(b []byte) (int, error)  { return c.raw.Read(b) }
func (c *rawConn) Write(b []byte) (int, error) { return c.raw.Write(b) }

func (c *rawConn) Close() error {
	c.raw.close(func() { c.Conn.SetReadDeadline(longAgo) })
	return c.Conn.Close()
}

// hangups watches every resident reader's socket for the peer's hang-up (FIN, reset) in one epoll
// set of its own, level-triggered and one-shot, which says nothing while data flows. When a
// hang-up arrives the socket's reader is woken to read the end, which a reader waiting after a
// draining read would otherwise miss (see rawIO).
var hangups hangupWatch

type hangupWatch struct {
	once   sync.Once
	epfd   int
	mu     sync.Mutex
	failed bool // epoll_wait failed: the watch is over
	nextID uint64
	byID   map[uint64]*rawIO
}

// add puts r's socket in the watch; false if it cannot (no epoll), and r then reads until EAGAIN.
func (h *hangupWatch) add(r *rawIO) bool {
	h.once.Do(h.start)
	if h.epfd < 0 {
		return false
	}
	h.mu.Lock()
	if h.failed {
		h.mu.Unlock()
		return false
	}
	h.nextID++
	r.id = h.nextID
	h.byID[r.id] = r
	h.mu.Unlock()
	var eerr error
	err := r.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(r.id), Pad: int32(r.id >> 32)}
		eerr = unix.EpollCtl(h.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = eerr
	}
	if err != nil {
		h.mu.Lock()
		delete(h.byID, r.id)
		h.mu.Unlock()
		return false
	}
	return true
}

// remove takes r's socket out of the watch before it is closed. (A socket closed without it
// leaves the set by itself: epoll forgets a file when its last descriptor closes.)
func (h *hangupWatch) remove(r *rawIO) {
	h.mu.Lock()
	delete(h.byID, r.id)
	h.mu.Unlock()
	r.rc.Control(func(fd uintptr) {
		unix.EpollCtl(h.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

func (h *hangupWatch) start() {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		h.epfd = -1
		return
	}
	h.epfd, h.byID = epfd, map[uint64]*rawIO{}
	go h.run()
}

// fail ends the watch: every reader it had reads until EAGAIN from now on, and add refuses.
func (h *hangupWatch) fail() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed = true
	for _, r := range h.byID {
		r.hangUp()
	}
	clear(h.byID)
}

// run waits for hang-ups for the life of the process, in a thread of its own (a blocking
// epoll_wait, woken only when a peer goes away). If epoll_wait ever fails (nothing but a closed
// descriptor can make it), every reader falls back to reading until EAGAIN, and new ones start
// that way: slower, never wrong.
func (h *hangupWatch) run() {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(h.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			h.fail()
			return
		}
		h.mu.Lock()
		for _, ev := range events[:n] {
			if r := h.byID[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]; r != nil {
				r.hangUp()
			}
		}
		h.mu.Unlock()
	}
}
