package redirect

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NFTConfig says what the nftables mode enforces.
//
// nftables sees packets, not system calls, so this mode gives fewer guarantees than the BPF mode:
//   - It cannot refuse bind(). An agent can bind the proxy port while the daemon is down, but the
//     ruleset drops every packet to or from such a socket, so it can capture nothing. Run the
//     proxy on a privileged port (below net.ipv4.ip_unprivileged_port_start) so that agents
//     without CAP_NET_BIND_SERVICE cannot bind it at all.
//   - It cannot refuse socket(): raw, ICMP, SCTP and UDP-Lite sockets can be created, but every
//     packet they send outside loopback is dropped (sendmsg fails with EPERM).
//   - UDP other than DNS to a named resolver is dropped, not refused at connect().
type NFTConfig struct {
	Subtree       *Subtree
	ProxyPort     uint16       // TCP from the subtree is redirected to this port on 127.0.0.1 / [::1]
	ReservedPorts []uint16     // other daemon ports agents may not serve on
	DNSResolvers  []netip.Addr // the only destinations (port 53) agents may reach directly
	TableName     string       // inet table holding the ruleset; default "enforcer"
	Logger        *slog.Logger
	// CheckInterval is how often the ruleset is verified besides the change monitor; default 1s.
	CheckInterval time.Duration

	noMonitor bool // tests: rely on the periodic check alone
	noOwner   bool // tests: behave as on kernels that cannot own tables
	netnsFD   int  // tests: the network namespace to install into (0: ours)
}

// NFT is the nftables redirector, for hosts without cgroup BPF.
type NFT struct {
	cfg      NFTConfig
	level    uint32 // depth of the subtree below the cgroup2 root
	cgroupID uint64 // id of the subtree root
	table    *nftables.Table

	mu       sync.Mutex // serialises check and apply
	want     []nftChain
	restores uint64
	owner    *netlink.Conn // netlink socket owning the table (nil: not owned)
	ownerOK  bool          // the kernel accepts owned, persistent tables

	dirs  sync.Map // cgroup id → directory below the subtree
	ndirs atomic.Int64

	mon    *nftables.Monitor // owned by the watch goroutine once it runs
	events chan *nftables.MonitorEvents

	stop chan struct{}
	done chan struct{}
}

// The chains of the ruleset. The NAT chain runs before Docker's and iptables-nft's (-100): the
// first NAT binding of a connection wins.
const (
	// Names avoid nft keywords ("redirect", "ingress"...) so they need no quoting on the command line.
	nftChainRedirect = "nat_output"    // nat, output: TCP of the subtree → proxy
	nftChainEgress   = "filter_output" // filter, output: jump to agent for the subtree's packets
	nftChainAgent    = "agent"         // regular: what an agent's packet may be
	nftChainIngress  = "filter_input"  // filter, input: nothing reaches an agent's socket on our ports
	nftNATPriority   = -110
	nftTablePrefix   = "enforcer"
	nftTableDormant  = 0x1 // NFT_TABLE_F_DORMANT: a dormant table's chains are unhooked
)

// nftChain is one chain as we want it: its definition and its rules, each tagged by a comment.
type nftChain struct {
	chain *nftables.Chain
	rules []nftRule
}

type nftRule struct {
	key     string // comment stored with the rule: "enforcer:<key> <config hash>"
	counter string // Status counter this rule's packets add to ("" for none)
	exprs   []expr.Any
}

