// Package agentca is the host's certificate authority for the TLS the proxy speaks to agents.
//
// An agent that calls an http target over HTTPS ("https://api.internal/…") opens TLS to the
// proxy, which must read the requests to judge, mask and record them. The proxy answers with a
// certificate for the name the agent asked for, signed by this authority; the agent's
// environment trusts the authority (`enforcer agent-ca` prints it). Certificates are issued on
// demand, live a day and are kept for reuse until an hour before they expire.
//
// The authority's key signs for any name, so it is kept by root alone (0600, in a directory
// only root can enter) and the certificate should be trusted by the agents' environment only,
// not by the whole system.
package agentca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names of a generated authority in its directory.
const (
	CertFile = "agent-ca.pem"
	KeyFile  = "agent-ca.key"
)

const (
	caLifetime = 5 * 365 * 24 * time.Hour
	// leafLifetime is short: a certificate leaked from the daemon's memory is of little use
	// for long. Clients accept certificates from an hour before they were made, for clocks
	// that lag.
	leafLifetime = 24 * time.Hour
	leafBackdate = time.Hour
	leafRenewal  = time.Hour
	// maxLeaves bounds the cache: an agent can ask for any number of names.
	maxLeaves = 4096
	// newNamesPerSecond and newNamesBurst bound how fast one owner (the daemon uses the agent's
	// uid) has certificates signed for names not in the cache: each costs a signature with the
	// CA's key, and a ClientHello that names a new host costs the agent nothing.
	newNamesPerSecond = 10
	newNamesBurst     = 50
	maxOwners         = 4096
	// maxNameLen is the longest DNS name (RFC 1035 §2.3.4).
	maxNameLen = 253
)

// Authority issues server certificates for the names agents dial. Its methods may be called
// from any goroutine.
type Authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	// leafKey is the key of every certificate issued: one signature per new name, not a key
	// generation as well.
	leafKey *ecdsa.PrivateKey
	now     func() time.Time

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
	owners map[string]*bucket
	// renewed says Open replaced an authority that had expired or was about to.
	renewed bool
}

// bucket is one owner's allowance of new names (a token bucket).
type bucket struct {
	tokens float64
	last   time.Time
}

// ErrTooManyNames is Leaf's answer to an owner that asks for new names faster than
// newNamesPerSecond (after a burst of newNamesBurst).
var ErrTooManyNames = errors.New("agent CA: too many new host names at once from this agent")

// errEnding is New's error for a certificate that ends within the next day.
var errEnding = errors.New("not valid for the next day")

// New returns the authority of a PEM certificate and its PEM private key (PKCS #8, SEC 1 or
// PKCS #1). The certificate must be a CA's that may sign certificates, valid for at least
// another day, and the key must be its own.
func New(certPEM, keyPEM []byte) (*Authority, error) {
	return newAuthority(certPEM, keyPEM, time.Now)
}

