package redirect

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// ownCgroupID is the cgroup v2 id of the test process.
func ownCgroupID(t *testing.T) uint64 {
	t.Helper()
	id, err := CgroupID(ownCgroupDir(t))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ownCgroupDir is the cgroup v2 directory of the test process.
func ownCgroupDir(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	mnt, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mnt, p)
		}
	}
	t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return ""
}

func TestTCPSocketDiagFindsSocket(t *testing.T) {
	want := ownCgroupID(t)
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local := c.LocalAddr().(*net.TCPAddr).AddrPort()
			remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			ds, err := tcpSocketDiag(local, remote)
			if err != nil {
				t.Fatal(err)
			}
			if ds.CgroupID != want {
				t.Errorf("cgroup id %d, want %d", ds.CgroupID, want)
			}
			if ds.UID != uint32(os.Getuid()) {
				t.Errorf("uid %d, want %d", ds.UID, os.Getuid())
			}
			rc, _ := c.(*net.TCPConn).SyscallConn()
			var ino uint64
			var cookie uint64
			rc.Control(func(fd uintptr) {
				var st unix.Stat_t
				unix.Fstat(int(fd), &st)
				ino = st.Ino
				cookie, _ = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
			})
			if uint64(ds.Inode) != ino || ds.Cookie != cookie {
				t.Errorf("inode %d cookie %d, want %d %d", ds.Inode, ds.Cookie, ino, cookie)
			}
			dir := ownCgroupDir(t)
			if pid := socketOwner(dir, dir, ds.Inode); pid != os.Getpid() {
				t.Errorf("socket owner %d, want %d", pid, os.Getpid())
			}
			if comm, _ := procIdentity(os.Getpid()); comm == "" {
				t.Error("no comm for our own pid")
			}
			// The peer tuple reversed is the accepted socket, not ours; a tuple nobody has is absent.
			gone := netip.AddrPortFrom(local.Addr(), 1)
			if _, err := tcpSocketDiag(gone, remote); !errors.Is(err, errDiagNotFound) {
				t.Errorf("absent socket: want errDiagNotFound, got %v", err)
			}
		})
	}
}

func TestMarshalDiagRequest(t *testing.T) {
	cases := []struct {
		name   string
		local  string
		remote string
		family uint8
		err    bool
	}{
		{"ipv4", "198.18.1.1:40000", "198.18.1.2:7000", unix.AF_INET, false},
		{"ipv6", "[2001:2::1]:40000", "[2001:2::2]:7000", unix.AF_INET6, false},
		{"v4-mapped pair is asked as IPv4", "[::ffff:198.18.1.1]:40000", "[::ffff:198.18.1.2]:7000", unix.AF_INET, false},
		{"mixed families", "198.18.1.1:40000", "[2001:2::2]:7000", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := marshalDiagRequest(netip.MustParseAddrPort(tc.local), netip.MustParseAddrPort(tc.remote), 7)
			if tc.err {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != nlmsgHdrLen+inetDiagReqV2Len || binary.NativeEndian.Uint32(b) != uint32(len(b)) {
				t.Fatalf("length %d", len(b))
			}
			r := b[nlmsgHdrLen:]
			if r[0] != tc.family || r[1] != unix.IPPROTO_TCP {
				t.Errorf("family %d proto %d", r[0], r[1])
			}
			if sp, dp := binary.BigEndian.Uint16(r[8:]), binary.BigEndian.Uint16(r[10:]); sp != 40000 || dp != 7000 {
				t.Errorf("ports %d %d", sp, dp)
			}
			if tc.family == unix.AF_INET && (r[12] != 198 || r[15] != 1 || r[28] != 198 || r[31] != 2) {
				t.Errorf("addresses % x", r[12:44])
			}
		})
	}
}

// diagMsg builds a SOCK_DIAG_BY_FAMILY answer carrying the given attributes.
func diagMsg(seq uint32, attrs ...[]byte) []byte {
	ne := binary.NativeEndian
	body := make([]byte, inetDiagMsgLen)
	body[0], body[1] = unix.AF_INET, 1
	ne.PutUint32(body[4+40:], 0x11223344)
	ne.PutUint32(body[4+44:], 0x55667788)
	ne.PutUint32(body[64:], 1000)
	ne.PutUint32(body[68:], 4242)
	for _, a := range attrs {
		body = append(body, a...)
	}
	return nlmsg(unix.SOCK_DIAG_BY_FAMILY, seq, body)
}

