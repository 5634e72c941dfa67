package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sock_diag constants and layouts from linux/sock_diag.h and linux/inet_diag.h. They are stable
// kernel ABI; vishvananda/netlink v1.3.1 stops before INET_DIAG_CGROUP_ID, so we parse ourselves.
const (
	sockDiagByFamily   = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagCgroupID   = 21 // INET_DIAG_CGROUP_ID (Linux 5.7+)
	inetDiagReqV2Len   = 56 // struct inet_diag_req_v2
	inetDiagMsgLen     = 72 // struct inet_diag_msg
	inetDiagSockIDLen  = 48 // struct inet_diag_sockid
	inetDiagNoCookie   = 0xffffffff
	nlmsgHdrLen        = unix.SizeofNlMsghdr
	nlaHdrLen          = unix.SizeofNlAttr
	sockDiagRecvBuffer = 8192
)

// diagSocket is what sock_diag reports about one TCP socket.
type diagSocket struct {
	UID      uint32
	Inode    uint32
	Cookie   uint64
	CgroupID uint64 // 0 when the kernel did not report it
	State    uint8
}

// errDiagNotFound means the kernel has no socket with the requested 4-tuple.
var errDiagNotFound = errors.New("sock_diag: no such socket")

// tcpSocketDiag asks the kernel (NETLINK_SOCK_DIAG, an exact lookup, not a dump) about the TCP
// socket whose local address is local and whose peer is remote. Both must be the same family;
// IPv4 addresses also find AF_INET6 sockets that use v4-mapped addresses.
func tcpSocketDiag(local, remote netip.AddrPort) (diagSocket, error) {
	req, err := marshalDiagRequest(local, remote, 1)
	if err != nil {
		return diagSocket{}, err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return diagSocket{}, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return diagSocket{}, fmt.Errorf("sock_diag send: %w", err)
	}
	buf := make([]byte, sockDiagRecvBuffer)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return diagSocket{}, fmt.Errorf("sock_diag receive: %w", err)
		}
		ds, done, err := parseDiagResponse(buf[:n], 1)
		if err != nil || done {
			return ds, err
		}
	}
}

// marshalDiagRequest builds nlmsghdr + inet_diag_req_v2 for an exact TCP socket lookup.
func marshalDiagRequest(local, remote netip.AddrPort, seq uint32) ([]byte, error) {
	la, ra := local.Addr(), remote.Addr()
	if la.Is4In6() && ra.Is4In6() {
		la, ra = la.Unmap(), ra.Unmap()
	}
	var family uint8
	switch {
	case la.Is4() && ra.Is4():
		family = unix.AF_INET
	case la.Is6() && ra.Is6():
		family = unix.AF_INET6
	default:
		return nil, fmt.Errorf("sock_diag: mixed address families %v and %v", local, remote)
	}
	b := make([]byte, nlmsgHdrLen+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], seq)
	r := b[nlmsgHdrLen:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	r[2] = 0 // idiag_ext: the cgroup id is always included, no extension needed
	ne.PutUint32(r[4:], 0xffffffff)
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], remote.Port())
	putDiagAddr(id[4:20], la)
	putDiagAddr(id[20:36], ra)
	ne.PutUint32(id[36:], 0) // idiag_if
	ne.PutUint32(id[40:], inetDiagNoCookie)
	ne.PutUint32(id[44:], inetDiagNoCookie)
	return b, nil
}

func putDiagAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(dst, v[:])
		return
	}
	v := a.As16()
	copy(dst, v[:])
}

// parseDiagResponse reads the netlink messages in b. done reports that the answer (or an error)
// for request seq was found.
func parseDiagResponse(b []byte, seq uint32) (ds diagSocket, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		mseq := ne.Uint32(b[8:])
		if l < nlmsgHdrLen || l > len(b) {
			return diagSocket{}, true, fmt.Errorf("sock_diag: bad message length %d (have %d)", l, len(b))
		}
		body := b[nlmsgHdrLen:l]
		next := nlmAlign(l)
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return diagSocket{}, true, errors.New("sock_diag: short error message")
			}
			errno := -int32(ne.Uint32(body))
			if errno == 0 {
				continue // an ACK
			}
			if unix.Errno(errno) == unix.ENOENT {
				return diagSocket{}, true, errDiagNotFound
			}
			return diagSocket{}, true, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
		case unix.NLMSG_DONE:
			return diagSocket{}, true, errDiagNotFound
		case sockDiagByFamily:
			ds, err := parseDiagMsg(body)
			return ds, true, err
		}
	}
	return diagSocket{}, false, nil
}