// LoadNFT installs (or adopts, if an identical one is already there) the nftables ruleset for
// cfg.Subtree and keeps it in place: a monitor and a periodic check restore it within about a
// second if anyone deletes or changes it. The table outlives the daemon; only UninstallNFT
// removes it.
func LoadNFT(cfg NFTConfig) (*NFT, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TableName == "" {
		cfg.TableName = nftTablePrefix
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.Subtree == nil {
		return nil, errors.New("nftables: no enforcement subtree")
	}
	if cfg.ProxyPort == 0 {
		return nil, errors.New("nftables: proxy port is 0")
	}
	if len(cfg.TableName) > 255 || strings.ContainsAny(cfg.TableName, " \x00/") {
		return nil, fmt.Errorf("nftables: invalid table name %q", cfg.TableName)
	}
	for _, a := range cfg.DNSResolvers {
		if !a.IsValid() {
			return nil, errors.New("nftables: invalid DNS resolver address")
		}
	}
	level, err := cgroupLevel(cfg.Subtree.Path)
	if err != nil {
		return nil, err
	}
	id, err := cfg.Subtree.ID()
	if err != nil {
		return nil, err
	}
	n := &NFT{
		cfg:      cfg,
		level:    level,
		cgroupID: id,
		table:    &nftables.Table{Name: cfg.TableName, Family: nftables.TableFamilyINet},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		ownerOK:  true,
	}
	n.want = n.ruleset()
	n.mu.Lock()
	// An intact table is adopted as it is (counters kept), unless we can own it: taking ownership
	// means rebuilding it, in one atomic batch.
	if _, err := n.check(); err != nil || !cfg.noOwner {
		if err := n.apply(); err != nil {
			n.mu.Unlock()
			return nil, err
		}
		cfg.Logger.Info("nftables ruleset installed", "table", cfg.TableName, "cgroup", cfg.Subtree.Path, "level", level, "owned", n.owner != nil)
	} else {
		cfg.Logger.Info("nftables ruleset already in place", "table", cfg.TableName)
	}
	n.mu.Unlock()
	// Subscribe before returning, then check once more: a change made between the install and
	// the subscription is not lost.
	n.startMonitor()
	n.ensure()
	go n.watch()
	return n, nil
}

// cgroupLevel returns how deep path lies below the cgroup2 root: the level nft's socket
// cgroupv2 match takes its ancestor at.
func cgroupLevel(path string) (uint32, error) {
	mnt, err := Cgroup2Mount()
	if err != nil {
		return 0, err
	}
	rel, err := filepath.Rel(mnt, filepath.Clean(path))
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return 0, fmt.Errorf("nftables: subtree %s is not below the cgroup2 mount %s", path, mnt)
	}
	return uint32(len(strings.Split(rel, "/"))), nil
}