func nlmsg(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body)+4)
	binary.NativeEndian.PutUint32(b[0:], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nla(typ uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data)+4)
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func errMsg(seq uint32, errno int32) []byte {
	body := make([]byte, 4+nlmsgHdrLen)
	binary.NativeEndian.PutUint32(body, uint32(-errno))
	return nlmsg(unix.NLMSG_ERROR, seq, body)
}

func TestParseDiagResponse(t *testing.T) {
	cg := nla(inetDiagCgroupID, binary.NativeEndian.AppendUint64(nil, 987654321))
	other := nla(2, []byte{1, 2, 3}) // INET_DIAG_INFO-like, unaligned payload
	cases := []struct {
		name    string
		in      []byte
		want    diagSocket
		done    bool
		errIs   error
		errText string
	}{
		{"cgroup attribute", diagMsg(1, other, cg), diagSocket{UID: 1000, Inode: 4242, Cookie: 0x5566778811223344, CgroupID: 987654321, State: 1}, true, nil, ""},
		{"no cgroup attribute", diagMsg(1, other), diagSocket{UID: 1000, Inode: 4242, Cookie: 0x5566778811223344, State: 1}, true, nil, ""},
		{"another sequence is skipped", diagMsg(9, cg), diagSocket{}, false, nil, ""},
		{"ENOENT", errMsg(1, int32(unix.ENOENT)), diagSocket{}, true, errDiagNotFound, ""},
		{"EPERM", errMsg(1, int32(unix.EPERM)), diagSocket{}, true, unix.EPERM, ""},
		{"ack then answer", append(errMsg(1, 0), diagMsg(1, cg)...), diagSocket{UID: 1000, Inode: 4242, Cookie: 0x5566778811223344, CgroupID: 987654321, State: 1}, true, nil, ""},
		{"done without answer", nlmsg(unix.NLMSG_DONE, 1, make([]byte, 4)), diagSocket{}, true, errDiagNotFound, ""},
		{"short inet_diag_msg", nlmsg(unix.SOCK_DIAG_BY_FAMILY, 1, make([]byte, 10)), diagSocket{}, true, nil, "inet_diag_msg of 10 bytes"},
		{"cgroup attribute of 4 bytes", diagMsg(1, nla(inetDiagCgroupID, []byte{1, 2, 3, 4})), diagSocket{}, true, nil, "cgroup id attribute of 4 bytes"},
		{"attribute longer than message", diagMsg(1, []byte{200, 0, 21, 0}), diagSocket{}, true, nil, "bad attribute length"},
		{"message longer than buffer", diagMsg(1, cg)[:40], diagSocket{}, true, nil, "bad message length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, done, err := parseDiagResponse(tc.in, 1)
			if done != tc.done {
				t.Errorf("done = %v, want %v", done, tc.done)
			}
			switch {
			case tc.errIs != nil:
				if !errors.Is(err, tc.errIs) {
					t.Fatalf("error %v, want %v", err, tc.errIs)
				}
			case tc.errText != "":
				if err == nil || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("error %v, want %q", err, tc.errText)
				}
			case err != nil:
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseDiagResponse(f *testing.F) {
	cg := nla(inetDiagCgroupID, binary.NativeEndian.AppendUint64(nil, 42))
	f.Add(diagMsg(1, cg))
	f.Add(append(errMsg(1, 0), diagMsg(1, nla(2, []byte{1}), cg)...))
	f.Add(errMsg(1, int32(unix.ENOENT)))
	f.Add(nlmsg(unix.NLMSG_DONE, 1, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, done, err := parseDiagResponse(b, 1)
		if err != nil && !done {
			t.Fatalf("error %v without done", err)
		}
		if err != nil && ds != (diagSocket{}) {
			t.Fatalf("error %v with a result %+v", err, ds)
		}
	})
}
