// Package lab builds throwaway network namespaces that stand in for remote hosts in tests and in the
// lab demo. Every namespace gets addresses from the benchmarking ranges 198.18.0.0/15 and
// 2001:2::/48 (RFC 2544, RFC 5180), so nothing a test does can reach a real network.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Netns is a network namespace joined to the host by a veth pair.
// The host side of the pair holds HostAddr/HostAddr6, the namespace side PeerAddr/PeerAddr6;
// a service started with Command inside the namespace is reached from the host at PeerAddr.
type Netns struct {
	Name      string
	Index     int
	HostAddr  netip.Addr
	PeerAddr  netip.Addr
	HostAddr6 netip.Addr
	PeerAddr6 netip.Addr
	hostLink  string
}

const lockPath = "/run/enforcer-lab.lock"

// NewNetns creates a namespace named prefix-N for the first free N in 1..250, under a host-wide lock
// so parallel test binaries never pick the same addresses.
func NewNetns(prefix string) (*Netns, error) {
	unlock, err := lockLab()
	if err != nil {
		return nil, err
	}
	defer unlock()

	used := usedIndexes()
	for i := 1; i <= 250; i++ {
		if used[i] {
			continue
		}
		n := &Netns{
			Name:      fmt.Sprintf("%s-%d", prefix, i),
			Index:     i,
			HostAddr:  netip.AddrFrom4([4]byte{198, 18, byte(i), 1}),
			PeerAddr:  netip.AddrFrom4([4]byte{198, 18, byte(i), 2}),
			HostAddr6: netip.MustParseAddr(fmt.Sprintf("2001:2:0:%x::1", i)),
			PeerAddr6: netip.MustParseAddr(fmt.Sprintf("2001:2:0:%x::2", i)),
			hostLink:  fmt.Sprintf("enlab%dh", i),
		}
		if err := n.create(); err != nil {
			return nil, err
		}
		return n, nil
	}
	return nil, errors.New("lab: no free namespace index (250 in use); run `ip -o link | grep enlab` and `ip netns list`, and delete stale ones")
}

// lockLab takes the host-wide lab lock, held while indexes are chosen and while namespaces are
// created or deleted, so no process sees an index as free while another is half-way through it.
func lockLab() (unlock func(), err error) {
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lab lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("lock lab: %w", err)
	}
	return func() {
		syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	}, nil
}

// usedIndexes reports the indexes held by a host veth end (enlabNh) or by a namespace named
// anything-N: a namespace can outlive its link (a killed test, another prefix), and its addresses
// or its name would then collide.
func usedIndexes() map[int]bool {
	used := map[int]bool{}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			var idx int
			if i := strings.Index(line, "enlab"); i >= 0 {
				if _, err := fmt.Sscanf(line[i:], "enlab%dh", &idx); err == nil {
					used[idx] = true
				}
			}
		}
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			name := e.Name()
			dash := strings.LastIndexByte(name, '-')
			if dash < 0 {
				continue
			}
			if idx, err := strconv.Atoi(name[dash+1:]); err == nil {
				used[idx] = true
			}
		}
	}
	return used
}

func (n *Netns) create() error {
	peer := fmt.Sprintf("enlab%dp", n.Index)
	steps := [][]string{
		{"netns", "add", n.Name},
		{"link", "add", n.hostLink, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", n.Name},
		{"addr", "add", n.HostAddr.String() + "/24", "dev", n.hostLink},
		{"-6", "addr", "add", n.HostAddr6.String() + "/64", "dev", n.hostLink, "nodad"},
		{"link", "set", n.hostLink, "up"},
		{"-n", n.Name, "addr", "add", n.PeerAddr.String() + "/24", "dev", peer},
		{"-n", n.Name, "-6", "addr", "add", n.PeerAddr6.String() + "/64", "dev", peer, "nodad"},
		{"-n", n.Name, "link", "set", peer, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", n.Name, "route", "add", "default", "via", n.HostAddr.String()},
	}
	for i, args := range steps {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			err = fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			if i > 0 { // the namespace is ours only once "netns add" succeeded
				err = errors.Join(err, n.remove())
			}
			return err
		}
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Close deletes the namespace and the host end of the veth pair (which takes the peer with it).
func (n *Netns) Close() error {
	unlock, err := lockLab()
	if err != nil {
		return err
	}
	defer unlock()
	return n.remove()
}

func (n *Netns) remove() error {
	var errs []error
	if out, err := exec.Command("ip", "link", "del", n.hostLink).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find") {
		errs = append(errs, fmt.Errorf("delete %s: %s", n.hostLink, strings.TrimSpace(string(out))))
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
		errs = append(errs, fmt.Errorf("delete netns %s: %s", n.Name, strings.TrimSpace(string(out))))
	}
	return errors.Join(errs...)
}