// configHash ties the rules to the configuration, so a restart with another port or other
// resolvers replaces them instead of adopting them.
func (n *NFT) configHash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%d/%d/%d/%v/", n.level, n.cgroupID, n.cfg.ProxyPort, n.cfg.ReservedPorts)
	for _, a := range n.cfg.DNSResolvers {
		h.Write([]byte(a.Unmap().String() + ","))
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// ruleset builds the table. In nft syntax (P the proxy port, L the subtree's level, CG its path):
//
//	chain agent {                                          # regular chain, reached only from filter_output
//		tcp sport P counter drop                           # agent serving on our port
//		ip daddr 127.0.0.1 tcp dport P accept              # redirected flow, after NAT
//		ip6 daddr ::1 tcp dport P accept
//		ip daddr 127.0.0.0/8 ct direction reply accept     # agent answering a local client
//		ip6 daddr ::1 ct direction reply accept
//		ip daddr R udp|tcp dport 53 counter accept         # per named resolver R
//		counter drop                                       # everything else
//	}
//	chain filter_output { type filter hook output priority 0; socket cgroupv2 level L CG jump agent }
//	chain filter_input  { type filter hook input priority 0; tcp dport P socket cgroupv2 level L CG counter drop }
//	chain nat_output    { type nat hook output priority -110; socket cgroupv2 level L CG meta l4proto tcp counter redirect to :P }
func (n *NFT) ruleset() []nftChain {
	t := n.table
	accept := nftables.ChainPolicyAccept
	redirect := &nftables.Chain{Name: nftChainRedirect, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(nftNATPriority), Policy: &accept}
	egress := &nftables.Chain{Name: nftChainEgress, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	agent := &nftables.Chain{Name: nftChainAgent, Table: t}
	ingress := &nftables.Chain{Name: nftChainIngress, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept}

	cg := n.cgroupMatch()
	ports := append([]uint16{n.cfg.ProxyPort}, n.cfg.ReservedPorts...)

	var agentRules []nftRule
	// An agent socket serving on one of our ports (bound while the daemon was down) sends nothing.
	for _, p := range ports {
		agentRules = append(agentRules, nftRule{key: fmt.Sprintf("serve-%d", p), counter: "denied_bind",
			exprs: cat(l4proto(unix.IPPROTO_TCP), thPort(0, p), counterDrop())})
	}
	// Redirected flows: after the NAT chain their destination is the proxy on loopback.
	agentRules = append(agentRules,
		nftRule{key: "to-proxy4", exprs: cat(nfproto(unix.NFPROTO_IPV4), l4proto(unix.IPPROTO_TCP),
			daddr(netip.MustParseAddr("127.0.0.1")), thPort(2, n.cfg.ProxyPort), verdict(expr.VerdictAccept))},
		nftRule{key: "to-proxy6", exprs: cat(nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_TCP),
			daddr(netip.IPv6Loopback()), thPort(2, n.cfg.ProxyPort), verdict(expr.VerdictAccept))},
		// An agent answering a connection that a local process outside the subtree opened to it.
		nftRule{key: "loopback-reply4", exprs: cat(nfproto(unix.NFPROTO_IPV4), daddrPrefix(netip.MustParsePrefix("127.0.0.0/8")),
			ctDirection(1), verdict(expr.VerdictAccept))},
		nftRule{key: "loopback-reply6", exprs: cat(nfproto(unix.NFPROTO_IPV6), daddr(netip.IPv6Loopback()),
			ctDirection(1), verdict(expr.VerdictAccept))},
	)
	for i, r := range n.cfg.DNSResolvers {
		r = r.Unmap()
		fam := byte(unix.NFPROTO_IPV4)
		if r.Is6() {
			fam = unix.NFPROTO_IPV6
		}
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			agentRules = append(agentRules, nftRule{key: fmt.Sprintf("dns-%d-%d", i, proto), counter: "dns_allowed",
				exprs: cat(nfproto(fam), l4proto(proto), daddr(r), thPort(2, 53), &expr.Counter{}, verdict(expr.VerdictAccept))})
		}
	}
	// Everything else: other UDP (QUIC), ICMP, raw, SCTP, any packet leaving loopback.
	agentRules = append(agentRules, nftRule{key: "drop", counter: "egress_dropped", exprs: counterDrop()})

	var ingressRules []nftRule
	for _, p := range ports {
		// A connection to our port must never land on a socket an agent bound there.
		ingressRules = append(ingressRules, nftRule{key: fmt.Sprintf("hijack-%d", p), counter: "denied_bind",
			exprs: cat(l4proto(unix.IPPROTO_TCP), thPort(2, p), cg, counterDrop())})
	}

	return []nftChain{
		{chain: agent, rules: agentRules},
		{chain: egress, rules: []nftRule{{key: "enforce", exprs: cat(cg, &expr.Verdict{Kind: expr.VerdictJump, Chain: nftChainAgent})}}},
		{chain: ingress, rules: ingressRules},
		{chain: redirect, rules: []nftRule{{key: "redirect-tcp", counter: "redirected", exprs: cat(cg, l4proto(unix.IPPROTO_TCP),
			&expr.Counter{},
			&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, n.cfg.ProxyPort)},
			&expr.Redir{RegisterProtoMin: 1})}}},
	}
}

// cgroupMatch matches sockets whose cgroup (v2) has the subtree root as its ancestor.
func (n *NFT) cgroupMatch() []expr.Any {
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: n.level, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint64(nil, n.cgroupID)},
	}
}

func cat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}

func nfproto(f byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f}}}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

// thPort matches the transport header's source (offset 0) or destination (offset 2) port.
func thPort(off uint32, p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, p)},
	}
}

// daddr matches the destination address; callers check nfproto first.
func daddr(a netip.Addr) []expr.Any {
	return daddrPrefix(netip.PrefixFrom(a, a.BitLen()))
}

