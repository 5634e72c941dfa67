package http

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	nethttp "net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// selfSigned is a certificate for the tests' TLS clients, which do not check it.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "api.test"}, DNSNames: []string{"api.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCutOverTLS: a client that reached the proxy over TLS (the daemon terminates an agent's
// HTTPS) and whose body the proxy has to cut sees an error, not an end: the socket is reset
// under the TLS connection, no close_notify is sent. An HTTP/1.0 body ends with the
// connection, so a close_notify would make the cut body look whole.
func TestCutOverTLS(t *testing.T) {
	cert := selfSigned(t)
	for _, proto := range []string{"HTTP/1.0", "HTTP/1.1"} {
		t.Run(proto, func(t *testing.T) {
			up := startLineStreamer(t, "text/event-stream")
			hook := newFakeHook()
			hook.masker = failingMasker{onlyMarked: true}
			p := startWrappedProxy(t, &Server{}, Upstream{Addr: up.addr()}, hook,
				func(n int) string { return "s" + strconv.Itoa(n) },
				func(c net.Conn) net.Conn { return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}) })
			conn, err := tls.Dial("tcp", p.addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(waitLimit))
			io.WriteString(conn, "GET /events "+proto+"\r\nHost: api.test\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := nethttp.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body := bufio.NewReader(resp.Body)
			up.send(t, "data: first\n")
			if got := readLineWithin(t, body); got != "data: first\n" {
				t.Fatalf("first line %q", got)
			}
			up.send(t, "data: fail here\n")
			rest, err := io.ReadAll(body)
			if err == nil {
				t.Fatalf("the cut body ended cleanly after %q", rest)
			}
			if strings.Contains(string(rest), "fail here") {
				t.Errorf("the bad line reached the client: %q", rest)
			}
			if err := p.waitServed(t); err == nil {
				t.Error("Serve returned nil after cutting the stream")
			}
		})
	}
}
