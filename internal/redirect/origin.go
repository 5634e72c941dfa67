// Package redirect forces the sockets of enforced cgroups through the local proxy and tells the
// proxy where each accepted connection was really going and which process opened it.
//
// Two modes give the same guarantees where the kernel allows: cgroup BPF programs (the default)
// and an nftables ruleset for hosts without cgroup BPF. Neither knows any protocol.
package redirect

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// Origin describes an accepted proxy connection: its original destination and the process that
// called connect(). The cgroup id is authoritative; pid, uid and comm are advisory (pids recycle,
// sockets can be passed between processes).
type Origin struct {
	Dst      netip.AddrPort // original destination, v4 unmapped
	Proto    string         // "tcp"
	PID      uint32         // thread group id in the initial pid namespace
	UID      uint32
	GID      uint32
	Comm     string
	CgroupID uint64
	Cookie   uint64 // socket cookie of the agent's socket (0 when unknown)
}

// ErrNoOrigin means the accepted connection was not redirected by this enforcer: a local process
// outside the enforced cgroups dialled the proxy port directly. Such connections are refused.
var ErrNoOrigin = errors.New("no origin record: connection was not redirected from an enforced cgroup")

// Redirector is the kernel side as the proxy sees it.
type Redirector interface {
	// Mode names the mechanism: "bpf" or "nftables".
	Mode() string
	// Origin returns and consumes the origin of an accepted connection.
	Origin(conn *net.TCPConn) (Origin, error)
	// Status reports what is attached and the kernel-side counters.
	Status() (Status, error)
	// Close releases the daemon's handles. Enforcement stays in place (fail closed).
	Close() error
}

// Status is what `enforcer status` shows about the kernel side.
type Status struct {
	Mode     string            `json:"mode"`
	Cgroup   string            `json:"cgroup"`
	PinDir   string            `json:"pin_dir,omitempty"`
	Programs []AttachedProgram `json:"programs"`
	Counters map[string]uint64 `json:"counters"`
}

// AttachedProgram is one program (or nftables chain) in effect at the enforcement root.
type AttachedProgram struct {
	Attach string `json:"attach"`
	Name   string `json:"name"`
	ID     uint32 `json:"id,omitempty"`
	Count  int    `json:"count"` // programs of this attach type on the subtree root; must be 1
}

func sleepBriefly() { time.Sleep(5 * time.Millisecond) }

// key16 returns the 16-byte form of a, with IPv4 v4-mapped, the form the BPF maps use.
func key16(a netip.Addr) [16]byte {
	if a.Is4() {
		return netip.AddrFrom16(a.As16()).As16()
	}
	return a.As16()
}