func daddrPrefix(p netip.Prefix) []expr.Any {
	off, l := uint32(16), uint32(4)
	if p.Addr().Is6() {
		off, l = 24, 16
	}
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l}}
	if p.Bits() != p.Addr().BitLen() {
		mask := net.CIDRMask(p.Bits(), p.Addr().BitLen())
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: l, Mask: mask, Xor: make([]byte, l)})
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// ctDirection matches the conntrack direction (0 original, 1 reply).
func ctDirection(d byte) []expr.Any {
	return []expr.Any{&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{d}}}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func counterDrop() []expr.Any { return []expr.Any{&expr.Counter{}, verdict(expr.VerdictDrop)} }

func (n *NFT) comment(key string) string {
	return "enforcer:" + key + " " + n.configHash()
}

// apply replaces the table atomically: one netlink batch deletes it (if present) and builds it
// again, so packets see either the old ruleset or the new one, never none.
//
// Where the kernel allows (Linux 6.9+), the table is owned by the daemon's netlink socket and
// persistent (NFT_TABLE_F_OWNER|NFT_TABLE_F_PERSIST): while the daemon runs nobody else can
// change or delete it and `nft flush ruleset` skips it; when the socket closes (stop or crash) the
// table stays, orphaned, until the next daemon takes it over. Elsewhere the watcher restores it.
func (n *NFT) apply() error {
	if !n.cfg.noOwner && n.ownerOK {
		err := n.applyOwned()
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		n.ownerOK = false
		n.cfg.Logger.Warn("kernel cannot own nftables tables (needs Linux 6.9+); relying on the watcher to restore the ruleset", "err", err)
	}
	c, err := n.newConn()
	if err != nil {
		return err
	}
	c.AddTable(n.table)
	c.DelTable(n.table)
	c.AddTable(n.table)
	n.addContents(c)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: install table inet %s (kernel 5.13+ with nft_socket, nft_redir and inet NAT needed): %w", n.cfg.TableName, err)
	}
	return nil
}

func (n *NFT) addContents(c *nftables.Conn) {
	for _, ch := range n.want {
		c.AddChain(ch.chain)
	}
	for _, ch := range n.want {
		for _, r := range ch.rules {
			c.AddRule(&nftables.Rule{Table: n.table, Chain: ch.chain, Exprs: r.exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, n.comment(r.key))})
		}
	}
}

func (n *NFT) newConn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if n.cfg.netnsFD != 0 {
		opts = append(opts, nftables.WithNetNSFd(n.cfg.netnsFD))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// Table flags google/nftables v0.3.0 cannot set (it always sends 0); we patch them in.
const (
	nftTableOwner   = 0x2 // NFT_TABLE_F_OWNER, Linux 5.12+
	nftTablePersist = 0x4 // NFT_TABLE_F_PERSIST, Linux 6.9+: keep the table when the owner goes
)

// applyOwned builds the batch with google/nftables (captured, not sent), sets the owner and
// persist flags on the new table and sends the batch on the daemon's own netlink socket.
func (n *NFT) applyOwned() error {
	var batch []netlink.Message
	capture := func(req []netlink.Message) ([]netlink.Message, error) {
		batch = append(batch, req...)
		return nil, io.EOF // no replies: Flush returns at once
	}
	c, err := nftables.New(nftables.WithTestDial(capture))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	rc, err := n.newConn()
	if err != nil {
		return err
	}
	if _, err := rc.ListTableOfFamily(n.cfg.TableName, nftables.TableFamilyINet); err == nil {
		c.DelTable(n.table)
	}
	c.AddTable(n.table)
	n.addContents(c)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: marshal ruleset: %w", err)
	}
	newTable := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE)
	acks := 0
	for i := range batch {
		m := &batch[i]
		m.Header.Length, m.Header.Sequence, m.Header.PID = 0, 0, 0
		if m.Header.Type == newTable {
			if err := setTableFlags(m, nftTableOwner|nftTablePersist); err != nil {
				return err
			}
		}
		if m.Header.Flags&netlink.Acknowledge != 0 {
			acks++
		}
	}
	if n.owner == nil {
		cfg := &netlink.Config{NetNS: n.cfg.netnsFD}
		if n.owner, err = netlink.Dial(unix.NETLINK_NETFILTER, cfg); err != nil {
			return fmt.Errorf("nftables: open owner socket: %w", err)
		}
	}
	err = sendBatch(n.owner, batch, acks)
	if err != nil {
		// Replies of a failed batch may still be queued: start over on a fresh socket. The table,
		// if we owned it, stays (persistent) and the next attempt takes it over.
		n.owner.Close()
		n.owner = nil
		return fmt.Errorf("nftables: install owned table inet %s: %w", n.cfg.TableName, err)
	}
	return nil
}