// parseDiagMsg decodes struct inet_diag_msg and its attributes.
func parseDiagMsg(b []byte) (diagSocket, error) {
	if len(b) < inetDiagMsgLen {
		return diagSocket{}, fmt.Errorf("sock_diag: inet_diag_msg of %d bytes, want %d", len(b), inetDiagMsgLen)
	}
	ne := binary.NativeEndian
	id := b[4 : 4+inetDiagSockIDLen]
	ds := diagSocket{
		State:  b[1],
		Cookie: uint64(ne.Uint32(id[40:])) | uint64(ne.Uint32(id[44:]))<<32,
		UID:    ne.Uint32(b[64:]),
		Inode:  ne.Uint32(b[68:]),
	}
	attrs := b[nlaAlign(inetDiagMsgLen):]
	for len(attrs) >= nlaHdrLen {
		l := int(ne.Uint16(attrs[0:]))
		typ := ne.Uint16(attrs[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < nlaHdrLen || l > len(attrs) {
			return diagSocket{}, fmt.Errorf("sock_diag: bad attribute length %d", l)
		}
		if typ == inetDiagCgroupID {
			if l-nlaHdrLen != 8 {
				return diagSocket{}, fmt.Errorf("sock_diag: cgroup id attribute of %d bytes", l-nlaHdrLen)
			}
			ds.CgroupID = ne.Uint64(attrs[nlaHdrLen:])
		}
		next := nlaAlign(l)
		if next > len(attrs) {
			break
		}
		attrs = attrs[next:]
	}
	return ds, nil
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func nlaAlign(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

// findCgroupDir returns the directory of the cgroup with the given id at or below root, or "".
func findCgroupDir(root string, id uint64) string {
	var found string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			return nil
		}
		if ino, err := CgroupID(p); err == nil && ino == id {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// socketOwner returns a process that holds the socket with the given inode, looking first at the
// processes of cgroup dir and then at every process below root (a socket can be passed on or
// its creator moved). It returns 0 when no process holds it any more.
func socketOwner(dir, root string, inode uint32) int {
	want := "socket:[" + strconv.FormatUint(uint64(inode), 10) + "]"
	seen := map[int]bool{}
	try := func(d string) int {
		pids, err := readProcs(d)
		if err != nil {
			return 0
		}
		for _, pid := range pids {
			if seen[pid] {
				continue
			}
			seen[pid] = true
			if procHoldsFD(pid, want) {
				return pid
			}
		}
		return 0
	}
	if dir != "" {
		if pid := try(dir); pid != 0 {
			return pid
		}
	}
	var pid int
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return filepath.SkipDir
		}
		if d.IsDir() && p != dir {
			if pid = try(p); pid != 0 {
				return filepath.SkipAll
			}
		}
		return nil
	})
	return pid
}

func procHoldsFD(pid int, target string) bool {
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if l, err := os.Readlink(fdDir + "/" + e.Name()); err == nil && l == target {
			return true
		}
	}
	return false
}

// procIdentity reads a process's command name and real gid from /proc.
func procIdentity(pid int) (comm string, gid uint32) {
	base := "/proc/" + strconv.Itoa(pid)
	if b, err := os.ReadFile(base + "/comm"); err == nil {
		comm = strings.TrimRight(string(b), "\n")
	}
	if b, err := os.ReadFile(base + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Gid:" {
				if v, err := strconv.ParseUint(f[1], 10, 32); err == nil {
					gid = uint32(v)
				}
				break
			}
		}
	}
	return comm, gid
}
