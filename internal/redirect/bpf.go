package redirect

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// BPFConfig says where the BPF mode lives.
type BPFConfig struct {
	Subtree       *Subtree
	PinDir        string       // on a bpffs, e.g. /sys/fs/bpf/enforcer
	ProxyPort     uint16       // the port connect4/6 redirect to on 127.0.0.1 and [::1]
	ReservedPorts []uint16     // other daemon ports agents may not bind (at most 4)
	DNSResolvers  []netip.Addr // the only UDP destinations (port 53) agents may use
	Logger        *slog.Logger
}

// BPF is the cgroup-BPF redirector.
type BPF struct {
	cfg   BPFConfig
	objs  enforcerObjects
	links map[string]link.Link
	// mu keeps Close from releasing descriptors that Origin, Status or SetResolvers use: at
	// shutdown, control requests and accepted connections may still be in flight.
	mu     sync.RWMutex
	closed bool
}

// errBPFClosed is returned by a BPF's methods after Close.
var errBPFClosed = errors.New("redirect: the BPF redirector is closed")

type attachment struct {
	name string
	typ  ebpf.AttachType
	prog func(*enforcerObjects) *ebpf.Program
}

var attachments = []attachment{
	// Backstop and socket-type checks first, so there is never a moment with redirect but no deny.
	{"egress", ebpf.AttachCGroupInetEgress, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerEgress }},
	{"sock_create", ebpf.AttachCGroupInetSockCreate, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerSockCreate }},
	{"bind4", ebpf.AttachCGroupInet4Bind, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerBind4 }},
	{"bind6", ebpf.AttachCGroupInet6Bind, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerBind6 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerSendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerSendmsg6 }},
	{"sockops", ebpf.AttachCGroupSockOps, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerSockops }},
	{"connect4", ebpf.AttachCGroupInet4Connect, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(o *enforcerObjects) *ebpf.Program { return o.EnforcerConnect6 }},
}

var counterNames = []string{
	"redirected", "dns_allowed", "denied_udp", "denied_socket", "denied_bind", "denied_netns",
	"denied_no_storage", "egress_dropped", "origins_published",
}

// LoadBPF loads the programs, pins maps and links under cfg.PinDir and attaches them at the
// subtree root. If links are already pinned (a restart or an upgrade), it swaps the new programs
// into them atomically, so enforcement never lapses and nothing is attached twice.
func LoadBPF(cfg BPFConfig) (*BPF, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.ReservedPorts) > 4 {
		return nil, fmt.Errorf("at most 4 reserved ports, got %d", len(cfg.ReservedPorts))
	}
	if err := ensureBPFFS(cfg.PinDir); err != nil {
		return nil, err
	}
	mapDir := filepath.Join(cfg.PinDir, "maps")
	linkDir := filepath.Join(cfg.PinDir, "links")
	for _, d := range []string{cfg.PinDir, mapDir, linkDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create pin dir %s: %w", d, err)
		}
	}
	spec, err := loadEnforcer()
	if err != nil {
		return nil, fmt.Errorf("load BPF spec: %w", err)
	}
	b := &BPF{cfg: cfg, links: map[string]link.Link{}}
	if err := spec.LoadAndAssign(&b.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapDir}}); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load BPF programs: %+v", ve)
		}
		return nil, fmt.Errorf("load BPF programs (pinned maps in %s from an incompatible version? run `enforcer uninstall`): %w", mapDir, err)
	}
	if err := b.writeConfig(); err != nil {
		b.objs.Close()
		return nil, err
	}
	if err := b.dropOrigins(); err != nil {
		b.objs.Close()
		return nil, err
	}
	cg, err := os.Open(cfg.Subtree.Path)
	if err != nil {
		b.objs.Close()
		return nil, fmt.Errorf("open cgroup %s: %w", cfg.Subtree.Path, err)
	}
	defer cg.Close()
	for _, a := range attachments {
		l, err := attachOrUpdate(cg, filepath.Join(linkDir, a.name), a.typ, a.prog(&b.objs))
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("attach %s to %s: %w", a.name, cfg.Subtree.Path, err)
		}
		b.links[a.name] = l
	}
	return b, nil
}

func attachOrUpdate(cg *os.File, pin string, typ ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, err := l.Info()
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("inspect pinned link %s: %w", pin, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(cg.Fd()), &st); err != nil {
			l.Close()
			return nil, err
		}
		if c := info.Cgroup(); c == nil || c.CgroupId != st.Ino {
			l.Close()
			return nil, fmt.Errorf("pinned link %s belongs to another cgroup; run `enforcer uninstall` first", pin)
		}
		if err := l.Update(prog); err != nil {
			l.Close()
			return nil, fmt.Errorf("update pinned link %s: %w", pin, err)
		}
		return l, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg.Name(), Attach: typ, Program: prog})
	if err != nil {
		return nil, err
	}
	// A legacy (non-link) attachment cannot be pinned and detaches on close: that would fail open.
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin link (kernel without BPF links?): %w", err)
	}
	return l, nil
}

func (b *BPF) writeConfig() error {
	cookie, err := hostNetnsCookie()
	if err != nil {
		return err
	}
	c := enforcerConfig{HostNetnsCookie: cookie, ProxyPort: b.cfg.ProxyPort}
	copy(c.ReservedPorts[:], b.cfg.ReservedPorts)
	if err := b.objs.EnfConfig.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write BPF config: %w", err)
	}
	return b.SetResolvers(b.cfg.DNSResolvers)
}

