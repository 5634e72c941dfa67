package postgres

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestPasswordNotSentToAServerThatAsksForIt: the upstream is the client's original destination
// when the target names no address, and a target may match a whole network, so the server the
// proxy logs in to may be a host of the agent's choosing. Must hold: a server that asks for the
// password in clear (here over TLS without a certificate check, as tls: require is) gets no
// answer unless the target allows that method; by default only SCRAM is answered.
func TestPasswordNotSentToAServerThatAsksForIt(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}

	// The agent's host: TLS with any certificate, then "send me your password in clear".
	fake, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	got := make(chan string, 1)
	go func() {
		c, err := fake.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil || binary.BigEndian.Uint32(hdr[4:]) != sslRequestCode {
			got <- "no SSLRequest"
			return
		}
		c.Write([]byte{'S'})
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		r := bufio.NewReader(tc)
		var l [4]byte
		io.ReadFull(r, l[:])
		io.ReadFull(r, make([]byte, binary.BigEndian.Uint32(l[:])-4)) // StartupMessage
		b, _ := (&pgproto3.AuthenticationCleartextPassword{}).Encode(nil)
		tc.Write(b)
		var h [5]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			got <- ""
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(h[1:])-4)
		io.ReadFull(r, body)
		got <- string(body[:len(body)-1])
	}()

	srv := NewServer(Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		srv.Serve(context.Background(), c, Session{ID: "1", Upstream: fake.Addr().String(), User: "agent_rw", Password: "prod-secret-do-not-leak", TLS: TLSRequire})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := pgconn.Connect(ctx, "postgres://agent@"+ln.Addr().String()+"/postgres?sslmode=disable"); err == nil {
		c.Close(ctx)
	}
	select {
	case pw := <-got:
		if pw == "prod-secret-do-not-leak" {
			t.Errorf("the proxy sent the target's password in clear to the server at the client's destination, which asked for it")
		}
	case <-ctx.Done():
	}
}
