package proxy

import (
	"context"
	"io"
	"net"
	"testing"
)

// TestClientCounts: a Conn reports the bytes its client socket moved, from the kernel's counters,
// and keeps them when it is closed, whichever of its closers runs first; Close ends the context
// its handler serves it with.
func TestClientCounts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{Client: sc.(*net.TCPConn)}
	ctx := c.serveContext(context.Background())
	served := c.ServeConn()
	if u, ok := served.(interface{ Underlying() *net.TCPConn }); !ok || u.Underlying() != c.Client {
		t.Fatal("ServeConn does not expose the TCP connection")
	}
	if _, err := client.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(served, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := served.Write(make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	if in, out := c.ClientCounts(); in != 1000 || out != 5000 {
		t.Fatalf("live counts %d/%d, want 1000/5000", in, out)
	}
	if ctx.Err() != nil {
		t.Fatal("the handler's context ended before Close")
	}
	served.Close() // the handler's close goes through the Conn
	c.Close()      // and a second close changes nothing
	if ctx.Err() == nil {
		t.Fatal("Close did not end the handler's context (a held statement would outlive it)")
	}
	if in, out := c.ClientCounts(); in != 1000 || out != 5000 {
		t.Fatalf("counts after close %d/%d, want 1000/5000", in, out)
	}
	if _, err := c.Client.Write([]byte("x")); err == nil {
		t.Fatal("the socket is still open after Close")
	}
}
