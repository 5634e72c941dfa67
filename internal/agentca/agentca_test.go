package agentca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenGeneratesOnceAndKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, KeyFile): 0o600, filepath.Join(dir, CertFile): 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
	c := a.Certificate()
	if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("generated CA: IsCA %v, MaxPathLenZero %v, key usage %v", c.IsCA, c.MaxPathLenZero, c.KeyUsage)
	}
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.CertPEM()) != string(a.CertPEM()) {
		t.Error("a second Open made a new authority instead of keeping the first")
	}
}

func TestOpenRefusesHalfAPair(t *testing.T) {
	for _, keep := range []string{CertFile, KeyFile} {
		t.Run(keep, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Open(dir); err != nil {
				t.Fatal(err)
			}
			other := KeyFile
			if keep == KeyFile {
				other = CertFile
			}
			os.Remove(filepath.Join(dir, other))
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), "both exist or both be absent") {
				t.Fatalf("Open with only %s: %v", keep, err)
			}
			if _, err := os.Stat(filepath.Join(dir, other)); err == nil {
				t.Error("Open replaced the missing half")
			}
		})
	}
}

// testPair makes a certificate and key PEM from tmpl, self-signed with a new P-256 key.
func testPair(t testing.TB, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: k})
}

func caTemplate(mod func(*x509.Certificate)) *x509.Certificate {
	c := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestNew(t *testing.T) {
	goodCert, goodKey := testPair(t, caTemplate(nil))
	_, otherKey := testPair(t, caTemplate(nil))
	leafCert, leafKey := testPair(t, caTemplate(func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature }))
	noSignCert, noSignKey := testPair(t, caTemplate(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }))
	endingCert, endingKey := testPair(t, caTemplate(func(c *x509.Certificate) { c.NotAfter = time.Now().Add(time.Hour) }))
	tests := []struct {
		name      string
		cert, key []byte
		err       string
	}{
		{"a CA and its key", goodCert, goodKey, ""},
		{"another key", goodCert, otherKey, "not the certificate's"},
		{"not a CA", leafCert, leafKey, "not a CA's"},
		{"may not sign certificates", noSignCert, noSignKey, "may not sign"},
		{"valid for less than a day", endingCert, endingKey, "not valid for the next day"},
		{"no certificate", []byte("hello"), goodKey, "no PEM CERTIFICATE"},
		{"no key", goodCert, []byte("hello"), "no PEM block"},
		{"a certificate for a key", goodCert, goodCert, "not a private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cert, tt.key)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v, want an error with %q", err, tt.err)
			}
		})
	}
}

func testAuthority(t testing.TB, now func() time.Time) *Authority {
	t.Helper()
	certPEM, keyPEM, err := generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAuthority(certPEM, keyPEM, now)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *Authority) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.Certificate())
	return p
}

func TestLeaf(t *testing.T) {
	a := testAuthority(t, time.Now)
	tests := []struct {
		name   string
		verify string // the name a client checks; "" when Leaf must refuse name
	}{
		{"api.internal.test", "api.internal.test"},
		{"API.Internal.Test.", "api.internal.test"},
		{"svc_a.internal", "svc_a.internal"},
		{"localhost", "localhost"},
		{"198.18.0.2", "198.18.0.2"},
		{"2001:2::7", "2001:2::7"},
		{"::ffff:198.18.0.2", "198.18.0.2"},
		{"fe80::1%eth0", ""},
		{"", ""},
		{"a..b", ""},
		{"-a.test", ""},
		{"a-.test", ""},
		{"*.test", ""},
		{"a b.test", ""},
		{"a/b.test", ""},
		{"ünïcode.test", ""},
		{strings.Repeat("a", 64) + ".test", ""},
		{strings.Repeat("abcdefgh.", 28) + "test", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.Leaf(tt.name)
			if tt.verify == "" {
				if err == nil {
					t.Fatalf("Leaf(%q) issued a certificate for %v %v", tt.name, c.Leaf.DNSNames, c.Leaf.IPAddresses)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Certificate) != 2 {
				t.Errorf("chain of %d certificates, want the leaf and the CA", len(c.Certificate))
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: a.pool(), DNSName: tt.verify}); err != nil {
				t.Errorf("the leaf does not verify for %q: %v", tt.verify, err)
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: a.pool(), DNSName: "other.test"}); err == nil {
				t.Error("the leaf verifies for another name too")
			}
			if life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); life > leafLifetime+leafBackdate {
				t.Errorf("the leaf lives %s", life)
			}
		})
	}
}

