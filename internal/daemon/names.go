package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// nameTTL is how long a looked-up name's addresses are used: short, since the Go resolver does not
// tell a record's own TTL, and long enough that a client's burst of connections costs one lookup.
const nameTTL = 30 * time.Second

// names resolves the host names ClientHellos give, for targets matched by SNI alone, through the
// policy's DNS servers (the ones enforced processes may query, so the daemon and the agent see
// the same answers), or the host's resolver when the policy names none.
type names struct {
	servers func() []netip.Addr

	mu    sync.Mutex
	cache map[string]namedAddrs
}

type namedAddrs struct {
	addrs   []netip.Addr
	expires time.Time
}

// lookup resolves host exactly: rooted, so that the resolver's search list (resolv.conf's search
// and ndots) never turns a name the policy matched into one of another zone.
func (n *names) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	fqdn := strings.ToLower(strings.TrimSuffix(host, ".")) + "."
	servers := n.servers()
	key := fmt.Sprint(servers, " ", fqdn) // answers of other servers (before a reload) are not reused
	now := time.Now()
	n.mu.Lock()
	if c, ok := n.cache[key]; ok && now.Before(c.expires) {
		n.mu.Unlock()
		return c.addrs, nil
	}
	n.mu.Unlock()
	addrs, err := resolverOf(servers).LookupNetIP(ctx, "ip", fqdn)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cache == nil || len(n.cache) >= 4096 {
		n.cache = map[string]namedAddrs{} // many distinct names: start over rather than grow
	}
	n.cache[key] = namedAddrs{addrs: addrs, expires: now.Add(nameTTL)}
	return addrs, nil
}

func resolverOf(servers []netip.Addr) *net.Resolver {
	if len(servers) == 0 {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		var err error
		for _, s := range servers {
			var c net.Conn
			if c, err = d.DialContext(ctx, network, netip.AddrPortFrom(s, 53).String()); err == nil {
				return c, nil
			}
		}
		return nil, err
	}}
}
