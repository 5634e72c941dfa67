package lab

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestNetnsReachableFromHost(t *testing.T) {
	n, err := NewNetns("enf-labtest")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A one-shot listener inside the namespace; the host must reach it at PeerAddr on v4 and v6.
	for _, addr := range []string{net.JoinHostPort(n.PeerAddr.String(), "7001"), net.JoinHostPort(n.PeerAddr6.String(), "7001")} {
		srv := n.Command(ctx, "python3", "-c", `import socket,sys
s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7001)); s.listen(1); print('ready', flush=True); c,_=s.accept(); c.sendall(b'hello'); c.close()`, addrHost(addr))
		out, _ := srv.StdoutPipe()
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("server did not start: %v", err)
		}
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		got := make([]byte, 5)
		if _, err := c.Read(got); err != nil || string(got) != "hello" {
			t.Fatalf("read from %s: %q %v", addr, got, err)
		}
		c.Close()
		srv.Wait()
	}
}

func addrHost(hostport string) string {
	h, _, _ := net.SplitHostPort(hostport)
	return h
}