func TestLeafIsReusedThenRenewed(t *testing.T) {
	now := time.Now()
	a := testAuthority(t, func() time.Time { return now })
	first, err := a.Leaf("api.internal.test")
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(leafLifetime - leafRenewal - time.Minute)
	if again, _ := a.Leaf("api.internal.test"); again != first {
		t.Error("a leaf with more than an hour left was not reused")
	}
	now = now.Add(2 * time.Minute)
	renewed, err := a.Leaf("api.internal.test")
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("a leaf within an hour of its end was not renewed")
	}
}

func TestLeavesAreBounded(t *testing.T) {
	a := testAuthority(t, time.Now)
	for i := range maxLeaves + 10 {
		if _, err := a.Leaf(fmt.Sprintf("n%d.test", i)); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	n := len(a.leaves)
	a.mu.Unlock()
	if n > maxLeaves || n < maxLeaves/2 {
		t.Errorf("%d leaves kept: the bound is %d, and a full cache loses a quarter, not all", n, maxLeaves)
	}
}

// TestNewNamesPerOwner: one owner (an agent's uid) gets certificates for new names at most
// newNamesPerSecond after a burst; names in the cache, and other owners, are not held back.
func TestNewNamesPerOwner(t *testing.T) {
	now := time.Now()
	a := testAuthority(t, func() time.Time { return now })
	for i := range newNamesBurst {
		if _, err := a.leaf("uid 1000", fmt.Sprintf("n%d.test", i)); err != nil {
			t.Fatalf("name %d of the burst: %v", i, err)
		}
	}
	if _, err := a.leaf("uid 1000", "one-more.test"); err != ErrTooManyNames {
		t.Fatalf("a name past the burst: %v, want ErrTooManyNames", err)
	}
	if _, err := a.leaf("uid 1000", "n3.test"); err != nil {
		t.Errorf("a name in the cache: %v", err)
	}
	if _, err := a.leaf("uid 1001", "one-more.test"); err != nil {
		t.Errorf("another owner: %v", err)
	}
	now = now.Add(time.Second)
	for i := range newNamesPerSecond {
		if _, err := a.leaf("uid 1000", fmt.Sprintf("later%d.test", i)); err != nil {
			t.Fatalf("name %d a second later: %v", i, err)
		}
	}
	if _, err := a.leaf("uid 1000", "later-still.test"); err != ErrTooManyNames {
		t.Errorf("past a second's allowance: %v", err)
	}
}

// TestExpiry: an authority near its end signs nothing more; one Open generated is replaced by
// the next Open, the old one kept aside.
func TestExpiry(t *testing.T) {
	now := time.Now()
	a := testAuthority(t, func() time.Time { return now })
	now = a.Certificate().NotAfter.Add(-time.Minute)
	if _, err := a.Leaf("api.internal.test"); err == nil || !strings.Contains(err.Error(), "expires") {
		t.Errorf("a leaf a minute before the authority ends: %v", err)
	}

	dir := t.TempDir()
	certPEM, keyPEM, err := generate(time.Now().Add(-caLifetime + time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, CertFile), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, KeyFile), keyPEM, 0o600)
	renewed, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.Renewed() || string(renewed.CertPEM()) == string(certPEM) {
		t.Error("an authority ending within the hour was not replaced")
	}
	if old, err := os.ReadFile(filepath.Join(dir, CertFile+".expired")); err != nil || string(old) != string(certPEM) {
		t.Errorf("the old certificate was not kept aside: %v", err)
	}
	if again, err := Open(dir); err != nil || again.Renewed() || string(again.CertPEM()) != string(renewed.CertPEM()) {
		t.Errorf("the next Open: %v, renewed %v", err, again != nil && again.Renewed())
	}

	// An authority that starts after this host's clock is not replaced: the clock is wrong.
	ahead := t.TempDir()
	certPEM, keyPEM, err = generate(time.Now().Add(3 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ahead, CertFile), certPEM, 0o644)
	os.WriteFile(filepath.Join(ahead, KeyFile), keyPEM, 0o600)
	if _, err := Open(ahead); err == nil || !strings.Contains(err.Error(), "check the clock") {
		t.Errorf("an authority from the future: %v", err)
	}
	if kept, _ := os.ReadFile(filepath.Join(ahead, CertFile)); string(kept) != string(certPEM) {
		t.Error("an authority from the future was replaced")
	}
}

