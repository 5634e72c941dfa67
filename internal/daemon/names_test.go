package daemon

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/enforcer-dev/enforcer/internal/lab"
)

const rootedLookupChild = "ENFORCER_ROOTED_LOOKUP_CHILD"

// TestSNILookupIsRooted (from a review, 2026-12-07): a target matched by SNI alone dials the
// addresses of the name the ClientHello gave, and Go's resolver applies resolv.conf's search list
// and ndots to an unrooted name: a label the agent made up under *.llm.test was looked up again
// as "<name>.<search domain>", a name of another zone (an internal wildcard, a cluster's svc
// zone). Must hold: the daemon resolves exactly the name it matched, so evil.llm.test, which
// does not exist, is refused, not sent to 10.9.9.9, the address of evil.llm.test.corp.example.
//
// Runs itself in a private mount namespace with its own /etc/resolv.conf (search corp.example).
func TestSNILookupIsRooted(t *testing.T) {
	if os.Getenv(rootedLookupChild) == "" {
		dir := t.TempDir()
		conf := filepath.Join(dir, "resolv.conf")
		os.WriteFile(conf, []byte("nameserver 127.0.0.77\nsearch corp.example\noptions ndots:1 attempts:1 timeout:1\n"), 0o644)
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
			`mount --bind "$1" /etc/resolv.conf && exec "$2" -test.run '^TestSNILookupIsRooted$' -test.v -test.count=1`,
			"sh", conf, os.Args[0])
		cmd.Env = append(os.Environ(), rootedLookupChild+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("child:\n%s", out)
		if err != nil {
			t.Fatalf("child failed: %v", err)
		}
		return
	}
	pc, err := net.ListenPacket("udp", "127.0.0.77:53")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go lab.ServeDNS(pc, map[string][]netip.Addr{
		"api.llm.test":               {netip.MustParseAddr("198.18.0.2")},
		"evil.llm.test.corp.example": {netip.MustParseAddr("10.9.9.9")},
	})
	n := &names{servers: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.77")} }}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if a, err := n.lookup(ctx, "api.llm.test"); err != nil || len(a) != 1 {
		t.Fatalf("api.llm.test: %v %v", a, err)
	}
	if a, err := n.lookup(ctx, "evil.llm.test"); err == nil {
		t.Errorf("SNI evil.llm.test (no such name) resolved to %v: the daemon would dial the address of evil.llm.test.corp.example, a name of another zone", a)
	}
}