func sendBatch(c *netlink.Conn, batch []netlink.Message, acks int) error {
	if _, err := c.SendMessages(batch); err != nil {
		return err
	}
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	for acks > 0 {
		msgs, err := c.Receive()
		if err != nil {
			return err
		}
		acks -= len(msgs)
	}
	return nil
}

// setTableFlags rewrites NFTA_TABLE_FLAGS in a NEWTABLE message (after the 4-byte nfgenmsg).
func setTableFlags(m *netlink.Message, flags uint32) error {
	if len(m.Data) < 4 {
		return errors.New("nftables: short NEWTABLE message")
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return fmt.Errorf("nftables: decode NEWTABLE: %w", err)
	}
	var attrs []netlink.Attribute
	found := false
	for ad.Next() {
		a := netlink.Attribute{Type: ad.Type(), Data: ad.Bytes()}
		if a.Type == unix.NFTA_TABLE_FLAGS {
			a.Data = binary.BigEndian.AppendUint32(nil, flags)
			found = true
		}
		attrs = append(attrs, a)
	}
	if err := ad.Err(); err != nil {
		return fmt.Errorf("nftables: decode NEWTABLE: %w", err)
	}
	if !found {
		attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, flags)})
	}
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	m.Data = append(m.Data[:4:4], b...)
	return nil
}

// check compares the kernel's table with the wanted ruleset. It returns the rules found per
// chain, and an error naming the first difference.
func (n *NFT) check() (map[string][]*nftables.Rule, error) {
	c, err := n.newConn()
	if err != nil {
		return nil, err
	}
	t, err := c.ListTableOfFamily(n.cfg.TableName, nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("table inet %s missing: %w", n.cfg.TableName, err)
	}
	// google/nftables v0.3.0 decodes NFTA_TABLE_FLAGS (big endian) in host order; undo that.
	flags := binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, t.Flags))
	if flags&nftTableDormant != 0 {
		return nil, fmt.Errorf("table inet %s is dormant", n.cfg.TableName)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == n.cfg.TableName {
			have[ch.Name] = ch
		}
	}
	if len(have) != len(n.want) {
		return nil, fmt.Errorf("table inet %s has %d chains, want %d", n.cfg.TableName, len(have), len(n.want))
	}
	found := map[string][]*nftables.Rule{}
	for _, w := range n.want {
		ch, ok := have[w.chain.Name]
		if !ok {
			return nil, fmt.Errorf("chain %s missing", w.chain.Name)
		}
		if !sameHook(ch, w.chain) {
			return nil, fmt.Errorf("chain %s has another type, hook or priority", w.chain.Name)
		}
		rules, err := c.GetRules(n.table, w.chain)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", w.chain.Name, err)
		}
		if len(rules) != len(w.rules) {
			return nil, fmt.Errorf("chain %s has %d rules, want %d", w.chain.Name, len(rules), len(w.rules))
		}
		for i, r := range rules {
			got, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if want := n.comment(w.rules[i].key); got != want {
				return nil, fmt.Errorf("chain %s rule %d is %q, want %q", w.chain.Name, i, got, want)
			}
		}
		found[w.chain.Name] = rules
	}
	return found, nil
}