// TestServerConfig completes real handshakes: a client trusting the authority connects by name
// (SNI), by address (no SNI: the certificate is for the destination) and offering HTTP/2 first.
func TestServerConfig(t *testing.T) {
	a := testAuthority(t, time.Now)
	dst := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		name       string
		client     *tls.Config
		wantErr    bool
		wantProto  string
		wantLeafOf string
	}{
		{"by name", &tls.Config{ServerName: "api.internal.test"}, false, "", "api.internal.test"},
		{"by address", &tls.Config{ServerName: "198.18.0.2"}, false, "", "198.18.0.2"},
		{"h2 and http/1.1 offered", &tls.Config{ServerName: "api.internal.test", NextProtos: []string{"h2", "http/1.1"}}, false, "http/1.1", "api.internal.test"},
		{"h2 alone", &tls.Config{ServerName: "api.internal.test", NextProtos: []string{"h2"}}, true, "", ""},
		{"untrusted", &tls.Config{ServerName: "api.internal.test", RootCAs: x509.NewCertPool()}, true, "", ""},
		{"TLS 1.1", &tls.Config{ServerName: "api.internal.test", MaxVersion: tls.VersionTLS11}, true, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, ss := net.Pipe()
			defer cs.Close()
			defer ss.Close()
			srvErr := make(chan error, 1)
			go func() {
				s := tls.Server(ss, a.ServerConfig(dst, "uid 1000"))
				srvErr <- s.Handshake()
				s.Close()
			}()
			cfg := tt.client.Clone()
			if cfg.RootCAs == nil {
				cfg.RootCAs = a.pool()
			}
			c := tls.Client(cs, cfg)
			err := c.Handshake()
			if tt.wantErr {
				if err == nil {
					t.Fatal("handshake succeeded")
				}
				cs.Close()
				<-srvErr
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := <-srvErr; err != nil {
				t.Fatalf("server: %v", err)
			}
			st := c.ConnectionState()
			if st.NegotiatedProtocol != tt.wantProto {
				t.Errorf("ALPN %q, want %q", st.NegotiatedProtocol, tt.wantProto)
			}
			if err := st.PeerCertificates[0].VerifyHostname(tt.wantLeafOf); err != nil {
				t.Error(err)
			}
		})
	}
}

// FuzzLeaf: whatever name a ClientHello carries, Leaf either refuses it or issues a certificate
// for that one name (lower case, no root dot), which a client checking that name accepts.
func FuzzLeaf(f *testing.F) {
	for _, s := range []string{"api.internal.test", "198.18.0.2", "::1", "A.B.", "", "a..b", "x_y.test", "\x00", "é.test"} {
		f.Add(s)
	}
	a := testAuthority(f, time.Now)
	pool := a.pool()
	f.Fuzz(func(t *testing.T, name string) {
		c, err := a.Leaf(name)
		if err != nil {
			return
		}
		want := strings.TrimSuffix(strings.ToLower(name), ".")
		l := c.Leaf
		if len(l.DNSNames)+len(l.IPAddresses) != 1 {
			t.Fatalf("Leaf(%q): names %q, addresses %v", name, l.DNSNames, l.IPAddresses)
		}
		if len(l.DNSNames) == 1 && l.DNSNames[0] != want {
			t.Fatalf("Leaf(%q) is for %q", name, l.DNSNames[0])
		}
		if ip, err := netip.ParseAddr(want); err == nil {
			if len(l.IPAddresses) != 1 || !l.IPAddresses[0].Equal(ip.Unmap().AsSlice()) {
				t.Fatalf("Leaf(%q) is for %v", name, l.IPAddresses)
			}
			want = ip.Unmap().String()
		}
		if _, err := l.Verify(x509.VerifyOptions{Roots: pool, DNSName: want}); err != nil {
			t.Fatalf("Leaf(%q) does not verify for %q: %v", name, want, err)
		}
	})
}
