package record

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// syncRing hands the session log's syncs (the segment's fdatasync(2), and the fsync(2) of the
// chain state and of the directory at checkpoints and rotations), retention's unlinks, and the
// release of written pages from the page cache (see Recorder.releaseCache), to the
// kernel's io_uring, whose worker thread runs them while the writer goroutine waits in the
// netpoller. (Unlinking a 64 MiB segment took 13 ms on ext4 with online discard.) Made directly,
// a sync holds the daemon's Go scheduler thread (one P by default) inside the system call for as
// long as the disk takes; the runtime's monitor then takes the P back for the sessions, and while
// syncs keep coming it polls every 20 µs to do so: on a write-heavy load (pgbench tpcb-like, 4
// clients, ~2,800 syncs a second) that polling was a fifth of the daemon's CPU, and the syncs
// themselves 29 %. Writes stay plain write(2) calls: a batch write is short, and handing each one
// to a kernel worker cost more than it saved, even with the workers at nice 19 (see
// docs/performance-notes.md).
//
// One sync is in flight at a time (sync waits for its completion), so the files see the same
// sequence of writes and syncs as without the ring.
type syncRing struct {
	mu       sync.Mutex
	fd       int
	ring     []byte // submission and completion rings (IORING_FEAT_SINGLE_MMAP)
	sqeMem   []byte
	sqTail   *uint32
	sqMask   uint32
	sqArray  unsafe.Pointer // [entries]uint32
	cqHead   *uint32
	cqTail   *uint32
	cqMask   uint32
	cqes     unsafe.Pointer // [entries]uringCQE
	done     *os.File       // eventfd the kernel counts completions on, read through the netpoller
	unusable error          // set once a submission failed; the caller then syncs itself
	ops      uint64         // operations completed
}

// The kernel's ABI (include/uapi/linux/io_uring.h).
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  uringSQOffsets
	cqOff                                                                  uringCQOffsets
}

type uringSQOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type uringCQOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringSQE struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	opFlags  uint32
	userData uint64
	_        [3]uint64
}

type uringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

const (
	uringOpFsync         = 3
	uringOpFadvise       = 24 // Linux 5.6
	uringOpUnlinkat      = 36 // Linux 5.11
	uringFsyncDatasync   = 1
	uringFeatSingleMmap  = 1 << 0
	uringOffSQEs         = 0x10000000
	uringRegisterEventfd = 4
	uringEntries         = 2
	uringSQESize         = 64
	uringCQESize         = 16
	uringSubmitAttempts  = 16
)

// errRingSubmit means the sync was not submitted (the caller may make the system call itself).
var errRingSubmit = errors.New("io_uring submission failed")

// newSyncRing sets up a ring, or says why it cannot (io_uring disabled by sysctl or seccomp, a
// kernel before 5.4); the recorder then makes the system call itself.
func newSyncRing() (*syncRing, error) {
	var p uringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	u := &syncRing{fd: int(fd)}
	if err := u.init(&p); err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

func (u *syncRing) init(p *uringParams) error {
	if p.features&uringFeatSingleMmap == 0 {
		return errors.New("io_uring without a single ring mapping (kernel before 5.4)")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uringCQESize)
	var err error
	if u.ring, err = unix.Mmap(u.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("io_uring rings: %w", err)
	}
	if u.sqeMem, err = unix.Mmap(u.fd, uringOffSQEs, int(p.sqEntries*uringSQESize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("io_uring entries: %w", err)
	}
	at := func(off uint32) unsafe.Pointer { return unsafe.Pointer(&u.ring[off]) }
	u.sqTail = (*uint32)(at(p.sqOff.tail))
	u.sqMask = *(*uint32)(at(p.sqOff.ringMask))
	u.sqArray = at(p.sqOff.array)
	u.cqHead = (*uint32)(at(p.cqOff.head))
	u.cqTail = (*uint32)(at(p.cqOff.tail))
	u.cqMask = *(*uint32)(at(p.cqOff.ringMask))
	u.cqes = at(p.cqOff.cqes)
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	u.done = os.NewFile(uintptr(efd), "io_uring completions")
	fd32 := int32(efd)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(u.fd), uringRegisterEventfd, uintptr(unsafe.Pointer(&fd32)), 1, 0, 0); errno != 0 {
		return fmt.Errorf("io_uring_register eventfd: %w", errno)
	}
	return nil
}

func (u *syncRing) close() {
	if u.done != nil {
		u.done.Close()
	}
	if u.sqeMem != nil {
		unix.Munmap(u.sqeMem)
	}
	if u.ring != nil {
		unix.Munmap(u.ring)
	}
	unix.Close(u.fd)
}

// sync is fdatasync(2) of f if dataOnly, else fsync(2). An error wrapping errRingSubmit means the
// sync was not submitted and the ring is not used again; any other error is the sync's own.
func (u *syncRing) sync(f *os.File, dataOnly bool) error {
	e := uringSQE{opcode: uringOpFsync, fd: int32(f.Fd())}
	op := "fsync"
	if dataOnly {
		e.opFlags, op = uringFsyncDatasync, "fdatasync"
	}
	res, err := u.do(e)
	runtime.KeepAlive(f) // its descriptor is in use until the completion
	switch {
	case err != nil:
		return err
	case res < 0:
		return &os.PathError{Op: op, Path: f.Name(), Err: unix.Errno(-res)}
	}
	return nil
}

// unlink is unlink(2) of path. The kernel's EINVAL means it does not know the operation (before
// 5.11); errRingSubmit and other errors are as for sync.
func (u *syncRing) unlink(path string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return &os.PathError{Op: "unlink", Path: path, Err: err}
	}
	res, err := u.do(uringSQE{opcode: uringOpUnlinkat, fd: unix.AT_FDCWD, addr: uint64(uintptr(unsafe.Pointer(p)))})
	runtime.KeepAlive(p) // the kernel reads the path until the completion
	switch {
	case err != nil:
		return err
	case res < 0:
		return &os.PathError{Op: "unlink", Path: path, Err: unix.Errno(-res)}
	}
	return nil
}

