package proxy

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// clientHello captures the first flight of a real crypto/tls client.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	c, s := net.Pipe()
	go func() {
		tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake()
	}()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := s.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	return buf[:n]
}

func TestReadClientHello(t *testing.T) {
	cases := []struct {
		name    string
		input   []byte
		wantSNI string
		wantErr bool
	}{
		{"real hello", clientHello(t, "api.openai.com"), "api.openai.com", false},
		{"no SNI (IP literal)", clientHello(t, ""), "", true},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "", true},
		{"empty", nil, "", true},
		{"truncated record", clientHello(t, "a.example.com")[:20], "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client, server := net.Pipe()
			go func() { client.Write(c.input); client.Close() }()
			sni, peeked, err := readClientHello(server)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v", err, c.wantErr)
			}
			if sni != c.wantSNI {
				t.Errorf("sni = %q, want %q", sni, c.wantSNI)
			}
			if err == nil && !bytes.Equal(peeked, c.input[:len(peeked)]) {
				t.Error("peeked bytes are not the client's bytes")
			}
		})
	}
}

// FuzzReadClientHello: hostile first bytes from an agent never panic, never hang on a closed
// stream, and any SNI returned came from the bytes read.
func FuzzReadClientHello(f *testing.F) {
	f.Add(clientHello(f, "api.anthropic.com"))
	f.Add([]byte("\x16\x03\x01\x00\x05hello"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		sni, peeked, err := readClientHello(&bytesConn{recordingConn{r: bytes.NewReader(in)}})
		if err == nil && (sni == "" || len(peeked) > len(in)) {
			t.Fatalf("sni %q peeked %d of %d", sni, len(peeked), len(in))
		}
	})
}

// bytesConn is a net.Conn that reads a fixed input, then EOF.
type bytesConn struct{ recordingConn }