func sameHook(a, b *nftables.Chain) bool {
	if (a.Hooknum == nil) != (b.Hooknum == nil) {
		return false
	}
	if b.Hooknum == nil {
		return true
	}
	return *a.Hooknum == *b.Hooknum && a.Priority != nil && *a.Priority == *b.Priority && a.Type == b.Type
}

// ensure restores the ruleset if it differs from what we want.
func (n *NFT) ensure() {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, err := n.check()
	if err == nil {
		return
	}
	n.cfg.Logger.Warn("nftables ruleset changed by someone else; restoring", "table", n.cfg.TableName, "reason", err.Error())
	if err := n.apply(); err != nil {
		n.cfg.Logger.Error("restore nftables ruleset", "table", n.cfg.TableName, "err", err)
		return
	}
	n.restores++
}

// watch re-checks the ruleset on every nftables change the kernel announces, and periodically in
// case announcements are lost (the monitor socket can overflow).
func (n *NFT) watch() {
	defer close(n.done)
	defer n.stopMonitor()
	tick := time.NewTicker(n.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case _, ok := <-n.events:
			if !ok {
				// The monitor died (its socket overflowed): subscribe again at once; changes made
				// meanwhile are caught by the check that follows.
				n.stopMonitor()
				n.startMonitor()
			}
			n.ensure()
		case <-tick.C:
			if n.mon == nil {
				n.startMonitor()
			}
			n.ensure()
		}
	}
}

// startMonitor subscribes to nftables change announcements. Only LoadNFT (before watch starts)
// and watch call it.
func (n *NFT) startMonitor() {
	if n.cfg.noMonitor {
		return
	}
	c, err := n.newConn()
	if err != nil {
		return
	}
	m := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
	ch, err := c.AddGenerationalMonitor(m)
	if err != nil {
		n.cfg.Logger.Warn("nftables monitor unavailable; checking periodically", "err", err)
		return
	}
	n.mon, n.events = m, ch
}

func (n *NFT) stopMonitor() {
	if n.mon == nil {
		return
	}
	n.mon.Close()
	// The monitor goroutine may be blocked sending; drain until it closes the channel.
	go func(ch chan *nftables.MonitorEvents) {
		for range ch {
		}
	}(n.events)
	n.mon, n.events = nil, nil
}

// Mode implements Redirector.
func (n *NFT) Mode() string { return "nftables" }

// Origin implements Redirector. The destination comes from conntrack (SO_ORIGINAL_DST); the
// client socket, found by sock_diag with its original 4-tuple, gives cgroup, uid and inode; the
// pid is a process of that cgroup holding the socket. A client socket outside the subtree has
// no origin.
func (n *NFT) Origin(conn *net.TCPConn) (Origin, error) {
	client := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	dst, err := originalDst(conn, client.Addr().Is4())
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Origin{}, ErrNoOrigin
		}
		return Origin{}, err
	}
	ds, err := tcpSocketDiag(client, dst)
	if errors.Is(err, errDiagNotFound) {
		// The client socket is gone (or lives in another network namespace): nothing to attribute.
		return Origin{}, ErrNoOrigin
	}
	if err != nil {
		return Origin{}, fmt.Errorf("origin of %v: %w", client, err)
	}
	if ds.CgroupID == 0 {
		return Origin{}, fmt.Errorf("%w: the kernel did not report the client socket's cgroup (INET_DIAG_CGROUP_ID needs Linux 5.7+)", ErrNoOrigin)
	}
	dir := n.cgroupDir(ds.CgroupID)
	if dir == "" {
		return Origin{}, ErrNoOrigin
	}
	o := Origin{Dst: dst, Proto: "tcp", UID: ds.UID, CgroupID: ds.CgroupID, Cookie: ds.Cookie}
	if pid := socketOwner(dir, n.cfg.Subtree.Path, ds.Inode); pid != 0 {
		o.PID = uint32(pid)
		o.Comm, o.GID = procIdentity(pid)
	}
	return o, nil
}