// dropOrigins deletes every origin record, at load time: records left in the pinned map belong to
// connections a previous daemon's listeners took with them when it stopped, so nothing will
// accept them, and a record outliving its connection would identify the next one on the same
// 4-tuple, perhaps a process outside the enforced cgroups. Programs before the close callback
// (see withdraw_origin in bpf/enforcer.c) left such records behind.
func (b *BPF) dropOrigins() error {
	var keys []enforcerTuple
	var k enforcerTuple
	var v enforcerOrigin
	it := b.objs.EnfOrigins.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read origin records left by a previous daemon: %w", err)
	}
	for _, k := range keys {
		if err := b.objs.EnfOrigins.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete origin record left by a previous daemon: %w", err)
		}
	}
	return nil
}

// SetResolvers replaces the set of DNS servers agents may query.
func (b *BPF) SetResolvers(addrs []netip.Addr) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return errBPFClosed
	}
	want := map[enforcerDnsKey]bool{}
	for _, a := range addrs {
		want[enforcerDnsKey{Addr: key16(a)}] = true
	}
	var k enforcerDnsKey
	var v uint8
	var stale []enforcerDnsKey
	it := b.objs.EnfResolvers.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		b.objs.EnfResolvers.Delete(&k)
	}
	for k := range want {
		if err := b.objs.EnfResolvers.Put(&k, uint8(1)); err != nil {
			return fmt.Errorf("write DNS resolvers: %w", err)
		}
	}
	return nil
}

// hostNetnsCookie is the cookie of the daemon's network namespace; agents' sockets must be in it.
func hostNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	defer unix.Close(fd)
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	return v, nil
}

// Mode implements Redirector.
func (b *BPF) Mode() string { return "bpf" }

// Origin implements Redirector: it looks up and deletes the record sockops published for the
// connection's 4-tuple.
func (b *BPF) Origin(conn *net.TCPConn) (Origin, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return Origin{}, errBPFClosed
	}
	remote := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	key := enforcerTuple{
		Client:     key16(remote.Addr().Unmap()),
		Proxy:      key16(local.Addr().Unmap()),
		ClientPort: remote.Port(),
		ProxyPort:  local.Port(),
	}
	var o enforcerOrigin
	var err error
	// The entry is written before the client's final ACK, so it precedes accept(); retry briefly
	// anyway in case the kernel ever reorders this.
	for i := 0; i < 3; i++ {
		if err = b.objs.EnfOrigins.LookupAndDelete(&key, &o); err == nil {
			return decodeOrigin(&o), nil
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return Origin{}, fmt.Errorf("origin lookup: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
	return Origin{}, ErrNoOrigin
}

func decodeOrigin(o *enforcerOrigin) Origin {
	comm := make([]byte, 0, len(o.Comm))
	for _, c := range o.Comm {
		if c == 0 {
			break
		}
		comm = append(comm, byte(c))
	}
	return Origin{
		Dst:      netip.AddrPortFrom(netip.AddrFrom16(o.Addr).Unmap(), o.Port),
		Proto:    "tcp",
		PID:      o.Tgid,
		UID:      o.Uid,
		GID:      o.Gid,
		Comm:     string(comm),
		CgroupID: o.CgroupId,
		Cookie:   o.Cookie,
	}
}

// Status implements Redirector.
func (b *BPF) Status() (Status, error) {
	st := Status{Mode: "bpf", Cgroup: b.cfg.Subtree.Path, PinDir: b.cfg.PinDir, Counters: map[string]uint64{}}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return st, errBPFClosed
	}
	cg, err := os.Open(b.cfg.Subtree.Path)
	if err != nil {
		return st, fmt.Errorf("open cgroup: %w", err)
	}
	defer cg.Close()
	for _, a := range attachments {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: a.typ})
		if err != nil {
			return st, fmt.Errorf("query %s: %w", a.name, err)
		}
		ap := AttachedProgram{Attach: a.name, Count: len(q.Programs)}
		if info, err := a.prog(&b.objs).Info(); err == nil {
			ap.Name = info.Name
			if id, ok := info.ID(); ok {
				ap.ID = uint32(id)
			}
		}
		st.Programs = append(st.Programs, ap)
	}
	for i, name := range counterNames {
		var per []uint64
		if err := b.objs.EnfCounters.Lookup(uint32(i), &per); err != nil {
			return st, fmt.Errorf("read counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		st.Counters[name] = sum
	}
	return st, nil
}

// Close releases file descriptors. The pins keep every program attached.
func (b *BPF) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for _, l := range b.links {
		l.Close()
	}
	return b.objs.Close()
}

// UninstallBPF detaches and unpins everything under pinDir. Callers kill the enforced processes
// first: after this they would reach the network unchecked.
func UninstallBPF(pinDir string) error {
	var errs []error
	linkDir := filepath.Join(pinDir, "links")
	ents, _ := os.ReadDir(linkDir)
	for _, e := range ents {
		p := filepath.Join(linkDir, e.Name())
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", p, err))
			os.Remove(p)
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		}
		l.Close()
	}
	mapDir := filepath.Join(pinDir, "maps")
	ents, _ = os.ReadDir(mapDir)
	for _, e := range ents {
		if err := os.Remove(filepath.Join(mapDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{linkDir, mapDir, pinDir} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ensureBPFFS mounts a bpffs at /sys/fs/bpf when the pin dir is below it and nothing is mounted.
func ensureBPFFS(pinDir string) error {
	parent := filepath.Dir(pinDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(parent, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", parent, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if !strings.HasPrefix(pinDir, "/sys/fs/bpf/") {
		return fmt.Errorf("pin dir %s is not on a bpffs; use a path under /sys/fs/bpf", pinDir)
	}
	if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at /sys/fs/bpf: %w", err)
	}
	return nil
}
