package lab

import (
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Listen opens a listener inside the namespace, for a service the host reaches at PeerAddr.
// The socket stays in the namespace after the calling thread switches back.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket (UDP) inside the namespace.
func (n *Netns) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

func (n *Netns) do(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// This thread is stuck in the wrong namespace; never unlock it so Go retires it.
		runtime.LockOSThread()
		return fmt.Errorf("leave netns %s: %w", n.Name, err)
	}
	return ferr
}