// cgroupDir finds the directory of cgroup id below the subtree, remembering where it was: a
// cached path is trusted only while its inode is still that id.
func (n *NFT) cgroupDir(id uint64) string {
	if v, ok := n.dirs.Load(id); ok {
		if got, err := CgroupID(v.(string)); err == nil && got == id {
			return v.(string)
		}
		n.dirs.Delete(id)
	}
	dir := findCgroupDir(n.cfg.Subtree.Path, id)
	if dir != "" {
		// Ids are never reused, so entries of removed cgroups only go stale: forget them all now
		// and then rather than tracking removals.
		if n.ndirs.Add(1) > 4096 {
			n.dirs.Clear()
			n.ndirs.Store(1)
		}
		n.dirs.Store(id, dir)
	}
	return dir
}

// originalDst reads the destination the client dialled before REDIRECT rewrote it.
func originalDst(conn *net.TCPConn, v4 bool) (netip.AddrPort, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var ap netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v4 {
			var sa unix.RawSockaddrInet4
			l := uint32(unsafe.Sizeof(sa))
			if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST,
				uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
				serr = e
				return
			}
			port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
			ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
			return
		}
		var sa unix.RawSockaddrInet6
		l := uint32(unsafe.Sizeof(sa))
		if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IPV6, ip6tSOOriginalDst,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
			serr = e
			return
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination (SO_ORIGINAL_DST): %w", serr)
	}
	return ap, nil
}

// Status implements Redirector: one entry per chain of the table with the number of our rules
// found in it, and the rule counters.
func (n *NFT) Status() (Status, error) {
	st := Status{Mode: "nftables", Cgroup: n.cfg.Subtree.Path, Counters: map[string]uint64{}}
	n.mu.Lock()
	found, checkErr := n.check()
	restores := n.restores
	owned := n.owner != nil
	n.mu.Unlock()
	st.Counters["restored"] = restores
	st.Counters["table_owned"] = 0
	if owned {
		st.Counters["table_owned"] = 1
	}
	for _, w := range n.want {
		for _, r := range w.rules {
			if r.counter != "" {
				st.Counters[r.counter] = 0 // reported even while the table is being restored
			}
		}
	}
	for _, w := range n.want {
		ap := AttachedProgram{Attach: w.chain.Name, Name: n.cfg.TableName + "/" + w.chain.Name}
		rules := found[w.chain.Name]
		ap.Count = len(rules)
		for i, r := range rules {
			if name := w.rules[i].counter; name != "" {
				for _, e := range r.Exprs {
					if c, ok := e.(*expr.Counter); ok {
						st.Counters[name] += c.Packets
					}
				}
			}
		}
		st.Programs = append(st.Programs, ap)
	}
	if checkErr != nil {
		return st, fmt.Errorf("nftables ruleset not intact (restoring): %w", checkErr)
	}
	return st, nil
}

// SetResolvers replaces the DNS servers agents may reach and re-installs the ruleset.
func (n *NFT) SetResolvers(addrs []netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cfg.DNSResolvers = append([]netip.Addr(nil), addrs...)
	n.want = n.ruleset()
	return n.apply()
}

// Close stops watching the ruleset and gives up ownership of the table. The table stays:
// agents remain enforced (fail closed).
func (n *NFT) Close() error {
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	<-n.done
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.owner != nil {
		// The table is persistent: closing its owner leaves it enforcing, orphaned.
		err := n.owner.Close()
		n.owner = nil
		if err != nil {
			return fmt.Errorf("nftables: close owner socket: %w", err)
		}
	}
	return nil
}

// UninstallNFT deletes the inet table tableName ("" means the default). Callers Close every NFT
// using it first (an owned table refuses with EPERM; an unowned one would be restored) and kill
// the enforced processes.
func UninstallNFT(tableName string) error {
	if tableName == "" {
		tableName = nftTablePrefix
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: tableName, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete table inet %s: %w", tableName, err)
	}
	return nil
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h (not in x/sys).
const ip6tSOOriginalDst = 80
