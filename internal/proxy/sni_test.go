package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
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

// TestAddressOfName: a target matched by SNI alone goes to the name's addresses. Must hold: the
// agent's destination is used only when it is one of them, and no loopback, link-local,
// unspecified or multicast address is ever used (the daemon would reach this host's own
// services unenforced). The lookups here are a table, not a resolver: the daemon's resolver
// is exercised end to end in cmd/enforcer (TestSNIDoesNotChooseTheHost).
func TestAddressOfName(t *testing.T) {
	zone := map[string][]netip.Addr{
		"api.example":   {netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("203.0.113.6"), netip.MustParseAddr("2001:db8::5")},
		"local.example": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("224.0.0.1")},
		"v6.example":    {netip.MustParseAddr("2001:db8::7")},
	}
	s := &Server{LookupName: func(_ context.Context, name string) ([]netip.Addr, error) {
		if a, ok := zone[name]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}}
	tests := []struct {
		name, dst, want string // want "" is an error
	}{
		{"api.example", "203.0.113.6:443", "203.0.113.6:443"},
		{"api.example", "198.51.100.1:443", "203.0.113.5:443"},
		{"api.example", "[::ffff:203.0.113.6]:443", "203.0.113.6:443"},
		{"api.example", "[2001:db8::99]:443", "[2001:db8::5]:443"},
		{"api.example", "127.0.0.1:443", "203.0.113.5:443"},
		{"local.example", "127.0.0.1:443", ""},
		{"v6.example", "198.51.100.1:443", ""},
		{"nx.example", "203.0.113.5:443", ""},
	}
	for _, tt := range tests {
		got, err := s.addressOf(tt.name, netip.MustParseAddrPort(tt.dst))
		if tt.want == "" {
			if err == nil {
				t.Errorf("addressOf(%s, %s) = %v, want an error", tt.name, tt.dst, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("addressOf(%s, %s) = %v, %v; want %s", tt.name, tt.dst, got, err, tt.want)
		}
	}
	if _, err := (&Server{}).addressOf("api.example", netip.MustParseAddrPort("203.0.113.5:443")); err == nil {
		t.Error("no resolver: want an error")
	}
}
