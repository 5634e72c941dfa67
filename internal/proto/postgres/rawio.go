package postgres

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a TCP socket with raw read(2) and write(2) on its non-blocking descriptor,
// waiting in Go's netpoller only when the socket is not ready.
//
// Why: net.Conn's Read and Write enter the scheduler's syscall state, and a loopback write that
// processes the receiver's softirq inline often outlasts the 20 µs after which sysmon hands the P to
// another thread. On a 2-core machine that handoff is an extra thread wake-up per message, which
// made the proxy cost about twice pgbouncer's CPU per statement. A non-blocking socket call never
// sleeps, so it is safe to run it without the syscall state, as the runtime does for its own
// short calls.
type rawIO struct {
	rc syscall.RawConn
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
	return &rawIO{rc: rc}
}

func (r *rawIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			r1, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(r1), e
			return true
		}
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) Write(b []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	err := r.rc.Write(func(fd uintptr) bool {
		for written < len(b) {
			r1, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[written])), uintptr(len(b)-written))
			switch e {
			case 0:
				written += int(r1)
				continue
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			errno = e
			return true
		}
		return true
	})
	if err != nil {
		return written, err
	}
	if errno != 0 {
		return written, errno
	}
	return written, nil
}

// rawTCPConn is a TCP connection whose Read and Write use rawIO; everything else (deadlines,
// addresses, Close) is the TCPConn's.
type rawTCPConn struct {
	*net.TCPConn
	raw *rawIO
}

func (c *rawTCPConn) Read(b []byte) (int, error)  { return c.raw.Read(b) }
func (c *rawTCPConn) Write(b []byte) (int, error) { return c.raw.Write(b) }