func newAuthority(certPEM, keyPEM []byte, now func() time.Time) (*Authority, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("agent CA: the certificate file holds no PEM CERTIFICATE")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("agent CA: certificate: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, errors.New("agent CA: the certificate is not a CA's (basic constraints CA:TRUE)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("agent CA: the certificate may not sign certificates (key usage lacks certSign)")
	}
	switch t := now(); {
	case t.Add(leafLifetime).After(cert.NotAfter):
		return nil, fmt.Errorf("agent CA: the certificate is valid until %s, %w: replace it",
			cert.NotAfter.Format(time.RFC3339), errEnding)
	case t.Before(cert.NotBefore):
		// Most likely this host's clock is behind: the authority is not replaced for it.
		return nil, fmt.Errorf("agent CA: the certificate is valid from %s, later than this host's clock (%s): check the clock",
			cert.NotBefore.Format(time.RFC3339), t.Format(time.RFC3339))
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("agent CA: the key is not the certificate's")
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agent CA: leaf key: %w", err)
	}
	return &Authority{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		key:     key,
		leafKey: leafKey,
		now:     now,
		leaves:  map[string]*tls.Certificate{},
		owners:  map[string]*bucket{},
	}, nil
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("agent CA: the key file holds no PEM block")
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("agent CA: the key file holds a %q block, not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("agent CA: key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("agent CA: key of type %T cannot sign", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	switch a := a.(type) {
	case *ecdsa.PublicKey:
		return a.Equal(b)
	case *rsa.PublicKey:
		return a.Equal(b)
	case ed25519.PublicKey:
		return a.Equal(b)
	}
	return false
}

// Open returns the authority kept in dir (CertFile and KeyFile), generating one the first
// time. The directory is made 0700 and the key is written 0600. Half a pair is an error, never
// replaced: agents may trust the certificate that is there. An authority Open generated that
// has expired, or would within a day, is moved aside (".expired" added to its names) and
// replaced; Renewed says so, and agents must then trust the new certificate.
func Open(dir string) (*Authority, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	renewed := false
	switch {
	case certErr == nil && keyErr == nil:
		a, err := New(certPEM, keyPEM)
		if !errors.Is(err, errEnding) {
			return a, err
		}
		for _, p := range []string{keyPath, certPath} {
			if err := os.Rename(p, p+".expired"); err != nil {
				return nil, fmt.Errorf("agent CA: move the expired authority aside: %w", err)
			}
		}
		renewed = true
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return nil, fmt.Errorf("agent CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return nil, fmt.Errorf("agent CA: %w", keyErr)
	default:
		return nil, fmt.Errorf("agent CA: %s and %s must both exist or both be absent; remove the one left to generate a new authority (agents must then trust the new certificate)", certPath, keyPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent CA: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent CA: %w", err)
	}
	certPEM, keyPEM, err := generate(time.Now())
	if err != nil {
		return nil, err
	}
	// The key first: a certificate without its key is refused at the next start, a key without
	// its certificate too, and neither is trusted by anyone yet.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	a, err := New(certPEM, keyPEM)
	if a != nil {
		a.renewed = renewed
	}
	return a, err
}

// Renewed reports whether Open replaced an authority that had expired or was about to.
func (a *Authority) Renewed() bool { return a.renewed }

// generate makes a new authority: an ECDSA P-256 key and a self-signed CA certificate that may
// sign only end-entity certificates.
func generate(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("agent CA: key: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "enforcer agent CA " + host, Organization: []string{"enforcer"}},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent CA: certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent CA: key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

// writeFile writes data to path through a temporary file, so a crash leaves the old file or
// the new one whole.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("agent CA: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("agent CA: write %s: %w", path, err)
	}
	return nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// CertPEM returns the authority's certificate, PEM-encoded: what agents must trust.
func (a *Authority) CertPEM() []byte { return a.certPEM }

// Certificate returns the authority's certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.cert }

// ServerConfig returns the TLS configuration of one agent connection whose destination was
// dst, for owner: the certificate is for the name the ClientHello gives, else for dst's address;
// names new to the cache count against owner's allowance. Only HTTP/1.1 is offered (the proxy
// does not speak HTTP/2). Session tickets are off: each connection has a configuration of its
// own, so a ticket could never be used to resume.
func (a *Authority) ServerConfig(dst netip.Addr, owner string) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS12,
		NextProtos:             []string{"http/1.1"},
		SessionTicketsDisabled: true,
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h.ServerName == "" {
				return a.leaf(owner, dst.Unmap().String())
			}
			return a.leaf(owner, h.ServerName)
		},
	}
}

// Leaf returns a certificate for name, a DNS name or an IP address, with its chain to the
// authority. It counts against no owner's allowance.
func (a *Authority) Leaf(name string) (*tls.Certificate, error) { return a.leaf("", name) }

func (a *Authority) leaf(owner, name string) (*tls.Certificate, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	ip, ipErr := netip.ParseAddr(name)
	switch {
	case ipErr == nil && ip.Zone() != "":
		return nil, fmt.Errorf("agent CA: %q: an address with a zone cannot be certified", name)
	case ipErr == nil:
		ip = ip.Unmap()
		name = ip.String()
	case !validDNSName(name):
		return nil, fmt.Errorf("agent CA: %q is not a host name or an IP address", name)
	}
	now := a.now()
	a.mu.Lock()
	if c, ok := a.leaves[name]; ok && now.Add(leafRenewal).Before(c.Leaf.NotAfter) {
		a.mu.Unlock()
		return c, nil
	}
	allowed := a.allowNew(owner, now)
	a.mu.Unlock()
	if !allowed {
		return nil, ErrTooManyNames
	}
	// Signed without the lock: a slow CA key (RSA) must not hold up the names in the cache.
	c, err := a.sign(name, ip, ipErr == nil, now)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.leaves) >= maxLeaves {
		for n, old := range a.leaves {
			if !now.Add(leafRenewal).Before(old.Leaf.NotAfter) {
				delete(a.leaves, n)
			}
		}
		// Still full: a quarter goes, picked at random (map order), so a flood of new names
		// cannot empty the cache of everyone else's.
		for n := range a.leaves {
			if len(a.leaves) < maxLeaves*3/4 {
				break
			}
			delete(a.leaves, n)
		}
	}
	a.leaves[name] = c
	return c, nil
}

// sign issues the certificate for name (an address when isIP).
func (a *Authority) sign(name string, ip netip.Addr, isIP bool, now time.Time) (*tls.Certificate, error) {
	if !now.Before(a.cert.NotAfter.Add(-leafRenewal)) {
		return nil, fmt.Errorf("agent CA: the authority expires at %s: replace it (a generated one is replaced when the daemon starts)",
			a.cert.NotAfter.Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(a.cert.NotAfter) {
		tmpl.NotAfter = a.cert.NotAfter
	}
	if isIP {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &a.leafKey.PublicKey, a.key)
	if err != nil {
		return nil, fmt.Errorf("agent CA: sign for %q: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("agent CA: sign for %q: %w", name, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, a.cert.Raw}, PrivateKey: a.leafKey, Leaf: leaf}, nil
}

// allowNew takes one new name from owner's allowance, if it has one ("" has no bound). a.mu
// is held.
func (a *Authority) allowNew(owner string, now time.Time) bool {
	if owner == "" {
		return true
	}
	b := a.owners[owner]
	if b == nil {
		if len(a.owners) >= maxOwners {
			// Owners whose allowance has refilled are owners that know nothing yet.
			for o, ob := range a.owners {
				if now.Sub(ob.last).Seconds()*newNamesPerSecond+ob.tokens >= newNamesBurst {
					delete(a.owners, o)
				}
			}
			if len(a.owners) >= maxOwners {
				clear(a.owners)
			}
		}
		b = &bucket{tokens: newNamesBurst, last: now}
		a.owners[owner] = b
	}
	// now was read before the lock: a racing call may have stored a later one.
	if now.After(b.last) {
		b.tokens = min(newNamesBurst, b.tokens+now.Sub(b.last).Seconds()*newNamesPerSecond)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// validDNSName reports whether name (lower case, without a root dot) is a host name a
// certificate can carry: letters, digits, '-' and '_' in labels of 1 to 63 bytes, not starting
// or ending with '-'.
func validDNSName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