// dontNeed is posix_fadvise(2) of f's bytes [off, off+n) with POSIX_FADV_DONTNEED (n ≤ 4 GiB,
// the width of the entry's length; 0 is to the end of the file). The kernel's EINVAL means it does
// not know the operation (before 5.6); errRingSubmit and other errors are as for sync.
func (u *syncRing) dontNeed(f *os.File, off int64, n uint32) error {
	res, err := u.do(uringSQE{opcode: uringOpFadvise, fd: int32(f.Fd()), off: uint64(off), len: n, opFlags: unix.FADV_DONTNEED})
	runtime.KeepAlive(f)
	switch {
	case err != nil:
		return err
	case res < 0:
		return &os.PathError{Op: "fadvise", Path: f.Name(), Err: unix.Errno(-res)}
	}
	return nil
}

// do submits one operation and waits for its result (-errno on failure).
func (u *syncRing) do(e uringSQE) (int32, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.unusable != nil {
		return 0, u.unusable
	}
	tail := *u.sqTail // only this method moves the tail, under mu
	i := tail & u.sqMask
	*(*uringSQE)(unsafe.Add(unsafe.Pointer(&u.sqeMem[0]), uintptr(i)*uringSQESize)) = e
	*(*uint32)(unsafe.Add(u.sqArray, uintptr(i)*4)) = i
	atomic.StoreUint32(u.sqTail, tail+1)
	submitted := false
	for attempt := 0; attempt < uringSubmitAttempts && !submitted; attempt++ {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(u.fd), 1, 0, 0, 0, 0)
		switch {
		case errno == unix.EINTR || errno == unix.EAGAIN || errno == unix.EBUSY:
			runtime.Gosched()
		case errno != 0:
			u.unusable = fmt.Errorf("%w: io_uring_enter: %v", errRingSubmit, errno)
			return 0, u.unusable
		default:
			submitted = n == 1
		}
	}
	if !submitted {
		// The entry stays in the ring unsubmitted; the ring is not entered again, so it never runs.
		u.unusable = fmt.Errorf("%w: io_uring_enter took nothing", errRingSubmit)
		return 0, u.unusable
	}
	for {
		head := *u.cqHead // only this method moves the head, under mu
		if head != atomic.LoadUint32(u.cqTail) {
			c := *(*uringCQE)(unsafe.Add(u.cqes, uintptr(head&u.cqMask)*uringCQESize))
			atomic.StoreUint32(u.cqHead, head+1)
			u.ops++
			return c.res, nil
		}
		var b [8]byte
		if _, err := u.done.Read(b[:]); err != nil {
			// Submitted but unknown whether it ran: not errRingSubmit, so the log fails closed.
			u.unusable = fmt.Errorf("io_uring completion: %w", err)
			return 0, u.unusable
		}
	}
}
